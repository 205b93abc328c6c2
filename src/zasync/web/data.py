"""What the dashboard shows, as plain data (the pages and ``/api/*`` are
built on it), read from a database root in the caller's transaction.

Built on ``zasync.inspection`` and, like it, bounded whatever the number
of jobs kept:

* ``overview`` uses lengths, the few jobs agents hold, and for the chart
  the completed collections' key ranges of each minute of the last hour
  (counted without loading the jobs); to tell the failed ones it loads
  the newest jobs of that hour, at most ``CHART_BUDGET`` (past that the
  chart says its failed counts are partial).
* ``list_jobs`` pages by *positions*, never by loading everything: the
  jobs agents hold, then each queue's pending jobs (claim order), its held
  jobs, then the completed jobs of all agents, newest first, by their
  completion keys (a page after key K reads the collections from K on, by
  key range), then the rest of a job container by id.  The cursor of the
  next page is an opaque string.  A filter has no index: a page reads at
  most ``SCAN_BUDGET`` jobs, and when they do not fill it, it ends early
  with a cursor to go on from (``exhausted`` False).
* ``job_info`` is ``inspection.job_details`` plus links (parent, parts,
  callbacks), progress, annotations and the principals the job runs as.

Jobs are named as the commands name them (``inspection.job_name``): a job
of the main database -- the root's -- by its oid (``19``), a job of
another database of a multi-database by its oid and that database's name
(``19@async``); ``inspection.load_job`` reads those ids back.  Oids are
unique within one database only, so a listing tells jobs apart by oid and
database (``inspection.job_address``).
"""
import base64
import datetime
import heapq
import json
import operator

from zasync import inspection
from zasync import interfaces
from zasync import local
from zasync import utils
from zasync.failure import Failure

__all__ = ['CHART_BUDGET', 'DEFAULT_LIMIT', 'MAX_LIMIT', 'SCAN_BUDGET',
           'Filter', 'address_of', 'decode_cursor', 'encode_cursor',
           'job_info', 'list_jobs', 'overview', 'queues_of']

#: the most completed jobs the overview's chart loads (to tell the failed)
CHART_BUDGET = 1000
#: the most jobs one page of a filtered listing examines
SCAN_BUDGET = 2000
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: the length of a repr on the job page (all of it with ``full``)
ANNOTATION_LIMIT = 200


#: ``[(name, queue)]`` of the database, by name
queues_of = inspection.queues_of


def _agents(queues):
    for queue_name, queue in queues:
        for uuid, da in sorted(queue.dispatchers.items(),
                               key=lambda item: str(item[0])):
            for agent_name, agent in sorted(da.items(),
                                            key=operator.itemgetter(0)):
                yield queue_name, uuid, agent_name, agent


def _safely(function, default=None):
    try:
        return function()
    except Exception:
        return default


def _held_count(queue):
    return len(_safely(lambda: list(queue.unloadableJobs()), []))


def _paused(queue):
    """True / False, or None where queues cannot be paused (yet)."""
    paused = getattr(queue, 'paused', None)
    if paused is None or callable(paused) and not isinstance(paused, bool):
        try:
            return bool(paused()) if callable(paused) else None
        except Exception:
            return None
    return bool(paused)


def _schedules(queue, now):
    """The periodic jobs of ``queue`` (``Queue.findSchedules``, which
    writes nothing), with their last and next run."""
    find = getattr(queue, 'findSchedules', None)
    schedules = _safely(find) if find is not None else None
    if schedules is None or not hasattr(schedules, 'items'):
        return []
    result = []
    for name, schedule in _safely(lambda: list(schedules.items()), []):
        last = _safely(lambda: getattr(schedule, 'last_slot', None))
        following = _safely(lambda: getattr(schedule, 'next_slot', None))
        describe = getattr(schedule, 'describe', None)
        text = _safely(describe if describe is not None
                       else lambda: repr(schedule), '?')
        result.append({
            'name': str(name), 'schedule': inspection.cut(str(text), 120),
            'last_run': inspection.when(last) if isinstance(
                last, datetime.datetime) else None,
            'next_run': inspection.when(following) if isinstance(
                following, datetime.datetime) else None,
            'jobs_put': _safely(lambda: int(schedule.jobs_put), 0)})
    return result


def _ping_age(last_ping, now):
    if not last_ping:
        return None
    return round((now - datetime.datetime.fromisoformat(last_ping))
                 .total_seconds(), 3)


