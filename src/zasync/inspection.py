"""Read-only queries of a database's queues, returning plain data (dicts,
lists, strings, numbers) that ``zasync status``, ``jobs``, ``job ID`` and
``stats`` (``zasync.cli.inspect``) and the web pages format.

Nothing here writes or commits.  What is found where: pending jobs in the
queues, claimed and running ones in the agents of the dispatcher records,
recently completed ones in the agents' ``completed`` collections,
interrupted ones under the wrapper job that will deal with them, and every
job of a ``JobManager``'s container.

The cost does not grow with the number of jobs kept:

* ``iter_jobs`` is lazy: a listing that stops after ``--limit`` jobs reads
  those jobs (and the heads of the agents' completed collections), not
  the others.  Counting what it did not show reads at most
  ``COUNT_BUDGET`` further jobs; past that it estimates from the lengths
  of the queues and collections (``count_more``).  A filter (state,
  callable) has no index: it reads jobs until enough of them match.
* ``status_info`` and the counts of ``stats_info`` use lengths that the
  structures keep (``len`` of a queue, an agent, a completed collection,
  the job container), the few jobs agents hold, and the index of a
  queue's pending jobs by due time (not the jobs) for the jobs due later.
* outcomes, durations and throughput in ``stats_info`` come from a
  *window*: the newest ``STATS_WINDOW`` completed jobs of all agents
  together (newest first, by completion time).
* ``job_details`` finds where a job is from its own ``parent`` (a queue,
  an agent, a wrapper job) rather than by looking through the others, and
  cuts each repr to ``REPR_LIMIT`` characters unless asked for everything.

A job that cannot be loaded -- its class, its callable or the class of an
argument cannot be imported here (``ZODB.broken``), or unpickling it
raises -- is shown with the reason (``problem``) instead of breaking the
command; ``--state broken`` selects such jobs.

A job's id, as shown and as ``load_job`` reads it back (``job_name``): its
oid in decimal (``19``) for a job of the main database -- the one whose
root the functions are given -- and ``19@async`` for a job of the member
database ``async`` of a multi-database (as with ``multidb.zcml``, whose
queues and jobs live in ``async``): oids are only unique within one
database.
"""
import datetime
import fnmatch
import heapq
import operator
import statistics
import types

import persistent
import ZODB.broken
import ZODB.POSException
import ZODB.utils

from zasync import interfaces
from zasync import utils
from zasync.failure import Failure
from zasync.failure import bounded_repr
from zasync.job import broken_global
from zasync.job import load_problem as engine_load_problem
from zasync.job import tolerant_class_factory

__all__ = ['COUNT_BUDGET', 'OUTCOMES', 'PROBLEM', 'REPR_LIMIT',
           'STATE_NAMES', 'STATS_WINDOW', 'STATUS_LABELS', 'Found',
           'call_text', 'callable_name', 'count_more', 'cut',
           'dispatcher_state', 'find_jobs', 'iter_jobs', 'job_details',
           'queues_of', 'stopped', 'STOPPED', 'unique_jobs',
           'job_address', 'job_id', 'job_name', 'load_job', 'load_problem',
           'locate', 'main_name', 'matches', 'name_in_message',
           'resolve_job_id',
           'outcome', 'parse_states', 'SCHEDULES_LIMIT', 'schedules_info',
           'stats_info', 'status_info', 'when']

STATE_NAMES = {
    'new': interfaces.NEW, 'pending': interfaces.PENDING,
    'assigned': interfaces.ASSIGNED, 'active': interfaces.ACTIVE,
    'callbacks': interfaces.CALLBACKS, 'completed': interfaces.COMPLETED,
}
#: states a job's *outcome* adds to its status
OUTCOMES = ('succeeded', 'failed')
#: failures of jobs stopped from outside (also ``failed``)
STOPPED = ('cancelled', 'timed-out')
#: the state of jobs that cannot be loaded or run (see ``load_problem``)
PROBLEM = 'broken'
#: the status shown for a job that cannot be loaded at all
UNKNOWN = 'unknown'

#: ``job_details`` cuts reprs (arguments, result, call, retry data) to
#: this many characters, followed by ``...[N characters in all]``
REPR_LIMIT = 200
#: ``stats_info`` reads the newest this many completed jobs (all agents
#: together) for outcomes, durations and throughput
STATS_WINDOW = 1000
#: ``count_more`` reads at most this many further jobs
COUNT_BUDGET = 1000
#: the length of a result in a listing
RESULT_WIDTH = 40


# --------------------------------------------------------------------------
# Describing jobs


def job_id(job):
    """A stored job's oid, as an int (unique in its database only: see
    ``job_name``)."""
    return ZODB.utils.u64(job._p_oid)


def _database(obj):
    jar = getattr(obj, '_p_jar', None)
    return jar.db() if jar is not None else None


def _first_member(db):
    """The name of the main database of ``db``'s multi-database, by
    convention the first of its members: zope.conf's first ``<zodb>``, the
    first ``ZODB.DB(..., databases=...)`` made."""
    for name in db.databases:
        return name
    return db.database_name


