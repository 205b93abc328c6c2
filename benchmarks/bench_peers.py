"""zasync against Huey on SQLite: the same trivial job, side by side.

    bin/py benchmarks/bench_peers.py [--jobs 3000] [--threads 1,3]
                                     [--repeat 3] [--latency-jobs 200]
                                     [--batch 1000] [--huey-delay 0.1]

Both systems run embedded and durable in this one process, on the same
machine in the same run:

- zasync: a FileStorage in a temporary directory (fsync at every commit,
  FileStorage's default) and a real threaded in-process dispatcher (a
  Twisted reactor in a thread, as ``bench.py`` runs it) with one agent of
  N worker threads;
- Huey: ``SqliteHuey`` on a file in the same temporary directory, with
  Huey's defaults (WAL journal, SQLite's default ``synchronous``), and its
  own ``Consumer`` started in this process with N worker threads.

The job body is the same plain function for both (``arith``: a little
arithmetic on its argument).  Every repetition runs, interleaved, zasync
then Huey for each thread count, then the enqueue rates, then the
latencies.  The script prints each figure as it is measured, then the
medians of the repetitions, and last the ratios zasync/Huey.

What is measured:

- jobs/s: ``--jobs`` jobs enqueued one at a time (zasync: one job per
  transaction; Huey: one call of the task each) while the workers run; the
  clock runs from the first enqueue to the moment the last job's result
  can be read (zasync: the job's status is completed in a new transaction
  of the producer's connection; Huey: the result is in its result store).
  The producer looks every 5 ms once it has enqueued everything, and checks
  that every result is the right one;
  With ``--preload``, every job is enqueued first (zasync: 500 per
  transaction, as ``bench.py`` does; Huey: one call each) and the clock
  runs from the start of the workers (zasync: the commit that adds the
  agent; Huey: the consumer's start) to the last result;
  ``--group-size`` and ``--prefetch`` set the zasync dispatcher's
  attributes of those names (group commits), where the tree has them;
- enqueue jobs/s, with no worker running: ``--jobs`` jobs one per
  transaction (zasync) or call (Huey), and, for zasync, ``--jobs`` jobs in
  transactions of ``--batch`` jobs each;
- latency on an idle worker (one thread): ``--latency-jobs`` times, one job
  is enqueued and the producer waits for its result, looking every
  ``--poll-ms`` ms; the time from just before the enqueue to the result
  being seen.  Between two jobs the producer pauses for a random time from
  2 ms to ``--idle-ms`` (the same sequence for both systems), so that jobs
  arrive at any point of a polling cycle.  p50 and p99 of all
  repetitions' samples together.
"""
import argparse
import importlib.metadata
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import transaction
import ZODB
import ZODB.FileStorage
import zope.component

from zasync import interfaces

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import Setup  # noqa: E402 (beside this file)
from bench import percentile  # noqa: E402
from commit_rate import commit_rate  # noqa: E402


def arith(i):
    """The job body, the same for both systems."""
    return i * 3 + 1


class Failed(Exception):
    pass


# -- zasync ---------------------------------------------------------------

def zasync_wait_all(setup, jobs, pause, deadline=600):
    """Wait until every job of ``jobs`` is completed (seen from the
    producer's connection), checking each result."""
    end = time.monotonic() + deadline
    done = 0
    while done < len(jobs):
        setup.tm.begin()
        progressed = False
        while done < len(jobs) and jobs[done].status == interfaces.COMPLETED:
            if jobs[done].result != arith(done):
                raise Failed('zasync job %d: %r' % (done, jobs[done].result))
            done += 1
            progressed = True
        if done < len(jobs) and not progressed:
            if time.monotonic() > end:
                raise Failed('zasync: %d of %d jobs completed'
                             % (done, len(jobs)))
            time.sleep(pause)


DISPATCHER_SETTINGS = {}   # attribute -> value, from the command line


def zasync_ready(setup, threads):
    for name, value in DISPATCHER_SETTINGS.items():
        setattr(setup.dispatcher, name, value)
    setup.add_agent(threads)
    setup.tm.commit()
    setup.wait(lambda: 'main' in (setup.dispatcher.queues.get('') or {}), 10)


def zasync_throughput(directory, count, threads, preload=False):
    from zasync.job import Job
    setup = Setup('file', directory, 'throughput')
    try:
        jobs = []
        if preload:
            for i in range(count):
                jobs.append(setup.queue.put(Job(arith, i)))
                if i % 500 == 499:
                    setup.tm.commit()
            setup.tm.commit()
            start = time.perf_counter()
            zasync_ready(setup, threads)
        else:
            zasync_ready(setup, threads)
            start = time.perf_counter()
            for i in range(count):
                jobs.append(setup.queue.put(Job(arith, i)))
                setup.tm.commit()
        zasync_wait_all(setup, jobs, 0.005)
        return count / (time.perf_counter() - start)
    finally:
        setup.close()


