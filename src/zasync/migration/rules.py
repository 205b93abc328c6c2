"""What ``zasync migrate`` renames, and how it rebuilds Python 2 values.

``RENAMES`` maps every global a zc.async 1.5 database refers to --
classes, functions, interfaces -- to its zasync counterpart (or, for the
containers zc.async took from zc.queue, zc.dict and zope.bforest, to a
placeholder in ``zasync.migration.legacy`` that reads the old state until
the migration rebuilds zasync's own structure from it).

``renames`` and ``decoders`` are the same table in zodbupdate's entry-point
format (``'module name': 'module name'``; ``'module class attribute':
'encoding'``), registered as the ``zodbupdate`` / ``zodbupdate.decode``
entry points: ``zodbupdate --convert-py3`` over an application's whole
database applies zasync's part by itself.
"""
import datetime
import zoneinfo

__all__ = ['date', 'datetime_', 'decoders', 'GlobalRenames', 'pytz_utc',
           'pytz_zone', 'RENAMES', 'renames', 'time', 'zcasync_class_name']

_M = 'zasync.migration.legacy'

#: old dotted name -> new dotted name (module and name separated by a dot;
#: the last dot separates the name)
RENAMES = {
    # jobs, callback proxies, retry policies, serial/parallel helpers
    'zc.async.job.Job': 'zasync.job.Job',
    'zc.async.job.SuccessFailureCallbackProxy':
        'zasync.job.SuccessFailureCallbackProxy',
    'zc.async.job.ConditionalCallbackProxy':
        'zasync.job.ConditionalCallbackProxy',
    'zc.async.job.RetryCommonFourTimes': 'zasync.retry.RetryCommonFourTimes',
    'zc.async.job.RetryCommonForever': 'zasync.retry.RetryCommonForever',
    'zc.async.job.NeverRetry': 'zasync.retry.NeverRetry',
    'zc.async.job.callback_retry_policy_factory':
        'zasync.retry.callback_retry_policy_factory',
    'zc.async.job.isFailure': 'zasync.failure.isFailure',
    'zc.async.job.serial': 'zasync.job.serial',
    'zc.async.job.parallel': 'zasync.job.parallel',
    'zc.async.job._schedule_serial': 'zasync.job._schedule_serial',
    'zc.async.job._schedule_parallel': 'zasync.job._schedule_parallel',
    'zc.async.job._queue_next': 'zasync.job._queue_next',
    'zc.async.job._queue_all': 'zasync.job._check_parallel',
    'zc.async.job._transparent': 'zasync.job._jobs_tuple',
    'zc.async.z3.Job': 'zasync.z3.Job',
    # queues, quotas, the dispatcher registry
    'zc.async.queue.Queues': 'zasync.queue.Queues',
    'zc.async.queue.Queue': 'zasync.queue.Queue',
    'zc.async.queue.Quotas': 'zasync.queue.Quotas',
    'zc.async.queue.Quota': 'zasync.queue.Quota',
    'zc.async.queue.Dispatchers': 'zasync.queue.Dispatchers',
    'zc.async.queue.DispatcherAgents': 'zasync.queue.DispatcherAgents',
    # agents and their completed jobs
    'zc.async.agent.Agent': 'zasync.agent.Agent',
    'zc.async.legacy.chooseFirst': _M + '.chooseFirst',
    'zc.async.utils.Periodic': _M + '.Periodic',
    'zc.async.utils.RollingSet': _M + '.Periodic',
    # interfaces (declarations stored on objects) and exceptions
    'zc.async.interfaces.IFilterAgent': 'zasync.interfaces.IFilterAgent',
    'zc.async.interfaces.ICompletedCollection':
        'zasync.interfaces.ICompletedCollection',
    'zc.async.interfaces.TimeoutError': 'zasync.interfaces.TimeoutError',
    'zc.async.interfaces.AbortedError': 'zasync.interfaces.AbortedError',
    'zc.async.interfaces.BadStatusError': 'zasync.interfaces.BadStatusError',
    'zc.async.interfaces.ReassignedError':
        'zasync.interfaces.ReassignedError',
    # the Python-2-only containers zc.async used
    'zc.queue._queue.BucketQueue': _M + '.BucketQueue',
    'zc.queue._queue.CompositeQueue': _M + '.CompositeQueue',
    'zc.queue._queue.Queue': _M + '.BucketQueue',
    'zc.queue.BucketQueue': _M + '.BucketQueue',
    'zc.queue.CompositeQueue': _M + '.CompositeQueue',
    'zope.bforest.periodic.LOBForest': _M + '.Forest',
    'zope.bforest.periodic.OOBForest': _M + '.Forest',
    'zope.bforest.bforest.LOBForest': _M + '.Forest',
    'zope.bforest.bforest.OOBForest': _M + '.Forest',
    # failures: Twisted's, zc.twist's
    'zc.twist.Failure': _M + '.TwistedFailure',
    'twisted.python.failure.Failure': _M + '.TwistedFailure',
    # a waeup.kofa-style job container and its jobs
    'waeup.kofa.async.JobContainer': 'zasync.manager.JobContainer',
    'waeup.kofa.async.AsyncJob': 'zasync.manager.ProgressableJob',
    'waeup.kofa.async.ProgressableJob': 'zasync.manager.ProgressableJob',
    # Python 2 values zodbupdate does not rebuild on its own
    'pytz._UTC': 'zasync.migration.rules.pytz_utc',
    'pytz.utc': 'zasync.migration.rules.pytz_utc',
    'pytz._p': 'zasync.migration.rules.pytz_zone',
    'datetime.datetime': 'zasync.migration.rules.datetime_',
    'datetime.date': 'zasync.migration.rules.date',
    'datetime.time': 'zasync.migration.rules.time',
}

