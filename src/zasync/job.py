"""Jobs: persistent calls, their results, callbacks and retry policies.

A ``Job`` stores a callable with its arguments.  Calling the job runs the
callable and commits its result together with its effects, retrying what a
retry policy says is worth retrying, then runs the callbacks.  See
``docs/job.rst`` for the narrative.
"""
import datetime
import importlib
import io
import logging
import sys
import threading
import types

import persistent
import persistent.list
import persistent.mapping
import transaction
import ZODB.utils
import zope.component
import zope.interface
from ZODB._compat import PersistentPickler
from ZODB.broken import Broken
import ZODB.broken
from ZODB._compat import _protocol

from zasync import interfaces
from zasync import local as zlocal
from zasync import timeouts
from zasync import utils
from zasync._pending import check_priority
from zasync._resolving import merge_made_parts
from zasync.parts import InlineArguments
from zasync.parts import PendingAnnotations
from zasync.parts import PendingKeywords
from zasync.failure import Failure
from zasync.failure import from_twisted
from zasync.failure import isFailure
from zasync.grouping import GroupSplit
from zasync.interfaces import ACTIVE
from zasync.interfaces import ASSIGNED
from zasync.interfaces import CALLBACKS
from zasync.interfaces import COMPLETED
from zasync.interfaces import NEW
from zasync.interfaces import PENDING
# The retry policies are part of this module's API too, as in zc.async.
from zasync.retry import NeverRetry
from zasync.retry import RetryCommonForever
from zasync.retry import RetryCommonFourTimes
from zasync.retry import RetryWithBackoff
from zasync.retry import callback_retry_policy_factory
from zasync.utils import events_log
from zasync.utils import trace_log

__all__ = ['as_job', 'broken_global', 'CancelRequest',
           'check_callback_settings',
           'check_failure_log_level', 'check_retry_policy_factory',
           'check_timeout',
           'ConditionalCallbackProxy', 'import_problem', 'Job',
           'tolerant_class_factory',
           'load_problem', 'MissingCallable', 'NeverRetry', 'parallel',
           'RetryCommonForever', 'RetryCommonFourTimes', 'RetryWithBackoff',
           'serial', 'success_or_failure', 'SuccessFailureCallbackProxy']

# Stored status ids; NEW is refined into PENDING/ASSIGNED by the parent.
_NEW, _ACTIVE, _CALLBACKS, _COMPLETED = range(4)
_STATUS_BY_ID = {_ACTIVE: ACTIVE, _CALLBACKS: CALLBACKS,
                 _COMPLETED: COMPLETED}
_NO_SETUP = object()
_RESCHEDULED = 'rescheduled'
_TIME_TYPES = (datetime.datetime, datetime.timedelta)

try:
    from twisted.internet.defer import Deferred
except ImportError:  # pragma: no cover - Twisted is a dependency
    Deferred = None

# --------------------------------------------------------------------------
# Callables


#: values that always pickle (a job's arguments are mostly these: checked
#: without pickling them)
_ATOMS = frozenset([int, float, str, bytes, bool, type(None)])


def _check_arguments(args, kwargs, what):
    """``_check_picklable`` for a call's arguments (at once for atoms)."""
    atoms = _ATOMS
    if all(type(value) in atoms for value in args) and all(
            type(value) in atoms for value in kwargs.values()):
        return
    _check_picklable((list(args), kwargs), what)


def _importable(value):
    """Whether ``value`` (a function or a class) pickles by its name: it is
    the global of its qualified name in its module (looked up, or else
    pickled as ZODB would)."""
    module = sys.modules.get(getattr(value, '__module__', None) or '')
    qualname = getattr(value, '__qualname__', None)
    if module is not None and isinstance(qualname, str):
        found = module
        for part in qualname.split('.'):
            found = getattr(found, part, None)
        if found is value:
            return True
    try:
        _check_picklable(value, 'it')
    except ValueError:
        return False
    return True


def _check_picklable(value, what):
    """Raise a ValueError unless ``value`` pickles as the ZODB would do it.

    Persistent objects are references in the database and always fine.
    """
    def persistent_id(obj):
        if isinstance(obj, persistent.Persistent):
            return id(obj)
        return None
    try:
        PersistentPickler(persistent_id, io.BytesIO(), _protocol).dump(value)
    except Exception as e:
        raise ValueError('%s cannot be stored in the database: %s'
                         % (what, e)) from None


def _callable_problem(value):
    """Why ``value`` cannot be a job's callable, or None if it can."""
    if isinstance(value, types.FunctionType):
        qualname = value.__qualname__
        if value.__name__ == '<lambda>':
            return 'it is a lambda; use a module-level function'
        if '<locals>' in qualname:
            return ('it is a nested function; define it at module level '
                    'so that it can be imported')
        if '.' in qualname:
            return ('it is a function defined in a class; use a module-level '
                    'function or a method of a persistent object')
    if getattr(value, '__module__', None) == '__main__' and isinstance(
            value, (type, types.FunctionType)):
        return ('it is defined in the __main__ script, which a worker '
                'cannot import; define it in a module')
    if not callable(value):
        return 'it is not callable'
    if isinstance(value, (type, types.FunctionType,
                          types.BuiltinFunctionType)):
        if not _importable(value):
            return 'it cannot be imported by its name (%s.%s)' % (
                getattr(value, '__module__', '?'),
                getattr(value, '__qualname__', '?'))
        return None
    if isinstance(value, persistent.Persistent):
        return None
    return ('it is neither an importable function nor a method of a '
            'persistent object nor a persistent object')


def _split_callable(value):
    """Return ``(root, name)`` to store for a callable (name None: direct)."""
    self_obj = getattr(value, '__self__', None)
    if self_obj is not None and not isinstance(self_obj, types.ModuleType):
        if isinstance(value, (types.MethodType, types.BuiltinMethodType,
                              types.MethodWrapperType)):
            if isinstance(self_obj, type):
                # A classmethod: store the (importable) class + name.
                problem = _callable_problem(self_obj)
            elif isinstance(self_obj, persistent.Persistent):
                problem = None
            else:
                problem = ('it is a method of %s, which is not persistent; '
                           'use a method of a persistent object or a '
                           'module-level function' % type(self_obj).__name__)
            if problem:
                raise interfaces.UnpicklableCallableError(
                    'cannot use %r as the callable of a job: %s'
                    % (value, problem))
            return self_obj, value.__name__
    problem = _callable_problem(value)
    if problem:
        raise interfaces.UnpicklableCallableError(
            'cannot use %r as the callable of a job: %s' % (value, problem))
    return value, None


def as_job(obj):
    """``obj`` as an ``IJob``: itself if it is one, else a new ``Job``."""
    job = interfaces.IJob(obj, None)
    if job is None:
        if not callable(obj):
            raise TypeError('%r is not a job and not callable' % (obj,))
        job = Job(obj)
    return job