#: ``(oid, database name)`` of a stored job
job_address = utils.address


def job_name(job, main=None):
    """A stored job's id as the commands and pages show it and
    ``load_job`` reads it: its oid (an int) for a job of the database named
    ``main``, ``'OID@NAME'`` for a job of another database ``NAME`` of the
    multi-database.  ``main`` None: the first member of the
    multi-database (``_first_member``)."""
    number = job_id(job)
    db = _database(job)
    if db is None:
        return number
    if main is None:
        main = _first_member(db)
    name = db.database_name
    return number if name == main else '%d@%s' % (number, name)


def _main_of(root):
    """The name of the database of ``root`` (the main one), or None."""
    db = _database(root)
    return db.database_name if db is not None else None


def main_name(root):
    """The name of the main database, ``root``'s (None for a root that is
    not stored): ``job_name(job, main_name(root))`` is the id that
    ``load_job(root._p_jar, ...)`` reads back."""
    return _main_of(root)


def name_in_message(message, job, main=None):
    """``message`` -- the engine's, which begins with ``job OID``,
    ambiguous in a multi-database -- with ``job`` named by its id
    (``job_name``) instead; any other message as it is."""
    if getattr(job, '_p_oid', None) is None:
        return message
    prefix = 'job %d ' % job_id(job)
    if not message.startswith(prefix):
        return message
    return 'job %s %s' % (job_name(job, main), message[len(prefix):])


def cut(text, limit=REPR_LIMIT):
    """``text``, or its first ``limit`` characters followed by
    ``...[N characters in all]`` (``limit`` None: all of it)."""
    if text is None or limit is None or len(text) <= limit:
        return text
    return '%s...[%d characters in all]' % (text[:limit], len(text))


def _safely(function, default=None):
    try:
        return function()
    except Exception:
        return default


def _why(error):
    """An error loading an object, as one line."""
    return utils.one_line(utils.root_cause(error))


def _is_broken(value):
    """Whether ``value`` is (or is the class of) a ``ZODB.broken``
    placeholder for a class or function that cannot be imported."""
    return broken_global(value) is not None


def _broken_name(value):
    return '%s.%s' % broken_global(value)


def _jobish(state):
    return isinstance(state, dict) and '_callable_root' in state


def _shadow(state):
    """A detached ``Job`` carrying ``state`` (of a job whose own class is
    gone, or that cannot be loaded), to read its attributes; None when
    ``state`` is not a job's."""
    from zasync.job import Job
    if not _jobish(state):
        return None
    shadow = Job.__new__(Job)
    shadow.__setstate__(dict(state))
    return shadow


def _tolerant_state(obj):
    """The state of an object that cannot be loaded (unpickling it
    raises, e.g. a module raising at import), with placeholders for
    what cannot be imported; None if even that fails."""
    try:
        import ZODB.serialize
        conn = obj._p_jar
        data, serial = conn._storage.load(obj._p_oid)
        reader = ZODB.serialize.ObjectReader(conn, conn._cache,
                                             tolerant_class_factory)
        return reader.getState(data)
    except Exception:
        return None


def _view(job):
    """``(view, problem)``: an object to read the job's attributes from
    (the job itself, a stand-in for a job whose class is gone, or None
    when nothing can be read) and why it cannot be loaded or run (None:
    no problem found)."""
    problem = load_problem(job)
    if isinstance(job, ZODB.broken.Broken):
        try:
            job._p_activate()
            return _shadow(job.__Broken_state__), problem
        except Exception:
            return None, problem
    try:
        job._p_activate()
    except Exception:
        return _shadow(_tolerant_state(job)), problem
    return job, problem


def load_problem(job):
    """Why ``job`` cannot be loaded or run here, as a phrase (its class,
    its callable or an argument's class cannot be imported, or loading it
    raises; ``zasync.job.load_problem``), or None."""
    error = engine_load_problem(job)
    return None if error is None else error.reason


def callable_name(job):
    """The dotted name of a job's callable (``module.function``,
    ``module.Class.method``)."""
    try:
        root, name = job.callableParts()
        if _is_broken(root):
            return _broken_name(root) + ('.' + name if name else '')
        call = job.callable
        if isinstance(call, types.MethodType):
            call = call.__func__
        if interfaces.IJob.providedBy(call):
            return 'job %s' % (job_name(call),)
        module = getattr(call, '__module__', None)
        qualname = getattr(call, '__qualname__', None)
        if module and qualname:
            return '%s.%s' % (module, qualname)
        cls = type(call)
        return '%s.%s' % (cls.__module__, cls.__qualname__)
    except Exception:
        return '?'


