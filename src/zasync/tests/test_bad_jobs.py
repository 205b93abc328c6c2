"""Bad jobs and bad settings: refused at the door, or isolated.

- settings that would make a job hang or a claim fail are refused when the
  job is put (or the quota created), and nothing is stored;
- whatever a job's code raises -- ``SystemExit``, ``KeyboardInterrupt``,
  ``GeneratorExit``, ``asyncio.CancelledError``, a custom
  ``BaseException`` -- fails the job, frees its agent and quota slots, and
  the worker thread goes on serving;
- a job returning itself, or a job in no queue, fails instead of staying
  ACTIVE.
"""
import asyncio
import datetime
import logging
import operator
import sys
import unittest

import zope.component
import zope.interface

from zasync import interfaces
from zasync import local
from zasync import testing
from zasync import utils
from zasync.failure import Failure
from zasync.job import Job
from zasync.job import NeverRetry
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture


class CustomStop(BaseException):
    pass


def stop_with(name):
    errors = {
        'exit': lambda: sys.exit(3),
        'interrupt': KeyboardInterrupt,
        'generator': GeneratorExit,
        'cancelled': asyncio.CancelledError,
        'custom': lambda: CustomStop('stop right there'),
    }
    error = errors[name]()
    raise error


def returns_itself():
    return local.getJob()


def returns_an_unqueued_job():
    return Job(operator.add, 1, 2)


class RefusedSettingsTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def assertRefused(self, message, call, *args, **kw):
        before = len(self.queue)
        with self.assertRaises(ValueError) as caught:
            call(*args, **kw)
        self.assertIn(message, str(caught.exception))
        self.tm.commit()
        self.assertEqual(len(self.queue), before)   # nothing stored
        return caught.exception

    def test_begin_by_past_year_9999(self):
        job = Job(operator.add, 1, 2)
        self.assertRefused('past the year 9999', self.queue.put, job,
                           begin_by=datetime.timedelta.max)
        self.assertEqual(job.status, interfaces.NEW)
        self.assertIsNone(job.begin_by)
        job.begin_by = datetime.timedelta.max   # set on the job: the same
        self.assertRefused('past the year 9999', self.queue.put, job)
        # A deadline that was stored anyway never breaks a claim.
        self.assertFalse(utils.deadline_passed(
            utils.now(), datetime.timedelta.max, utils.now()))

    def test_failure_log_level_must_be_a_level(self):
        self.assertRefused('failure_log_level must be a logging level',
                           self.queue.put, Job(operator.add, 1, 2),
                           failure_log_level='ERROR')
        job = Job(operator.add, 1, 2)
        job.failure_log_level = 'ERROR'
        self.assertRefused("not 'ERROR'", self.queue.put, job)
        job = Job(operator.add, 1, 2)
        self.assertRaises(ValueError, job.addCallback, Job(len),
                          failure_log_level='WARNING')
        callback = job.addCallback(Job(len))
        callback.failure_log_level = 'WARNING'
        self.assertRefused('failure_log_level', self.queue.put, job)
        self.queue.put(Job(operator.add, 1, 2),
                       failure_log_level=logging.WARNING)

    def test_retry_policy_name_must_be_registered(self):
        self.assertRefused("no retry policy named 'patient'",
                           self.queue.put, Job(operator.add, 1, 2),
                           retry_policy_factory='patient')
        self.assertRefused('must be a callable or the name', self.queue.put,
                           Job(operator.add, 1, 2), retry_policy_factory=42)
        zope.component.provideAdapter(
            NeverRetry, (interfaces.IJob,), interfaces.IRetryPolicy,
            name='patient')
        job = self.queue.put(Job(operator.add, 1, 2),
                             retry_policy_factory='patient')
        self.assertIsInstance(job.getRetryPolicy(), NeverRetry)

    def test_quota_sizes(self):
        for size in (0, -1, 1.5, True, '2'):
            with self.assertRaises(ValueError) as caught:
                self.queue.quotas.create('api', size)
            self.assertIn('at least 1', str(caught.exception))
            self.assertNotIn('api', self.queue.quotas)
        quota = self.queue.quotas.create('api', 2)
        with self.assertRaises(ValueError):
            quota.size = 0
        self.assertEqual(quota.size, 2)


class BaseExceptionTests(DatabaseFixture, unittest.TestCase):

    global_transaction = True

    def test_every_base_exception_fails_the_job(self):
        for name, kind in [('exit', SystemExit),
                           ('interrupt', KeyboardInterrupt),
                           ('generator', GeneratorExit),
                           ('cancelled', asyncio.CancelledError),
                           ('custom', CustomStop)]:
            job = self.root[name] = Job(stop_with, name)
            self.tm.commit()
            result = job()
            self.assertIsInstance(result, Failure, name)
            self.assertTrue(result.check(kind), (name, result))
            self.assertEqual(job.status, interfaces.COMPLETED)
            self.tm.begin()
            self.assertIs(job.result.check(kind), kind)


class DispatchedBadJobsTests(DispatcherFixture, unittest.TestCase):
    """Through a real dispatcher and its worker threads."""

    agent_size = 2

    def test_sys_exit_jobs_do_not_stop_the_agent(self):
        quota = self.queue.quotas.create('api', 2)
        exits = []
        for i in range(2):
            job = Job(stop_with, 'exit')
            job.quota_names = ('api',)
            exits.append(self.queue.put(job))
        after = self.queue.put(Job(operator.mul, 6, 7))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertEqual(testing.wait_for_result(after), 42)
        for job in exits:
            failure = testing.wait_for_result(job)
            self.assertTrue(failure.check(SystemExit))
        self.tm.begin()
        agent = self.queue.dispatchers[self.uuid]['main']
        self.assertEqual(len(agent), 0)    # the agent's slots are free
        quota.clean()
        self.assertEqual(len(quota), 0)    # and so are the quota's
        # The worker threads still serve.
        again = self.queue.put(Job(operator.add, 40, 2))
        self.tm.commit()
        self.assertEqual(testing.wait_for_result(again), 42)

    def test_a_job_returning_itself_or_an_unqueued_job_fails(self):
        selfish = self.queue.put(Job(returns_itself))
        orphan = self.queue.put(Job(returns_an_unqueued_job))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        failure = testing.wait_for_result(selfish)
        self.assertIn('returned itself', failure.getErrorMessage())
        failure = testing.wait_for_result(orphan)
        self.assertIn('returned a job that is in no queue',
                      failure.getErrorMessage())
