"""Prometheus metrics (``prometheus_client``), every family named
``zasync_...``; see ``docs/metrics.rst``.

``DatabaseCollector`` reads a database in a short read-only transaction at
each scrape (``/metrics`` of ``zasync web``, and ``zasync worker
--metrics-listen``): gauges from lengths and the jobs agents hold, and
counters and histograms from the jobs completed since the previous scrape,
read newest first from the agents' completed collections by key range
(each scrape reads the new ones, and those completed in the
``LOOKBACK`` before the newest seen, in case they committed late).  The
counters count from the collector's start: the first scrape counts every
job the collections keep (their lengths) as completed, and reads the
newest ``FIRST_WINDOW`` of them for outcomes and histograms.

``DispatcherCollector`` reports what a worker's own dispatcher records of
the jobs it started (``Dispatcher.jobs``): ``zasync_worker_...`` counters
of started, completed, failed and timed-out jobs and a duration histogram.
It samples them at each scrape and every ``SAMPLE_INTERVAL`` seconds in a
thread of its own (``start``/``stop``), so a counter misses nothing as
long as fewer jobs than the dispatcher keeps records of (``jobs_size``)
start between two samples.
"""
import datetime
import threading

import prometheus_client
import prometheus_client.core

from zasync import interfaces
from zasync import utils
from zasync.failure import Failure
from zasync.web import data

__all__ = ['BUCKETS', 'DatabaseCollector', 'DispatcherCollector',
           'FIRST_WINDOW', 'LOOKBACK', 'MAX_NEW', 'SAMPLE_INTERVAL',
           'make_registry', 'start_worker_metrics']

#: histogram buckets (seconds) for durations and latencies
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
           300, 900, 3600, float('inf'))
#: the first scrape reads at most this many completed jobs of each agent
FIRST_WINDOW = 1000
#: a scrape reads at most this many newly completed jobs of each agent
MAX_NEW = 10000
#: how far behind the newest job seen a scrape looks for late commits
LOOKBACK = datetime.timedelta(seconds=60)
#: seconds between two samples of a worker's dispatcher records
SAMPLE_INTERVAL = 1.0

COUNTERS = (
    ('started', 'Jobs that started'),
    ('completed', 'Jobs that completed (succeeded or failed)'),
    ('failed', 'Jobs that completed with a failure'),
    ('retried', 'Retries of jobs that completed (as their retry policies '
                'recorded them)'),
    ('timed_out', 'Jobs stopped at their timeout (JobTimeoutError)'),
    ('cancelled', 'Jobs cancelled (CancelledError)'),
)


class _Histogram:
    """Cumulative bucket counts and a sum, for a custom collector."""

    def __init__(self):
        self.counts = [0] * len(BUCKETS)
        self.sum = 0.0

    def observe(self, value):
        value = max(0.0, value)
        self.sum += value
        for index, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[index] += 1
                break

    def buckets(self):
        total = 0
        result = []
        for bound, count in zip(BUCKETS, self.counts):
            total += count
            result.append(('+Inf' if bound == float('inf') else repr(bound),
                           total))
        return result


def _safely(function, default=None):
    try:
        return function()
    except Exception:
        return default


def _retries(job):
    policy = _safely(lambda: job.retry_policy)
    values = _safely(lambda: dict(policy.data), {}) if policy else {}
    return sum(value for value in values.values()
               if isinstance(value, int) and not isinstance(value, bool))


class _AgentState:

    def __init__(self):
        self.newest = None      # completion time of the newest job seen
        self.recent = {}        # job_address -> completion, in LOOKBACK