def check_timeout(value):
    """A job's timeout as seconds (a float), or None; ``ValueError`` for
    anything but None, a positive finite number or ``timedelta``."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError('a timeout is a number of seconds or a timedelta, '
                         'not %r' % (value,))
    if not 0 < value < float('inf'):
        raise ValueError('a timeout must be more than 0 seconds and finite, '
                         'not %r' % (value,))
    return float(value)


def check_failure_log_level(value):
    """Refuse a ``failure_log_level`` that is not None or a logging level
    (an ``int``, e.g. ``logging.ERROR``)."""
    if value is not None and (not isinstance(value, int)
                              or isinstance(value, bool)):
        raise ValueError('failure_log_level must be a logging level (an int '
                         'such as logging.ERROR), not %r' % (value,))


def check_retry_policy_factory(value, job):
    """Refuse a ``retry_policy_factory`` that is neither None, a callable,
    nor the name of an ``IRetryPolicy`` adapter registered for ``job``."""
    if value is None:
        return
    if isinstance(value, str):
        if zope.component.queryAdapter(
                job, interfaces.IRetryPolicy, value) is None:
            raise ValueError('no retry policy named %r is registered (an '
                             'IRetryPolicy adapter of jobs)' % (value,))
    elif not callable(value):
        raise ValueError('retry_policy_factory must be a callable or the name '
                         'of a registered IRetryPolicy adapter, not %r'
                         % (value,))


def check_callback_settings(callback):
    """``check_failure_log_level`` and ``check_retry_policy_factory`` for a
    callback (a job or a callback proxy) and, for a job, its own
    callbacks."""
    check_failure_log_level(callback.failure_log_level)
    check_retry_policy_factory(callback.retry_policy_factory, callback)
    for inner in getattr(callback, 'callbacks', ()):
        check_callback_settings(inner)


def _prepare_callback(callback, failure_log_level, retry_policy_factory,
                      parent):
    """Make ``callback`` ready to be a callback of ``parent``."""
    check_failure_log_level(failure_log_level)
    if not interfaces.ICallbackProxy.providedBy(callback):
        callback = as_job(callback)
        if failure_log_level is not None:
            callback.failure_log_level = failure_log_level
        elif callback.failure_log_level is None:
            callback.failure_log_level = logging.CRITICAL
        if retry_policy_factory is not None:
            callback.retry_policy_factory = retry_policy_factory
        elif callback.retry_policy_factory is None:
            callback.retry_policy_factory = callback_retry_policy_factory
        check_callback_settings(callback)
    callback.parent = parent
    return callback


def _parent_status(obj, start):
    """Status implied by the parent chain of a NEW job or proxy."""
    seen = {id(start)}
    while obj is not None and id(obj) not in seen:
        if interfaces.IAgent.providedBy(obj):
            return ASSIGNED
        if interfaces.IQueue.providedBy(obj):
            return PENDING
        if (not interfaces.IJob.providedBy(obj)
                or getattr(obj, '_status_id', _NEW) != _NEW):
            # A callback of a job that has started is simply NEW, wherever
            # that job is (e.g. under an interrupt wrapper in a queue).
            break
        seen.add(id(obj))
        obj = obj.parent
    return NEW


def _repr_call(root, name, args, kwargs):
    call = utils.custom_repr(root)
    if name is not None:
        call += ' :' + name
    parts = [utils.custom_repr(a) for a in args]
    parts.extend('%s=%s' % (k, utils.custom_repr(v))
                 for k, v in kwargs.items())
    return '%s(%s)' % (call, ', '.join(parts))


# --------------------------------------------------------------------------
# Jobs that cannot be loaded


class MissingCallable:
    """Stands, in a job, for a callable that cannot be imported any more
    (``Job.markUnloadable``), so that the job can be stored again -- to
    fail it.  Calling it raises ``JobLoadError``; ``resolve()`` imports the
    callable, once the code is back."""

    def __init__(self, module, name, attribute=None):
        self.module = module
        self.name = name
        self.attribute = attribute   # a method of a broken persistent object

    @property
    def dotted_name(self):
        return '%s.%s%s' % (self.module, self.name,
                            '.' + self.attribute if self.attribute else '')

    def resolve(self):
        """The callable (``ImportError`` or ``AttributeError`` while it is
        still missing).  A method of a persistent object cannot be found
        again: ``LookupError``."""
        if self.attribute:
            raise LookupError('%s was a method of a persistent object'
                              % self.dotted_name)
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args, **kwargs):
        raise interfaces.JobLoadError('%s cannot be imported: %s' % (
            self.dotted_name, import_problem(self.module, self.name)))

    def __repr__(self):
        return '<missing %s>' % self.dotted_name


def broken_global(value):
    """``(module, name)`` of a broken class or an instance of one (ZODB
    puts them where a global could not be imported), else None."""
    if isinstance(value, MissingCallable):
        return value.module, value.name
    cls = value if isinstance(value, type) else type(value)
    if issubclass(cls, Broken):
        return cls.__module__, cls.__name__
    return None


def tolerant_class_factory(connection, module, name):
    """A ZODB class factory (``ZODB.DB(..., class_factory=...)``): ZODB's
    own, except that a module failing at import with any error -- not only
    ``ImportError`` -- gives a broken placeholder too, as a missing module
    does.  Then a job (or a job subclass) of such a module is held like
    any job that cannot be loaded, instead of making the queue's entries
    that refer to it unreadable.  ``zasync worker`` opens its database
    with it."""
    try:
        return ZODB.broken.find_global(module, name)
    except Exception:
        key = (module, name)
        placeholder = ZODB.broken.broken_cache.get(key)
        if placeholder is None:
            placeholder = type(name, (Broken,), {'__module__': module})
            ZODB.broken.broken_cache[key] = placeholder
        return placeholder


def _broken_in(value, depth=3):
    """The first ``(module, name)`` of a broken object in ``value`` and its
    lists, tuples, sets and dicts (``depth`` levels deep), else None."""
    found = broken_global(value)
    if found is not None or depth <= 0:
        return found
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return None
    for item in items:
        found = _broken_in(item, depth - 1)
        if found is not None:
            return found
    return None


def import_problem(module, name):
    """Why ``module.name`` cannot be imported here, as one line."""
    try:
        imported = importlib.import_module(module)
    except BaseException as e:   # a module failing at import: any error
        return utils.one_line(e)
    if not hasattr(imported, name):
        return 'module %r has no attribute %r' % (module, name)
    return 'it can be imported now'


def _load_error_text(error):
    """One line for an error raised while a job was unpickled: ZODB wraps
    the real one (a module failing at import) without a message."""
    cause = utils.root_cause(error)
    text = utils.one_line(cause)
    tb = cause.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        text += ' (in %s, line %d)' % (tb.tb_frame.f_code.co_filename,
                                       tb.tb_lineno)
    return text


def load_problem(job):
    """Why ``job`` cannot run in this process -- its own class, its
    callable or one of its arguments cannot be imported -- as a
    ``JobLoadError`` naming the module and the name; None if it can.  The
    error's ``reason`` is its message without the job's id.

    ZODB loads a missing global as a *broken* placeholder instead of
    failing: such a job must never run (its placeholders would make a
    wrong result), and its callable's placeholder cannot even be stored
    again.  Nothing is written; the modules named are imported.
    """
    reason = _load_reason(job)
    if reason is None:
        return None
    oid = getattr(job, '_p_oid', None)
    error = interfaces.JobLoadError('job %s: %s' % (
        ZODB.utils.u64(oid) if oid else '(unsaved)', reason))
    error.reason = reason
    return error


def _load_reason(job):
    broken = broken_global(job)
    if broken is not None:
        return 'its class %s.%s cannot be imported: %s' % (
            broken + (import_problem(*broken),))
    try:
        job._p_activate()
        root = job._callable_root
        args, kwargs = list(job.args), dict(job.kwargs)
    except Exception as e:   # a module failing at import while unpickling
        return 'it cannot be loaded: %s' % (_load_error_text(e),)
    broken = broken_global(root)
    if broken is not None:
        return 'its callable %s.%s cannot be imported: %s' % (
            broken + (import_problem(*broken),))
    for value in args + list(kwargs.values()):
        broken = _broken_in(value)
        if broken is not None:
            return 'an argument of class %s.%s cannot be imported: %s' % (
                broken + (import_problem(*broken),))
    return None


# --------------------------------------------------------------------------
# The job


class CancelRequest:
    """Who cancelled a job, when, and why (``Job.cancel_requested``)."""

    def __init__(self, reason=None, principal=None, when=None):
        if reason is not None and not isinstance(reason, str):
            raise ValueError('a cancellation reason must be a string, not %r'
                             % (reason,))
        if principal is not None and not isinstance(principal, str):
            raise ValueError('a principal must be a string (its id), not %r'
                             % (principal,))
        self.reason = reason
        self.principal = principal
        self.when = utils.now() if when is None else when

    def __repr__(self):
        return '<CancelRequest %s>' % (self.describe(),)

    def describe(self):
        """``'by PRINCIPAL at TIME: REASON'``, leaving out what is not
        known."""
        text = 'at %s' % (self.when.isoformat(timespec='seconds'),)
        if self.principal:
            text = 'by %s %s' % (self.principal, text)
        if self.reason:
            text += ': %s' % (self.reason,)
        return text

    def error(self):
        """The ``CancelledError`` a cancelled job fails with."""
        return interfaces.CancelledError('cancelled ' + self.describe())


class _AddCallbacks:
    """``addCallbacks``, for jobs and callback proxies alike."""

    def addCallbacks(self, success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        """Add a callback running ``success`` with a result, or ``failure``
        with a ``Failure``; return it (a ``SuccessFailureCallbackProxy``)."""
        return self.addCallback(SuccessFailureCallbackProxy(
            success, failure, failure_log_level=failure_log_level,
            retry_policy_factory=retry_policy_factory))


#: a job's parts that zc.async (and earlier zasync) stored under public
#: names; ``Job.__setstate__`` moves them to the private ones
_PUBLIC_PARTS = frozenset(['args', 'callbacks', 'annotations', 'kwargs'])


@zope.interface.implementer(interfaces.IJob)
class Job(_AddCallbacks, utils.Base):
    """A persistent call: ``Job(callable, *args, **kwargs)``."""

    _status_id = _NEW
    _callable_root = None
    _callable_name = None
    _result = None
    _retry_policy = None
    _begin_after = None
    _begin_by = None
    _quota_names = ()
    _timeout = None
    _priority = 0
    #: False: the job always commits in a transaction of its own, never in
    #: a group with others (a job with effects outside the database that
    #: must not be repeated: see docs/jobs_and_transactions.rst)
    group_commit = True
    unique_key = None
    retried_from = None
    cancel_requested = None
    key = None
    retry_policy_factory = None
    failure_log_level = None
    assignerUUID = None
    active_start = None
    active_end = None

    def __init__(*args, **kwargs):
        if not args:
            raise TypeError('Job needs a callable')
        self, args = args[0], args[1:]
        if not args:
            raise TypeError('Job needs a callable')
        self._args = list(args[1:])
        if kwargs:
            self.kwargs = persistent.mapping.PersistentMapping(kwargs)
        self.callable = args[0]
        _check_arguments(
            args[1:], kwargs,
            'an argument of the job calling %r' % (args[0],))

    def __setstate__(self, state):
        if not _PUBLIC_PARTS.isdisjoint(state):
            # stored under the public names (zc.async, migrated databases,
            # earlier zasync)
            state = dict(state)
            for name in _PUBLIC_PARTS:
                if name in state:
                    state['_' + name] = state.pop(name)
        super().__setstate__(state)

    #: the positional arguments: a plain list in the job's own record (a
    #: ``PersistentList`` in a job stored by zc.async or an earlier zasync)
    _args = ()

    @property
    def args(self):
        """The positional arguments of the call, as a list (stored in the
        job's own record: see ``zasync.parts.InlineArguments``)."""
        args = self._args
        if isinstance(args, list):
            return InlineArguments(self, '_args')
        return args   # (a PersistentList of its own)

    @args.setter
    def args(self, value):
        self._args = list(value)

    #: the keyword arguments: a ``PersistentMapping``, made for a job
    #: called with some, or by the first write (see ``zasync.parts``)
    _kwargs = None

    @property
    def kwargs(self):
        """The keyword arguments of the call: a ``PersistentMapping`` (for
        a job called without any, a ``PendingKeywords`` reading as an
        empty one until something is written to it)."""
        mapping = self._kwargs
        return PendingKeywords(self, '_kwargs') if mapping is None else mapping

    @kwargs.setter
    def kwargs(self, value):
        self._kwargs = value

    #: the annotations: an ``OOBTree`` made by the first write (see
    #: ``zasync.parts``)
    _annotations = None

    @property
    def annotations(self):
        """Anything about the job, by key: an ``OOBTree`` (while nothing
        was written, a ``PendingAnnotations`` reading as an empty one)."""
        tree = self._annotations
        return (PendingAnnotations(self, '_annotations') if tree is None
                else tree)

    @annotations.setter
    def annotations(self, value):
        self._annotations = value

    def _p_resolveConflict(self, old, committed, new):
        # A first annotation (a live one, say) made in another transaction
        # merges with the job's own change.  (A first callback does not:
        # ``addCallback`` must conflict with the job's completion, see
        # docs/jobs_and_transactions.rst.)
        return merge_made_parts(old, committed, new,
                                frozenset(['_annotations']))

    #: the callbacks: a ``PersistentList`` made by the first
    #: ``addCallback`` (None before: one object fewer to store and to load
    #: for the many jobs without callbacks)
    _callbacks = None

    @property
    def callbacks(self):
        """The callbacks added, in order: a ``PersistentList`` once there
        is one, an empty tuple before."""
        callbacks = self._callbacks
        return () if callbacks is None else callbacks

    @callbacks.setter
    def callbacks(self, value):
        self._callbacks = value

    @classmethod
    def bind(cls, *args, **kwargs):
        """A job whose callable receives the job itself as first argument."""
        job = cls(*args, **kwargs)
        job.args.insert(0, job)
        return job

    # -- the callable ----------------------------------------------------

    def callableParts(self):
        """The callable as stored: ``(object, name)`` -- the object whose
        method ``name`` is called, or ``(callable, None)``.  Nothing is
        resolved (the object may be a broken placeholder)."""
        return self._callable_root, self._callable_name

    @property
    def retry_policy(self):
        """The job's retry policy, or None until one was needed
        (``getRetryPolicy`` makes it)."""
        return self._retry_policy

    def markUnloadable(self):
        """Replace a callable that cannot be imported by a
        ``MissingCallable`` naming it, so that the job can be stored again
        (and failed).  Return the ``MissingCallable``, or None if the
        callable was fine."""
        root = self._callable_root
        broken = broken_global(root)
        if broken is None or isinstance(root, MissingCallable):
            return None
        attribute = self._callable_name
        self._callable_root = MissingCallable(broken[0], broken[1], attribute)
        self._callable_name = None
        return self._callable_root

    @property
    def callable(self):
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    @callable.setter
    def callable(self, value):
        if self._status_id != _NEW or self.status != NEW:
            raise interfaces.BadStatusError(
                'can only set callable when a job has NEW status')
        root, name = _split_callable(value)
        self._callable_root = root
        self._callable_name = name
        if (interfaces.IJob.providedBy(root) and root is not self
                and root.parent is None):
            root.parent = self

    # -- status and result -----------------------------------------------

    @property
    def status(self):
        if self._status_id == _NEW:
            return _parent_status(self.parent, self)
        return _STATUS_BY_ID[self._status_id]

    @property
    def result(self):
        return self._result

    # -- scheduling attributes ---------------------------------------------

    @property
    def begin_after(self):
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value):
        if self.status != NEW:
            raise interfaces.BadStatusError(
                'can only set begin_after when a job has NEW status')
        self._begin_after = utils.to_utc(value, 'begin_after')

    @property
    def begin_by(self):
        return self._begin_by

    @begin_by.setter
    def begin_by(self, value):
        if self.status not in (NEW, PENDING):
            raise interfaces.BadStatusError(
                'can only set begin_by when a job has NEW or PENDING status')
        self._begin_by = utils.check_begin_by(value)

    @property
    def quota_names(self):
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value):
        if isinstance(value, (str, bytes)):
            raise TypeError('provide an iterable of names, not the string %r'
                            % (value,))
        value = tuple(value)
        for name in value:
            if not isinstance(name, str):
                raise TypeError('quota names must be strings, not %r'
                                % (name,))
        status = self.status
        if status == PENDING:
            quotas = self.queue.quotas
            for name in value:
                if name not in quotas:
                    raise ValueError('unknown quota name', name)
        elif status != NEW:
            raise interfaces.BadStatusError(
                'can only set quota_names when a job has NEW or PENDING '
                'status')
        self._quota_names = value

    @property
    def timeout(self):
        """At most how many seconds the callable may run (a float), or None:
        no limit.  Past it the callable is stopped, nothing it wrote
        commits, and the job fails with ``JobTimeoutError``.  Set it (a
        number of seconds or a ``timedelta``) while the job is NEW or
        PENDING."""
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        if self.status not in (NEW, PENDING):
            raise interfaces.BadStatusError(
                'can only set timeout when a job has NEW or PENDING status')
        self._timeout = check_timeout(value)

    @property
    def priority(self):
        """Among the due jobs of a queue, higher priorities are claimed
        first (an ``int`` from -100 to 100; default 0).  Set it while the
        job is NEW (``Queue.put(..., priority=)`` does)."""
        return self._priority

    @priority.setter
    def priority(self, value):
        if self.status != NEW:
            raise interfaces.BadStatusError(
                'can only set priority when a job has NEW status')
        self._priority = check_priority(value)

    @property
    def initial_callbacks_end(self):
        if self.key:
            return utils.long_to_dt(self.key)
        return self.key

    # -- where the job is ------------------------------------------------

    @property
    def queue(self):
        obj = self.parent
        seen = {id(self)}
        while obj is not None and id(obj) not in seen:
            if interfaces.IQueue.providedBy(obj):
                return obj
            if not (interfaces.IAbstractJob.providedBy(obj)
                    or interfaces.IAgent.providedBy(obj)
                    or interfaces.IDispatcherAgents.providedBy(obj)):
                return None
            seen.add(id(obj))
            obj = obj.parent
        return None

    @property
    def agent(self):
        obj = self.parent
        seen = {id(self)}
        while interfaces.IJob.providedBy(obj) and id(obj) not in seen:
            seen.add(id(obj))
            obj = obj.parent
        if interfaces.IAgent.providedBy(obj):
            return obj
        return None

    def __repr__(self):
        try:
            call = _repr_call(self._callable_root, self._callable_name,
                              self.args, self.kwargs)
        except Exception:
            call = '?'
        return '<%s ``%s``>' % (utils.custom_repr(self), call)

    # -- hooks -----------------------------------------------------------

    def setUp(self):
        """Called before each attempt; the result is passed to tearDown."""
        return None

    def tearDown(self, setup_info):
        """Called after each attempt (after its commit or abort)."""

    # -- callbacks -------------------------------------------------------

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        callback = _prepare_callback(
            callback, failure_log_level, retry_policy_factory, self)
        if self._callbacks is None:
            self._callbacks = persistent.list.PersistentList()
        self._callbacks.append(callback)
        if self._status_id == _COMPLETED:
            chosen = callback
            if interfaces.ICallbackProxy.providedBy(callback):
                chosen = callback.getJob(self.result)
            chosen(self.result)   # commits
        else:
            # Conflict with a concurrent change of status, so that the
            # adder retries and then sees the job COMPLETED.
            self._p_changed = True
        return callback

    # -- retry policy ----------------------------------------------------

    def getRetryPolicy(self):
        policy = self._retry_policy
        if policy is None:
            factory = self.retry_policy_factory
            if factory is None:
                policy = zope.component.queryAdapter(
                    self, interfaces.IRetryPolicy)
                if policy is None:
                    policy = RetryCommonFourTimes(self)
            elif isinstance(factory, str):
                policy = zope.component.getAdapter(
                    self, interfaces.IRetryPolicy, factory)
            else:
                policy = factory(self)
            self._retry_policy = policy
        return policy

    def _getRetry(self, call_name, tm, *args):
        # Past its deadline a job is not tried again (zc.async had the
        # comparison the wrong way round).
        if utils.deadline_passed(self.begin_after, self.begin_by,
                                 utils.now()):
            return False
        policy = utils.never_fail(
            self.getRetryPolicy,
            'getting retry policy for %r' % (self,), tm)
        call = getattr(policy, call_name, None)
        if call is None:
            events_log.error('retry policy %r for %r does not have required '
                             '%s method', policy, self, call_name)
            return None
        identifier = 'getting %s retry for %r' % (call_name, self)
        result = utils.never_fail(lambda: call(*args), identifier, tm)
        self._check_reassigned((ACTIVE,))
        return result

    # -- reassignment ----------------------------------------------------

    def _check_reassigned(self, expected):
        status = self.status
        reassigned = status not in expected
        if not reassigned:
            agent = self.parent
            agent_name = zlocal.getAgentName()
            if (agent_name is not None
                    and interfaces.IAgent.providedBy(agent)
                    and not interfaces.IJob.providedBy(self._result)):
                dispatcher = zlocal.getDispatcher()
                record = getattr(agent, 'parent', None)
                if (getattr(agent, 'name', None) != agent_name
                        or (dispatcher is not None and record is not None
                            and getattr(record, 'UUID', None)
                            != dispatcher.UUID)):
                    reassigned = True
        if reassigned:
            events_log.error(
                '%r was reassigned: its dispatcher was taken for dead '
                'and another took the job over (pings late -- a busy '
                'machine, slow commits -- or a ping death interval that is '
                'too short); nothing of this run commits', self)
            raise interfaces.ReassignedError()

    # -- running ---------------------------------------------------------

    def __call__(self, *args, **kwargs):
        statuses = (NEW, ASSIGNED)
        if self.status not in statuses:
            raise interfaces.BadStatusError(
                'can only call a job with NEW or ASSIGNED status')
        tm = utils.transaction_manager(self)
        previous_job = zlocal.local.job
        try:
            return self._call(tm, statuses, args, kwargs)
        finally:
            zlocal.local.job = previous_job

    def start(self):
        """Make the job ACTIVE without committing.

        A dispatcher does this in the transaction that claims the job, which
        saves a commit per job; then it runs the job with ``runStarted``.
        """
        statuses = (NEW, ASSIGNED)
        if self.status not in statuses:
            raise interfaces.BadStatusError(
                'can only start a job with NEW or ASSIGNED status')
        self._check_reassigned(statuses)
        self._status_id = _ACTIVE
        self.active_start = utils.now()

    def runStarted(self):
        """Run a job made ACTIVE by ``start`` (and committed since)."""
        if (self._status_id != _ACTIVE
                or interfaces.IJob.providedBy(self._result)):
            raise interfaces.BadStatusError(
                'can only run a started job that has ACTIVE status')
        tm = utils.transaction_manager(self)
        previous_job = zlocal.local.job
        try:
            return self._call(tm, None, (), {})
        finally:
            zlocal.local.job = previous_job

    def _call(self, tm, statuses, args, kwargs):
        """Run the job.  ``statuses`` None: it was started already."""

        def prepare():
            self._check_reassigned(statuses)
            self._status_id = _ACTIVE
            self.active_start = utils.now()
            effective_args = list(self.args)
            effective_args.extend(args)
            effective_kwargs = dict(self.kwargs)
            effective_kwargs.update(kwargs)
            return effective_args, effective_kwargs

        if statuses is None:
            self._check_reassigned((ACTIVE,))
            effective_args = list(self.args)
            effective_kwargs = dict(self.kwargs)
        else:
            effective_args, effective_kwargs = utils.never_fail(
                prepare, 'preparing %r' % (self,), tm)
        data_cache = {}
        while True:
            zlocal.local.job = self
            setup = [_NO_SETUP]   # what setUp returned, once it has

            def call():
                setup[0] = self.setUp()
                with timeouts.running():
                    return self.callable(*effective_args, **effective_kwargs)
            # Whatever the callable raises -- SystemExit, KeyboardInterrupt
            # and other BaseExceptions included -- fails the job: it must
            # not end its thread and leave the job ACTIVE.
            res, decision = self._step(
                call, 'jobError', setup, data_cache, tm, catch=BaseException,
                explosive=(interfaces.ReassignedError, timeouts.Abandoned,
                           GroupSplit))
            if decision is _RESCHEDULED:
                return self
            if decision:
                continue
            res = self._refuse_unqueued_job(from_twisted(res))
            # The result, and with it the callable's effects, commit now.
            outcome, decision = self._step(
                lambda: self._set_result(res, tm, data_cache), 'commitError',
                setup, data_cache, tm)
            if decision is None:
                run_callbacks = outcome
                self._tear_down(setup[0], tm)
            elif decision is _RESCHEDULED:
                return self
            elif decision:
                continue
            else:
                self._log_discarded_outcome(res, outcome)
                self._store_commit_failure(outcome, data_cache, tm)
                res = outcome
                run_callbacks = True
            if self._status_id in (_CALLBACKS, _COMPLETED):
                self._log_completion(res)
            if run_callbacks:
                utils.never_fail(self.resumeCallbacks,
                                 'performing callbacks of %r' % (self,), tm)
            return res

    def _step(self, step, call_name, setup, data_cache, tm,
              catch=Exception, explosive=utils.EXPLOSIVE_ERRORS):
        """Run ``step()`` -- the callable, or the commit of its result.
        Return ``(value, None)``; after an error of ``catch``, ``(failure,
        decision)`` with ``_after_error``'s decision.  ``explosive``
        errors abort, tear down (``setup[0]``: what ``setUp`` returned) and
        propagate."""
        try:
            return step(), None
        except explosive:
            tm.abort()
            self._tear_down(setup[0], tm)
            raise
        except interfaces.JobStoppedError as e:
            tm.abort()   # (and see a cancellation committed meanwhile)
            if not e.args:   # (sent by zasync.timeouts, without a message)
                e.args = self._stopped_message(e)
            failure = Failure()
            return failure, self._after_error(call_name, failure, setup[0],
                                              data_cache, tm)
        except catch:
            failure = Failure()
            return failure, self._after_error(call_name, failure, setup[0],
                                              data_cache, tm)

    def _stopped_message(self, error):
        """The arguments of the ``JobStoppedError`` that stopped us."""
        ran = None
        if self.active_start is not None:
            ran = (utils.now() - self.active_start).total_seconds()
        if isinstance(error, interfaces.CancelledError):
            request = self.cancel_requested
            what = ('cancelled ' + request.describe() if request is not None
                    else 'cancelled')
            after = ' after %.1f s' % ran if ran is not None else ''
            return ('%s; stopped%s, nothing it wrote was committed'
                    % (what, after),)
        after = ' (it ran for %.1f s)' % ran if ran is not None else ''
        return ('stopped at its timeout of %g s%s; nothing it wrote was '
                'committed' % (self.effectiveTimeout() or 0, after),)

    def effectiveTimeout(self):
        """The job's ``timeout``, else its agent's (``Agent.timeout``), or
        None."""
        if self._timeout is not None:
            return self._timeout
        agent = self.agent
        return getattr(agent, 'timeout', None) if agent is not None else None

    def _refuse_unqueued_job(self, res):
        """A job returned by the callable is waited for; one that can
        never run -- this job itself, or, for a job of a queue, a job put
        in no queue -- would keep this one ACTIVE forever: fail it
        instead.  (A job among our own arguments may be queued later by
        our callbacks, as ``serial``/``parallel`` do with their
        postprocess.)"""
        if not interfaces.IJob.providedBy(res):
            return res
        if res is self:
            problem = 'returned itself'
        elif (res.status == NEW and res.parent is None
              and self.queue is not None
              and not any(arg is res for arg in self.args)
              and not any(arg is res for arg in self.kwargs.values())):
            problem = ('returned a job that is in no queue (put it in one, '
                       'e.g. zasync.local.getQueue().put(job), and return '
                       'what put returns)')
        else:
            return res
        return Failure(ValueError('%r %s' % (self, problem)))

    def _tear_down(self, setup_info, tm):
        if setup_info is _NO_SETUP:
            return   # setUp failed: there is nothing to tear down
        utils.try_five_times(lambda: self.tearDown(setup_info),
                             'tearing down %r' % (self,), tm, commit=False)

    def _after_error(self, call_name, failure, setup_info, data_cache, tm):
        """After the callable or the commit failed: abort, tear down, ask
        the retry policy (its ``call_name`` method).  True: call again now;
        ``_RESCHEDULED``: the job went back to its queue; False: keep the
        failure."""
        tm.abort()
        self._tear_down(setup_info, tm)
        if failure.check(interfaces.CancelledError):
            return False   # (whatever the retry policy would say)
        retry = self._getRetry(call_name, tm, failure, data_cache)
        if isinstance(retry, _TIME_TYPES):
            rescheduled = utils.never_fail(
                lambda: self._reschedule(retry, data_cache),
                'rescheduling %r' % (self,), tm)
            return _RESCHEDULED if rescheduled is not None else False
        return bool(retry)

    def _store_commit_failure(self, failure, data_cache, tm):
        def store():
            self._check_reassigned((ACTIVE,))
            self._result = failure
            self._status_id = _CALLBACKS
            self.active_end = utils.now()
            if self._retry_policy is not None and data_cache:
                self._retry_policy.updateData(data_cache)
        utils.never_fail(store, 'storing commit failure of %r' % (self,), tm)

    def _log_discarded_outcome(self, res, failure):
        if isinstance(res, Failure):
            events_log.log(
                self._failure_level(),
                'Commit failed for %r (see subsequent traceback).  Prior to '
                'this, job failed with traceback:\n%s', self,
                res.getTraceback(detail='verbose', elideFrameworkCode=True))
        else:
            events_log.info(
                'Commit failed for %r (see subsequent traceback).  Prior to '
                'this, job succeeded with result: %r', self, res)
        events_log.log(self._failure_level(), 'The commit failed with:\n%s',
                       failure.getTraceback())

    def _failure_level(self):
        if self.failure_log_level is None:
            return logging.ERROR
        return self.failure_log_level

    def _log_completion(self, res):
        where = ''
        if zlocal.getDispatcher() is not None:
            where = ' in thread %s' % threading.get_ident()
        if isinstance(res, Failure):
            events_log.log(
                self._failure_level(), '%r failed%s with traceback:\n%s',
                self, where,
                res.getTraceback(detail='verbose', elideFrameworkCode=True))
        else:
            trace_log.info('%r succeeded%s with result:\n%r',
                           self, where, res)

    def _set_result(self, res, tm, data_cache=None):
        """Store the result and commit; return whether callbacks are due."""
        run_callbacks = True
        if interfaces.IJob.providedBy(res):
            # Wait for the inner job; it calls us back with its result --
            # at once if it has completed already, and then we are done.
            self._result = res
            res.addCallback(self._callback)
            run_callbacks = False
        elif Deferred is not None and isinstance(res, Deferred):
            res.addBoth(_DeferredResult(self))
            run_callbacks = False
        else:
            # A Twisted Failure returned by the callable is recorded as
            # ours (it cannot be pickled).
            res = self._result = from_twisted(res)
            self.active_end = utils.now()
            if len(self.callbacks):
                self._status_id = _CALLBACKS
            else:
                # Nothing else to do: complete in the same commit.  (A
                # callback added concurrently makes this commit conflict,
                # see addCallback.)
                self._complete()
                run_callbacks = False
        if self._retry_policy is not None and data_cache:
            self._retry_policy.updateData(data_cache)
        tm.commit()
        return run_callbacks

    def _complete(self):
        self._status_id = _COMPLETED
        if self.unique_key is not None:
            queue = self.queue
            if queue is not None:
                queue.releaseUniqueKey(self)
        if interfaces.IAgent.providedBy(self.parent):
            self.parent.jobCompleted(self)

    def _callback(self, res):
        """Receive the result of an inner job (or Deferred)."""
        tm = utils.transaction_manager(self)
        if self._status_id == _ACTIVE:
            self._set_result(res, tm)
            self._log_completion(res)
        if self._status_id == _CALLBACKS:
            self.resumeCallbacks()

    # -- failing, callbacks, interrupts ------------------------------------

    def fail(self, e=None):
        """Fail a job that has not run: callbacks get a ``Failure``."""
        status = self.status
        if status in (ACTIVE, COMPLETED):
            raise interfaces.BadStatusError(
                'can only call fail on a job with NEW, PENDING, ASSIGNED, '
                'or CALLBACKS status')
        if status == CALLBACKS:
            self.resumeCallbacks()
            return
        if e is None:
            e = interfaces.TimeoutError()
        if status == PENDING:
            self.queue.remove(self)
        tm = utils.transaction_manager(self)
        failure = Failure(e)
        self._result = failure
        self._status_id = _CALLBACKS
        self.active_end = utils.now()
        tm.commit()
        self._log_completion(failure)
        self.resumeCallbacks()

    def cancel(self, reason=None, principal=None):
        """Cancel the job, in the caller's transaction; return the
        ``CancelRequest`` (``reason``: why, ``principal``: who, an id).

        - PENDING (or held) in a queue: it leaves the queue, and a job
          queued first in line fails it with ``CancelledError`` (its
          callbacks run in a worker, as for any failure); it never runs.
        - NEW, in no queue: it completes with that failure at once (with
          callbacks, as ``fail`` does: they run here, and that commits).
        - ACTIVE (or ASSIGNED): ``cancel_requested`` is set; once the
          caller commits, the dispatcher running it stops it, as at a
          timeout, and it completes with ``CancelledError`` (nothing it
          wrote commits).  A job waiting for another (``serial``,
          ``parallel``, a job its callable returned) cancels what it waits
          for, and completes with the failure.
        - CALLBACKS or COMPLETED: ``BadStatusError``.

        Cancelling a job twice keeps the first request.
        """
        status = self.status
        if status in (CALLBACKS, COMPLETED):
            raise interfaces.BadStatusError(
                'cannot cancel a job that has a result already (it is %s)'
                % (status.title.lower(),))
        if self.cancel_requested is not None:
            return self.cancel_requested
        request = CancelRequest(reason, principal)
        self.cancel_requested = request
        if status in (ACTIVE, ASSIGNED):
            if interfaces.IJob.providedBy(self._result):
                self._cancel_awaited(request)
            queue = self.queue
            if queue is not None:
                queue.noteCancelRequest()
        elif status == PENDING:
            queue = self.parent
            if not interfaces.IQueue.providedBy(queue):
                raise interfaces.BadStatusError(
                    'cannot cancel a job that is being handled in its queue '
                    'already (it waits under %r)' % (queue,))
            queue.failJob(self, error=request.error())
        else:
            self._cancel_unqueued(request)
        return request

    def _cancel_unqueued(self, request):
        """Cancel a NEW job in no queue."""
        if len(self.callbacks):
            self.fail(request.error())
            return
        self._result = Failure(request.error())
        self._status_id = _COMPLETED
        self.active_end = utils.now()

    def _cancel_awaited(self, request):
        """Cancel the unfinished parts of a ``serial``/``parallel`` job,
        and the job it waits for (its postprocess, or the job its
        callable returned): that one fails, and we with it."""
        parts = []
        if self._callable_root in (_schedule_serial, _schedule_parallel):
            parts = [job for job in self.args
                     if interfaces.IJob.providedBy(job)]
        awaited = self._result
        for job in parts + [awaited]:
            if job.status in (CALLBACKS, COMPLETED):
                continue
            if job.cancel_requested is not None:
                continue
            if (job is awaited and job.status == NEW
                    and self.queue is not None):
                # A postprocess not queued yet: queued to be failed, so
                # that its callbacks (ours) run in a worker.
                job.cancel_requested = request
                self.queue.put(job)
                self.queue.failJob(job, error=request.error())
                continue
            job.cancel(request.reason, request.principal)

    def failRunning(self, error):
        """Complete this ACTIVE job with ``error`` (an exception, or an
        exception class: ``JobTimeoutError`` or ``CancelledError``) without
        running its callable: a dispatcher does this for a run it stopped
        and had to give up on (its thread was stuck in C code), and for a
        job cancelled after it was claimed.  A timed out job may be tried
        again, as its retry policy says (it goes back to its queue); a
        cancelled one never is.  Commits and runs the callbacks; returns
        the failure (or the job, back in its queue)."""
        if (self._status_id != _ACTIVE
                or interfaces.IJob.providedBy(self._result)):
            raise interfaces.BadStatusError(
                'can only fail a running job that has ACTIVE status')
        self._check_reassigned((ACTIVE,))
        tm = utils.transaction_manager(self)
        if isinstance(error, type):
            error = error(*self._stopped_message(error()))
        failure = Failure(error)
        if not isinstance(error, interfaces.CancelledError):
            data_cache = {}
            retry = self._getRetry('jobError', tm, failure, data_cache)
            if retry:
                when = retry if isinstance(retry, _TIME_TYPES) else (
                    datetime.timedelta(0))
                if self._reschedule(when, data_cache) is not None:
                    tm.commit()
                    return self
        self._complete_with(failure, tm)
        return failure

    def resumeCallbacks(self):
        """Run the callbacks that still have to run; then COMPLETED."""
        if self._status_id != _CALLBACKS:
            raise interfaces.BadStatusError(
                'can only resumeCallbacks on a job with CALLBACKS status')
        self._check_reassigned((CALLBACKS,))
        tm = utils.transaction_manager(self)
        done = 0
        while True:
            callbacks = list(self.callbacks)[done:]
            if not callbacks:
                break
            for callback in callbacks:
                self._check_reassigned((CALLBACKS,))
                self._run_callback(callback)
            done += len(callbacks)
            tm.begin()   # see callbacks added meanwhile by others
        self._complete()
        tm.commit()

    def _run_callback(self, callback):
        if interfaces.ICallbackProxy.providedBy(callback):
            callback = callback.getJob(self.result)
        status = callback.status
        if status in (NEW, PENDING, ASSIGNED):
            if utils.deadline_passed(callback.begin_after,
                                     callback.begin_by, utils.now()):
                events_log.error('failing expired callback %r to %r',
                                 callback, self)
                callback.fail()
            else:
                trace_log.debug('starting callback %r to %r', callback, self)
                callback(self.result)
        elif status == ACTIVE:
            callback.handleCallbackInterrupt(self)
        elif status == CALLBACKS:
            callback.resumeCallbacks()

    def handleInterrupt(self):
        """Called (through a wrapper job) after the job's dispatcher died.

        A job that was waiting for the job its callable returned keeps
        waiting (running the callable again would make a second one); one
        that completed meanwhile needs nothing.
        """
        status = self.status
        if status == ACTIVE:
            if self._waits_for_inner_job('interrupted job %r' % (self,)):
                return
            tm = utils.transaction_manager(self)
            if self.cancel_requested is not None:
                # Cancelled while it ran: not run again.
                self._complete_with(
                    Failure(self.cancel_requested.error()), tm)
                return
            retry = self._getRetry('interrupted', tm)
            queue = self.queue
            if retry and queue is None:
                # Only a wrapper claimed from the queue without an agent
                # loses the way back to it.
                events_log.error(
                    'interrupted job %r cannot be retried: it is in no queue '
                    '(was its interrupt wrapper claimed without an agent?); '
                    'aborting it', self)
                retry = False
            if isinstance(retry, _TIME_TYPES):
                self._reschedule(retry, queue=queue)
            elif retry:
                self._reschedule(datetime.timedelta(0), queue=queue)
            else:
                self._abort_interrupted(tm)
        elif status == CALLBACKS:
            self.resumeCallbacks()
        elif status == COMPLETED:
            trace_log.info('%r completed before its interrupt was handled',
                           self)
        else:
            raise interfaces.BadStatusError(
                'can only handle an interrupt of a job with ACTIVE, '
                'CALLBACKS or COMPLETED status')

    def _waits_for_inner_job(self, description):
        """If this ACTIVE job waits for an inner job, adopt the inner job's
        result if it has one, and return True (nothing else to do)."""
        inner = self._result
        if not interfaces.IJob.providedBy(inner):
            return False
        if inner.status == COMPLETED:
            events_log.warning(
                '%s: its inner job %r had completed but the result had not '
                'arrived; adopting it.', description, inner)
            self._callback(inner.result)
        else:
            trace_log.info('%s goes on waiting for its inner job %r',
                           description, inner)
        return True

    def _abort_interrupted(self, tm):
        policy = self._retry_policy
        data = getattr(policy, 'data', None) or {}
        count = data.get('interruptions')
        failure = Failure(interfaces.AbortedError(
            'interrupted%s -- its dispatcher stopped or died while it ran -- '
            'and its retry policy (%s) did not try again: the work was '
            'abandoned' % (
                ' %d times' % count if isinstance(count, int) and count > 1
                else '', type(policy).__name__ if policy is not None
                else 'none')))
        self._complete_with(failure, tm)

    def _complete_with(self, failure, tm):
        """Store ``failure`` as the result (commit), log it, run the
        callbacks."""
        if self._set_result(failure, tm):
            self._log_completion(failure)
            self.resumeCallbacks()
        else:
            self._log_completion(failure)

    def handleCallbackInterrupt(self, caller):
        """Deal with this callback having been interrupted while running."""
        if self._status_id != _ACTIVE:
            raise interfaces.BadStatusError(
                'can only handleCallbackInterrupt on a job with ACTIVE status')
        if caller.status != CALLBACKS:
            raise interfaces.BadStatusError(
                'can only handleCallbackInterrupt with caller in CALLBACKS '
                'status')
        if self._waits_for_inner_job(
                'interrupted callback %r of %r' % (self, caller)):
            return
        tm = utils.transaction_manager(self)
        retry = self._getRetry('interrupted', tm)
        if isinstance(retry, _TIME_TYPES):
            events_log.error(
                'retry policy for callback %r returned a time (%r); callbacks '
                'cannot be rescheduled, retrying now', self, retry)
            retry = True
        if retry:
            trace_log.debug('retrying interrupted callback %r to %r',
                            self, caller)
            self._status_id = _NEW
            self.active_start = None
            tm.commit()
            self(caller.result)
        else:
            trace_log.debug('aborting interrupted callback %r to %r',
                            self, caller)
            self._abort_interrupted(tm)

    def _reschedule(self, when, data_cache=None, queue=None):
        if not isinstance(when, _TIME_TYPES):
            raise TypeError('when must be a datetime or timedelta, not %r'
                            % (when,))
        if queue is None:
            agent = self.parent
            if not interfaces.IAgent.providedBy(agent):
                events_log.critical(
                    'can only reschedule a job directly in an agent: %r',
                    self)
                return None
            # The agent's queue; IAgent does not declare ``queue``, so
            # else the queue among its parents (as zc.async found it).
            queue = getattr(agent, 'queue', None)
            if queue is None:
                queue = self.queue
            if queue is None:
                events_log.critical(
                    'cannot reschedule a job whose agent is in no queue: %r',
                    self)
                return None
        if data_cache and self._retry_policy is not None:
            self._retry_policy.updateData(data_cache)
        self._status_id = _NEW
        self.active_start = None
        if interfaces.IAgent.providedBy(self.parent):
            self.parent.remove(self)
        self.parent = None
        current = utils.now()
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=utils.UTC)
            when = when.astimezone(utils.UTC)
        else:
            when = current + when
        if when <= current:
            if self._begin_after is None:
                self._begin_after = current
            queue.putBack(self)
        else:
            queue.put(self, begin_after=when)
        return self