def _repr(value, limit):
    """A job's part as ``repr(job)`` shows it (``utils.custom_repr``), at
    most ``limit`` characters (None: all)."""
    if isinstance(value, type) and _is_broken(value):
        return _broken_name(value)   # (a function that cannot be imported)
    if isinstance(value, persistent.Persistent) or isinstance(
            value, (types.FunctionType, types.BuiltinFunctionType)):
        text = utils.custom_repr(value)
    elif limit is None:
        try:
            text = utils.custom_repr(value)
        except Exception as e:
            text = '<unrepresentable %s: %s>' % (type(value).__name__,
                                                 utils.one_line(e))
    else:
        text = bounded_repr(value, limit)
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 3)] + '...'
    return text


def _call_from_parts(job, root_text, args, kwargs):
    call = root_text
    name = job.callableParts()[1]
    if name is not None:
        call += ' :' + name
    parts = list(args)
    parts.extend('%s=%s' % (key, text) for key, text in kwargs.items())
    return '%s(%s)' % (call, ', '.join(parts))


def call_text(job, limit=None):
    """The call a job makes, as its repr shows it (``module.f(1, 2)``); with
    ``limit``, each part and the whole at most about ``limit`` characters
    (``...`` where cut), without representing big arguments in full."""
    from zasync.job import Job
    if type(job).__repr__ is not Job.__repr__:
        try:   # a subclass's own repr
            text = repr(job)
        except Exception:
            return callable_name(job)
        # '<zasync.job.Job (oid 12, db 'unnamed') ``call(args)``>' -> call
        if '``' in text:
            text = text.split('``', 1)[1].rsplit('``', 1)[0]
    else:
        try:
            root, name = job.callableParts()
            call = _repr(root, limit)
            if name is not None:
                call += ' :' + name
            parts = []
            size = 0
            for arg in job.args:
                parts.append(_repr(arg, limit))
                size += len(parts[-1]) + 2
                if limit is not None and size > limit:
                    break
            else:
                for key, value in job.kwargs.items():
                    parts.append('%s=%s' % (key, _repr(value, limit)))
                    size += len(parts[-1]) + 2
                    if limit is not None and size > limit:
                        break
            text = '%s(%s)' % (call, ', '.join(parts))
        except Exception:
            return callable_name(job)
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 3)] + '...'
    return text


def when(value):
    if value is None:
        return None
    return value.astimezone(utils.UTC).isoformat(timespec='milliseconds')


def _seconds(delta):
    return None if delta is None else delta.total_seconds()


def outcome(job):
    """``'succeeded'`` / ``'failed'`` for a job with a result, else None."""
    if job.status not in (interfaces.CALLBACKS, interfaces.COMPLETED):
        return None
    return 'failed' if isinstance(job.result, Failure) else 'succeeded'


def stopped(job):
    """``'cancelled'`` / ``'timed-out'`` for a job that failed because it
    was cancelled or timed out, else None."""
    result = job.result
    if job.status not in (interfaces.CALLBACKS, interfaces.COMPLETED) or (
            not isinstance(result, Failure)):
        return None
    if result.check(interfaces.CancelledError):
        return 'cancelled'
    if result.check(interfaces.JobTimeoutError):
        return 'timed-out'
    return None


def _result_summary(job):
    result = job.result
    if job.status not in (interfaces.CALLBACKS, interfaces.COMPLETED):
        if interfaces.IJob.providedBy(result):
            return 'waiting for job %s' % (job_name(result),)
        return ''
    if isinstance(result, Failure):
        return 'failed: %s' % utils.one_line(result)
    return _repr(result, RESULT_WIDTH)


def _status_label(view):
    if view is None:
        return UNKNOWN
    status = _safely(lambda: view.status)
    if status is None:
        return UNKNOWN
    return STATUS_LABELS.get(status, str(status))


class Found:
    """A job and where it was found.

    ``view`` is what to read the job's attributes from (None when nothing
    can be read), ``problem`` why it cannot be loaded or run (None: none
    found); both are worked out on first use.
    """

    _unset = object()

    def __init__(self, job, queue, where, dispatcher=None, agent=None,
                 problem=None, main=None):
        self.job = job                # None: a part that cannot be read
        self.queue = queue
        self.where = where            # pending / claimed / completed / ...
        self.dispatcher = dispatcher  # the record's UUID
        self.agent = agent
        self.main = main              # the main database's name (job_name)
        self._view = self._problem = self._unset
        if job is None:
            self._view, self._problem = None, problem

    def _examine(self):
        if self._view is self._unset:
            self._view, self._problem = _view(self.job)

    @property
    def view(self):
        self._examine()
        return self._view

    @property
    def problem(self):
        self._examine()
        return self._problem

    @property
    def status(self):
        """The status label (``'pending'``, ...; ``'unknown'``)."""
        return _status_label(self.view)

    @property
    def location(self):
        if self.agent is not None:
            return '%s@%s' % (self.agent, str(self.dispatcher)[:8])
        return self.where

    def summary(self, limit=REPR_LIMIT):
        job, view = self.job, self.view
        info = {
            'id': job_name(job, self.main) if job is not None else None,
            'status': self.status,
            'outcome': None, 'callable': '?', 'call': '?',
            'queue': self.queue,
            'where': self.where,
            'dispatcher': (str(self.dispatcher) if self.dispatcher
                           is not None else None),
            'agent': self.agent,
            'begin_after': None, 'started': None, 'ended': None,
            'result': '',
            'problem': self.problem,
            'stopped': None,
        }
        if view is not None:
            info.update({
                'outcome': _safely(lambda: outcome(view)),
                'stopped': _safely(lambda: stopped(view)),
                'callable': callable_name(view),
                'call': call_text(view, limit),
                'begin_after': _safely(lambda: when(view.begin_after)),
                'started': _safely(lambda: when(view.active_start)),
                'ended': _safely(lambda: when(view.active_end)),
                'result': _safely(lambda: _result_summary(view), '?'),
            })
        return info