class DatabaseCollector:
    """Metrics of the database ``read()`` gives the root of (a context
    manager: a fresh read-only transaction, closed after)."""

    def __init__(self, read, clock=None):
        self.read = read
        self.clock = clock or utils.now
        self.lock = threading.Lock()
        self.counters = {}      # (name, queue, dispatcher, agent) -> n
        self.durations = {}     # queue -> _Histogram
        self.latencies = {}     # queue -> _Histogram
        self.agents = {}        # (queue, uuid, agent) -> _AgentState
        self.started = {}       # job_address -> labels, running
        self.scrapes = 0

    def describe(self):
        return []   # (no describe-time scrape of the database)

    def _count(self, name, labels, amount=1):
        key = (name,) + labels
        self.counters[key] = self.counters.get(key, 0) + amount

    def _completed(self, job, labels, queue_name, first):
        self._count('completed', labels)
        result = _safely(lambda: job.result)
        if isinstance(result, Failure):
            self._count('failed', labels)
            if _safely(lambda: result.check(interfaces.JobTimeoutError)):
                self._count('timed_out', labels)
            if _safely(lambda: result.check(interfaces.CancelledError)):
                self._count('cancelled', labels)
        retries = _retries(job)
        if retries:
            self._count('retried', labels, retries)
        start = _safely(lambda: job.active_start)
        end = _safely(lambda: job.active_end)
        due = _safely(lambda: job.begin_after)
        address = data.address_of(job)
        if start is not None:
            if self.started.pop(address, None) is None:
                self._count('started', labels)
            if end is not None:
                self.durations.setdefault(queue_name, _Histogram()).observe(
                    (end - start).total_seconds())
            if due is not None:
                self.latencies.setdefault(queue_name, _Histogram()).observe(
                    (start - due).total_seconds())

    def _read_agent(self, queue_name, uuid, agent_name, agent):
        labels = (queue_name, str(uuid), agent_name)
        state = self.agents.get(labels)
        first = state is None
        if first:
            state = self.agents[labels] = _AgentState()
        # Running jobs count as started once.
        for job in _safely(lambda: list(agent), []):
            address = data.address_of(job)
            if address in self.started:
                continue
            if _safely(lambda: job.status) == interfaces.ACTIVE:
                self.started[address] = labels
                self._count('started', labels)
        limit = FIRST_WINDOW if first else MAX_NEW
        horizon = (state.newest - LOOKBACK) if state.newest else None
        read = 0
        newest = state.newest
        for job in agent.completed.iter():
            if read >= limit:
                break
            read += 1
            key = _safely(lambda: job.key)
            when = utils.long_to_dt(key) if isinstance(key, int) else None
            if when is not None and horizon is not None and when < horizon:
                break
            address = data.address_of(job)
            if address in state.recent:
                continue
            if when is not None:
                state.recent[address] = when
                if newest is None or when > newest:
                    newest = when
            self._completed(job, labels, queue_name, first)
        if first:
            rest = len(agent.completed) - read
            if rest > 0:
                self._count('completed', labels, rest)
        state.newest = newest
        if newest is not None:
            cutoff = newest - LOOKBACK
            state.recent = {key: when for key, when in state.recent.items()
                            if when >= cutoff}

    def collect(self):
        core = prometheus_client.core
        now = self.clock()
        with self.lock, self.read() as root:
            view = data.overview(root, now, with_chart=False)
            queues = data.queues_of(root)
            for queue_name, queue in queues:
                for uuid, da in queue.dispatchers.items():
                    for agent_name, agent in da.items():
                        self._read_agent(queue_name, uuid, agent_name,
                                         agent)
            self.scrapes += 1
        jobs = core.GaugeMetricFamily(
            'zasync_queue_jobs', 'Jobs of a queue by state: pending (in '
            'line, due or not), due_later, held (cannot be loaded), active '
            '(held by agents), completed (kept by agents)',
            labels=['queue', 'state'])
        paused = core.GaugeMetricFamily(
            'zasync_queue_paused', '1 if the queue is paused',
            labels=['queue'])
        for queue in view['queues']:
            for state in ('pending', 'due_later', 'held', 'active',
                          'completed'):
                jobs.add_metric([queue['name'], state], queue[state])
            if queue['paused'] is not None:
                paused.add_metric([queue['name']], int(queue['paused']))
        yield jobs
        yield paused
        alive = core.GaugeMetricFamily(
            'zasync_dispatcher_alive', '1 while the dispatcher pings, 0 '
            'when dead or stopped', labels=['uuid', 'queue', 'state'])
        age = core.GaugeMetricFamily(
            'zasync_dispatcher_last_ping_age_seconds',
            'Seconds since the dispatcher last pinged',
            labels=['uuid', 'queue'])
        agent_jobs = core.GaugeMetricFamily(
            'zasync_agent_jobs', 'Jobs an agent holds (claimed or running)',
            labels=['queue', 'uuid', 'agent'])
        agent_size = core.GaugeMetricFamily(
            'zasync_agent_size', 'How many jobs an agent runs at once',
            labels=['queue', 'uuid', 'agent'])
        for record in view['dispatchers']:
            alive.add_metric([record['uuid'], record['queue'],
                              record['state']],
                             int(record['state'] == 'alive'))
            if record['last_ping_age'] is not None:
                age.add_metric([record['uuid'], record['queue']],
                               record['last_ping_age'])
            for agent in record['agents']:
                labels = [record['queue'], record['uuid'], agent['name']]
                agent_jobs.add_metric(labels, len(agent['jobs']))
                agent_size.add_metric(labels, agent['size'])
        yield alive
        yield age
        yield agent_jobs
        yield agent_size
        with self.lock:
            for name, help in COUNTERS:
                family = core.CounterMetricFamily(
                    'zasync_jobs_%s' % name, help,
                    labels=['queue', 'uuid', 'agent'])
                for labels in sorted(self.agents):
                    family.add_metric(list(labels), self.counters.get(
                        (name,) + labels, 0))
                yield family
            for name, help, histograms in (
                    ('zasync_job_duration_seconds',
                     'Seconds a completed job ran', self.durations),
                    ('zasync_job_latency_seconds',
                     'Seconds from when a job was due (put, or its '
                     'begin_after) to its start', self.latencies)):
                family = core.HistogramMetricFamily(name, help,
                                                    labels=['queue'])
                for queue_name, histogram in sorted(histograms.items()):
                    family.add_metric([queue_name], histogram.buckets(),
                                      histogram.sum)
                yield family


