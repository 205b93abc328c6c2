"""``zasync status``, ``jobs``, ``job ID`` and ``stats``: look into a
database's queues from the command line.

Each command opens the database (``--zodb URI`` or ``--zope-conf FILE``;
default: the demo's ``var/Data.fs``), reads, and prints a table -- or JSON
with ``--json``.  It never writes: a FileStorage is opened read-only (no
lock, so a running worker may hold it), and every transaction is aborted.

What is found where: pending jobs in the queues, claimed and running ones
in the agents of the dispatcher records, recently completed ones in the
agents' ``completed`` collections, interrupted ones under the wrapper job
that will deal with them, and every job of a ``JobManager``'s container.
"""
import datetime
import fnmatch
import json
import os
import statistics
import types

import ZODB.POSException
import ZODB.utils

from zasync import interfaces
from zasync import utils
from zasync.cli_commands import UsageError
from zasync.failure import Failure

DEFAULT_DB = os.path.join('var', 'Data.fs')

STATE_NAMES = {
    'new': interfaces.NEW, 'pending': interfaces.PENDING,
    'assigned': interfaces.ASSIGNED, 'active': interfaces.ACTIVE,
    'callbacks': interfaces.CALLBACKS, 'completed': interfaces.COMPLETED,
}
#: states a job's *outcome* adds to its status
OUTCOMES = ('succeeded', 'failed')


# --------------------------------------------------------------------------
# Options


def _database_options(parser):
    from zasync.worker import add_database_arguments
    add_database_arguments(parser)
    parser.add_argument('--json', action='store_true',
                        help='print JSON instead of a table')
    parser.add_argument('--timeout', type=float, default=10,
                        help='seconds to wait for a ZEO server (default 10)')


def configure_status(parser):
    _database_options(parser)


def configure_jobs(parser):
    _database_options(parser)
    parser.add_argument(
        '--state', metavar='S',
        help='only jobs in these states (comma-separated): %s, or the '
             'outcomes %s' % (', '.join(STATE_NAMES), ', '.join(OUTCOMES)))
    parser.add_argument(
        '--callable', metavar='GLOB',
        help='only jobs whose callable\'s dotted name matches GLOB, e.g. '
             '"myapp.reports.*" or "*send_mail"')
    parser.add_argument('--limit', type=int, default=100,
                        help='show at most this many jobs (default 100; 0: '
                             'all)')


def configure_job(parser):
    _database_options(parser)
    parser.add_argument('id', help='the job id (its oid, in decimal; what '
                                   '"zasync jobs" shows)')


def configure_stats(parser):
    _database_options(parser)


COMMANDS = [
    ('status', configure_status,
     'dispatchers (alive, dead, stopped), their agents and last pings, and '
     'the length of each queue'),
    ('jobs', configure_jobs,
     'list jobs: pending, claimed, running and recently completed'),
    ('job', configure_job,
     'show one job: call, status, times, retries, result or traceback'),
    ('stats', configure_stats,
     'job counts by state, outcomes, durations and recent throughput'),
]


# --------------------------------------------------------------------------
# Opening


def _quiet_libraries():
    """Without a logging configuration, Python prints the warnings of
    the storage libraries on stderr (RelStorage logs a failed connection
    before raising it): the commands report errors as one line instead."""
    import logging
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


class Database:
    """The database of the command line, opened for reading."""

    def __init__(self, args):
        from zasync import worker
        if args.zope_conf:
            self.db = worker.open_zope_conf(args.zope_conf)
        else:
            _quiet_libraries()
            uri = args.zodb or 'file://' + os.path.abspath(DEFAULT_DB)
            self.db = worker.open_uri(uri, read_only=True, must_exist=True,
                                      connect_timeout=args.timeout)
        try:
            self.conn = self.db.open()
            self.tm = self.conn.transaction_manager
            self.tm.begin()
            self.root = self.conn.root()
        except Exception as e:
            self.db.close()
            raise UsageError('cannot read the database: %s'
                             % worker._one_line(e))

    def queues(self):
        queues = self.root.get(interfaces.KEY)
        if queues is None:
            raise UsageError('no zasync queues in this database (nothing '
                             'was ever queued or run here)')
        return queues

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def _call_text(job):
    try:
        text = repr(job)
    except Exception:
        return callable_name(job)
    # '<zasync.job.Job (oid 12, db 'unnamed') ``call(args)``>' -> the call
    if '``' in text:
        text = text.split('``', 1)[1].rsplit('``', 1)[0]
    return text


def _when(value):
    if value is None:
        return None
    return value.astimezone(utils.UTC).isoformat(timespec='milliseconds')


def _short_time(value):
    if value is None:
        return '-'
    return value.astimezone(utils.UTC).strftime('%Y-%m-%d %H:%M:%S')


