"""Cost of Queue.put and Queue.claim with 1,000 and with 100,000 pending jobs.

Run: bin/py benchmarks/bench_queue.py [--ops 300] [--large 100000]

Each measured operation is one transaction (put or claim, then commit) on
a FileStorage in a temporary directory, as an application or a dispatcher
would do it.  The queue is filled in batches beforehand (not measured).
Two rounds: every job at the default priority, then "mixed": the jobs
spread over five priorities (-10, 0, 5, 10, 50) and every tenth put with
a unique key.
"""
import argparse
import operator
import os
import shutil
import statistics
import tempfile
import time

import transaction
import ZODB
import ZODB.FileStorage

from zasync import interfaces
from zasync.job import Job
from zasync.queue import Queue
from zasync.queue import Queues


PRIORITIES = (-10, 0, 5, 10, 50)


def put_options(i, mixed):
    if not mixed:
        return {}
    options = {'priority': PRIORITIES[i % len(PRIORITIES)]}
    if not i % 10:
        options['unique_key'] = 'key %d' % i
    return options


def setup(directory, pending, mixed):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'Data.fs')), cache_size=200000)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    root[interfaces.KEY] = Queues()
    root[interfaces.KEY][''] = queue = Queue()
    tm.commit()
    done = 0
    while done < pending:
        for i in range(min(5000, pending - done)):
            queue.put(Job(operator.add, done + i, 1),
                      **put_options(done + i, mixed))
        tm.commit()
        done += min(5000, pending - done)
    return db, tm, conn, queue


def measure(queue, tm, ops, operation):
    times = []
    for i in range(ops):
        start = time.perf_counter()
        operation(queue, i)
        tm.commit()
        times.append(time.perf_counter() - start)
    return statistics.median(times), statistics.mean(times)


def do_put(queue, i):
    queue.put(Job(operator.mul, i, 2))


def do_mixed_put(queue, i):
    queue.put(Job(operator.mul, i, 2), **put_options(i + 1, True))


def do_claim(queue, i):
    job = queue.claim()
    assert job is not None


def run(pending, ops, mixed=False):
    directory = tempfile.mkdtemp(prefix='zasync-bench-')
    try:
        db, tm, conn, queue = setup(directory, pending, mixed)
        put = measure(queue, tm, ops, do_mixed_put if mixed else do_put)
        claim = measure(queue, tm, ops, do_claim)
        length = len(queue)
        conn.close()
        db.close()
        return put, claim, length
    finally:
        shutil.rmtree(directory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ops', type=int, default=300)
    parser.add_argument('--small', type=int, default=1000)
    parser.add_argument('--large', type=int, default=100000)
    args = parser.parse_args(argv)
    worst = 0
    for mixed in (False, True):
        label = 'mixed priorities and unique keys' if mixed else (
            'one priority')
        print(label + ':')
        results = {}
        for pending in (args.small, args.large):
            results[pending] = run(pending, args.ops, mixed)
            (put, put_mean), (claim, claim_mean), length = results[pending]
            print('%7d pending: put %7.1f us (mean %7.1f)   claim %7.1f us '
                  '(mean %7.1f)   [median of %d ops, one commit each]'
                  % (pending, put * 1e6, put_mean * 1e6, claim * 1e6,
                     claim_mean * 1e6, args.ops))
        small, large = results[args.small], results[args.large]
        ratios = [large[i][j] / small[i][j] for i in (0, 1) for j in (0, 1)]
        print('ratio %d/%d: put %.2f (mean %.2f)   claim %.2f (mean %.2f)   '
              '(must be <= 2)' % ((args.large, args.small) + tuple(ratios)))
        worst = max([worst] + ratios)
    return 0 if worst <= 2 else 1


if __name__ == '__main__':
    raise SystemExit(main())
