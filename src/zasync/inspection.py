"""Read-only queries of a database's queues, returning plain data (dicts,
lists, strings, numbers) that ``zasync status``, ``jobs``, ``job ID`` and
``stats`` (``zasync.cli.inspect``) and the web pages format.

Nothing here writes or commits.  What is found where: pending jobs in the
queues, claimed and running ones in the agents of the dispatcher records,
recently completed ones in the agents' ``completed`` collections,
interrupted ones under the wrapper job that will deal with them, and every
job of a ``JobManager``'s container.
"""
import datetime
import fnmatch
import statistics
import types

import ZODB.POSException
import ZODB.utils

from zasync import interfaces
from zasync import utils
from zasync.failure import Failure

__all__ = ['OUTCOMES', 'STATE_NAMES', 'STATUS_LABELS', 'Found',
           'call_text', 'callable_name', 'dispatcher_state', 'find_jobs',
           'job_details', 'job_id', 'load_job', 'matches', 'outcome',
           'parse_states', 'stats_info', 'status_info', 'when']

STATE_NAMES = {
    'new': interfaces.NEW, 'pending': interfaces.PENDING,
    'assigned': interfaces.ASSIGNED, 'active': interfaces.ACTIVE,
    'callbacks': interfaces.CALLBACKS, 'completed': interfaces.COMPLETED,
}
#: states a job's *outcome* adds to its status
OUTCOMES = ('succeeded', 'failed')


# --------------------------------------------------------------------------
# Describing jobs


def job_id(job):
    return ZODB.utils.u64(job._p_oid)


def callable_name(job):
    """The dotted name of a job's callable (``module.function``,
    ``module.Class.method``)."""
    try:
        call = job.callable
        if isinstance(call, types.MethodType):
            call = call.__func__
        if interfaces.IJob.providedBy(call):
            return 'job %d' % job_id(call)
        module = getattr(call, '__module__', None)
        qualname = getattr(call, '__qualname__', None)
        if module and qualname:
            return '%s.%s' % (module, qualname)
        cls = type(call)
        return '%s.%s' % (cls.__module__, cls.__qualname__)
    except Exception:
        return '?'


def call_text(job):
    try:
        text = repr(job)
    except Exception:
        return callable_name(job)
    # '<zasync.job.Job (oid 12, db 'unnamed') ``call(args)``>' -> the call
    if '``' in text:
        text = text.split('``', 1)[1].rsplit('``', 1)[0]
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


def _result_summary(job):
    result = job.result
    if job.status not in (interfaces.CALLBACKS, interfaces.COMPLETED):
        if interfaces.IJob.providedBy(result):
            return 'waiting for job %d' % job_id(result)
        return ''
    if isinstance(result, Failure):
        return 'failed: %s' % utils.one_line(result)
    try:
        text = repr(result)
    except Exception:
        text = '?'
    return text if len(text) <= 40 else text[:37] + '...'


class Found:
    """A job and where it was found."""

    def __init__(self, job, queue, where, dispatcher=None, agent=None):
        self.job = job
        self.queue = queue
        self.where = where            # pending / claimed / completed / ...
        self.dispatcher = dispatcher  # the record's UUID
        self.agent = agent

    @property
    def location(self):
        if self.agent is not None:
            return '%s@%s' % (self.agent, str(self.dispatcher)[:8])
        return self.where

    def summary(self):
        job = self.job
        return {
            'id': job_id(job),
            'status': STATUS_LABELS.get(job.status, str(job.status)),
            'outcome': outcome(job),
            'callable': callable_name(job),
            'call': call_text(job),
            'queue': self.queue,
            'where': self.where,
            'dispatcher': (str(self.dispatcher) if self.dispatcher
                           is not None else None),
            'agent': self.agent,
            'begin_after': when(job.begin_after),
            'started': when(job.active_start),
            'ended': when(job.active_end),
            'result': _result_summary(job),
        }


STATUS_LABELS = {status: name for name, status in STATE_NAMES.items()}


def find_jobs(root):
    """Every job we can find, once each, as ``Found`` objects: pending
    (claim order), claimed or running, interrupted, completed (newest
    first), then the rest of a job container's."""
    seen = set()
    found = []

    def add(job, *args, **kw):
        oid = getattr(job, '_p_oid', None)
        if oid is None or oid in seen:
            return
        seen.add(oid)
        found.append(Found(job, *args, **kw))
        # An interrupted job hangs under the wrapper that will handle it.
        try:
            inner = getattr(job.callable, '__self__', None)
        except Exception:
            inner = None
        if interfaces.IJob.providedBy(inner):
            add(inner, found[-1].queue, 'interrupted')

    queues = root.get(interfaces.KEY) or {}
    for queue_name, queue in sorted(queues.items()):
        for job in queue:
            add(job, queue_name, 'pending')
    completed = []
    for queue_name, queue in sorted(queues.items()):
        for uuid, da in queue.dispatchers.items():
            for agent_name, agent in sorted(da.items()):
                for job in agent:
                    add(job, queue_name, 'claimed', uuid, agent_name)
                for job in agent.completed:
                    completed.append((job.key or 0, job, queue_name, uuid,
                                      agent_name))
    for key, job, queue_name, uuid, agent_name in sorted(
            completed, key=lambda item: item[0]):
        add(job, queue_name, 'completed', uuid, agent_name)
    container = root.get(interfaces.JOBS_KEY)
    if container is not None and hasattr(container, 'values'):
        for job in container.values():
            if interfaces.IJob.providedBy(job):
                queue = job.queue
                add(job, getattr(queue, 'name', None), 'job container')
    return found