def zasync_enqueue(directory, count, batch):
    """jobs/s putting ``count`` jobs, ``batch`` per transaction, with no
    dispatcher."""
    from zasync import queue as queue_module
    from zasync.job import Job
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'enqueue.fs')))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queues = conn.root()[interfaces.KEY] = queue_module.Queues()
        queue = queues[''] = queue_module.Queue()
        tm.commit()
        start = time.perf_counter()
        for first in range(0, count, batch):
            for i in range(first, min(count, first + batch)):
                queue.put(Job(arith, i))
            tm.commit()
        return count / (time.perf_counter() - start)
    finally:
        tm.abort()
        conn.close()
        db.close()


def idle_pauses(count, longest):
    """The pauses between two latency jobs: the same sequence for both
    systems, random so that the jobs arrive anywhere in a polling cycle."""
    rng = random.Random(14)
    return [rng.uniform(0.002, max(0.002, longest)) for i in range(count)]


def zasync_latency(directory, count, pause, idle):
    from zasync.job import Job
    setup = Setup('file', directory, 'latency')
    try:
        zasync_ready(setup, 1)
        samples = []
        for i, rest in enumerate(idle_pauses(count, idle)):
            setup.tm.begin()
            before = time.perf_counter()
            job = setup.queue.put(Job(arith, i))
            setup.tm.commit()
            zasync_wait_one(setup, job, i, pause)
            samples.append(time.perf_counter() - before)
            time.sleep(rest)   # idle again
        return samples
    finally:
        setup.close()


def zasync_wait_one(setup, job, i, pause, deadline=10):
    end = time.monotonic() + deadline
    while True:
        setup.tm.begin()
        if job.status == interfaces.COMPLETED:
            if job.result != arith(i):
                raise Failed('zasync job %d: %r' % (i, job.result))
            return
        if time.monotonic() > end:
            raise Failed('zasync: job %d never completed' % i)
        time.sleep(pause)


# -- Huey -----------------------------------------------------------------

class HueyRun:
    """A ``SqliteHuey`` on a file of ``directory``, its task, and (once
    ``start`` is called) its consumer running in this process."""

    def __init__(self, directory, name):
        import huey
        self.huey = huey.SqliteHuey(
            'bench', filename=os.path.join(directory, name + '.db'))
        self.task = self.huey.task()(arith)
        self.consumer = None

    def start(self, threads, delay):
        from huey.constants import WORKER_THREAD
        # The consumer installs signal handlers for its own main loop,
        # which this script does not run: put ours back afterwards.
        self._handlers = {
            signum: signal.getsignal(signum)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.consumer = self.huey.create_consumer(
            workers=threads, worker_type=WORKER_THREAD, periodic=False,
            initial_delay=delay, check_worker_health=False)
        self.consumer.start()
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)

    def close(self):
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
        self.huey.storage.close()

    def pragmas(self):
        return tuple(
            self.huey.storage.sql('pragma %s' % name, results=True)[0][0]
            for name in ('journal_mode', 'synchronous'))


def huey_result(result, i):
    """The result of job ``i`` if it is there (read, not removed)."""
    value = result.get(preserve=True)
    if value is not None and value != arith(i):
        raise Failed('huey job %d: %r' % (i, value))
    return value


def huey_throughput(directory, count, threads, delay, preload=False):
    run = HueyRun(directory, 'throughput')
    try:
        results = []
        if preload:
            for i in range(count):
                results.append(run.task(i))
            start = time.perf_counter()
            run.start(threads, delay)
        else:
            run.start(threads, delay)
            start = time.perf_counter()
            for i in range(count):
                results.append(run.task(i))
        done = 0
        end = time.monotonic() + 600
        while done < count:
            progressed = False
            while done < count and huey_result(results[done], done):
                done += 1
                progressed = True
            if done < count and not progressed:
                if time.monotonic() > end:
                    raise Failed('huey: %d of %d jobs done' % (done, count))
                time.sleep(0.005)
        return count / (time.perf_counter() - start)
    finally:
        run.close()


def huey_enqueue(directory, count):
    run = HueyRun(directory, 'enqueue')
    try:
        start = time.perf_counter()
        for i in range(count):
            run.task(i)
        return count / (time.perf_counter() - start)
    finally:
        run.close()


def huey_latency(directory, count, pause, delay, idle):
    run = HueyRun(directory, 'latency')
    try:
        run.start(1, delay)
        samples = []
        for i, rest in enumerate(idle_pauses(count, idle)):
            before = time.perf_counter()
            result = run.task(i)
            end = time.monotonic() + 10
            while huey_result(result, i) is None:
                if time.monotonic() > end:
                    raise Failed('huey: job %d never done' % i)
                time.sleep(pause)
            samples.append(time.perf_counter() - before)
            time.sleep(rest)   # idle again
        return samples
    finally:
        run.close()


