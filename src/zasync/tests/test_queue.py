"""Edge cases of queues, quotas, dispatcher records and the pending store."""
import datetime
import operator
import os
import unittest
import uuid

import zope.component
import zope.component.testing
import zope.event
import zope.testing.loggingsupport
from ZODB.POSException import ConflictError

from zasync import _pending
from zasync import instanceuuid
from zasync import interfaces
from zasync._resolving import ResolvingIndex
from zasync._resolving import ResolvingMap
from zasync.agent import Agent
from zasync.job import Job
from zasync.queue import Maximum
from zasync.queue import Queue
from zasync.testing import ManualClock
from zasync.testing.fixtures import DatabaseFixture

UTC = datetime.timezone.utc


class QueueTestBase(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        self.clock = ManualClock(
            datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)).install()
        self.old_cwd = os.getcwd()
        os.chdir(self.dir)   # (the instance UUID file)
        instanceuuid.reset()

    def tearDown(self):
        os.chdir(self.old_cwd)
        instanceuuid.reset()
        super().tearDown()

    def put(self, *args, **kw):
        return self.queue.put(Job(operator.add, *args), **kw)


class TestAssignerUUID(QueueTestBase):
    """Reference section 12, defect 2: fresh jobs are stamped."""

    def test_fresh_job_stamped_with_utility(self):
        me = uuid.uuid4()
        zope.component.provideUtility(me, interfaces.IUUID)
        self.assertEqual(self.put(1, 2).assignerUUID, me)

    def test_fresh_job_stamped_with_instance_uuid(self):
        job = self.put(1, 2)
        self.assertIsInstance(job.assignerUUID, uuid.UUID)
        self.assertEqual(job.assignerUUID, instanceuuid.getUUID())
        self.assertTrue(os.path.exists('uuid.txt'))

    def test_rescheduled_job_keeps_its_uuid(self):
        other = uuid.uuid4()
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        job = Job(operator.add, 1, 2)
        job.assignerUUID = other
        self.assertIs(self.queue.put(job).assignerUUID, other)

    def test_pull_clears_uuid(self):
        job = self.put(1, 2)
        self.queue.pull()
        self.assertIsNone(job.assignerUUID)
        self.assertIsNone(job.parent)


class TestInstanceUUID(QueueTestBase):

    def test_lazy_file_then_stable(self):
        self.assertFalse(os.path.exists('uuid.txt'))  # not at import
        first = instanceuuid.getUUID()
        with open('uuid.txt') as f:
            self.assertEqual(f.readline().strip(), str(first))
        instanceuuid.reset()
        self.assertEqual(instanceuuid.getUUID(), first)
        self.assertEqual(instanceuuid.UUID, first)
        self.assertTrue(interfaces.IUUID.providedBy(first))

    def test_environment_value_or_file(self):
        value = uuid.uuid4()
        os.environ[instanceuuid.key] = str(value)
        try:
            self.assertEqual(instanceuuid.getUUID(), value)
            instanceuuid.reset()
            os.environ[instanceuuid.key] = os.path.join(self.dir, 'x', 'u')
            other = instanceuuid.getUUID()
            self.assertNotEqual(other, value)
            with open(os.path.join(self.dir, 'x', 'u')) as f:
                self.assertEqual(f.readline().strip(), str(other))
        finally:
            del os.environ[instanceuuid.key]

    def test_bad_file(self):
        with open('uuid.txt', 'w') as f:
            f.write('not a uuid\n')
        self.assertRaises(ValueError, instanceuuid.getUUID)