class _DeferredResult:
    """Commits the result of a Deferred returned by a job's callable.

    Called in whatever thread fires the Deferred; works in a connection of
    its own, retrying conflicts.
    """

    def __init__(self, job):
        self.db = job._p_jar.db()
        self.oid = job._p_oid

    def __call__(self, result):
        result = from_twisted(result)
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            job = conn.get(self.oid)
            utils.never_fail(lambda: job._callback(result),
                             'committing Deferred result of %r' % (job,), tm)
        finally:
            tm.abort()
            conn.close()
        return None


# --------------------------------------------------------------------------
# Callback proxies


def _pass_through(result):
    """The callback a proxy runs when it has no job for a result."""
    return result


@zope.interface.implementer(interfaces.ICallbackProxy)
class ConditionalCallbackProxy(_AddCallbacks, utils.Base):
    """A callback that picks its job by testing the result.

    ``ConditionalCallbackProxy((condition, job), ..., default)``: the first
    pair whose ``condition(result)`` is true gives the job; else ``default``;
    with no job, the result passes through unchanged.
    """

    job = None

    def __init__(self, *conditionals, failure_log_level=None,
                 retry_policy_factory=None):
        conditionals = list(conditionals)
        default = None
        if conditionals and not isinstance(conditionals[-1], (tuple, list)):
            default = conditionals.pop()
        self.failure_log_level = failure_log_level
        self.retry_policy_factory = retry_policy_factory
        prepared = persistent.list.PersistentList()
        for pair in conditionals:
            condition, job = pair
            if not callable(condition):
                raise TypeError('condition %r is not callable' % (condition,))
            prepared.append((condition, self._prepare(job)))
        self.conditionals = prepared
        self.default = self._prepare(default)
        self.callbacks = persistent.list.PersistentList()

    def _prepare(self, job):
        if job is None:
            return None
        return _prepare_callback(
            job, self.failure_log_level, self.retry_policy_factory, self)

    def getJob(self, result):
        if self.job is None:
            chosen = self.default
            for condition, job in self.conditionals:
                if condition(result):
                    chosen = job
                    break
            if chosen is None:
                chosen = self._prepare(Job(_pass_through))
            for callback in self.callbacks:
                chosen.addCallback(callback)
            self.job = chosen
        return self.job

    @property
    def status(self):
        if self.job is None:
            return _parent_status(self.parent, self)
        return self.job.status

    @property
    def result(self):
        if self.job is None:
            return None
        return self.job.result

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        if self.job is not None:
            return self.job.addCallback(
                callback, failure_log_level, retry_policy_factory)
        callback = _prepare_callback(
            callback, failure_log_level, retry_policy_factory, self)
        self.callbacks.append(callback)
        self._p_changed = True
        return callback

    def __repr__(self):
        return '<%s>' % utils.custom_repr(self)


