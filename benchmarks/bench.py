"""Throughput and latency of zasync, against the storage's own ceiling.

    bin/py benchmarks/bench.py --storage file [--workers 3] [--jobs 5000]
                               [--latency-jobs 300]

One run prints:

- the storage's raw commit rate for tiny transactions (the ceiling);
- jobs/s for ``--jobs`` trivial jobs put in the queue before the agent
  that runs them appears (enqueue -> completed), and its ratio to the
  ceiling;
- median and p99 latency from the enqueuing commit to the job starting,
  for ``--latency-jobs`` jobs enqueued one by one on an idle dispatcher,
  once for each ``--group-commit`` setting (with group commits, a job
  that comes alone runs in its claim's transaction: how many did is
  printed too);
- peak memory (max RSS) of the process.

With ``--storage file`` everything runs in this process: a real Twisted
reactor in a thread drives an in-process dispatcher on a FileStorage in a
temporary directory.  ``--storage zeo|relstorage`` runs worker processes
(``bench_scaleout.py``).
"""
import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

import transaction
import ZODB
import ZODB.FileStorage
import zope.component

from zasync import interfaces

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from commit_rate import commit_rate  # noqa: E402 (beside this file)

_started = {}
_event = threading.Event()
_expected = [None]


def noop(i):
    """The trivial job."""
    return i


def mark(i):
    """A job that records (in this process) when it started."""
    _started[i] = time.perf_counter()
    if i == _expected[0]:
        _event.set()
    return i


def open_db(kind, directory, name):
    if kind == 'file':
        storage = ZODB.FileStorage.FileStorage(
            os.path.join(directory, name + '.fs'))
    else:
        raise SystemExit('storage %r is not supported yet' % (kind,))
    return ZODB.DB(storage)


def ceiling(kind, directory, count=3000):
    db = open_db(kind, directory, 'ceiling')
    try:
        return commit_rate(db, count)
    finally:
        db.close()


class Setup:
    """A database with a queue and a threaded in-process dispatcher."""

    def __init__(self, kind, directory, name, poll_interval=5, prefetch=0,
                 group_size=1):
        from zasync import dispatcher as dispatcher_module
        from zasync import queue as queue_module
        import twisted.internet.selectreactor
        self.db = open_db(kind, directory, name)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        root = self.conn.root()
        queues = root[interfaces.KEY] = queue_module.Queues()
        self.queue = queues[''] = queue_module.Queue()
        self.tm.commit()
        self.reactor = twisted.internet.selectreactor.SelectReactor()
        self.uuid = uuid.uuid4()
        self.dispatcher = dispatcher_module.Dispatcher(
            self.db, self.reactor, poll_interval=poll_interval,
            uuid=self.uuid)
        self.dispatcher.prefetch = prefetch
        self.dispatcher.group_size = group_size
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.wait(lambda: self.uuid in self.queue.dispatchers and
                  self.queue.dispatchers[self.uuid].activated, 10)

    def _run(self):
        self.dispatcher.activate()
        self.reactor.run(installSignalHandlers=False)

    def wait(self, predicate, seconds, pause=0.01):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tm.begin()
            if predicate():
                return
            time.sleep(pause)
        raise SystemExit('timed out waiting')

    def add_agent(self, size):
        from zasync import agent as agent_module
        agent = agent_module.Agent(size=size)
        self.queue.dispatchers[self.uuid]['main'] = agent
        return agent

    def close(self):
        from zasync import dispatcher as dispatcher_module
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)
        self.dispatcher.join(10)
        dispatcher_module.pop(self.uuid)
        self.tm.abort()
        self.conn.close()
        self.db.close()


def throughput(kind, directory, jobs, workers, prefetch=0, group_size=1):
    from zasync.job import Job
    setup = Setup(kind, directory, 'throughput-%d-%d' % (prefetch, group_size),
                  prefetch=prefetch, group_size=group_size)
    try:
        batch = 500
        for start in range(0, jobs, batch):
            for i in range(start, min(jobs, start + batch)):
                setup.queue.put(Job(noop, i))
            setup.tm.commit()
        agent = setup.add_agent(workers)
        begin = time.perf_counter()
        setup.tm.commit()
        setup.wait(lambda: len(setup.queue) == 0 and len(agent) == 0,
                   600, pause=0.02)
        elapsed = time.perf_counter() - begin
        dispatcher = setup.dispatcher
        COUNTERS.append((dispatcher.groups_committed, dispatcher.grouped_jobs,
                         dispatcher.claim_conflicts))
        return jobs / elapsed, elapsed
    finally:
        setup.close()


# (groups committed, jobs in them, claims tried again) of each throughput
# run, in order
COUNTERS = []