STATUS_LABELS = {status: name for name, status in STATE_NAMES.items()}


# --------------------------------------------------------------------------
# Finding jobs


class _Unreadable:
    """What ``_guarded`` yields when reading a structure raises."""

    def __init__(self, what, error):
        self.problem = '%s cannot be read further: %s' % (what,
                                                          _why(error))


def _guarded(iterable, what):
    """The items of ``iterable``; if reading it raises (a class its
    entries refer to cannot even be imported), an ``_Unreadable`` saying
    so, and the end."""
    try:
        for item in iterable:
            yield item
    except Exception as e:
        yield _Unreadable(what, e)


def queues_of(root):
    """``[(name, queue)]`` of the database, by name."""
    queues = root.get(interfaces.KEY)
    if queues is None:
        return []
    return sorted(queues.items(), key=operator.itemgetter(0))


def _agents(queues):
    """``(queue name, dispatcher UUID, agent name, agent)``."""
    for queue_name, queue in queues:
        for uuid, da in queue.dispatchers.items():
            for agent_name, agent in sorted(da.items(),
                                            key=operator.itemgetter(0)):
                yield queue_name, uuid, agent_name, agent


def _key_of(job, previous):
    """A completed job's key (completion time; newer: smaller); for a job
    that cannot be read, ``previous`` (it stays where it was found)."""
    try:
        if isinstance(job, ZODB.broken.Broken):
            job._p_activate()
            key = (job.__Broken_state__ or {}).get('key')
        else:
            key = job.key
    except Exception:
        key = None
    return key if isinstance(key, int) else previous


def _completed_stream(index, queue_name, uuid, agent_name, collection):
    key = 0
    what = 'the completed jobs of agent %r of %s' % (agent_name, uuid)
    for seq, job in enumerate(_guarded(collection, what)):
        key = _key_of(job, key)
        yield (key, index, seq), job, queue_name, uuid, agent_name


def _completed(queues):
    """Completed jobs of all agents, newest first: ``(job, queue name,
    dispatcher UUID, agent name)``; lazy (each collection is newest
    first, they are merged)."""
    streams = [_completed_stream(index, queue_name, uuid, agent_name,
                                 agent.completed)
               for index, (queue_name, uuid, agent_name, agent)
               in enumerate(_agents(queues))]
    for order, job, queue_name, uuid, agent_name in heapq.merge(
            *streams, key=operator.itemgetter(0)):
        yield job, queue_name, uuid, agent_name


def _inner_job(job):
    """The job an interrupt wrapper deals with (its callable's object)."""
    if isinstance(job, ZODB.broken.Broken):
        return None
    try:
        inner = getattr(job.callable, '__self__', None)
    except Exception:
        return None
    if interfaces.IJob.providedBy(inner) or isinstance(
            inner, ZODB.broken.Broken):
        return inner
    return None


def _is_job(obj):
    if isinstance(obj, ZODB.broken.Broken):
        return True   # (a job whose class is gone, presumably)
    return interfaces.IJob.providedBy(obj)


def _queue_name(view):
    return _safely(lambda: getattr(view.queue, 'name', None))


def iter_jobs(root):
    """Every job we can find, once each, as ``Found`` objects, lazily:
    pending (claim order), claimed or running, interrupted (after their
    wrapper), completed (newest first), then the rest of a job
    container's.  Their ids (``job_name``) are those of ``root``'s
    database."""
    seen = set()
    main = _main_of(root)

    def visit(job, *args, **kw):
        if isinstance(job, _Unreadable):
            yield Found(None, *args, problem=job.problem, main=main, **kw)
            return
        address = _address(job)
        if address is None or address in seen:
            return
        seen.add(address)
        found = Found(job, *args, main=main, **kw)
        yield found
        # An interrupted job hangs under the wrapper that will handle it.
        inner = _inner_job(job)
        if inner is not None:
            done = _safely(lambda: inner.status) == interfaces.COMPLETED
            yield from visit(inner, found.queue,
                             'completed' if done else 'interrupted')

    queues = queues_of(root)
    for queue_name, queue in queues:
        for job in _guarded(queue, 'queue %r' % (queue_name,)):
            yield from visit(job, queue_name, 'pending')
        # Held because they cannot be loaded (``queue.unloadable``).
        for record in _safely(queue.unloadableJobs, ()):
            yield from visit(record.job, queue_name, 'held')
    for queue_name, uuid, agent_name, agent in _agents(queues):
        for job in _held(agent, uuid):
            yield from visit(job, queue_name, 'claimed', uuid, agent_name)
    for job, queue_name, uuid, agent_name in _completed(queues):
        yield from visit(job, queue_name, 'completed', uuid, agent_name)
    container = root.get(interfaces.JOBS_KEY)
    if container is not None and hasattr(container, 'values'):
        for job in _guarded(container.values(), 'the job container'):
            if isinstance(job, _Unreadable):
                yield from visit(job, None, 'job container')
                continue
            if _address(job) in seen or not _is_job(job):
                continue
            view = _view(job)[0]
            yield from visit(job, _queue_name(view) if view is not None
                             else None, 'job container')