def _seconds(delta):
    return None if delta is None else delta.total_seconds()


def _age(value, now):
    if value is None:
        return 'never'
    seconds = (now - value).total_seconds()
    if -1 < seconds < 0:
        seconds = 0.0   # another machine's clock, a little ahead
    if seconds < 0:
        return 'in %s' % _duration(-seconds)
    return '%s ago' % _duration(seconds)


def _duration(seconds):
    if seconds is None:
        return '-'
    if seconds < 10:
        return '%.2f s' % seconds
    if seconds < 120:
        return '%.0f s' % seconds
    if seconds < 7200:
        return '%.0f min' % (seconds / 60)
    return '%.1f h' % (seconds / 3600)


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
        return 'failed: %s' % _one_line(result.getErrorMessage(),
                                        result)
    try:
        text = repr(result)
    except Exception:
        text = '?'
    return text if len(text) <= 40 else text[:37] + '...'


def _one_line(message, failure):
    name = getattr(failure.type, '__name__', None) or str(failure.type)
    lines = str(message).strip().splitlines()
    return '%s: %s' % (name, lines[0]) if lines else name


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
            'call': _call_text(job),
            'queue': self.queue,
            'where': self.where,
            'dispatcher': (str(self.dispatcher) if self.dispatcher
                           is not None else None),
            'agent': self.agent,
            'begin_after': _when(job.begin_after),
            'started': _when(job.active_start),
            'ended': _when(job.active_end),
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
            inner = job._callable_root
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


def _matches(found, states, glob):
    job = found.job
    if states:
        status = STATUS_LABELS.get(job.status)
        if status not in states and outcome(job) not in states:
            return False
    if glob and not fnmatch.fnmatchcase(callable_name(job), glob):
        return False
    return True


def _parse_states(text):
    if not text:
        return None
    states = {s.strip().lower() for s in text.split(',') if s.strip()}
    unknown = states - set(STATE_NAMES) - set(OUTCOMES)
    if unknown:
        raise UsageError('unknown state %s (choose from %s)' % (
            ', '.join(sorted(unknown)),
            ', '.join(list(STATE_NAMES) + list(OUTCOMES))))
    return states


# --------------------------------------------------------------------------
# Output


def table(rows, columns):
    """Format ``rows`` (dicts) as a text table with ``columns`` (pairs of
    key and title)."""
    cells = [[title for key, title in columns]]
    for row in rows:
        cells.append(['-' if row.get(key) in (None, '') else str(row[key])
                      for key, title in columns])
    widths = [max(len(line[i]) for line in cells)
              for i in range(len(columns))]
    lines = []
    for line in cells:
        lines.append('  '.join(cell.ljust(width) for cell, width
                               in zip(line, widths)).rstrip())
    return '\n'.join(lines)


def _print_json(value):
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------------
# zasync status


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
                'activated': _when(da.activated),
                'last_ping': _when(last_ping),
                'ping_interval': _seconds(da.ping_interval),
                'death_interval': _seconds(da.ping_death_interval),
                'agents': agents})
        result.append({'name': queue_name, 'pending': pending,
                       'due_later': due_later, 'dispatchers': dispatchers})
    return result


def status(args):
    with Database(args) as database:
        database.queues()
        now = utils.now()   # (after the last pings we read)
        info = status_info(database.root, now)
    if args.json:
        _print_json({'time': _when(now), 'queues': info})
        return 0
    blocks = []
    for queue in info:
        head = 'queue %r: %d pending' % (queue['name'], queue['pending'])
        if queue['due_later']:
            head += ' (%d due later)' % queue['due_later']
        rows = []
        for da in queue['dispatchers']:
            last_ping = da['last_ping'] and datetime.datetime.fromisoformat(
                da['last_ping'])
            activated = da['activated'] and datetime.datetime.fromisoformat(
                da['activated'])
            rows.append({
                'uuid': da['uuid'], 'state': da['state'],
                'activated': _short_time(activated) if activated else '-',
                'ping': _age(last_ping, now),
                'intervals': '%g/%g s' % (da['ping_interval'],
                                          da['death_interval']),
                'agents': ', '.join('%s %d/%d' % (a['name'], len(a['jobs']),
                                                  a['size'])
                                    for a in da['agents']) or '-'})
        if rows:
            body = table(rows, [
                ('uuid', 'DISPATCHER'), ('state', 'STATE'),
                ('activated', 'ACTIVATED (UTC)'), ('ping', 'LAST PING'),
                ('intervals', 'PING/DEATH'), ('agents', 'AGENTS (JOBS/SIZE)')])
        else:
            body = 'no dispatcher has served this queue yet'
        blocks.append(head + '\n' + body)
    print('\n\n'.join(blocks) if blocks else 'no queues')
    return 0