def latency(kind, directory, count, workers, group_size=1):
    from zasync.job import Job
    setup = Setup(kind, directory, 'latency', group_size=group_size)
    try:
        setup.add_agent(workers)
        setup.tm.commit()
        setup.wait(lambda: 'main' in (setup.dispatcher.queues.get('') or {}),
                   10)
        samples = []
        for i in range(count):
            _event.clear()
            _expected[0] = i
            setup.tm.begin()
            setup.queue.put(Job(mark, i))
            before = time.perf_counter()
            setup.tm.commit()
            if not _event.wait(10):
                raise SystemExit('job %d never started' % i)
            samples.append(_started[i] - before)
            time.sleep(0.002)   # idle again
        COUNTERS.append(setup.dispatcher.run_in_claim)
        return samples
    finally:
        setup.close()


def percentile(values, fraction):
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(fraction * len(values)) - 1))
    return values[index]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--storage', choices=['file', 'zeo', 'relstorage'],
                        default='file')
    parser.add_argument('--workers', type=int, default=3,
                        help='agent size (worker threads), default 3')
    parser.add_argument('--jobs', type=int, default=5000)
    parser.add_argument('--latency-jobs', type=int, default=300)
    parser.add_argument('--threads', type=int, default=3,
                        help='zeo/relstorage: threads of each worker '
                             'process (--workers is then the number of '
                             'worker processes)')
    parser.add_argument('--prefetch', default='0', metavar='N[,N...]',
                        help='file: jobs a claim may take beyond the free '
                             'threads (Dispatcher.prefetch); several '
                             'values: one throughput run each, '
                             'interleaved with --repeat')
    parser.add_argument('--group-commit', default='off',
                        metavar='off|on[,...]',
                        help='file: group commits off (each job commits '
                             'alone) or on (up to GROUP jobs of a thread '
                             'in one transaction, Dispatcher.group_size); '
                             'several: each with each --prefetch value')
    parser.add_argument('--group', type=int, default=50,
                        help='the group size of --group-commit on')
    parser.add_argument('--repeat', type=int, default=1,
                        help='throughput runs per --prefetch value '
                             '(medians printed)')
    args = parser.parse_args(argv)
    if args.storage in ('zeo', 'relstorage'):
        import bench_scaleout   # worker processes: see its docstring
        bench_scaleout.run(args)
        return
    zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
    directory = tempfile.mkdtemp(prefix='zasync-bench-')
    try:
        rate = ceiling(args.storage, directory)
        print('storage: %s, workers: %d' % (args.storage, args.workers))
        print('ceiling (tiny commits/s):   %8.0f' % rate)
        configs = []
        for group in args.group_commit.split(','):
            if group not in ('on', 'off'):
                parser.error('--group-commit: on or off, not %r' % group)
            for value in args.prefetch.split(','):
                configs.append((int(value),
                                args.group if group == 'on' else 1))
        runs = {config: [] for config in configs}
        counters = {config: [] for config in configs}
        for repetition in range(args.repeat):
            for prefetch, group_size in configs:
                runs[prefetch, group_size].append(throughput(
                    args.storage, directory, args.jobs, args.workers,
                    prefetch, group_size)[0])
                counters[prefetch, group_size].append(COUNTERS[-1])

        def label(config):
            prefetch, group_size = config
            return 'prefetch %d, group commit %s' % (
                prefetch, 'on (%d)' % group_size if group_size > 1
                else 'off')
        for config in configs:
            jobs_per_second = statistics.median(runs[config])
            print('jobs/s (%d trivial jobs, %s): %8.0f   (runs: %s)'
                  % (args.jobs, label(config), jobs_per_second,
                     ', '.join('%.0f' % r for r in runs[config])))
            print('ratio jobs/s / ceiling:     %8.2f'
                  % (jobs_per_second / rate))
            print('  groups committed (jobs in them), claims tried again: '
                  '%s' % ', '.join('%d (%d), %d' % counts
                                   for counts in counters[config]))
        first = statistics.median(runs[configs[0]])
        for config in configs[1:]:
            print('ratio %s / %s: %.2f' % (
                label(config), label(configs[0]),
                statistics.median(runs[config]) / first))
        for group_size in sorted({config[1] for config in configs}):
            samples = latency(args.storage, directory, args.latency_jobs,
                              args.workers, group_size)
            print('enqueue->start latency (%d jobs, group commit %s): p50 '
                  '%.2f ms, p99 %.2f ms, max %.2f ms; %d run in their '
                  'claim' % (
                      len(samples),
                      'on (%d)' % group_size if group_size > 1 else 'off',
                      percentile(samples, 0.5) * 1000,
                      percentile(samples, 0.99) * 1000, max(samples) * 1000,
                      COUNTERS[-1]))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print('peak memory (max RSS):      %8.1f MB' % (peak / 1024.0))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    # Run as the module ``bench``: a job's callable must be importable by
    # its name, which a function of the ``__main__`` script is not.
    import bench
    bench.main()