def _address(job):
    """``job_address``, or None for an object not stored (yet)."""
    if getattr(job, '_p_oid', None) is None or getattr(
            job, '_p_jar', None) is None:
        return None
    return job_address(job)


def _held(agent, uuid):
    return _guarded(agent, 'agent %r of %s' % (agent.name, uuid))


def find_jobs(root):
    """Every job, as a list of ``Found`` (all of them: prefer
    ``iter_jobs``)."""
    return list(iter_jobs(root))


def _length(obj):
    return _safely(lambda: len(obj), 0)


def _estimate(root):
    """About how many jobs ``iter_jobs`` yields, from lengths alone: the
    pending, held and completed jobs (each in one place), or the job
    container's, whichever is more."""
    queues = queues_of(root)
    total = sum(_length(queue) + len(_safely(queue.unloadableJobs, ()))
                for queue_name, queue in queues)
    for queue_name, uuid, agent_name, agent in _agents(queues):
        total += _length(agent) + _length(agent.completed)
    container = root.get(interfaces.JOBS_KEY)
    if container is not None:
        total = max(total, _length(container))
    return total


def count_more(candidates, root, states=None, glob=None, shown=0,
               budget=COUNT_BUDGET):
    """How many more jobs of ``candidates`` (what is left of an
    ``iter_jobs`` iterator) match: ``(count, exact)``.

    At most ``budget`` further jobs are read.  When they do not exhaust
    the candidates, the count is a lower bound (``exact`` False); without
    a filter it is then the estimate from the lengths of the queues and
    collections less the ``shown`` jobs, if that is more.
    """
    count = examined = 0
    for found in candidates:
        if examined >= budget:
            break
        examined += 1
        if matches(found, states, glob):
            count += 1
    else:
        return count, True
    if not states and not glob:
        count = max(count, _estimate(root) - shown)
    return count, False


def matches(found, states, glob):
    """Whether a ``Found`` job is in ``states`` (None: any; ``'broken'``:
    one with a ``problem``) and its callable's dotted name matches
    ``glob`` (None: any)."""
    if not states and not glob:
        return True
    view = found.view
    if states:
        if not (found.status in states
                or (view is not None
                    and _safely(lambda: outcome(view)) in states)
                or (view is not None
                    and _safely(lambda: stopped(view)) in states)
                or (PROBLEM in states and found.problem)):
            return False
    if glob:
        name = callable_name(view) if view is not None else '?'
        if not fnmatch.fnmatchcase(name, glob):
            return False
    return True


def parse_states(text):
    """The set of states and outcomes named in ``text`` (comma-separated);
    None for no text; ``ValueError`` for an unknown name."""
    if not text:
        return None
    states = {s.strip().lower() for s in text.split(',') if s.strip()}
    unknown = (states - set(STATE_NAMES) - set(OUTCOMES) - set(STOPPED)
               - {PROBLEM})
    if unknown:
        raise ValueError('unknown state %s (choose from %s)' % (
            ', '.join(sorted(unknown)),
            ', '.join(list(STATE_NAMES) + list(OUTCOMES) + list(STOPPED)
                      + [PROBLEM])))
    return states


# --------------------------------------------------------------------------
# Status, one job, statistics


def dispatcher_state(da):
    if da.activated:
        return 'dead' if da.dead else 'alive'
    return 'stopped'


def _due_later(queue, now):
    """How many of ``queue``'s pending jobs become due after ``now``
    (``Queue.countDueLater``: from the index, not from the jobs)."""
    return _safely(lambda: queue.countDueLater(now), 0)