class DispatcherCollector:
    """``zasync_worker_*`` metrics of the jobs a dispatcher started in this
    process (its ``jobs`` records); ``dispatcher`` is the dispatcher, or a
    function returning it (None while there is none yet)."""

    def __init__(self, dispatcher):
        self.source = dispatcher if callable(dispatcher) and not hasattr(
            dispatcher, 'jobs') else (lambda: dispatcher)
        self.lock = threading.Lock()
        self.seen = {}          # id(info) -> (info, set of counted events)
        self.counters = {}      # (name, queue, agent) -> n
        self.durations = {}     # (queue, agent) -> _Histogram
        self._stop = threading.Event()
        self._thread = None

    def describe(self):
        return []

    def sample(self):
        dispatcher = self.source()
        with self.lock:
            infos = list(dispatcher.jobs.values()) if dispatcher else []
            current = set()
            for info in infos:
                current.add(id(info))
                entry = self.seen.get(id(info))
                if entry is None or entry[0] is not info:
                    entry = self.seen[id(info)] = (info, set())
                counted = entry[1]
                labels = (info.get('queue'), info.get('agent'))
                events = []
                if info.get('started') is not None:
                    events.append('started')
                if info.get('completed') is not None and not info.get(
                        'reassigned'):
                    events.append('completed')
                    if info.get('failed'):
                        events.append('failed')
                if info.get('timed out'):
                    events.append('timed_out')
                if info.get('cancelled'):
                    events.append('cancelled')
                for event in events:
                    if event not in counted:
                        counted.add(event)
                        key = (event,) + labels
                        self.counters[key] = self.counters.get(key, 0) + 1
                        if event == 'completed' and info.get('started'):
                            self.durations.setdefault(
                                labels, _Histogram()).observe(
                                (info['completed'] - info['started'])
                                .total_seconds())
            for key in [k for k in self.seen if k not in current]:
                del self.seen[key]

    def collect(self):
        core = prometheus_client.core
        self.sample()
        dispatcher_now = self.source
        with self.lock:
            for name, help in (
                    ('started', 'Jobs this worker started'),
                    ('completed', 'Jobs this worker completed'),
                    ('failed', 'Jobs this worker completed with a failure'),
                    ('timed_out', 'Jobs this worker stopped at their '
                                  'timeout'),
                    ('cancelled', 'Jobs this worker stopped because they '
                                  'were cancelled')):
                family = core.CounterMetricFamily(
                    'zasync_worker_jobs_%s' % name, help,
                    labels=['queue', 'agent'])
                for key, value in sorted(self.counters.items(),
                                         key=lambda i: str(i[0])):
                    if key[0] == name:
                        family.add_metric([str(key[1]), str(key[2])], value)
                yield family
            family = core.HistogramMetricFamily(
                'zasync_worker_job_duration_seconds',
                'Seconds the jobs this worker completed ran',
                labels=['queue', 'agent'])
            for labels, histogram in sorted(self.durations.items(),
                                            key=lambda i: str(i[0])):
                family.add_metric([str(label) for label in labels],
                                  histogram.buckets(), histogram.sum)
            yield family
            for name, attribute, help in (
                    ('claim_conflicts', 'claim_conflicts',
                     'Claims of this worker tried again after a conflict '
                     '(or another transaction error)'),
                    ('group_commits', 'groups_committed',
                     'Groups of two jobs or more this worker committed in '
                     'one transaction'),
                    ('grouped_jobs', 'grouped_jobs',
                     'Jobs this worker committed in such groups'),
                    ('run_in_claim', 'run_in_claim',
                     'Jobs this worker ran in the transaction of their '
                     'claim, which committed with their result')):
                counter = core.CounterMetricFamily(
                    'zasync_worker_%s' % name, help)
                counter.add_metric([], getattr(dispatcher_now(), attribute,
                                               0) or 0)
                yield counter
            active = core.GaugeMetricFamily(
                'zasync_worker_active_jobs',
                'Jobs the worker threads run right now')
            dispatcher = self.source()
            active.add_metric([], len(_safely(
                dispatcher.getActiveJobIds, [])) if dispatcher else 0)
            yield active

    def start(self, interval=SAMPLE_INTERVAL):
        def loop():
            while not self._stop.wait(interval):
                try:
                    self.sample()
                except Exception:   # pragma: no cover - keep sampling
                    utils.events_log.exception('sampling metrics failed')
        self._thread = threading.Thread(target=loop, daemon=True,
                                        name='zasync metrics sampler')
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def make_registry(*collectors):
    """A fresh ``CollectorRegistry`` with ``collectors``."""
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class read_root:
    """A context manager giving the root of ``db`` in a fresh transaction
    of a connection of its own, aborted and closed after."""

    def __init__(self, db):
        self.db = db

    def __call__(self):
        return self

    def __enter__(self):
        import transaction
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        return self.conn.root()

    def __exit__(self, *exc):
        self.tm.abort()
        self.conn.close()


class WorkerMetrics:
    """The metrics server of a worker: stop it with ``stop()``."""

    def __init__(self, server, thread, sampler):
        self.server = server
        self.thread = thread
        self.sampler = sampler
        self.port = server.server_address[1]

    def stop(self):
        self.sampler.stop()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_worker_metrics(db, dispatcher, host, port):
    """Serve the metrics of ``db`` and of ``dispatcher`` (or a function
    returning it) at ``http://host:port/metrics`` (``zasync worker
    --metrics-listen``); return a ``WorkerMetrics`` (``stop()`` it)."""
    sampler = DispatcherCollector(dispatcher)
    registry = make_registry(DatabaseCollector(read_root(db)), sampler)
    server, thread = prometheus_client.start_http_server(
        port, addr=host, registry=registry)
    sampler.start()
    return WorkerMetrics(server, thread, sampler)
