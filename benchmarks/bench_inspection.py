"""Cost of ``zasync jobs --limit 20``, ``stats``, ``status`` and ``job ID``
with 1,000 and with 100,000 completed jobs.

Run: bin/py benchmarks/bench_inspection.py [--repeat 7] [--large 100000]

Each database is a FileStorage in a temporary directory, built directly
(not measured): a queue with a few pending jobs, two dispatcher records
with one agent each (holding a job), the completed jobs spread over both
agents' completed collections (one in ten failed) and over the last
``--span-hours`` hours (default 120: within the collections' 7-day
period), and a ``JobContainer`` holding every job (as ``JobManager.put``
leaves it).  Jobs are stored in big transactions, 5,000 at a time.
``--pending N`` adds pending jobs (half of them due in an hour) to both
databases.

Each command runs in-process through ``zasync.cli.main``, its output going
to a ``StringIO``, ``--repeat`` times; the median is printed.  Each run
opens and closes the database as the command does.  Opening a FileStorage
reads its index of every object (a fixed cost of the storage, growing with
the database; ZEO and RelStorage have none): the ``open`` line measures it
alone (a command that opens the database and stops), and the ``less
open`` ratios subtract it.  The target of issue 11 is a ratio of at most 3
from the small to the large database.
"""
import argparse
import contextlib
import datetime
import io
import operator
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import transaction
import ZODB
import ZODB.FileStorage
import zope.component
import zope.interface

from zasync import cli
from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.failure import Failure
from zasync.job import Job
from zasync.job import _COMPLETED
from zasync.manager import JobContainer
from zasync.queue import Queue
from zasync.queue import Queues

BATCH = 5000


@zope.interface.implementer(interfaces.IClock)
class Clock:
    """A settable clock: the completed collections key jobs by ``now``."""

    def __init__(self, value):
        self.value = value

    def now(self):
        return self.value

    def sleep(self, seconds):
        self.value += datetime.timedelta(seconds=seconds)


def build(path, completed, span_hours, pending=10, agents=2):
    """Fill a FileStorage; return the id of a completed job (the oldest
    but one) and of a pending one."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path), cache_size=50000)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    queues = root[interfaces.KEY] = Queues()
    queue = queues[''] = Queue()
    container = root[interfaces.JOBS_KEY] = JobContainer()
    records = []
    for i in range(agents):
        record = queue.dispatchers.register(uuid.uuid4())
        record['main'] = Agent(size=3)
        record.activate()
        record.last_ping.value = utils.now()
        records.append(record)
    tm.commit()
    end = utils.now()
    start = end - datetime.timedelta(hours=span_hours)
    step = (end - start) / max(completed, 1)
    clock = Clock(start)
    site = zope.component.getGlobalSiteManager()
    site.registerUtility(clock, interfaces.IClock)
    ids = []
    try:
        for batch_start in range(0, completed, BATCH):
            for i in range(batch_start, min(completed, batch_start + BATCH)):
                clock.value = start + step * i
                job = Job(operator.add, i, 1)
                conn.add(job)
                job._status_id = _COMPLETED
                if i % 10 == 9:
                    try:
                        raise ValueError('job %d failed' % i)
                    except ValueError:
                        job._result = Failure()
                else:
                    job._result = i + 1
                job.active_start = clock.value - datetime.timedelta(
                    milliseconds=5 + i % 50)
                job.active_end = clock.value
                records[i % agents]['main'].completed.add(job)
                if i == 1:
                    ids.append(job)
                container[str(int.from_bytes(job._p_oid, 'big'))] = job
            for record in records:
                record['main'].completed.archive(clock.value)
            tm.commit()
    finally:
        site.unregisterUtility(clock, interfaces.IClock)
    for i in range(pending):
        job = queue.put(Job(operator.mul, i, 2),
                        begin_after=end + datetime.timedelta(hours=i % 2))
        container[str(int.from_bytes(job._p_oid, 'big'))] = job
        ids.append(job)
        if i % BATCH == BATCH - 1:
            tm.commit()
    tm.commit()
    for record in records:   # a job each agent holds
        job = queue.claim()
        job.parent = record['main']
        record['main']._append(job)
    tm.commit()
    ids = [str(int.from_bytes(job._p_oid, 'big')) for job in ids[:2]]
    conn.close()
    db.close()   # (writes the index: a read-only open does not)
    return ids


def run_command(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        start = time.perf_counter()
        status = cli.main(argv)
        elapsed = time.perf_counter() - start
    if status:
        sys.exit('%s failed (%s): %s' % (' '.join(argv), status,
                                         err.getvalue()))
    return elapsed, out.getvalue()


def measure(uri, ids, repeat):
    commands = {
        'open': ['job', '--zodb', uri, 'x'],   # (fails after opening)
        'jobs --limit 20': ['jobs', '--zodb', uri, '--limit', '20'],
        'stats': ['stats', '--zodb', uri],
        'status': ['status', '--zodb', uri],
        'job ID': ['job', '--zodb', uri, ids[0]],
    }
    times = {}
    outputs = {}
    for name, argv in commands.items():
        run_command(argv) if name != 'open' else None   # (warm up)
        samples = []
        for i in range(repeat):
            if name == 'open':
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), \
                        contextlib.redirect_stderr(err):
                    start = time.perf_counter()
                    cli.main(argv)
                    samples.append(time.perf_counter() - start)
            else:
                elapsed, outputs[name] = run_command(argv)
                samples.append(elapsed)
        times[name] = statistics.median(samples)
    return times, outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--small', type=int, default=1000)
    parser.add_argument('--large', type=int, default=100000)
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--span-hours', type=float, default=120)
    parser.add_argument('--pending', type=int, default=10,
                        help='pending jobs besides (half of them due in an '
                             'hour; default 10)')
    parser.add_argument('--show', action='store_true',
                        help='print the output of each command')
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix='zasync-bench-')
    results = {}
    try:
        for count in (args.small, args.large):
            path = os.path.join(directory, 'Data-%d.fs' % count)
            start = time.perf_counter()
            ids = build(path, count, args.span_hours, args.pending)
            built = time.perf_counter() - start
            times, outputs = measure('file://' + path, ids, args.repeat)
            results[count] = times
            print('%7d completed jobs (built in %.1f s, %.1f MB): %s' % (
                count, built, os.path.getsize(path) / 1e6, '   '.join(
                    '%s %.1f ms' % (name, value * 1e3)
                    for name, value in times.items())))
            if args.show:
                for name, text in outputs.items():
                    print('--- %s\n%s' % (name, text.rstrip()))
    finally:
        shutil.rmtree(directory)
    small, large = results[args.small], results[args.large]
    worst = 0
    print('ratio %d/%d (median of %d runs; target <= 3):'
          % (args.large, args.small, args.repeat))
    for name in small:
        if name == 'open':
            continue
        ratio = large[name] / small[name]
        worst = max(worst, ratio)
        print('  %-16s %5.2f   (less open: %6.1f ms -> %6.1f ms)' % (
            name, ratio, (small[name] - small['open']) * 1e3,
            (large[name] - large['open']) * 1e3))
    print('  %-16s %5.2f' % ('open', large['open'] / small['open']))
    return 0 if worst <= 3 else 1


if __name__ == '__main__':
    raise SystemExit(main())