def status_info(root, now):
    result = []
    main = _main_of(root)
    for queue_name, queue in queues_of(root):
        dispatchers = []
        for uuid, da in queue.dispatchers.items():
            last_ping = da.last_ping.value
            agents = []
            for agent_name, agent in sorted(da.items(),
                                            key=operator.itemgetter(0)):
                held = list(_held(agent, uuid))
                agents.append({
                    'name': agent_name, 'size': agent.size,
                    'jobs': [job_name(job, main) for job in held
                             if not isinstance(job, _Unreadable)],
                    'completed': _length(agent.completed),
                    'problem': ' '.join(job.problem for job in held
                                        if isinstance(job, _Unreadable))
                    or None})
            dispatchers.append({
                'uuid': str(uuid), 'state': dispatcher_state(da),
                'activated': when(da.activated),
                'last_ping': when(last_ping),
                'ping_interval': _seconds(da.ping_interval),
                'death_interval': _seconds(da.ping_death_interval),
                'agents': agents})
        result.append({'name': queue_name, 'pending': len(queue),
                       'due_later': _due_later(queue, now),
                       'paused': bool(_safely(lambda: queue.paused, False)),
                       'dispatchers': dispatchers,
                       'schedules': schedules_info(queue, main=main)})
    return result


#: ``schedules_info`` describes at most this many schedules of a queue
SCHEDULES_LIMIT = 100


def schedules_info(queue, limit=SCHEDULES_LIMIT, main=None):
    """The periodic jobs of ``queue`` (``zasync.schedule``), at most
    ``limit``, by name: what and when, the slot of the last job put (and
    when it was put, its id: ``job_name`` with ``main``), the next slot,
    how many jobs were put, the last error.  Reads the schedules only
    (``Queue.findSchedules``)."""
    find = getattr(queue, 'findSchedules', None)
    schedules = _safely(find) if find is not None else None
    if schedules is None:
        return []
    result = []
    for name, schedule in _safely(lambda: list(
            schedules.items()[:limit]), []):
        last_job = _safely(lambda: schedule.last_job)
        result.append({
            'name': name,
            'callable': _safely(lambda: schedule.callable_name, '?'),
            'when': _safely(schedule.describe, '?'),
            'catch_up': _safely(lambda: schedule.catch_up, '?'),
            'last_run': when(_safely(lambda: schedule.last_slot)),
            'last_put': when(_safely(lambda: schedule.last_put)),
            'last_job': (job_name(last_job, main) if last_job is not None
                         else None),
            'next_run': when(_safely(lambda: schedule.next_slot)),
            'jobs_put': _safely(lambda: schedule.jobs_put, 0),
            'last_error': _safely(lambda: schedule.last_error)})
    return result


def _number(text):
    """The oid in ``text`` (a whole number, 0 or more), or None."""
    try:
        number = int(text)
        ZODB.utils.p64(number)
    except (ValueError, OverflowError):
        return None
    return number if number >= 0 else None


def resolve_job_id(conn, text):
    """``(oid, database name)`` of the job id ``text`` read from ``conn``:
    ``'19'``, oid 19 of ``conn``'s database (the main one), or
    ``'19@async'``, oid 19 of its member ``async`` (``job_name``).
    ``ValueError`` for a malformed id, ``LookupError`` for a database the
    multi-database does not have."""
    text = text.strip()
    db = conn.db()
    number_text, at, name = text.partition('@')
    number = _number(number_text)
    if number is None:
        if at:
            raise ValueError(
                'job ids are whole numbers, or NUMBER@DATABASE for a job of '
                'another database than the main one, not %r' % (text,))
        raise ValueError('job ids are whole numbers, not %r' % (text,))
    if not at:
        return number, db.database_name
    if name not in db.databases:
        raise LookupError('no database named %r (there are: %s)' % (
            name, ', '.join(repr(n) for n in db.databases)))
    return number, name


def _elsewhere(conn, number, name):
    """For an id that names nothing (or no job) in the main database: how
    ids name oid ``number`` of the other databases ('' if there are
    none, or the id named another database)."""
    if name != conn.db().database_name:
        return ''
    others = [n for n in conn.db().databases if n != name]
    if not others:
        return ''
    return ('a job of another database has its name after the number: %s'
            % ' or '.join('%d@%s' % (number, n) for n in others))


def load_job(conn, text):
    """The job whose id is ``text`` (``resolve_job_id``: ``19`` in
    ``conn``'s database, ``19@async`` in its member ``async``), loaded
    through ``conn`` (a member's connection joins ``conn``'s transaction);
    ``ValueError`` for a bad id, ``LookupError`` for an unknown database
    or when no job has the id.  A job that cannot be loaded (see
    ``load_problem``) is returned too.  Nothing is written."""
    number, name = resolve_job_id(conn, text)
    text = text.strip()
    hint = _elsewhere(conn, number, name)
    missing = 'no job with id %s%s' % (
        text, hint and ' in the main database (%s)' % hint)
    hint = hint and '; ' + hint
    oid = ZODB.utils.p64(number)
    try:
        jar = conn.get_connection(name)
        obj = jar.get(oid)
    except (ZODB.POSException.POSKeyError, KeyError):
        raise LookupError(missing)
    except Exception as e:
        raise LookupError('object %s cannot be loaded: %s'
                          % (text, _why(e)))
    cls = type(obj)
    if isinstance(obj, ZODB.broken.Broken):
        try:
            obj._p_activate()
        except Exception:
            pass
        if _jobish(obj.__Broken_state__):
            return obj
        raise LookupError('object %s is not a job (it is a %s, whose class '
                          'cannot be imported%s)'
                          % (text, _broken_name(obj), hint))
    try:
        obj._p_activate()
    except (ZODB.POSException.POSKeyError, KeyError):
        raise LookupError(missing)
    except Exception as e:
        if interfaces.IJob.implementedBy(cls):
            return obj    # job_details tells why it cannot be loaded
        raise LookupError('object %s cannot be loaded: %s'
                          % (text, _why(e)))
    if not interfaces.IJob.providedBy(obj):
        raise LookupError('object %s is not a job (it is a %s.%s%s)' % (
            text, cls.__module__, cls.__qualname__, hint))
    return obj