class TestPutAndClaim(QueueTestBase):

    def test_put_callable_and_refuse_others(self):
        job = self.queue.put(operator.add)
        self.assertIs(job.callable, operator.add)
        self.assertRaises(TypeError, self.queue.put, 42)

    def test_put_applies_options_before_validation(self):
        job = self.queue.put(Job(operator.add, 1, 1), failure_log_level=30,
                             begin_by=datetime.timedelta(seconds=5))
        self.assertEqual(job.failure_log_level, 30)
        self.assertEqual(job.begin_by, datetime.timedelta(seconds=5))

    def test_put_unknown_quota(self):
        job = Job(operator.add)
        job.quota_names = ('nope',)
        with self.assertRaises(ValueError):
            self.queue.put(job)
        self.assertEqual(len(self.queue), 0)

    def test_refused_put_changes_nothing(self):
        job = self.conn.root()['job'] = Job(operator.add, 1, 1)
        self.tm.commit()
        bad = [dict(begin_after=datetime.datetime(2026, 1, 1)),
               dict(begin_after='tomorrow'),
               dict(begin_by=datetime.timedelta(seconds=-1)),
               dict(begin_by=60),
               dict(begin_after=self.clock.now(),
                    begin_by=datetime.timedelta(seconds=-1),
                    failure_log_level=30)]
        for kw in bad:
            with self.assertRaises((TypeError, ValueError), msg=kw):
                self.queue.put(job, **kw)
            self.assertFalse(job._p_changed, kw)
            self.assertEqual(
                (job.begin_after, job.begin_by, job.failure_log_level,
                 job.parent, job.assignerUUID),
                (None, None, None, None, None))
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(list(self.queue), [])
        # Not NEW: refused without changing the job either.
        self.queue.put(job)
        with self.assertRaisesRegex(ValueError, 'already-assigned'):
            self.queue.put(job, failure_log_level=30)
        self.assertIsNone(job.failure_log_level)

    def test_aware_non_utc_begin_after_converted(self):
        tz = datetime.timezone(datetime.timedelta(hours=2))
        when = datetime.datetime(2026, 3, 1, 15, 0, tzinfo=tz)
        job = self.put(1, 1, begin_after=when)
        self.assertEqual(job.begin_after.utcoffset(), datetime.timedelta(0))
        self.assertEqual(job.begin_after, when)

    def test_held_job_claimed_exactly_when_due(self):
        job = self.put(1, 1, begin_after=self.clock.now()
                       + datetime.timedelta(seconds=1.5))
        self.clock.advance(1)
        self.assertIsNone(self.queue.claim())   # same second, not yet
        self.clock.advance(0.5)
        self.assertIs(self.queue.claim(), job)

    def test_due_job_behind_held_job_of_same_second(self):
        soon = self.put(1, 1, begin_after=self.clock.now()
                        + datetime.timedelta(seconds=0.5))
        now_job = self.put(2, 2)
        self.assertEqual(list(self.queue), [soon, now_job])
        self.assertIs(self.queue.claim(), now_job)   # skips, not stops
        self.assertEqual(list(self.queue), [soon])

    def test_claim_stops_at_future(self):
        self.put(1, 1, begin_after=self.clock.now()
                 + datetime.timedelta(days=1))
        self.assertEqual(self.queue.claim(default='x'), 'x')

    def test_putback_first_and_checked(self):
        a = self.put(1, 1)
        self.tm.commit()
        b = self.queue.pull()
        self.assertIs(a, b)
        self.put(2, 2)
        self.queue.putBack(a)
        self.assertEqual([j.args[0] for j in self.queue], [1, 2])
        self.assertRaises(ValueError, self.queue.putBack, a)  # not NEW
        self.assertRaises(ValueError, self.queue.putBack,
                          Job(operator.add))  # no begin_after
        fresh = Job(operator.add)
        fresh.begin_after = self.clock.now()
        self.assertRaises(ValueError, self.queue.putBack, fresh)  # unsaved
        self.assertRaises(TypeError, self.queue.putBack, 42)

    def test_indexing(self):
        jobs = [self.put(i, 0) for i in range(5)]
        self.assertIs(self.queue[0], jobs[0])
        self.assertIs(self.queue[-1], jobs[-1])
        self.assertRaises(IndexError, self.queue.__getitem__, 5)
        self.assertRaises(IndexError, self.queue.__getitem__, -6)
        self.assertIs(self.queue.pull(-2), jobs[3])
        self.assertRaises(IndexError, self.queue.pull, 4)
        self.assertFalse(Queue())

    def test_timeout_wrapper_rejected_by_filter_leaves_job(self):
        job = self.put(1, 1, begin_by=datetime.timedelta(seconds=1))
        self.clock.advance(5)
        self.assertIsNone(self.queue.claim(lambda j: j is job))
        self.assertIs(job.parent, self.queue)
        self.assertEqual(len(self.queue), 1)
        wrapper = self.queue.claim()
        self.assertIsNot(wrapper, job)
        self.assertIsNotNone(wrapper._p_jar)
        self.assertEqual(wrapper.begin_after, self.clock.now())
        self.assertEqual(len(self.queue), 0)
        wrapper()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(job.result.check(interfaces.TimeoutError))

    def test_many_jobs_pruned_and_ordered(self):
        count = 3 * _pending.SHARD_SIZE + 5
        jobs = [self.put(i, 0) for i in range(count)]
        self.tm.commit()
        claimed = [self.queue.claim() for i in range(count)]
        self.assertEqual(claimed, jobs)
        self.tm.commit()
        self.assertEqual(len(self.queue), 0)
        # emptied shards of old groups were dropped
        nodes = [n for key, ns in self.queue._pending._root.sorted_items()
                 for n in ns]
        shards = sum(len(n) for n in nodes)
        self.assertLessEqual(shards, 2)

    def test_old_windows_pruned(self):
        for i in range(3):
            self.put(i, 0)
            self.clock.advance(3600)
        self.tm.commit()
        for i in range(3):
            self.queue.claim()
        root = self.queue._pending._root
        self.assertEqual(len(root), 0)


