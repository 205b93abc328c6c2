"""Concurrent puts and claims, with real connections on a FileStorage.

Every test opens several connections, each with its own transaction
manager, lets them change the queue from the same snapshot, and commits
them one after the other (or from threads meeting at a barrier): exactly
the situation of application threads and dispatchers in several processes.
"""
import operator
import threading
import unittest

import transaction
from ZODB.POSException import ConflictError

from zasync import _pending
from zasync import interfaces
from zasync.job import Job
from zasync.testing import ManualClock
from zasync.testing.fixtures import DatabaseFixture


class Connection:
    """A connection with its own transaction manager, and its queue."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(self.tm)
        self.tm.begin()

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def commit(self):
        self.tm.commit()

    def abort(self):
        self.tm.abort()

    def close(self):
        self.tm.abort()
        self.conn.close()


class ConcurrencyBase(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        self.clock = ManualClock().install()
        self.connections = []

    def tearDown(self):
        for c in self.connections:
            c.close()
        super().tearDown()

    def connect(self):
        c = Connection(self.db)
        self.connections.append(c)
        return c

    def fill(self, count, tag=0):
        c = self.connect()
        for i in range(count):
            c.queue.put(Job(operator.add, tag, i))
        c.commit()
        c.close()
        self.connections.remove(c)

    def snapshot(self):
        c = self.connect()
        jobs = [(job.args[0], job.args[1]) for job in c.queue]
        length = len(c.queue)
        c.close()
        self.connections.remove(c)
        return length, jobs


def only(tag, i=None):
    """A claim filter accepting the jobs ``add(tag, i)``."""
    def accept(job):
        return (job.args[0] == tag) and (i is None or job.args[1] == i)
    return accept


class TestConcurrentPuts(ConcurrencyBase):

    def test_puts_from_many_connections_merge(self):
        # Many rounds, so that shards fill up and new ones are created
        # concurrently, in the same second and across seconds.
        rounds, width = 90, 3
        for r in range(rounds):
            cs = [self.connect() for i in range(width)]
            for w, c in enumerate(cs):
                c.queue.put(Job(operator.add, w, r))
            for c in cs:
                c.commit()     # raises ConflictError on failure
            for c in cs:
                c.close()
                self.connections.remove(c)
            if r % 40 == 39:
                self.clock.advance(1)
        length, jobs = self.snapshot()
        self.assertEqual(length, rounds * width)
        self.assertEqual(sorted(jobs), sorted(
            (w, r) for r in range(rounds) for w in range(width)))
        # Each connection's jobs keep their order.
        for w in range(width):
            self.assertEqual([r for (ww, r) in jobs if ww == w],
                             list(range(rounds)))

    def test_batches_of_puts_merge(self):
        a, b = self.connect(), self.connect()
        for i in range(150):     # more than two shards each
            a.queue.put(Job(operator.add, 1, i))
            b.queue.put(Job(operator.add, 2, i))
        a.commit()
        b.commit()
        length, jobs = self.snapshot()
        self.assertEqual(length, 300)
        self.assertEqual(len(set(jobs)), 300)

    def test_scheduled_puts_merge(self):
        a, b = self.connect(), self.connect()
        for i in range(20):
            a.queue.put(Job(operator.add, 1, i),
                        begin_after=self.clock.advance(0) + (i + 1) * HOUR)
            b.queue.put(Job(operator.add, 2, i),
                        begin_after=self.clock.advance(0) + (20 - i) * HOUR)
        a.commit()
        b.commit()
        length, jobs = self.snapshot()
        self.assertEqual(length, 40)
        c = self.connect()
        times = [job.begin_after for job in c.queue]
        self.assertEqual(times, sorted(times))

    def test_put_and_claim_merge(self):
        self.fill(3)
        a, b = self.connect(), self.connect()
        claimed = a.queue.claim()
        b.queue.put(Job(operator.add, 9, 9))
        a.commit()
        b.commit()
        self.assertEqual(claimed.args[:], [0, 0])
        length, jobs = self.snapshot()
        self.assertEqual(jobs, [(0, 1), (0, 2), (9, 9)])
        self.assertEqual(length, 3)

    def test_put_into_emptied_queue_merges(self):
        # The dispatcher drains the queue while an application puts.
        self.fill(1)
        a, b = self.connect(), self.connect()
        a.queue.claim()
        b.queue.put(Job(operator.add, 9, 9))
        a.commit()
        b.commit()
        self.assertEqual(self.snapshot(), (1, [(9, 9)]))


class TestConcurrentClaims(ConcurrencyBase):

    def test_claims_of_different_jobs_merge(self):
        self.fill(5)
        a, b = self.connect(), self.connect()
        ja = a.queue.claim(only(0, 0))
        jb = b.queue.claim(only(0, 1))
        a.commit()
        b.commit()
        self.assertEqual((ja.args[1], jb.args[1]), (0, 1))
        self.assertEqual(self.snapshot(), (3, [(0, 2), (0, 3), (0, 4)]))

    def test_claims_emptying_a_shard_merge(self):
        # The last two jobs of a shard claimed concurrently.
        self.fill(2)
        a, b = self.connect(), self.connect()
        a.queue.claim(only(0, 1))
        b.queue.claim(only(0, 0))
        a.commit()
        b.commit()
        self.assertEqual(self.snapshot(), (0, []))
        c = self.connect()
        self.assertIsNone(c.queue.claim())

    def test_claims_of_different_jobs_across_shards_merge(self):
        self.fill(200)
        cs = [self.connect() for i in range(4)]
        wanted = [0, 63, 64, 199]
        for c, i in zip(cs, wanted):
            self.assertEqual(c.queue.claim(only(0, i)).args[1], i)
        for c in cs:
            c.commit()
        length, jobs = self.snapshot()
        self.assertEqual(length, 196)
        self.assertEqual([i for tag, i in jobs],
                         [i for i in range(200) if i not in wanted])

    def test_two_claims_of_the_same_job_conflict(self):
        self.fill(3)
        a, b = self.connect(), self.connect()
        ja = a.queue.claim()
        jb = b.queue.claim()
        self.assertEqual(ja.args[:], jb.args[:])   # both chose job 0
        a.commit()
        self.assertRaises(ConflictError, b.commit)
        b.abort()
        # The loser retries and gets the next job: each job ran once.
        jb = b.queue.claim()
        b.commit()
        self.assertEqual(jb.args[:], [0, 1])
        self.assertEqual(self.snapshot(), (1, [(0, 2)]))

    def test_same_job_through_different_filters_conflicts(self):
        self.fill(3)
        a, b = self.connect(), self.connect()
        a.queue.claim(only(0, 2))
        b.queue.claim(lambda job: job.args[1] >= 2)
        a.commit()
        self.assertRaises(ConflictError, b.commit)

    def test_pull_of_a_claimed_job_conflicts(self):
        self.fill(2)
        a, b = self.connect(), self.connect()
        a.queue.claim()
        b.queue.pull(0)
        a.commit()
        self.assertRaises(ConflictError, b.commit)

    def test_stale_put_into_pruned_shard_conflicts(self):
        # A put whose snapshot predates the pruning of its shard must not
        # add the job to a shard nobody can reach any more.
        size = _pending.SHARD_SIZE
        self.fill(size - 1, tag=1)          # group 0, but for one
        stale = self.connect()
        stale.queue                         # snapshot taken now
        self.fill(2 * size)                 # groups 0 (one job), 1 and 2
        pruner = self.connect()
        for i in range(size):               # group 0 emptied and retired
            pruner.queue.claim()
        pruner.commit()
        stale.queue.put(Job(operator.add, 7, 7))   # into group 0
        self.assertRaises(ConflictError, stale.commit)
        stale.abort()
        stale.queue.put(Job(operator.add, 7, 7))   # retry
        stale.commit()
        length, jobs = self.snapshot()
        self.assertEqual(length, 2 * size - 1 + 1)
        self.assertIn((7, 7), jobs)


class TestThreads(ConcurrencyBase):
    """Threads meeting at a barrier before every commit."""

    def run_threads(self, count, rounds, work):
        barrier = threading.Barrier(count)
        errors = []
        outcomes = [[] for i in range(count)]

        def run(index):
            c = Connection(self.db)
            try:
                for r in range(rounds):
                    c.tm.begin()
                    result = work(c, index, r)
                    barrier.wait()
                    try:
                        c.commit()
                    except ConflictError:
                        c.abort()
                        outcomes[index].append(('conflict', result))
                    else:
                        outcomes[index].append(('ok', result))
                    barrier.wait()
            except Exception as e:   # pragma: no cover - reported below
                errors.append(e)
                barrier.abort()
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(i,))
                   for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        return outcomes

    def test_threads_putting(self):
        def put(c, index, r):
            c.queue.put(Job(operator.add, index, r))
        outcomes = self.run_threads(4, 40, put)
        conflicts = [o for out in outcomes for o in out if o[0] != 'ok']
        self.assertEqual(conflicts, [])
        self.assertEqual(self.snapshot()[0], 160)

    def test_threads_claiming_their_own_jobs(self):
        self.fill(40, tag=0)
        for tag in range(1, 4):
            self.fill(40, tag=tag)

        def claim(c, index, r):
            job = c.queue.claim(only(index))
            return job.args[1]
        outcomes = self.run_threads(4, 40, claim)
        for index, out in enumerate(outcomes):
            self.assertEqual(out, [('ok', r) for r in range(40)])
        self.assertEqual(self.snapshot(), (0, []))

    def test_threads_claiming_the_same_jobs(self):
        self.fill(30)

        def claim(c, index, r):
            job = c.queue.claim()
            return None if job is None else job.args[1]
        outcomes = self.run_threads(2, 15, claim)
        for r in range(15):
            kinds = sorted(outcomes[i][r][0] for i in range(2))
            # Both chose the same job; exactly one of them got it.
            self.assertEqual(kinds, ['conflict', 'ok'])
        won = sorted(o[1] for out in outcomes for o in out if o[0] == 'ok')
        self.assertEqual(won, list(range(15)))
        self.assertEqual(self.snapshot()[0], 15)


HOUR = __import__('datetime').timedelta(hours=1)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