def _in_completed(collection, job, view):
    key = _safely(lambda: view.key)
    if not isinstance(key, int) or not key:
        return False
    moment = utils.long_to_dt(key)
    return any(candidate is job
               for candidate in collection.iter(moment, moment))


def _in_container(root, job):
    container = root.get(interfaces.JOBS_KEY)
    if container is None or not hasattr(container, 'get'):
        return False
    return _safely(lambda: container.get(str(job_id(job))) is job, False)


def unique_jobs(root, key):
    """``Found`` for the job of each queue that holds the unique ``key``
    (looked up in the queues' indexes: it has not completed)."""
    for queue_name, queue in queues_of(root):
        finder = getattr(queue, 'uniqueJob', None)
        job = _safely(lambda: finder(key)) if finder is not None else None
        if job is not None:
            yield locate(job, root)


def locate(job, root, view=None):
    """Where ``job`` is, as a ``Found``: worked out from its ``parent``
    (a queue, an agent, a wrapper job) and a look-up in the job
    container, without looking through other jobs.  Its id
    (``job_name``) is that of ``root``'s database."""
    main = _main_of(root)
    if view is None:
        view = _view(job)[0]
    parent = _safely(lambda: view.parent) if view is not None else None
    if interfaces.IQueue.providedBy(parent):
        return Found(job, _safely(lambda: parent.name), 'pending', main=main)
    if interfaces.IAgent.providedBy(parent):
        agent = parent
        uuid = _safely(lambda: agent.parent.UUID)
        queue_name = _safely(lambda: agent.queue.name)
        if any(candidate is job for candidate in agent):
            return Found(job, queue_name, 'claimed', uuid, agent.name,
                         main=main)
        if (not _in_completed(agent.completed, job, view)
                and _in_container(root, job)):
            return Found(job, queue_name, 'job container', main=main)
        return Found(job, queue_name, 'completed', uuid, agent.name,
                     main=main)
    if interfaces.IJob.providedBy(parent) and _inner_job(parent) is job:
        wrapper = locate(parent, root)
        done = _safely(lambda: view.status) == interfaces.COMPLETED
        return Found(job, wrapper.queue,
                     'completed' if done else 'interrupted', main=main)
    queue_name = _queue_name(view) if view is not None else None
    if _in_container(root, job):
        return Found(job, queue_name, 'job container', main=main)
    return Found(job, queue_name, 'callback or inner job', main=main)


def _full_repr(value, limit=None):
    if isinstance(value, type) and _is_broken(value):
        return _broken_name(value)
    try:
        text = utils.custom_repr(value)
    except Exception as e:
        text = '<unrepresentable %s: %s>' % (type(value).__name__,
                                             utils.one_line(e))
    return cut(text, limit)