# -- the run --------------------------------------------------------------

def sqlite_ceiling(directory, count=3000):
    """Tiny commits/s on SQLite with the pragmas Huey uses by default (WAL,
    the default ``synchronous``)."""
    conn = sqlite3.connect(os.path.join(directory, 'ceiling.db'),
                           isolation_level=None)
    try:
        conn.execute('pragma journal_mode="wal"')
        conn.execute('create table t (k integer primary key, v integer)')
        conn.execute('insert into t values (1, 0)')
        start = time.perf_counter()
        for i in range(count):
            conn.execute('update t set v = ? where k = 1', (i,))
        return count / (time.perf_counter() - start)
    finally:
        conn.close()


def file_ceiling(directory, count=3000):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'ceiling.fs')))
    try:
        return commit_rate(db, count)
    finally:
        db.close()


def describe_tree():
    root = os.path.dirname(HERE)
    try:
        head = subprocess.run(
            ['git', '-C', root, 'rev-parse', '--short', 'HEAD'],
            capture_output=True, text=True, check=True).stdout.strip()
        src = subprocess.run(
            ['git', '-C', root, 'log', '-1', '--format=%h', '--', 'src'],
            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ['git', '-C', root, 'status', '--porcelain', '--', 'src'],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return '%s, src last changed in %s%s' % (
        head, src, ' + uncommitted changes in src' if dirty else '')


def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return '?'


def fresh(directory, name):
    path = os.path.join(directory, name)
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path)
    return path