class TestQuota(QueueTestBase):
    """Reference section 12, defect 15: ``Quota.get``."""

    def test_get(self):
        quota = self.queue.quotas.create('q', 2)
        job = Job(operator.add)
        job.quota_names = ('q',)
        quota.add(job)
        self.assertIs(quota.get(0), job)
        self.assertIs(quota.get(-1), job)
        self.assertIsNone(quota.get(1))
        self.assertEqual(quota.get(1, 'd'), 'd')

    def test_rescheduled_job_releases_slot(self):
        quota = self.queue.quotas.create('q', 1)
        job = Job(operator.add)
        job.quota_names = ('q',)
        self.queue.put(job)
        self.assertIs(self.queue.claim(), job)
        other = Job(operator.mul)
        other.quota_names = ('q',)
        self.queue.put(other)
        self.assertIsNone(self.queue.claim())
        self.queue.put(job, begin_after=self.clock.now()
                       + datetime.timedelta(hours=1))
        self.assertIs(self.queue.claim(), other)
        self.assertEqual(list(quota), [other])

    def test_putback_keeps_slot(self):
        self.queue.quotas.create('q', 1)
        job = Job(operator.add)
        job.quota_names = ('q',)
        self.queue.put(job)
        self.tm.commit()
        self.assertIs(self.queue.claim(), job)
        self.queue.putBack(job)
        self.assertIs(self.queue.claim(), job)   # its own slot

    def test_recreate_replaces(self):
        first = self.queue.quotas.create('q', 1)
        second = self.queue.quotas.create('q', 3)
        self.assertIsNot(first, second)
        self.assertIsNone(first.parent)
        self.assertEqual(self.queue.quotas['q'].size, 3)
        for name in ('pop', 'update', 'setdefault', 'clear'):
            self.assertRaises(TypeError, getattr(self.queue.quotas, name),
                              'q')
        self.assertRaises(TypeError, self.queue.quotas.copy)