def job_details(job, root, full=False):
    """Everything about one job, as a dict.  Reprs (arguments, result,
    call, retry data) are cut to ``REPR_LIMIT`` characters, followed by
    ``...[N characters in all]``, unless ``full``."""
    limit = None if full else REPR_LIMIT
    view, problem = _view(job)
    info = locate(job, root, view).summary(limit)
    info.update({'args': [], 'kwargs': {}, 'begin_by': None,
                 'assigner': None, 'quota_names': [], 'duration': None,
                 'callbacks': [], 'annotations': [], 'retry_policy': None,
                 'retry_data': {}, 'traceback': None, 'error': None,
                 'result': None})
    if view is None:
        return info
    # Every repr in full, once, to say how long each is, then cut.
    args = _safely(lambda: [_full_repr(a) for a in view.args], ['?'])
    kwargs = _safely(lambda: {str(k): _full_repr(v)
                              for k, v in view.kwargs.items()}, {'?': '?'})
    from zasync.job import Job
    if type(view).__repr__ is Job.__repr__:
        info['call'] = cut(_safely(lambda: _call_from_parts(
            view, _full_repr(view.callableParts()[0]), args, kwargs),
            callable_name(view)), limit)
    else:
        info['call'] = cut(call_text(view), limit)
    info.update({
        'args': [cut(text, limit) for text in args],
        'kwargs': {key: cut(text, limit) for key, text in kwargs.items()},
        'begin_by': _safely(lambda: _seconds(view.begin_by)),
        'assigner': _safely(lambda: str(view.assignerUUID)
                            if view.assignerUUID is not None else None),
        'quota_names': _safely(lambda: list(view.quota_names), []),
        'duration': _safely(lambda: _seconds(
            view.active_end - view.active_start)
            if view.active_end and view.active_start else None),
        'callbacks': _safely(lambda: [
            {'id': job_name(cb, _main_of(root))
             if getattr(cb, '_p_oid', None) else None,
             'call': call_text(cb, limit),
             'status': STATUS_LABELS.get(_safely(lambda: cb.status))}
            for cb in view.callbacks], []),
        'annotations': _safely(lambda: sorted(
            str(k) for k in view.annotations.keys()), []),
    })
    policy = _safely(lambda: view.retry_policy)
    data = _safely(lambda: dict(policy.data)) if policy is not None else None
    info['retry_policy'] = (type(policy).__name__ if policy is not None
                            else None)
    info['retry_data'] = {str(k): (v if isinstance(v, (int, float, str))
                                   else _full_repr(v, limit))
                          for k, v in (data or {}).items()}
    result = _safely(lambda: view.result)
    status = _safely(lambda: view.status)
    if isinstance(result, Failure):
        info['traceback'] = _safely(result.getTraceback, '?')
        info['error'] = _safely(lambda: utils.one_line(result), '?')
    elif status in (interfaces.CALLBACKS, interfaces.COMPLETED):
        info['result'] = _full_repr(result, limit)
    return info


def _percentile(values, fraction):
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(fraction * len(values)) - 1))
    return values[index]


def stats_info(root, now, window=STATS_WINDOW):
    """Counts of jobs by state (from lengths: pending, held, completed);
    outcomes, durations and throughput of the newest ``window`` completed
    jobs (``info['window']`` says how many were read and since when)."""
    counts = {name: 0 for name in STATE_NAMES}
    counts.update({name: 0 for name in OUTCOMES})
    counts[PROBLEM] = 0
    per_queue = {}
    dispatchers = {'alive': 0, 'dead': 0, 'stopped': 0}
    queues = queues_of(root)
    for queue_name, queue in queues:
        per_queue[queue_name] = {name: 0 for name in STATE_NAMES}
        per_queue[queue_name]['pending'] = len(queue)
        counts['pending'] += len(queue)
        for da in queue.dispatchers.values():
            dispatchers[dispatcher_state(da)] += 1
    for queue_name, uuid, agent_name, agent in _agents(queues):
        completed = _length(agent.completed)
        per_queue[queue_name]['completed'] += completed
        counts['completed'] += completed
        for job in _held(agent, uuid):
            if isinstance(job, _Unreadable):
                counts[PROBLEM] += 1
                continue
            found = Found(job, queue_name, 'claimed', uuid, agent_name)
            name = found.status
            if name in per_queue[queue_name]:
                per_queue[queue_name][name] += 1
            if name in counts:
                counts[name] += 1
            if found.problem:
                counts[PROBLEM] += 1
            result = _safely(lambda: outcome(found.view))
            if result:
                counts[result] += 1
    durations = []
    ends = []
    read = 0
    for job, queue_name, uuid, agent_name in _completed(queues):
        if read >= window:
            break
        read += 1
        if isinstance(job, _Unreadable):
            counts[PROBLEM] += 1
            continue
        view, problem = _view(job)
        if problem:
            counts[PROBLEM] += 1
        if view is None:
            continue
        result = _safely(lambda: outcome(view))
        if result:
            counts[result] += 1
        end = _safely(lambda: view.active_end)
        start = _safely(lambda: view.active_start)
        if end:
            ends.append(end)
            if start:
                durations.append((end - start).total_seconds())
    total_completed = sum(_length(agent.completed)
                          for q, u, a, agent in _agents(queues))
    info = {'time': when(now), 'jobs': counts, 'queues': per_queue,
            'dispatchers': dispatchers}
    container = root.get(interfaces.JOBS_KEY)
    info['job_container'] = (_length(container) if container is not None
                             else None)
    info['window'] = {
        'size': window, 'read': read,
        'all': read < window or read >= total_completed,
        'since': when(min(ends)) if ends else None,
    }
    info['durations'] = {
        'count': len(durations),
        'median': statistics.median(durations) if durations else None,
        'p90': _percentile(durations, 0.9) if durations else None,
        'max': max(durations) if durations else None,
    }
    info['completed_last_minute'] = sum(
        1 for end in ends if now - end <= datetime.timedelta(minutes=1))
    info['completed_last_hour'] = sum(
        1 for end in ends if now - end <= datetime.timedelta(hours=1))
    if ends:
        span = (max(ends) - min(ends)).total_seconds()
        info['throughput'] = (len(ends) / span) if span > 0 else None
    else:
        info['throughput'] = None
    return info