# --------------------------------------------------------------------------
# zasync jobs


def jobs(args):
    states = _parse_states(args.state)
    with Database(args) as database:
        database.queues()
        selected = [found for found in find_jobs(database.root)
                    if _matches(found, states, args.callable)]
        total = len(selected)
        if args.limit:
            selected = selected[:args.limit]
        rows = [found.summary() for found in selected]
        for row, found in zip(rows, selected):
            row['location'] = found.location
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print('no jobs')
        return 0
    for row in rows:
        row['started'] = _short_time(
            row['started'] and datetime.datetime.fromisoformat(
                row['started']))
        call = row['call']
        row['call'] = call if len(call) <= 50 else call[:47] + '...'
    print(table(rows, [('id', 'ID'), ('status', 'STATUS'),
                       ('location', 'WHERE'), ('call', 'CALL'),
                       ('started', 'STARTED (UTC)'), ('result', 'RESULT')]))
    if total > len(rows):
        print('(%d more; use --limit)' % (total - len(rows)))
    return 0


# --------------------------------------------------------------------------
# zasync job ID


def _load_job(database, text):
    try:
        number = int(text)
        if number < 0:
            raise ValueError(text)
        oid = ZODB.utils.p64(number)
    except (ValueError, OverflowError):
        raise UsageError('job ids are whole numbers, not %r' % (text,))
    try:
        obj = database.conn.get(oid)
        obj._p_activate()
    except (ZODB.POSException.POSKeyError, KeyError):
        raise UsageError('no job with id %s' % (text,))
    if not interfaces.IJob.providedBy(obj):
        raise UsageError('object %s is not a job (it is a %s.%s)' % (
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
                       else None, 'call': _call_text(cb),
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
        info['error'] = _one_line(result.getErrorMessage(), result)
    else:
        info['traceback'] = None
        info['error'] = None
        info['result'] = (utils.custom_repr(result)
                          if job.status in (interfaces.CALLBACKS,
                                            interfaces.COMPLETED) else None)
    return info


def job(args):
    with Database(args) as database:
        info = job_details(_load_job(database, args.id), database.root)
    if args.json:
        _print_json(info)
        return 0
    lines = []

    def line(title, value):
        if value not in (None, '', [], {}):
            lines.append('%-13s %s' % (title + ':', value))

    line('job', info['id'])
    line('call', info['call'])
    line('status', info['status'] + (
        ' (%s)' % info['outcome'] if info['outcome'] else ''))
    line('queue', repr(info['queue']) if info['queue'] is not None else None)
    line('where', info['where'] + (
        ' in agent %r of dispatcher %s' % (info['agent'], info['dispatcher'])
        if info['agent'] else ''))
    line('put by', info['assigner'])
    line('begin after', info['begin_after'])
    line('begin by', info['begin_by'] and '%g s' % info['begin_by'])
    line('quotas', ', '.join(info['quota_names']))
    line('started', info['started'])
    line('ended', info['ended'])
    line('duration', _duration(info['duration'])
         if info['duration'] is not None else None)
    line('retry policy', info['retry_policy'])
    for key, value in sorted(info['retry_data'].items()):
        line('  ' + key, value)
    line('annotations', ', '.join(info['annotations']))
    for callback in info['callbacks']:
        line('callback', '%s %s [%s]' % (callback['id'], callback['call'],
                                         callback['status']))
    line('result', info['result'])
    line('error', info['error'])
    print('\n'.join(lines))
    if info['traceback']:
        print()
        print(info['traceback'].rstrip())
    return 0


# --------------------------------------------------------------------------
# zasync stats


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
    info = {'time': _when(now), 'jobs': counts, 'queues': per_queue,
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


def stats(args):
    with Database(args) as database:
        database.queues()
        now = utils.now()
        info = stats_info(database.root, now)
    if args.json:
        _print_json(info)
        return 0
    rows = [{'state': name, 'count': info['jobs'][name]}
            for name in list(STATE_NAMES) + list(OUTCOMES)]
    print(table(rows, [('state', 'STATE'), ('count', 'JOBS')]))
    durations = info['durations']
    print()
    print('durations of %d completed job(s): median %s, p90 %s, max %s' % (
        durations['count'], _duration(durations['median']),
        _duration(durations['p90']), _duration(durations['max'])))
    print('completed in the last minute: %d, in the last hour: %d' % (
        info['completed_last_minute'], info['completed_last_hour']))
    if info['throughput']:
        print('throughput while completing them: %.1f jobs/s'
              % info['throughput'])
    print('dispatchers: %(alive)d alive, %(dead)d dead, %(stopped)d stopped'
          % info['dispatchers'])
    return 0
