"""Job timeouts: a job running past its ``timeout`` is stopped, nothing it
wrote commits, and it fails with ``JobTimeoutError``; the agent goes on.

The jobs run in a real dispatcher's worker threads; the timeouts are real
time (fractions of a second), the waits have timeouts of their own.
"""
import datetime
import operator
import unittest

import zasync.agent
import zasync.dispatcher
from zasync import interfaces
from zasync import testing
from zasync import timeouts
from zasync.interfaces import JobTimeoutError
from zasync.job import Job
from zasync.job import RetryWithBackoff
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture
from zasync.tests import jobs


class TimeoutSettingTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def test_values(self):
        job = Job(operator.add, 1, 2)
        self.assertIsNone(job.timeout)
        job.timeout = 2
        self.assertEqual(job.timeout, 2.0)
        job.timeout = datetime.timedelta(milliseconds=1500)
        self.assertEqual(job.timeout, 1.5)
        for bad in (0, -1, float('inf'), float('nan'), '1', True):
            with self.assertRaises(ValueError):
                job.timeout = bad
        self.assertEqual(job.timeout, 1.5)
        job.timeout = None
        self.assertIsNone(job.timeout)

    def test_put_and_agent(self):
        before = len(self.queue)
        with self.assertRaises(ValueError):
            self.queue.put(Job(operator.add, 1, 2), timeout=0)
        self.assertEqual(len(self.queue), before)
        job = self.queue.put(Job(operator.add, 1, 2), timeout=3)
        self.assertEqual(job.timeout, 3.0)
        self.assertEqual(zasync.agent.Agent(timeout=4).timeout, 4.0)
        with self.assertRaises(ValueError):
            zasync.agent.Agent(timeout=-4)

    def test_stop_only_hits_a_running_callable(self):
        import threading
        ident = threading.get_ident()
        token, other = object(), object()
        self.assertFalse(timeouts.stop(ident, token, JobTimeoutError))
        with timeouts.running():   # (nothing assigned: cannot be stopped)
            self.assertFalse(timeouts.stop(ident, token, JobTimeoutError))
        timeouts.assign(token)
        with timeouts.running():
            self.assertFalse(timeouts.stop(ident, other, JobTimeoutError))
        # (it left the callable)
        self.assertFalse(timeouts.stop(ident, token, JobTimeoutError))
        timeouts.assign(token)
        with self.assertRaises(interfaces.JobTimeoutError):
            with timeouts.running():
                self.assertTrue(timeouts.stop(ident, token, JobTimeoutError))
                while True:   # (until it arrives)
                    pass


class DispatchedTimeoutTests(DispatcherFixture, unittest.TestCase):

    agent_size = 1

    def test_a_looping_job_is_stopped_and_its_writes_discarded(self):
        looping = self.queue.put(Job(jobs.write_then_loop, 'x'), timeout=0.3)
        behind = self.queue.put(Job(operator.add, 40, 2))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        failure = testing.wait_for_result(looping, 10)
        self.assertTrue(failure.check(interfaces.JobTimeoutError), failure)
        self.assertIn('stopped at its timeout of 0.3 s (it ran for',
                      failure.getErrorMessage())
        self.assertIn('nothing it wrote was committed',
                      failure.getErrorMessage())
        self.assertNotIn('x', self.committed_root())
        # The size-1 agent runs the job behind it.
        self.assertEqual(testing.wait_for_result(behind, 10), 42)
        info = testing.wait_for_job_info(self.dispatcher, looping)
        self.assertTrue(info['timed out'])
        self.assertTrue(info['failed'])

    def test_except_exception_does_not_swallow_the_stop(self):
        job = self.queue.put(Job(jobs.write_then_loop, 'y', guard=True),
                             timeout=0.3)
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.JobTimeoutError))
        self.assertNotIn('y', self.committed_root())

    def test_the_agent_default(self):
        self.agent.timeout = 0.3
        job = self.queue.put(Job(jobs.write_then_loop, 'z'))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.JobTimeoutError))
        self.assertIn('timeout of 0.3 s', failure.getErrorMessage())

    def test_a_quick_job_is_not_stopped(self):
        job = self.queue.put(Job(operator.mul, 6, 7), timeout=30)
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertEqual(testing.wait_for_result(job), 42)

    def test_not_retried_unless_the_policy_says_so(self):
        policy = RetryWithBackoff(max_attempts=3, base=0.01, jitter=False)
        job = self.queue.put(Job(jobs.write_then_loop, 'w'), timeout=0.2,
                             retry_policy_factory=policy)
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        failure = testing.wait_for_result(job, 10)
        self.assertTrue(failure.check(interfaces.JobTimeoutError))
        self.assertEqual(job.getRetryPolicy().data.get('attempts'), None)
