"""Cancellation, and jobs whose thread is stuck in C code.

``Job.cancel``: a pending job never runs and fails with ``CancelledError``;
a running one is stopped by its dispatcher as soon as the cancellation
commits, and nothing it wrote commits.  A job stopped (timed out or
cancelled) while its thread is stuck in C code fails all the same; its
thread is abandoned and replaced, and if it ever comes back, nothing it
did commits.

The jobs run in a real dispatcher's worker threads; the waits have
timeouts.
"""
import datetime
import operator
import threading
import unittest

import transaction

from zasync import interfaces
from zasync import testing
from zasync import utils
from zasync.job import Job
from zasync.job import RetryWithBackoff
from zasync.job import serial
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture
from zasync.tests import jobs


def _record(result):
    return 'callback saw %s' % (type(result.value).__name__,)


class CancelNotRunningTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def test_a_new_job_in_no_queue_completes_at_once(self):
        job = Job(operator.add, 1, 2)
        request = job.cancel('not needed', 'zope.mgr')
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(job.result.check(interfaces.CancelledError))
        self.assertIn('cancelled by zope.mgr at ', str(job.result.value))
        self.assertIn(': not needed', str(job.result.value))
        self.assertIs(job.cancel_requested, request)

    def test_a_completed_job_cannot_be_cancelled(self):
        job = self.root['job'] = Job(operator.add, 1, 2)
        self.tm.commit()
        job()
        with self.assertRaises(interfaces.BadStatusError) as caught:
            job.cancel()
        self.assertIn('has a result already (it is completed)',
                      str(caught.exception))

    def test_bad_arguments_are_refused(self):
        job = Job(operator.add, 1, 2)
        with self.assertRaises(ValueError):
            job.cancel(reason=42)
        with self.assertRaises(ValueError):
            job.cancel(principal=object())
        self.assertIsNone(job.cancel_requested)

    def test_cancelling_twice_keeps_the_first_request(self):
        later = utils.now() + datetime.timedelta(hours=1)
        job = self.queue.put(Job(operator.add, 1, 2), begin_after=later)
        self.tm.commit()
        first = job.cancel('first')
        self.assertIs(job.cancel('second'), first)


