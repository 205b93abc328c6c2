"""Edge cases of retention: ``Agent(completed_period=)``, ``--keep-completed``
and ``zasync.retention.purge``; the narrative is ``docs/retention.rst``."""
import argparse
import datetime
import unittest
import uuid

import ZODB.POSException
import zope.component

from zasync import interfaces
from zasync import retention
from zasync import testing
from zasync.agent import Agent
from zasync.agent import check_period
from zasync.cli.purge import duration_argument
from zasync.job import Job
from zasync.manager import JobContainer
from zasync.manager import get_job_id
from zasync.testing.fixtures import DatabaseFixture
from zasync.worker import RecordSettings

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)


class PeriodTests(unittest.TestCase):

    def test_check_period(self):
        self.assertIsNone(check_period(None))
        self.assertEqual(check_period(60), datetime.timedelta(minutes=1))
        self.assertEqual(check_period(DAY), DAY)
        for bad in (0, -1, True, '2d', -DAY, 1e300):
            with self.assertRaises(ValueError, msg=bad):
                check_period(bad)

    def test_record_settings_set_the_period(self):
        class Event:
            pass
        record_uuid = uuid.uuid4()
        from zasync.queue import DispatcherAgents
        da = DispatcherAgents(record_uuid)
        da['main'] = Agent()
        event = Event()
        event.object = da
        RecordSettings(record_uuid, [('main', 3)],
                       keep_completed=2 * 86400)(event)
        self.assertEqual(da['main'].completed.period, 2 * DAY)
        RecordSettings(record_uuid, [('main', 3)])(event)   # left as it is
        self.assertEqual(da['main'].completed.period, 2 * DAY)

    def test_command_line_durations(self):
        self.assertEqual(duration_argument('2d'), 2 * DAY)
        with self.assertRaises(argparse.ArgumentTypeError):
            duration_argument('0')
        with self.assertRaises(argparse.ArgumentTypeError):
            duration_argument('two days')


class PurgeTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        self.clock = testing.ManualClock(
            datetime.datetime(2024, 1, 1, tzinfo=UTC)).install()
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        self.record = self.queue.dispatchers.register(uuid.uuid4())
        self.agent = self.record['main'] = Agent(size=1000,
                                                 completed_period=90 * DAY)
        self.record.activate()
        self.container = self.root[interfaces.JOBS_KEY] = JobContainer()
        self.tm.commit()

    def run_jobs(self, count, fail=False, archive=True):
        self.queue.dispatchers.ping(self.record.UUID)
        jobs = [self.queue.put(Job(divmod, 1, 0 if fail else 1))
                for i in range(count)]
        self.tm.commit()
        for job in jobs:
            self.container[get_job_id(job)] = job
            self.assertIs(self.agent.claimJob(), job)
            job()
        if archive:
            self.agent.completed.archive()
        self.tm.commit()
        return jobs

    def test_older_and_discard(self):
        old = self.run_jobs(3)
        self.clock.advance(days=3)
        self.run_jobs(2)
        cutoff = self.clock.now() - DAY
        found = self.agent.completed.older(cutoff)
        self.assertEqual([job for key, job in found], old[::-1])
        self.assertEqual(self.agent.completed.older(cutoff, limit=1),
                         found[:1])
        self.assertEqual(self.agent.completed.older(
            cutoff, after_key=found[0][0]), found[1:])
        self.assertIs(self.agent.completed.discard(found[0][0]), old[-1])
        self.assertEqual(len(self.agent.completed), 4)
        with self.assertRaises(KeyError):
            self.agent.completed.discard(found[0][0])

    def test_purge_in_batches(self):
        self.run_jobs(7)
        failed = self.run_jobs(2, fail=True)
        self.clock.advance(days=3)
        recent = self.run_jobs(2, archive=False)   # (still in the inbox)
        progress = []
        result = retention.purge(
            self.db, self.clock.now() - DAY, batch_size=3,
            progress=lambda *args: progress.append(args))
        self.assertEqual((result['removed'], result['container'],
                          result['kept_failed']), (7, 0, 2))
        self.assertEqual(result.total, 7)
        # an archive + 4 batches (3, 3, 3 looked at, then 0) + 1 container
        # batch of 4 (3, then 1)
        self.assertEqual(result['transactions'], 7)
        self.assertIsNone(progress[-1][2])
        self.assertTrue(all(done <= total for done, total, text in progress))
        self.tm.begin()
        self.assertEqual(sorted(map(id, self.agent.completed)),
                         sorted(map(id, failed + recent)))
        self.assertEqual(len(self.container), 4)
        result = retention.purge(self.db, self.clock.now() - DAY,
                                 failed_too=True)
        self.assertEqual((result['removed'], result['kept_failed']), (2, 0))
        self.tm.begin()
        self.assertEqual(len(self.container), 2)

    def test_jobs_the_agent_dropped_leave_the_container(self):
        self.run_jobs(3)
        self.clock.advance(days=100)
        self.agent.completed.archive()    # past the period: dropped
        self.tm.commit()
        self.assertEqual((len(self.agent.completed), len(self.container)),
                         (0, 3))
        result = retention.purge(self.db, self.clock.now())
        self.assertEqual((result['removed'], result['container']), (0, 3))

    def test_unfinished_jobs_stay_in_the_container(self):
        self.queue.dispatchers.ping(self.record.UUID)
        job = self.queue.put(Job(divmod, 1, 1))
        self.tm.commit()
        self.container[get_job_id(job)] = job
        self.tm.commit()
        self.clock.advance(days=10)
        result = retention.purge(self.db, self.clock.now())
        self.assertEqual(result.total, 0)
        self.tm.begin()
        self.assertEqual(len(self.container), 1)

    def test_a_conflicting_batch_is_retried(self):
        result = retention.PurgeResult()
        calls = []

        def batch():
            calls.append(1)
            if len(calls) < 3:
                raise ZODB.POSException.ConflictError()
            return 'done'
        self.assertEqual(retention._run_batch(self.tm, batch, result, 5),
                         'done')
        self.assertEqual((result['conflicts'], result['transactions']),
                         (2, 1))
        calls[:] = []
        with self.assertRaises(ZODB.POSException.ConflictError):
            retention._run_batch(self.tm, batch, result, 2)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            retention.purge(self.db, datetime.datetime(2024, 1, 1))
        with self.assertRaises(ValueError):
            retention.purge(self.db, self.clock.now(), batch_size=0)