class TestDispatchers(QueueTestBase):

    def setUp(self):
        super().setUp()
        self.events = []
        zope.event.subscribers.append(self.events.append)

    def tearDown(self):
        zope.event.subscribers.remove(self.events.append)
        super().tearDown()

    def test_unregister_notifies(self):
        """Reference section 12, defect 3."""
        u = uuid.uuid4()
        record = self.queue.dispatchers.register(u)
        self.assertIs(self.queue.dispatchers.unregister(u), record)
        event = self.events[-1]
        self.assertTrue(interfaces.IDispatcherUnregistered.providedBy(event))
        self.assertIs(event.object, record)
        self.assertRaises(KeyError, self.queue.dispatchers.unregister, u)

    def test_clean_inconsistent_job_logs(self):
        """Reference section 12, defect 8: the warning is logged."""
        record = self.queue.dispatchers.register(uuid.uuid4())
        agent = record['main'] = Agent()
        record.activate()
        job = self.put(1, 1)
        self.tm.commit()
        self.assertIs(agent.claimJob(), job)
        job.parent = None             # moved without leaving the agent
        self.queue.putBack(job)
        self.assertEqual(job.status, interfaces.PENDING)
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zasync.events')
        try:
            record.deactivate()
        finally:
            handler.uninstall()
        self.assertEqual(len(agent), 0)
        self.assertIs(job.parent, self.queue)
        self.assertEqual(len(self.queue), 1)
        self.assertIn('unexpected status', str(handler))

    def test_clean_callbacks_and_completed(self):
        record = self.queue.dispatchers.register(uuid.uuid4())
        agent = record['main'] = Agent()
        record.activate()
        a, b = self.put(1, 1), self.put(2, 2)
        self.tm.commit()
        agent.claimJob()
        agent.claimJob()
        a._status_id = 2      # CALLBACKS, as a dying worker left it
        b._status_id = 3      # COMPLETED, but not moved to completed
        record.deactivate()
        self.assertEqual(list(agent.completed), [b])
        wrapper = self.queue[0]
        self.assertEqual(wrapper.callable, a.resumeCallbacks)
        self.assertIs(a.parent, wrapper)
        self.assertIs(a.queue, self.queue)
        self.assertEqual(wrapper.retry_policy_factory.__name__,
                         'RetryCommonForever')

    def test_dead_and_ping(self):
        u = uuid.uuid4()
        record = self.queue.dispatchers.register(u)
        self.assertFalse(record.dead)            # never activated
        self.assertRaises(ValueError, record.deactivate)
        record.activate()
        self.clock.advance(59)
        self.assertFalse(record.dead)
        self.clock.advance(2)
        self.assertTrue(record.dead)
        self.queue.dispatchers.ping(u)
        self.assertFalse(record.dead)
        pinged = record.last_ping.value
        self.clock.advance(10)                   # within ping_interval
        self.queue.dispatchers.ping(u)
        self.assertEqual(record.last_ping.value, pinged)
        self.clock.advance(30)
        self.queue.dispatchers.ping(u)
        self.assertEqual(record.last_ping.value, self.clock.now())

    def test_ping_reactivates(self):
        u = uuid.uuid4()
        record = self.queue.dispatchers.register(u)
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zasync.events')
        try:
            self.queue.dispatchers.ping(u)
        finally:
            handler.uninstall()
        self.assertEqual(record.activated, self.clock.now())
        self.assertIn('pinged while deactivated', str(handler))
        self.assertTrue(interfaces.IDispatcherReactivated.providedBy(
            self.events[-1]))

    def test_ping_checks_next_activated_sibling_wrapping(self):
        uuids = sorted(uuid.uuid4() for i in range(3))
        records = [self.queue.dispatchers.register(u) for u in uuids]
        for r in records:
            r.activate()
        records[1].deactivate()
        self.clock.advance(120)
        # the last one's next activated sibling wraps around to the first
        self.queue.dispatchers.ping(uuids[2])
        self.assertIsNone(records[0].activated)
        self.assertIsNotNone(records[2].activated)

    def test_agents_mapping_rules(self):
        record = self.queue.dispatchers.register(uuid.uuid4())
        self.assertRaises(ValueError, record.__setitem__, 'x', object())
        agent = record['main'] = Agent()
        record.activate()
        self.put(1, 1)
        agent.claimJob()
        self.assertRaises(ValueError, record.__setitem__, 'main', Agent())
        self.assertRaises(ValueError, record.pop, 'main')
        full = Agent()
        full._append(Job(operator.add))
        self.assertRaises(ValueError, record.__setitem__, 'other', full)


class TestConflictResolutionStates(unittest.TestCase):
    """The merge rules, on states as ZODB hands them over."""

    def resolve(self, cls, old, committed, new):
        return cls.__new__(cls)._p_resolveConflict(old, committed, new)

    def test_map(self):
        old = {'_items': {1: 'a', 2: 'b'}}
        merged = self.resolve(ResolvingMap, old, {'_items': {2: 'b', 3: 'c'}},
                              {'_items': {1: 'a', 4: 'd'}})
        self.assertEqual(merged['_items'], {3: 'c', 4: 'd'})
        self.assertRaises(ConflictError, self.resolve, ResolvingMap, old,
                          {'_items': {2: 'b'}}, {'_items': {2: 'b'}})
        self.assertRaises(ConflictError, self.resolve, ResolvingMap, old,
                          {'_items': {1: 'a', 2: 'b', 5: 'x'}},
                          {'_items': {1: 'a', 2: 'b', 5: 'y'}})
        self.assertRaises(ConflictError, self.resolve, ResolvingMap,
                          {'_items': {}}, {'_items': {}, 'retired': True},
                          {'_items': {9: 'z'}})

    def test_index(self):
        class Ref:
            def __init__(self, oid):
                self.oid = oid
        a, b, c = Ref(b'a'), Ref(b'b'), Ref(b'c')
        old = {'_children': {1: (a,)}}
        merged = self.resolve(ResolvingIndex, old,
                              {'_children': {1: (a,), 2: (b,)}},
                              {'_children': {2: (c,)}})
        self.assertEqual(merged['_children'], {2: (b, c)})
        merged = self.resolve(ResolvingIndex, old, {'_children': {}},
                              {'_children': {}})
        self.assertEqual(merged['_children'], {})

    def test_maximum_with_none(self):
        now = datetime.datetime.now(UTC)
        m = Maximum.__new__(Maximum)
        self.assertEqual(m._p_resolveConflict(None, None, now), now)
        self.assertEqual(m._p_resolveConflict(None, now, None), now)
        later = now + datetime.timedelta(1)
        self.assertEqual(m._p_resolveConflict(None, later, now), later)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