class SuccessFailureCallbackProxy(ConditionalCallbackProxy):
    """Runs ``failure`` for a ``Failure`` result, ``success`` otherwise."""

    def __init__(self, success, failure, failure_log_level=None,
                 retry_policy_factory=None):
        super().__init__(
            (isFailure, failure), success,
            failure_log_level=failure_log_level,
            retry_policy_factory=retry_policy_factory)

    @property
    def success(self):
        return self.default

    @property
    def failure(self):
        return self.conditionals[0][1]


# --------------------------------------------------------------------------
# serial() and parallel(): run jobs one after the other, or all at once,
# then a postprocess job receiving them.
#
# The returned job must be put in a queue: its callable (a scheduler below)
# queues the components from within the running job.  Every function here
# is module-level, so the jobs referring to them can be stored.

def success_or_failure(success, failure, result):
    """``success(result)``, or ``failure(result)`` when ``result`` is a
    failure; ``result`` itself when that one is None (zc.async's legacy
    callback for ``addCallbacks``, kept for jobs stored with it)."""
    handler = failure if isinstance(result, Failure) else success
    if handler is None:
        return result
    return handler(result)


def _jobs_tuple(*jobs):
    """The default postprocess: the component jobs themselves."""
    return jobs


def _prepare(jobs, kwargs, scheduler):
    postprocess = kwargs.pop('postprocess', _jobs_tuple)
    if kwargs:
        raise TypeError('only accepts one keyword argument, '
                        '``postprocess``; got %s' % ', '.join(sorted(kwargs)))
    jobs = [as_job(job) for job in jobs]
    return Job(scheduler, *jobs, postprocess=as_job(postprocess))