class CancelTests(DispatcherFixture, unittest.TestCase):

    agent_size = 1

    def in_other_connection(self, job, func):
        """``func(job)`` with the job loaded in a connection of its own,
        committed (as another process would)."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            result = func(conn.get(job._p_oid))
            tm.commit()
            return result
        finally:
            tm.abort()
            conn.close()

    def test_a_pending_job_never_runs(self):
        later = utils.now() + datetime.timedelta(hours=1)
        job = self.queue.put(Job(jobs.write_then_loop, 'p'),
                             begin_after=later)
        job.addCallback(_record)
        self.tm.commit()
        job.cancel('changed my mind')
        self.assertEqual(len(self.queue), 1)   # (the job failing it)
        self.tm.commit()
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.CancelledError))
        self.assertIn('changed my mind', failure.getErrorMessage())
        self.assertIsNone(job.active_start)     # it never ran
        self.assertEqual(job.callbacks[0].result,
                         'callback saw CancelledError')
        self.assertNotIn('p', self.committed_root())

    def test_a_running_job_is_stopped_and_its_writes_discarded(self):
        looping = self.queue.put(Job(jobs.write_then_loop, 'r'))
        behind = self.queue.put(Job(operator.add, 40, 2))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(looping, 10)
        request = self.in_other_connection(
            looping, lambda job: job.cancel('too slow', 'alice'))
        self.assertEqual(request.principal, 'alice')
        failure = testing.wait_for_result(looping, 10)
        self.assertTrue(failure.check(interfaces.CancelledError), failure)
        message = failure.getErrorMessage()
        self.assertIn('cancelled by alice at ', message)
        self.assertIn(': too slow; stopped', message)
        self.assertIn('nothing it wrote was committed', message)
        self.assertNotIn('r', self.committed_root())
        self.assertEqual(testing.wait_for_result(behind, 10), 42)
        info = testing.wait_for_job_info(self.dispatcher, looping)
        self.assertTrue(info['cancelled'])
        self.assertFalse(info['timed out'])
        self.assertEqual(
            self.dispatcher.getStatistics()['cancelled'], 1)

    def test_a_cancelled_job_is_not_retried_whatever_its_policy(self):
        policy = RetryWithBackoff(max_attempts=5, base=0.01, jitter=False,
                                  exceptions=(BaseException,))
        job = self.queue.put(Job(jobs.write_then_loop, 'q'),
                             retry_policy_factory=policy)
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(job, 10)
        self.in_other_connection(job, lambda job: job.cancel())
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.CancelledError))
        self.assertEqual(job.getRetryPolicy().data.get('attempts'), None)

    def test_raise_if_cancelled_stops_a_job_that_swallows_everything(self):
        job = self.queue.put(Job(jobs.swallow_then_check, 's'))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(job, 10)
        self.in_other_connection(job, lambda job: job.cancel('stop'))
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.CancelledError))
        self.assertNotIn('s', self.committed_root())


class CancelSerialTests(DispatcherFixture, unittest.TestCase):

    agent_size = 3
    in_other_connection = CancelTests.in_other_connection

    def test_cancelling_a_serial_job_cancels_its_parts(self):
        first = Job(jobs.write_then_loop, 'first')
        second = Job(jobs.add, 1, 2)
        main = self.queue.put(serial(first, second))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(first, 10)
        self.in_other_connection(main, lambda job: job.cancel('all of it'))
        failure = testing.wait_for_result(main, 10)
        self.assertTrue(failure.check(interfaces.CancelledError), failure)
        for part in (first, second):
            result = testing.wait_for_result(part, 10)
            self.assertTrue(result.check(interfaces.CancelledError), result)
        self.assertIsNone(second.active_start)   # it never ran
        self.assertNotIn('first', self.committed_root())


class StuckInCTests(DispatcherFixture, unittest.TestCase):
    """A thread blocked in C code cannot be stopped: it is abandoned."""

    agent_size = 1

    def setUp(self):
        super().setUp()
        jobs.RELEASE.clear()
        self.pool = None

    def tearDown(self):
        jobs.RELEASE.set()   # (the abandoned thread comes back and ends)
        try:
            for thread in self.abandoned_threads:
                thread.join(10)
                self.assertFalse(thread.is_alive())
        finally:
            super().tearDown()

    abandoned_threads = ()

    def test_the_job_fails_on_time_and_the_agent_goes_on(self):
        stuck = self.queue.put(Job(jobs.write_then_block, 'a', 'late'),
                               timeout=0.2)
        behind = self.queue.put(Job(operator.add, 40, 2))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(stuck, 10)
        [pool] = self.dispatcher.queues[''].values()
        threads = [t for t in pool.threads]
        failure = testing.wait_for_result(stuck, 15)
        self.abandoned_threads = threads
        self.assertTrue(failure.check(interfaces.JobTimeoutError), failure)
        self.assertIn('stopped at its timeout of 0.2 s',
                      failure.getErrorMessage())
        # The size-1 agent runs the next job, in a new thread.
        self.assertEqual(testing.wait_for_result(behind, 10), 42)
        self.assertEqual(len(pool.threads), 1)
        self.assertNotIn(pool.threads[0], threads)
        info = testing.wait_for_job_info(self.dispatcher, stuck)
        self.assertTrue(info['abandoned'])
        self.assertTrue(info['timed out'])
        # The stuck thread comes back: nothing it did commits.
        jobs.RELEASE.set()
        for thread in threads:
            thread.join(10)
            self.assertFalse(thread.is_alive())
        root = self.committed_root()
        self.assertNotIn('a', root)
        self.assertNotIn('late', root)
        self.tm.begin()
        self.assertTrue(stuck.result.check(interfaces.JobTimeoutError))

    def test_a_cancelled_job_stuck_in_c_fails_too(self):
        stuck = self.queue.put(Job(jobs.write_then_block, 'b'))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        testing.wait_for_start(stuck, 10)
        [pool] = self.dispatcher.queues[''].values()
        threads = list(pool.threads)
        self.abandoned_threads = threads
        CancelTests.in_other_connection(
            self, stuck, lambda job: job.cancel('stuck'))
        failure = testing.wait_for_result(stuck, 15)
        self.assertTrue(failure.check(interfaces.CancelledError), failure)
        self.assertNotIn('b', self.committed_root())


def _threads_started_fine():
    """(Threads start promptly after an abandonment: the pending
    exception was withdrawn.)"""
    started = threading.Event()
    thread = threading.Thread(target=started.set)
    thread.start()
    ok = started.wait(5)
    thread.join(5)
    return ok


class WithdrawnExceptionTests(unittest.TestCase):

    def test_threads_run_normally_after_a_withdrawal(self):
        from zasync import timeouts
        token = object()
        came_in = threading.Event()
        release = threading.Event()
        outcome = []

        def blocked():
            timeouts.assign(token)
            try:
                with timeouts.running():
                    came_in.set()
                    release.wait()     # (C code: the lock)
            except BaseException as e:
                outcome.append(type(e))

        thread = threading.Thread(target=blocked)
        thread.start()
        self.assertTrue(came_in.wait(5))
        self.assertTrue(timeouts.stop(thread.ident, token,
                                      interfaces.CancelledError))
        self.assertTrue(timeouts.stopping(thread.ident, token))
        self.assertTrue(timeouts.abandon(thread.ident, token))
        self.assertFalse(timeouts.stopping(thread.ident, token))
        self.assertTrue(_threads_started_fine())
        release.set()
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertEqual(outcome, [timeouts.Abandoned])
