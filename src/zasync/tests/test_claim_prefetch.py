"""Issue 14: a claim woken by a commit asks a ZEO server, in one round
trip, for what that commit changed: the objects its connection had loaded
(invalidated since), and -- for a small commit, such as a put -- the new
ones (the job), before the claim reads them one by one.

A real ZEO server and two real clients: one puts, the other claims.
"""
import threading
import unittest

import transaction

from zasync import interfaces
from zasync import wakeup
from zasync.dispatcher import SMALL_COMMIT
from zasync.dispatcher import _prefetch_changed
from zasync.job import Job
from zasync.queue import install_queues
from zasync.testing import waiters
from zasync.testing.processes import wait_until
from zasync.testing.processes import wipe_server
from zasync.testing.servers import ZEOLayer


def in_client_cache(db, oid):
    """Whether the ZEO client of ``db`` holds ``oid``'s current state."""
    return db.storage._cache.load(oid) is not None


class PrefetchChangedTests(unittest.TestCase):

    layer = ZEOLayer

    def setUp(self):
        self.producer_db = ZEOLayer.server.db()
        self.addCleanup(self.producer_db.close)
        self.claimer_db = ZEOLayer.server.db()
        self.addCleanup(self.claimer_db.close)
        self.addCleanup(wipe_server, ZEOLayer.server)
        install_queues(self.producer_db)
        self.tm = transaction.TransactionManager()
        self.conn = self.claimer_db.open(transaction_manager=self.tm)
        self.addCleanup(self.conn.close)
        self.addCleanup(self.tm.abort)
        wait_until(self.conn, lambda: '' in self.conn.root().get(
            interfaces.KEY, {}), 10)
        self.queue = self.conn.root()[interfaces.KEY]['']
        len(self.queue)   # (loads the queue's structures: cached here)
        list(self.queue.upcoming(1))
        self.changed = threading.Event()
        self.watcher = wakeup.InvalidationWatcher(
            self.claimer_db, lambda oids: self.changed.set())
        self.watcher.watch(None)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def put(self, count):
        tm = transaction.TransactionManager()
        conn = self.producer_db.open(transaction_manager=tm)
        try:
            queue = conn.root()[interfaces.KEY]['']
            jobs = [queue.put(Job(len, 'x' * i)) for i in range(count)]
            tm.commit()
            return [job._p_oid for job in jobs]
        finally:
            conn.close()

    def woken(self):
        self.assertTrue(self.changed.wait(10), 'no invalidation came')
        self.assertTrue(self.watcher.await_last_commit(10))
        self.tm.begin()
        return self.watcher.last_oids

    def test_a_put_is_fetched_in_one_round_trip(self):
        job_oid, = self.put(1)
        oids = self.woken()
        self.assertIn(job_oid, oids)
        ghosts = [oid for oid in oids if oid != job_oid]
        self.assertTrue(ghosts)   # (the queue's shard and counters)
        self.assertFalse(any(in_client_cache(self.claimer_db, oid)
                             for oid in oids))
        _prefetch_changed(self.conn, oids)
        waiters.wait(
            lambda: True if all(in_client_cache(self.claimer_db, oid)
                                for oid in oids) else None, 10,
            'not prefetched: %r' % (oids,))
        job = self.conn.get(job_oid)
        self.assertEqual(job.args, [''])

    def test_a_big_commit_fetches_only_what_was_loaded_here(self):
        oids = set(self.put(SMALL_COMMIT))
        changed = self.woken()
        self.assertGreater(len(changed), SMALL_COMMIT)
        loaded = [oid for oid in changed   # (by this connection)
                  if self.conn._cache.get(oid, None) is not None]
        self.assertTrue(loaded)
        _prefetch_changed(self.conn, changed)
        waiters.wait(
            lambda: True if all(in_client_cache(self.claimer_db, oid)
                                for oid in loaded) else None, 10,
            'not prefetched: %r' % (loaded,))
        # (the new jobs were not asked for: nothing here had loaded them)
        self.assertFalse(any(in_client_cache(self.claimer_db, oid)
                             for oid in oids))
        self.assertEqual(len(self.queue), SMALL_COMMIT)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
