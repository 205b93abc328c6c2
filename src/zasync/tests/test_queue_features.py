"""Priorities, unique keys, pausing and retrying: the edge cases (the
narrative is ``docs/features.rst``)."""
import datetime
import operator
import os
import shutil
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.POSException

from zasync import actions
from zasync import interfaces
from zasync import utils
from zasync.job import Job
from zasync.testing.processes import run_main
from zasync.queue import Queue
from zasync.queue import install_queues
from zasync import testing
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture
from zasync.tests import jobs


def _names(queue):
    return [job.args[0] for job in queue]


class PriorityTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def put(self, name, priority=None, **kw):
        return self.queue.put(Job(operator.pos, name), priority=priority,
                              **kw)

    def test_bad_priorities_are_refused_and_nothing_is_queued(self):
        for bad in (True, 1.5, '3', -101, 101):
            with self.assertRaises(ValueError):
                self.put(bad, priority=bad)
        self.assertEqual(len(self.queue), 0)
        job = Job(operator.pos, 1)
        with self.assertRaises(ValueError):
            job.priority = 200
        job.priority = -100
        self.assertEqual(job.priority, -100)

    def test_priority_is_fixed_once_queued(self):
        job = self.put('a', priority=5)
        with self.assertRaises(interfaces.BadStatusError):
            job.priority = 6
        self.assertEqual(job.priority, 5)

    def test_claim_order(self):
        for name, priority in [('a', 0), ('b', -1), ('c', 7), ('d', 0),
                               ('e', 7), ('f', 100)]:
            self.put(name, priority)
        self.tm.commit()
        self.assertEqual(_names(self.queue), ['f', 'c', 'e', 'a', 'd', 'b'])
        self.assertEqual(len(self.queue), 6)
        self.assertEqual(self.queue[1].args[0], 'c')
        self.assertEqual([self.queue.claim().args[0] for _ in range(6)],
                         ['f', 'c', 'e', 'a', 'd', 'b'])
        self.assertIsNone(self.queue.claim())
        self.assertEqual(len(self.queue), 0)

    def test_jobs_put_back_come_first_whatever_their_priority(self):
        self.put('urgent', 50)
        back = self.put('low', -50)
        self.tm.commit()
        claimed = self.queue.claim(filter=lambda job: job is back)
        self.assertIs(claimed, back)
        back.parent = None
        self.queue.putBack(back)
        self.assertEqual(_names(self.queue), ['low', 'urgent'])

    def test_a_high_priority_job_due_later_does_not_block(self):
        later = utils.now() + datetime.timedelta(hours=1)
        self.put('later', 90, begin_after=later)
        self.put('now', 0)
        self.tm.commit()
        self.assertEqual(self.queue.claim().args[0], 'now')
        self.assertIsNone(self.queue.claim())
        self.assertEqual(self.queue.countDueLater(), 1)

    def test_remove_and_pull_across_priorities(self):
        a = self.put('a', 3)
        self.put('b', 0)
        self.put('c', -3)
        self.queue.remove(a)
        self.assertEqual(_names(self.queue), ['b', 'c'])
        self.assertEqual(self.queue.pull(-1).args[0], 'c')
        self.assertEqual(_names(self.queue), ['b'])
        with self.assertRaises(LookupError):
            self.queue.remove(a)

    def test_a_queue_stored_before_priorities_gets_them_on_use(self):
        queue = Queue()
        for name in ('_levels', '_level_puts', '_unique'):
            del queue.__dict__[name]
        self.root['old'] = queue
        queue.put(Job(operator.pos, 'x'))
        queue.put(Job(operator.pos, 'y'), priority=1)
        queue.put(Job(operator.pos, 'z'), unique_key='k')
        self.tm.commit()
        self.assertEqual(_names(queue), ['y', 'x', 'z'])
        self.assertEqual(queue.uniqueJob('k').args[0], 'z')


class UniqueKeyTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def test_bad_keys_are_refused(self):
        for bad in ('', None, 3, b'k'):
            if bad is None:
                continue
            with self.assertRaises(ValueError):
                self.queue.put(Job(operator.pos, 1), unique_key=bad)
            with self.assertRaises(ValueError):
                self.queue.uniqueJob(bad)
        self.assertEqual(len(self.queue), 0)

    def test_concurrent_puts_of_different_keys_do_not_conflict(self):
        other = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            queue = other.root()[interfaces.KEY]['']
            self.queue.put(Job(operator.pos, 1), unique_key='a')
            queue.put(Job(operator.pos, 2), unique_key='b')
            self.tm.commit()
            other.transaction_manager.commit()
            self.tm.begin()
            self.assertEqual(len(self.queue), 2)
            self.assertIsNotNone(self.queue.uniqueJob('a'))
            self.assertIsNotNone(self.queue.uniqueJob('b'))
        finally:
            other.transaction_manager.abort()
            other.close()

    def test_concurrent_puts_of_one_key_conflict(self):
        other = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            queue = other.root()[interfaces.KEY]['']
            self.queue.put(Job(operator.pos, 1), unique_key='a')
            queue.put(Job(operator.pos, 2), unique_key='a')
            self.tm.commit()
            with self.assertRaises(ZODB.POSException.ConflictError):
                other.transaction_manager.commit()
        finally:
            other.transaction_manager.abort()
            other.close()


class PauseTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def test_a_paused_queue_takes_puts_and_gives_nothing(self):
        self.assertFalse(self.queue.paused)
        self.queue.pause()
        self.queue.pause()   # (again: nothing changes)
        job = self.queue.put(Job(operator.pos, 1))
        self.assertTrue(self.queue.paused)
        self.assertIsNone(self.queue.claim())
        self.queue.resume()
        self.assertIs(self.queue.claim(), job)