def overview(root, now, chart_budget=CHART_BUDGET, with_chart=True):
    """Queues (pending, due later, held, active, paused), dispatchers
    (state, last ping and its age, agents), schedules, totals and a chart
    of the jobs completed and failed per minute over the last hour."""
    queues = queues_of(root)
    status = {info['name']: info for info in inspection.status_info(root,
                                                                    now)}
    result_queues = []
    dispatchers = []
    schedules = []
    totals = {'pending': 0, 'held': 0, 'active': 0, 'completed': 0}
    for name, queue in queues:
        info = status.get(name, {'pending': len(queue), 'due_later': 0,
                                 'dispatchers': []})
        active = 0
        completed = 0
        for record in info['dispatchers']:
            agents = []
            for agent in record['agents']:
                active += len(agent['jobs'])
                completed += agent['completed']
                agents.append(agent)
            dispatchers.append(dict(
                record, queue=name,
                last_ping_age=_ping_age(record['last_ping'], now)))
        held = _held_count(queue)
        result_queues.append({
            'name': name, 'pending': info['pending'],
            'due_later': info['due_later'], 'held': held, 'active': active,
            'completed': completed, 'paused': _paused(queue)})
        for key, value in (('pending', info['pending']), ('held', held),
                           ('active', active), ('completed', completed)):
            totals[key] += value
        for schedule in _schedules(queue, now):
            schedules.append(dict(schedule, queue=name))
    states = {'alive': 0, 'dead': 0, 'stopped': 0}
    for record in dispatchers:
        states[record['state']] = states.get(record['state'], 0) + 1
    return {'time': inspection.when(now), 'queues': result_queues,
            'dispatchers': dispatchers, 'dispatcher_states': states,
            'schedules': schedules, 'totals': totals,
            'chart': chart(queues, now, chart_budget) if with_chart
            else None}