def ms(seconds):
    return seconds * 1000.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=3000,
                        help='jobs per throughput and enqueue run '
                             '(default 3000)')
    parser.add_argument('--threads', default='1,3',
                        help='worker thread counts, comma-separated '
                             '(default 1,3)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='interleaved repetitions (default 3)')
    parser.add_argument('--latency-jobs', type=int, default=200,
                        help='jobs per latency run (default 200)')
    parser.add_argument('--batch', type=int, default=1000,
                        help='zasync jobs per transaction in the batched '
                             'enqueue (default 1000)')
    parser.add_argument('--huey-delay', type=float, default=0.1,
                        help="Huey consumer's initial polling delay in "
                             "seconds (default 0.1, Huey's own default)")
    parser.add_argument('--poll-ms', type=float, default=0.5,
                        help='how often the latency runs look for the '
                             'result, in ms (default 0.5)')
    parser.add_argument('--preload', action='store_true',
                        help='jobs/s with every job enqueued before the '
                             'workers start (zasync: 500 per transaction), '
                             'timed from their start')
    parser.add_argument('--group-size', default=None, metavar='N[,N...]',
                        help="zasync: the dispatcher's group_size (jobs "
                             "of a thread committed together; a "
                             "Dispatcher's own default is one per "
                             "transaction); several values: one zasync "
                             "throughput run each, interleaved (the "
                             "latency runs use the last)")
    parser.add_argument('--prefetch', type=int, default=None,
                        help="zasync: the dispatcher's prefetch")
    parser.add_argument('--idle-ms', type=float, default=100.0,
                        help='longest pause between two latency jobs, in '
                             'ms (random from 2 ms, default 100)')
    args = parser.parse_args(argv)
    try:
        import huey
    except ImportError:
        raise SystemExit('Huey is not installed: pip install huey '
                         '(or the bench extra of zasync)')
    threads_list = [int(t) for t in args.threads.split(',')]
    from zasync.dispatcher import Dispatcher
    groups = [None]
    if args.group_size is not None:
        groups = [int(g) for g in args.group_size.split(',')]
    for name, value in (('group_size', groups[-1]),
                        ('prefetch', args.prefetch)):
        if value is not None:
            if not hasattr(Dispatcher, name):
                raise SystemExit('this zasync has no Dispatcher.%s' % name)
            DISPATCHER_SETTINGS[name] = value

    def grouped(group):
        if group is not None:
            DISPATCHER_SETTINGS['group_size'] = group
        return '' if group is None else ', group %d' % group
    pause = args.poll_ms / 1000.0
    idle = args.idle_ms / 1000.0
    zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)

    directory = tempfile.mkdtemp(prefix='zasync-bench-peers-')
    try:
        probe = HueyRun(fresh(directory, 'probe'), 'probe')
        journal_mode, synchronous = probe.pragmas()
        probe.close()
        print('Python %s, %s'
              % (platform.python_version(), platform.machine()))
        print('zasync %s (%s), ZODB %s: FileStorage, fsync at each commit'
              % (version('zasync'), describe_tree(), version('ZODB')))
        print('zasync dispatcher: group_size %s, prefetch %s' % (
            args.group_size or getattr(Dispatcher, 'group_size', '-'),
            DISPATCHER_SETTINGS.get(
                'prefetch', getattr(Dispatcher, 'prefetch', '-'))))
        print('Huey %s, SQLite %s: SqliteHuey, journal_mode=%s, '
              'synchronous=%s' % (huey.__version__, sqlite3.sqlite_version,
                                  journal_mode, synchronous))
        print('jobs %d (%s), threads %s, repetitions %d, latency jobs %d, '
              'Huey initial delay %.3f s, cores %s, load average %.2f'
              % (args.jobs, 'preloaded' if args.preload else 'enqueued live',
                 args.threads, args.repeat, args.latency_jobs,
                 args.huey_delay, os.cpu_count(), os.getloadavg()[0]))
        print('ceilings (tiny commits/s): FileStorage %.0f, SQLite %.0f'
              % (file_ceiling(fresh(directory, 'c1')),
                 sqlite_ceiling(fresh(directory, 'c2'))))
        sys.stdout.flush()

        figures = {}
        latencies = {'zasync': [], 'huey': []}

        def record(key, value, text):
            figures.setdefault(key, []).append(value)
            print('  %-36s %8.0f' % (text, value))
            sys.stdout.flush()

        for rep in range(args.repeat):
            print('repetition %d (load average %.2f)'
                  % (rep + 1, os.getloadavg()[0]))
            for threads in threads_list:
                for group in groups:
                    label = grouped(group)
                    record(('zasync', threads, group), zasync_throughput(
                        fresh(directory, 'z'), args.jobs, threads,
                        args.preload),
                        'zasync jobs/s, %d thread(s)%s' % (threads, label))
                grouped(groups[-1])
                record(('huey', threads), huey_throughput(
                    fresh(directory, 'h'), args.jobs, threads,
                    args.huey_delay, args.preload),
                    'huey jobs/s, %d thread(s)' % threads)
            record('zasync enqueue', zasync_enqueue(
                fresh(directory, 'z'), args.jobs, 1),
                'zasync enqueue jobs/s, 1 per txn')
            record('zasync batch', zasync_enqueue(
                fresh(directory, 'z'), args.jobs, args.batch),
                'zasync enqueue jobs/s, %d per txn' % args.batch)
            record('huey enqueue', huey_enqueue(
                fresh(directory, 'h'), args.jobs),
                'huey enqueue jobs/s, 1 per call')
            for system, measure in (
                    ('zasync', lambda: zasync_latency(
                        fresh(directory, 'z'), args.latency_jobs, pause,
                        idle)),
                    ('huey', lambda: huey_latency(
                        fresh(directory, 'h'), args.latency_jobs, pause,
                        args.huey_delay, idle))):
                samples = measure()
                latencies[system].extend(samples)
                print('  %-36s p50 %.2f ms, p99 %.2f ms' % (
                    system + ' latency, 1 thread',
                    ms(percentile(samples, 0.5)),
                    ms(percentile(samples, 0.99))))
                sys.stdout.flush()

        def median(key):
            return statistics.median(figures[key])

        print()
        print('medians of %d repetitions (load average %.2f):'
              % (args.repeat, os.getloadavg()[0]))
        for threads in threads_list:
            print('  jobs/s, %d thread(s):  %s   huey %6.0f' % (
                threads, '   '.join(
                    'zasync%s %6.0f' % (grouped(group), median(
                        ('zasync', threads, group))) for group in groups),
                median(('huey', threads))))
        print('  enqueue jobs/s:       zasync %6.0f   huey %6.0f   '
              '(zasync %d per txn: %.0f)'
              % (median('zasync enqueue'), median('huey enqueue'),
                 args.batch, median('zasync batch')))
        p50 = {}
        for system in ('zasync', 'huey'):
            samples = latencies[system]
            p50[system] = percentile(samples, 0.5)
            print('  latency %-7s p50 %.2f ms, p99 %.2f ms, max %.2f ms '
                  '(%d samples)' % (
                      system, ms(p50[system]),
                      ms(percentile(samples, 0.99)), ms(max(samples)),
                      len(samples)))
        ratios = ['%.2f (jobs/s, %d thread%s%s)' % (
            median(('zasync', threads, group)) / median(('huey', threads)),
            threads, '' if threads == 1 else 's', grouped(group))
            for threads in threads_list for group in groups]
        ratios.append('%.2f (enqueue, 1 per txn/call)' % (
            median('zasync enqueue') / median('huey enqueue')))
        ratios.append('%.2f (latency p50; lower is faster)' % (
            p50['zasync'] / p50['huey']))
        print('ratio zasync/huey: ' + ', '.join(ratios))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    # Run as the module ``bench_peers``: a zasync job's callable must be
    # importable by its name, which a function of ``__main__`` is not.
    import bench_peers
    bench_peers.main()