class CompletionTests(DispatcherFixture, unittest.TestCase):
    """Unique keys and retries of jobs a real dispatcher ran."""

    agent_size = 1

    def test_the_key_is_held_until_the_job_completed(self):
        job = self.queue.put(Job(jobs.wait_for_gate, 'k', 'done'),
                             unique_key='k')
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(job)
        # Still held while it runs:
        self.assertIs(self.queue.put(Job(operator.pos, 2), unique_key='k'),
                      job)
        jobs.open_gate(self.root, 'k')
        self.tm.commit()
        self.assertEqual(testing.wait_for_result(job), 'done')
        self.assertIsNone(self.queue.uniqueJob('k'))
        new = self.queue.put(Job(operator.pos, 3), unique_key='k')
        self.assertIsNot(new, job)
        self.tm.commit()
        self.assertEqual(testing.wait_for_result(new), 3)

    def test_retry_copies_the_call_and_points_back(self):
        failed = self.queue.put(Job(operator.truediv, 1, 0), priority=4,
                                timeout=9, unique_key='u')
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertTrue(testing.wait_for_result(failed).check(
            ZeroDivisionError))
        new = actions.retry_job(failed)
        self.assertIs(new.retried_from, failed)
        self.assertEqual((new.priority, new.timeout, new.unique_key),
                         (4, 9.0, 'u'))
        self.assertEqual(list(new.args), [1, 0])
        self.assertEqual(new.status, interfaces.PENDING)
        # Retrying again while the new job holds the key: no second copy.
        self.assertIs(actions.retry_job(failed), new)

    def test_only_failed_jobs_are_retried(self):
        job = self.queue.put(Job(operator.pos, 1))
        with self.assertRaises(ValueError):
            actions.retry_job(job)


class CommandTests(unittest.TestCase):
    """``zasync pause``, ``resume``, ``retry``, ``jobs --unique-key`` and
    ``status`` on a FileStorage."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='zasync-test-features-')
        self.path = os.path.join(self.dir, 'Data.fs')
        self.uri = 'file://' + self.path
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        install_queues(db)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        queue = conn.root()[interfaces.KEY]['']
        self.unique = queue.put(Job(operator.pos, 1), unique_key='nightly')
        tm.commit()
        self.unique_id = str(int.from_bytes(self.unique._p_oid, 'big'))
        conn.close()
        db.close()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def zasync(self, *args):
        return run_main(*args)

    def test_pause_and_resume(self):
        self.assertEqual(self.zasync('pause', '--zodb', self.uri),
                         (0, "queue '': paused (1 pending; no job starts "
                             "until zasync resume)\n", ''))
        self.assertEqual(self.zasync('pause', '--zodb', self.uri),
                         (0, "queue '': paused already\n", ''))
        status, out, err = self.zasync('status', '--zodb', self.uri)
        self.assertIn("queue '': 1 pending; PAUSED", out)
        self.assertEqual(self.zasync('resume', '--zodb', self.uri, ''),
                         (0, "queue '': resumed (1 pending)\n", ''))
        self.assertEqual(self.zasync('resume', '--zodb', self.uri),
                         (0, "queue '': not paused\n", ''))
        self.assertEqual(
            self.zasync('pause', '--zodb', self.uri, 'reports'),
            (1, '', "zasync pause: error: no queue 'reports' (there are: "
                    "'')\n"))

    def test_jobs_by_unique_key(self):
        status, out, err = self.zasync('jobs', '--zodb', self.uri,
                                       '--unique-key', 'nightly')
        self.assertEqual(status, 0, err)
        self.assertIn(self.unique_id, out)
        status, out, err = self.zasync('jobs', '--zodb', self.uri,
                                       '--unique-key', 'weekly')
        self.assertEqual((status, out), (0, 'no jobs\n'))

    def test_retry_refuses_a_job_that_did_not_fail(self):
        status, out, err = self.zasync('retry', '--zodb', self.uri,
                                       self.unique_id)
        self.assertEqual(status, 1)
        self.assertEqual(err, 'zasync retry: error: job %s has not failed: '
                              'only failed jobs are retried\n'
                         % self.unique_id)


class ClaimSkipTests(DatabaseFixture, unittest.TestCase):
    """``Queue.claim(skip=)``: pass over entries without looking at them."""

    queues = True

    def test_skip(self):
        for i in range(5):
            self.queue.put(Job(operator.add, i, 0))
        self.tm.commit()
        self.assertEqual(self.queue.claim(skip=2).args[0], 2)
        self.assertEqual(self.queue.claim(skip=2).args[0], 3)
        # fewer entries than that: nothing (the caller claims from the head)
        self.assertIsNone(self.queue.claim(skip=3))
        self.assertEqual(self.queue.claim(skip=0).args[0], 0)
        self.assertEqual([job.args[0] for job in self.queue], [1, 4])

    def test_upcoming(self):
        for i in range(5):
            self.queue.put(Job(operator.add, i, 0))
        self.tm.commit()
        self.assertEqual([job.args[0] for job in self.queue.upcoming(2)],
                         [0, 1])
        self.assertEqual([job.args[0] for job in self.queue.upcoming(9, 3)],
                         [3, 4])
        self.assertEqual(len(self.queue), 5)   # (nothing claimed)
        self.queue.pause()
        self.assertEqual(self.queue.upcoming(2), [])