def chart(queues, now, budget=CHART_BUDGET):
    """Completed and failed jobs per minute over the hour before ``now``
    (oldest minute first).  The completed ones are counted by key range in
    the agents' completed collections, without loading the jobs; telling
    the failed ones loads them: at most ``budget`` jobs, the newest
    (``partial`` then says the failed counts are a lower bound)."""
    start = now - datetime.timedelta(hours=1)
    minute = datetime.timedelta(minutes=1)
    tick = datetime.timedelta(microseconds=1)
    minutes = [{'minute': inspection.when(start + minute * (index + 1)),
                'completed': 0, 'failed': 0} for index in range(60)]
    agents = list(_agents(queues))
    for queue_name, uuid, agent_name, agent in agents:
        for index in range(60):
            newer = start + minute * (index + 1)
            older = start + minute * index + tick
            minutes[index]['completed'] += _safely(lambda: sum(
                1 for _ in agent.completed.iter(newer, older)), 0)
    read = 0
    partial = False
    streams = [_completed_stream(index, queue_name, uuid, agent_name,
                                 agent.completed, None)
               for index, (queue_name, uuid, agent_name, agent)
               in enumerate(agents)]
    for order, job, queue_name, uuid, agent_name in heapq.merge(
            *streams, key=operator.itemgetter(0)):
        end = _safely(lambda: job.active_end) or (
            utils.long_to_dt(order[0]) if order[0] else None)
        if end is not None and end <= start:
            break
        if read >= budget:
            partial = True
            break
        read += 1
        if end is None or end > now:
            continue
        if isinstance(_safely(lambda: job.result), Failure):
            index = min(59, int((end - start).total_seconds() // 60))
            minutes[index]['failed'] += 1
    return {'minutes': minutes, 'read': read, 'partial': partial}


# --------------------------------------------------------------------------
# Listing jobs, page by page


def encode_cursor(position):
    text = json.dumps(position, separators=(',', ':'))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')


def decode_cursor(text):
    """The position of a cursor; ``ValueError`` for a bad one."""
    if not text:
        return None
    try:
        padded = text + '=' * (-len(text) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception:
        raise ValueError('bad cursor %r' % (text,))
    if (not isinstance(position, list) or len(position) != 2
            or position[0] not in PHASES):
        raise ValueError('bad cursor %r' % (text,))
    return position


class Filter:
    """What a listing shows: ``states`` (as ``inspection.parse_states``),
    a ``queue`` name, a ``glob`` on the callable's dotted name and a free
    ``text`` (case-insensitive, in the id, call, result and error)."""

    def __init__(self, states=None, queue=None, glob=None, text=None):
        self.states = states or None
        self.queue = queue if queue not in ('', None) else None
        self.glob = glob or None
        self.text = (text or '').strip().lower() or None

    def __bool__(self):
        return bool(self.states or self.queue is not None or self.glob
                    or self.text)

    def phase_relevant(self, phase):
        if not self.states:
            return True
        wanted = PHASE_STATES[phase]
        return wanted is None or bool(self.states & wanted)

    def wants_queue(self, name):
        return self.queue is None or name == self.queue

    def matches(self, found, summary):
        if self.queue is not None and found.queue != self.queue:
            return False
        if not inspection.matches(found, self.states, self.glob):
            return False
        if self.text:
            haystack = ' '.join(str(summary.get(key) or '') for key in (
                'id', 'call', 'callable', 'result', 'problem')).lower()
            if self.text not in haystack:
                return False
        return True


PHASES = ('claimed', 'pending', 'held', 'completed', 'container')
#: the states a phase can hold (None: any)
PHASE_STATES = {
    'claimed': {'assigned', 'active', 'callbacks', 'completed', 'succeeded',
                'failed', 'broken', 'pending'},
    'pending': {'pending', 'new', 'broken'},
    'held': {'pending', 'new', 'broken'},
    'completed': {'completed', 'callbacks', 'succeeded', 'failed',
                  'broken'},
    'container': None,
}


def _claimed(queues, root, filter, position):
    skip = position or 0
    index = 0
    main = inspection.main_name(root)
    for queue_name, uuid, agent_name, agent in _agents(queues):
        if not filter.wants_queue(queue_name):
            continue
        for job in _safely(lambda: list(agent), []):
            index += 1
            if index <= skip:
                continue
            yield index, inspection.Found(job, queue_name, 'claimed', uuid,
                                          agent_name, main=main)


def _pending(queues, root, filter, position):
    start_queue, skip = position if position else (None, 0)
    main = inspection.main_name(root)
    for queue_name, queue in queues:
        if not filter.wants_queue(queue_name):
            continue
        if start_queue is not None and queue_name < start_queue:
            continue
        index = 0
        for job in queue:
            index += 1
            if queue_name == start_queue and index <= skip:
                continue
            yield [queue_name, index], inspection.Found(
                job, queue_name, 'pending', main=main)


def _held(queues, root, filter, position):
    start_queue, skip = position if position else (None, 0)
    main = inspection.main_name(root)
    for queue_name, queue in queues:
        if not filter.wants_queue(queue_name):
            continue
        if start_queue is not None and queue_name < start_queue:
            continue
        records = _safely(lambda: list(queue.unloadableJobs()), [])
        for index, record in enumerate(records, 1):
            if queue_name == start_queue and index <= skip:
                continue
            yield [queue_name, index], inspection.Found(
                record.job, queue_name, 'held', main=main)


def _key(job):
    key = _safely(lambda: job.key)
    return key if isinstance(key, int) else None


def _completed_stream(index, queue_name, uuid, agent_name, collection,
                      after):
    if after is None:
        jobs = collection.iter()
    else:
        jobs = collection.iter(utils.long_to_dt(after[0]))
    last = after[0] if after is not None else 0
    for job in jobs:
        key = _key(job)
        key = last if key is None else key
        last = key
        if after is not None and (key, index) <= tuple(after):
            continue
        yield (key, index), job, queue_name, uuid, agent_name


def _completed(queues, root, filter, position):
    main = inspection.main_name(root)
    streams = [
        _completed_stream(index, queue_name, uuid, agent_name,
                          agent.completed, position)
        for index, (queue_name, uuid, agent_name, agent)
        in enumerate(_agents(queues)) if filter.wants_queue(queue_name)]
    for order, job, queue_name, uuid, agent_name in heapq.merge(
            *streams, key=operator.itemgetter(0)):
        yield list(order), inspection.Found(job, queue_name, 'completed',
                                            uuid, agent_name, main=main)


def _container(queues, root, filter, position):
    container = root.get(interfaces.JOBS_KEY)
    if container is None or not hasattr(container, 'items'):
        return
    try:
        items = container.items(position) if position else container.items()
    except TypeError:
        items = container.items()
    for key, job in items:
        if position is not None and key <= position:
            continue
        found = _safely(lambda: inspection.locate(job, root))
        if found is None or found.where not in ('job container',
                                                'callback or inner job'):
            continue   # (listed where it is)
        yield key, found


READERS = {'claimed': _claimed, 'pending': _pending, 'held': _held,
           'completed': _completed, 'container': _container}


def list_jobs(root, filter=None, cursor=None, limit=DEFAULT_LIMIT,
              budget=SCAN_BUDGET, full=False):
    """A page of jobs: ``{'jobs': [summary, ...], 'next': cursor or None,
    'examined': n, 'exhausted': bool}``.  ``exhausted`` is False when the
    page ended because ``budget`` jobs were examined: ``next`` goes on
    from there.  ``ValueError`` for a bad cursor."""
    filter = filter or Filter()
    limit = max(1, min(int(limit), MAX_LIMIT))
    position = decode_cursor(cursor)
    queues = queues_of(root)
    phase_index = PHASES.index(position[0]) if position else 0
    jobs = []
    examined = 0
    seen = set()
    for phase in PHASES[phase_index:]:
        if not filter.phase_relevant(phase):
            continue
        start = position[1] if position and position[0] == phase else None
        last = start
        for where, found in READERS[phase](queues, root, filter, start):
            if len(jobs) >= limit or examined >= budget:
                return {'jobs': jobs, 'examined': examined,
                        'exhausted': len(jobs) >= limit,
                        'next': encode_cursor([phase, last])}
            examined += 1
            last = where
            address = address_of(found.job)
            if address is not None:
                if address in seen:
                    continue
                seen.add(address)
            summary = found.summary(None if full else
                                    inspection.REPR_LIMIT)
            if filter.matches(found, summary):
                jobs.append(summary)
    return {'jobs': jobs, 'examined': examined, 'exhausted': True,
            'next': None}


# --------------------------------------------------------------------------
# One job


def address_of(job):
    """``inspection.job_address`` of a stored job, else None: oids are
    unique within one database only."""
    if getattr(job, '_p_oid', None) is None or getattr(
            job, '_p_jar', None) is None:
        return None
    return inspection.job_address(job)


def _link(job, main):
    """A job's id (``inspection.job_name``, None if it is not stored),
    call and status."""
    return {'id': (inspection.job_name(job, main)
                   if address_of(job) is not None else None),
            'call': _safely(lambda: inspection.call_text(job, 80), '?'),
            'status': inspection.STATUS_LABELS.get(
                _safely(lambda: job.status), 'unknown')}


def _annotation_repr(value, full):
    try:
        text = repr(value)
    except Exception as e:
        text = '<unrepresentable: %s>' % utils.one_line(e)
    return inspection.cut(text, None if full else ANNOTATION_LIMIT)


def job_info(job, root, full=False):
    """``inspection.job_details`` and: ``parent`` (the job this one is a
    callback of), ``parts`` (jobs among its arguments: the parts of a
    ``serial``/``parallel``), ``callbacks`` with links, ``progress``
    (percent and message), ``annotation_values``, ``principals`` and
    ``site`` (a job made in an interaction runs with them), ``retries``
    and ``failed`` (whether it completed with a failure)."""
    info = inspection.job_details(job, root, full=full)
    info.update({'parent': None, 'parts': [], 'progress': None,
                 'annotation_values': {}, 'principals': [], 'site': None,
                 'retries': None, 'failed': False})
    if info.get('problem') and info['status'] == inspection.UNKNOWN:
        return info
    main = inspection.main_name(root)
    parent = _safely(lambda: job.parent)
    if interfaces.IJob.providedBy(parent):
        info['parent'] = _link(parent, main)
    parts = []
    for value in list(_safely(lambda: list(job.args), [])) + list(
            _safely(lambda: list(job.kwargs.values()), [])):
        if interfaces.IJob.providedBy(value) and value is not job:
            parts.append(_link(value, main))
    info['parts'] = parts
    info['callbacks'] = [_link(cb, main) for cb in _safely(
        lambda: list(job.callbacks), [])]
    annotations = _safely(lambda: dict(job.annotations.items()), {})
    progress = annotations.get(local.PROGRESS)
    if isinstance(progress, tuple) and len(progress) == 2:
        info['progress'] = {'percent': progress[0], 'message': progress[1]}
    info['annotation_values'] = {
        str(key): _annotation_repr(value, full)
        for key, value in sorted(annotations.items(),
                                 key=lambda item: str(item[0]))}
    info['principals'] = [str(p) for p in _safely(
        lambda: tuple(getattr(job, 'participants', ()) or ()), ())]
    site = _safely(lambda: getattr(job, 'site', None))
    if site is not None:
        info['site'] = _safely(lambda: utils.custom_repr(site), '?')
    tries = {key: value for key, value in info['retry_data'].items()
             if isinstance(value, int)}
    info['retries'] = sum(tries.values()) if tries else 0
    info['failed'] = info.get('outcome') == 'failed'
    return info