def matches(found, states, glob):
    """Whether a ``Found`` job is in ``states`` (None: any) and its
    callable's dotted name matches ``glob`` (None: any)."""
    job = found.job
    if states:
        status = STATUS_LABELS.get(job.status)
        if status not in states and outcome(job) not in states:
            return False
    if glob and not fnmatch.fnmatchcase(callable_name(job), glob):
        return False
    return True


def parse_states(text):
    """The set of states and outcomes named in ``text`` (comma-separated);
    None for no text; ``ValueError`` for an unknown name."""
    if not text:
        return None
    states = {s.strip().lower() for s in text.split(',') if s.strip()}
    unknown = states - set(STATE_NAMES) - set(OUTCOMES)
    if unknown:
        raise ValueError('unknown state %s (choose from %s)' % (
            ', '.join(sorted(unknown)),
            ', '.join(list(STATE_NAMES) + list(OUTCOMES))))
    return states


# --------------------------------------------------------------------------
# Status, one job, statistics


def dispatcher_state(da):
    if da.activated:
        return 'dead' if da.dead else 'alive'
    return 'stopped'


def status_info(root, now):
    result = []
    for queue_name, queue in sorted(root[interfaces.KEY].items()):
        pending = due_later = 0
        for job in queue:
            pending += 1
            if job.begin_after is not None and job.begin_after > now:
                due_later += 1
        dispatchers = []
        for uuid, da in queue.dispatchers.items():
            last_ping = da.last_ping.value
            agents = []
            for agent_name, agent in sorted(da.items()):
                agents.append({'name': agent_name, 'size': agent.size,
                               'jobs': [job_id(job) for job in agent],
                               'completed': len(agent.completed)})
            dispatchers.append({
                'uuid': str(uuid), 'state': dispatcher_state(da),
                'activated': when(da.activated),
                'last_ping': when(last_ping),
                'ping_interval': _seconds(da.ping_interval),
                'death_interval': _seconds(da.ping_death_interval),
                'agents': agents})
        result.append({'name': queue_name, 'pending': pending,
                       'due_later': due_later, 'dispatchers': dispatchers})
    return result


def load_job(conn, text):
    """The job whose id (decimal oid) is ``text`` in ``conn``'s database;
    ``ValueError`` for a bad id, ``LookupError`` when no job has it."""
    try:
        number = int(text)
        if number < 0:
            raise ValueError(text)
        oid = ZODB.utils.p64(number)
    except (ValueError, OverflowError):
        raise ValueError('job ids are whole numbers, not %r' % (text,))
    try:
        obj = conn.get(oid)
        obj._p_activate()
    except (ZODB.POSException.POSKeyError, KeyError):
        raise LookupError('no job with id %s' % (text,))
    if not interfaces.IJob.providedBy(obj):
        raise LookupError('object %s is not a job (it is a %s.%s)' % (
            text, type(obj).__module__, type(obj).__qualname__))
    return obj


def job_details(job, root):
    where = None
    for found in find_jobs(root):
        if found.job is job:
            where = found
            break
    if where is None:
        queue = job.queue
        where = Found(job, getattr(queue, 'name', None),
                      'callback or inner job')
    info = where.summary()
    info.update({
        'args': [utils.custom_repr(a) for a in job.args],
        'kwargs': {k: utils.custom_repr(v) for k, v in job.kwargs.items()},
        'begin_by': _seconds(job.begin_by),
        'assigner': (str(job.assignerUUID) if job.assignerUUID is not None
                     else None),
        'quota_names': list(job.quota_names),
        'duration': (_seconds(job.active_end - job.active_start)
                     if job.active_end and job.active_start else None),
        'callbacks': [{'id': job_id(cb) if getattr(cb, '_p_oid', None)
                       else None, 'call': call_text(cb),
                       'status': STATUS_LABELS.get(cb.status)}
                      for cb in job.callbacks],
        'annotations': sorted(str(k) for k in job.annotations.keys()),
    })
    policy = getattr(job, '_retry_policy', None)
    data = getattr(policy, 'data', None)
    info['retry_policy'] = (type(policy).__name__ if policy is not None
                            else None)
    info['retry_data'] = {str(k): (v if isinstance(v, (int, float, str))
                                   else utils.custom_repr(v))
                          for k, v in (data or {}).items()}
    result = job.result
    if isinstance(result, Failure):
        info['traceback'] = result.getTraceback()
        info['result'] = None
        info['error'] = utils.one_line(result)
    else:
        info['traceback'] = None
        info['error'] = None
        info['result'] = (utils.custom_repr(result)
                          if job.status in (interfaces.CALLBACKS,
                                            interfaces.COMPLETED) else None)
    return info


def _percentile(values, fraction):
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(fraction * len(values)) - 1))
    return values[index]


def stats_info(root, now):
    counts = {name: 0 for name in STATE_NAMES}
    counts.update({name: 0 for name in OUTCOMES})
    durations = []
    ends = []
    per_queue = {}
    for found in find_jobs(root):
        job = found.job
        name = STATUS_LABELS.get(job.status)
        counts[name] = counts.get(name, 0) + 1
        result = outcome(job)
        if result:
            counts[result] += 1
        queue = per_queue.setdefault(found.queue, {
            name: 0 for name in STATE_NAMES})
        queue[name] = queue.get(name, 0) + 1
        if job.status == interfaces.COMPLETED and job.active_end:
            ends.append(job.active_end)
            if job.active_start:
                durations.append(
                    (job.active_end - job.active_start).total_seconds())
    dispatchers = {'alive': 0, 'dead': 0, 'stopped': 0}
    for queue in root[interfaces.KEY].values():
        for da in queue.dispatchers.values():
            dispatchers[dispatcher_state(da)] += 1
    info = {'time': when(now), 'jobs': counts, 'queues': per_queue,
            'dispatchers': dispatchers}
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