#: Python 2 modules whose names Python 3 keeps elsewhere
_MODULES = {'__builtin__': 'builtins', 'exceptions': 'builtins',
            'copy_reg': 'copyreg', 'UserDict': 'collections',
            'sets': 'builtins'}


def _split(dotted):
    module, _, name = dotted.rpartition('.')
    return module, name


def zcasync_class_name(dotted):
    """The zasync dotted name for a zc.async (or Python 2) one, else the
    name itself: for the class names a failure records."""
    if dotted in RENAMES:
        return RENAMES[dotted]
    module, name = _split(dotted)
    if module in _MODULES:
        return '%s.%s' % (_MODULES[module], name)
    return dotted


class GlobalRenames(dict):
    """``{(module, name): (module, name)}`` as zodbupdate's ObjectRenamer
    reads it: the table, plus the Python 2 builtin modules."""

    def __init__(self, extra=None):
        super().__init__(
            (_split(old), _split(new)) for old, new in RENAMES.items())
        if extra:
            self.update(extra)

    def __contains__(self, key):
        return dict.__contains__(self, key) or (
            isinstance(key, tuple) and len(key) == 2 and key[0] in _MODULES)

    def __missing__(self, key):
        module, name = key
        if module == 'sets' and name in ('Set', 'ImmutableSet'):
            name = 'set' if name == 'Set' else 'frozenset'
        return (_MODULES[module], name)


# --------------------------------------------------------------------------
# Values: called by the unpickler in place of the Python 2 class, so that
# what is stored again is an ordinary Python 3 value.

def _state_bytes(state):
    # Python 2 pickled the packed date as a str: it arrives as bytes, or
    # as text when it happened to be valid UTF-8.
    if isinstance(state, str):
        return state.encode('utf-8')
    return state


def datetime_(*args):
    """``datetime.datetime`` from Python 2 pickle arguments."""
    if args and isinstance(args[0], (bytes, str)):
        return datetime.datetime(_state_bytes(args[0]), *args[1:])
    return datetime.datetime(*args)


def date(*args):
    """``datetime.date`` from Python 2 pickle arguments."""
    if args and isinstance(args[0], (bytes, str)):
        return datetime.date(_state_bytes(args[0]), *args[1:])
    return datetime.date(*args)


def time(*args):
    """``datetime.time`` from Python 2 pickle arguments."""
    if args and isinstance(args[0], (bytes, str)):
        return datetime.time(_state_bytes(args[0]), *args[1:])
    return datetime.time(*args)


def pytz_utc(*args):
    """pytz's UTC (``pytz._UTC()``) as ``datetime.timezone.utc``."""
    return datetime.timezone.utc


def pytz_zone(zone, *args):
    """A pytz zone (``pytz._p(zone, ...)``) as a ``zoneinfo.ZoneInfo``."""
    if zone == 'UTC':
        return datetime.timezone.utc
    return zoneinfo.ZoneInfo(zone)


# --------------------------------------------------------------------------
# zodbupdate's entry points

#: ``zodbupdate`` entry point: the renames, in its format
renames = {' '.join(_split(old)): ' '.join(_split(new))
           for old, new in RENAMES.items()
           if not old.startswith('datetime.')}

#: ``zodbupdate.decode`` entry point: attributes of zasync's classes that
#: hold text (names), in zodbupdate's format
decoders = {
    'zasync.job Job _callable_name': 'utf-8',
    'zasync.queue Queue name': 'utf-8',
    'zasync.queue Quota name': 'utf-8',
    'zasync.agent Agent name': 'utf-8',
}