def serial(*jobs, **kwargs):
    """A job running ``jobs`` one after the other (whatever their outcome),
    then ``postprocess(*jobs)``; its result is the postprocess's."""
    return _prepare(jobs, kwargs, _schedule_serial)


def parallel(*jobs, **kwargs):
    """A job running ``jobs`` at the same time, then ``postprocess(*jobs)``
    once all are done; its result is the postprocess's."""
    return _prepare(jobs, kwargs, _schedule_parallel)


def _queue_postprocess(main_job, queue):
    postprocess = main_job.kwargs['postprocess']
    if postprocess.status == NEW:
        postprocess.args.extend(main_job.args)
        queue.put(postprocess)


# -- serial ------------------------------------------------------------------

def _schedule_serial(*jobs, **kwargs):
    main_job = zlocal.getJob()
    _queue_next(main_job, 0)
    return kwargs['postprocess']


def _queue_next(main_job, index, ignored_result=None):
    """Queue the first component from ``index`` on that has not run, with a
    callback that queues the next one; after the last, queue the
    postprocess.

    Also how a scheduler run again (after an interrupt) resumes: finished
    components are skipped, but one that is still pending or running is
    waited for -- its callback goes on -- rather than overtaken (zc.async
    queued the next one beside it).
    """
    queue = main_job.queue
    jobs = main_job.args
    while index < len(jobs) and jobs[index].status in (CALLBACKS, COMPLETED):
        index += 1
    if index == len(jobs):   # with no components at all, straight on
        _queue_postprocess(main_job, queue)
        return
    job = jobs[index]
    if job.status == NEW:
        queue.put(job)
    elif _continues(job, main_job):
        return
    job.addCallback(Job(_queue_next, main_job, index + 1))


def _continues(job, main_job):
    """Whether ``job`` has the callback that continues ``main_job``."""
    for callback in job.callbacks:
        if (getattr(callback, 'callable', None) is _queue_next
                and callback.args[0] is main_job):
            return True
    return False


# -- parallel ----------------------------------------------------------------

def _schedule_parallel(*jobs, **kwargs):
    _check_parallel(zlocal.getJob())
    return kwargs['postprocess']


def _check_parallel(main_job, ignored_result=None):
    """Queue the components that are still new -- at first all of them,
    later those that a component or a callback added to ``main_job.args``
    while it ran -- and the postprocess once every component is done."""
    queue = main_job.queue
    for job in main_job.args:
        if job.status == NEW:
            queue.put(job)
            job.addCallback(Job(_check_parallel, main_job))
    if all(job.status in (CALLBACKS, COMPLETED) for job in main_job.args):
        _queue_postprocess(main_job, queue)
