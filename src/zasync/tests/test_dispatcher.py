"""Unit tests of the dispatcher, its worker pools, the test reactor and
waiters, and the live annotations -- including the zc.async defects 5, 7,
13, 14 and 16 (reference section 12), fixed here."""
import datetime
import logging
import operator
import threading
import unittest
import uuid

import transaction
import zope.component
import zope.component.testing
import zope.testing.loggingsupport

import zasync.agent
import zasync.dispatcher
import zasync.job
import zasync.local
import zasync.queue
from zasync import interfaces
from zasync import testing
from zasync import utils
from zasync.dispatcher import Dispatcher
from zasync.dispatcher import PollInfo
from zasync.testing.fixtures import DatabaseFixture


def job_that_waits(name):
    """A job waiting until the test releases it (in-process event)."""
    EVENTS[name].wait(10)
    return name


EVENTS = {}


class Base(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid4()
        zope.component.provideUtility(self.uuid, interfaces.IUUID)
        self.reactor = None

    def tearDown(self):
        try:
            testing.tear_down_dispatchers()
        finally:
            if self.reactor is not None and getattr(
                    self.reactor, 'running', False) and isinstance(
                    self.reactor, testing.Reactor):
                self.reactor.stop()
            zasync.dispatcher.clear()
            super().tearDown()

    def start_test_dispatcher(self, poll_interval=5, **kw):
        self.reactor = testing.Reactor()
        dispatcher = Dispatcher(self.db, self.reactor,
                                poll_interval=poll_interval, **kw)
        dispatcher.activate()
        self.reactor.start()
        return dispatcher

    def start_twisted_dispatcher(self, poll_interval=3600):
        import twisted.internet.selectreactor
        reactor = twisted.internet.selectreactor.SelectReactor()
        dispatcher = Dispatcher(self.db, reactor, poll_interval=poll_interval)

        def run():
            dispatcher.activate()
            reactor.run(installSignalHandlers=False)
        dispatcher.thread = threading.Thread(target=run, daemon=True)
        dispatcher.thread.start()
        testing.get_poll(dispatcher, 0)
        return dispatcher

    def record(self):
        self.tm.begin()
        return self.queue.dispatchers[self.uuid]

    def add_agent(self, name='main', size=3):
        self.tm.begin()
        agent = self.queue.dispatchers[self.uuid][name] = zasync.agent.Agent(
            size=size)
        self.tm.commit()
        return agent


class TestReactor(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()

    def tearDown(self):
        zope.component.testing.tearDown()

    def test_time_only_passes_when_told(self):
        reactor = testing.Reactor()
        calls = []
        self.assertRaises(ValueError, reactor.callLater, 1, calls.append, 1)
        reactor.callWhenRunning(calls.append, 'running')
        reactor.start()
        # the reactor's clock is the clock of zasync.utils.now()
        self.assertEqual(utils.now(), reactor.clock.now())
        reactor.callLater(2, calls.append, 'two')
        reactor.callLater(1, calls.append, 'one')
        thread = threading.Thread(
            target=reactor.callFromThread, args=(calls.append, 'thread'))
        thread.start()
        thread.join()
        self.assertEqual(calls, ['running'])
        self.assertTrue(reactor.time_passes())
        self.assertEqual(calls, ['running', 'thread'])
        self.assertFalse(reactor.time_passes())
        start = utils.now()
        self.assertEqual(reactor.time_flies(1.5), 1)
        self.assertEqual(calls[-1], 'one')
        self.assertEqual(utils.now() - start,
                         datetime.timedelta(seconds=1.5))
        delayed = reactor.callLater(1, calls.append, 'cancelled')
        delayed.cancel()
        self.assertEqual(reactor.time_flies(1), 1)
        self.assertEqual(calls, ['running', 'thread', 'one', 'two'])
        reactor.addSystemEventTrigger('before', 'shutdown',
                                      calls.append, 'stop')
        self.assertRaises(ValueError, reactor.addSystemEventTrigger,
                          'after', 'shutdown', calls.append)
        reactor.stop()
        self.assertEqual(calls[-1], 'stop')
        # the clock is uninstalled
        self.assertIs(zope.component.queryUtility(interfaces.IClock), None)

    def test_waiters_fail_loudly(self):
        with self.assertRaises(AssertionError) as raised:
            testing.wait(lambda: None, 0.05, 'nothing happened')
        self.assertIn('nothing happened', str(raised.exception))


class TestPolls(Base):
    """Defect 16: ``iterPolls(since=...)`` stops at ``since``, and
    ``getStatistics`` names the oldest poll's time the start."""

    def make_polls(self, dispatcher, count):
        clock = self.reactor.clock
        polls = []
        for i in range(count):
            clock.advance(1)
            poll = PollInfo()
            self.assertIsNone(dispatcher.polls.add(poll))   # (as zc.async)
            polls.append(poll)
        return list(reversed(polls))   # newest first

    def test_iterPolls_since(self):
        dispatcher = Dispatcher(self.db, testing.Reactor(), uuid=self.uuid)
        self.reactor = dispatcher.reactor
        self.reactor.start()
        polls = self.make_polls(dispatcher, 5)
        self.assertEqual(list(dispatcher.iterPolls()), polls)
        since = polls[2]
        self.assertEqual(list(dispatcher.iterPolls(since=since.key)),
                         polls[:3])
        self.assertEqual(
            list(dispatcher.iterPolls(since=since.utc_timestamp)), polls[:3])
        self.assertEqual(list(dispatcher.iterPolls(count=2)), polls[:2])
        self.assertEqual(
            list(dispatcher.iterPolls(at=polls[1].key, since=polls[3].key)),
            polls[1:4])
        self.assertEqual(list(dispatcher.iterPolls(before=polls[1].key)),
                         polls[2:])
        self.assertRaises(ValueError, dispatcher.getPollInfo,
                          at=polls[0].key, before=polls[0].key)
        self.assertRaises(ValueError, dispatcher.getPollInfo,
                          before=polls[-1].key)

    def test_statistics_start_and_end(self):
        dispatcher = Dispatcher(self.db, testing.Reactor(), uuid=self.uuid)
        self.reactor = dispatcher.reactor
        self.reactor.start()
        polls = self.make_polls(dispatcher, 3)
        stats = dispatcher.getStatistics()
        self.assertEqual(stats['statistics start'], polls[-1].utc_timestamp)
        self.assertEqual(stats['statistics end'], polls[0].utc_timestamp)
        self.assertLess(stats['statistics start'], stats['statistics end'])
        self.assertEqual(stats['started'], 0)


class TestStatus(Base):

    def test_starting_running_stuck_stopped(self):
        self.reactor = testing.Reactor()
        dispatcher = Dispatcher(self.db, self.reactor, poll_interval=5)
        self.assertEqual(dispatcher.getStatusInfo()['status'], 'STOPPED')
        dispatcher.activate()
        self.assertEqual(dispatcher.getStatusInfo()['status'], 'STARTING')
        self.reactor.start()   # the first poll
        self.assertEqual(len(dispatcher.polls), 1)
        self.assertEqual(dispatcher.getStatusInfo()['status'], 'RUNNING')
        self.reactor.time_flies(5)
        self.assertEqual(len(dispatcher.polls), 2)
        self.assertEqual(dispatcher.getStatusInfo()['status'], 'RUNNING')
        self.reactor.clock.advance(20)   # no poll meanwhile
        self.assertEqual(dispatcher.getStatusInfo()['status'], 'STUCK')
        self.reactor.stop()
        info = dispatcher.getStatusInfo()
        self.assertEqual(info['status'], 'STOPPED')
        self.assertIsNone(info['uptime'])
        self.assertEqual(info['uuid'], self.uuid)


class TestPoolBookkeeping(Base):
    """Defect 5: pools of agents (and queues) that disappeared are retired,
    and the DB pool size follows."""

    def test_vanished_agents_and_queues(self):
        size = self.db.getPoolSize()
        dispatcher = self.start_test_dispatcher()
        self.assertEqual(self.db.getPoolSize(), size + 1)
        self.add_agent('a', 2)
        self.add_agent('b', 3)
        testing.get_poll(dispatcher)
        self.assertEqual(sorted(dispatcher.queues['']), ['a', 'b'])
        self.assertEqual(self.db.getPoolSize(), size + 6)
        pool_b = dispatcher.queues['']['b']
        self.tm.begin()
        del self.queue.dispatchers[self.uuid]['b']
        self.tm.commit()
        testing.get_poll(dispatcher)
        self.assertEqual(sorted(dispatcher.queues['']), ['a'])
        self.assertIn(pool_b, dispatcher.dead_pools)
        self.assertEqual(pool_b.size, 0)
        self.assertEqual(pool_b.join(5), [])
        self.assertEqual(self.db.getPoolSize(), size + 3)
        # a vanished queue
        self.tm.begin()
        del self.root[interfaces.KEY]['']
        self.tm.commit()
        testing.get_poll(dispatcher)
        self.assertEqual(dispatcher.queues, {})
        self.assertEqual(self.db.getPoolSize(), size + 1)
        self.reactor.stop()
        self.assertEqual(self.db.getPoolSize(), size)


class TestThreadedDeactivation(Base):
    """Defect 14: deactivating a dispatcher activated with threaded polls
    works (zc.async used the closed connection of the last poll)."""

    def test_threaded(self):
        size = self.db.getPoolSize()
        self.reactor = testing.Reactor()
        dispatcher = Dispatcher(self.db, self.reactor, poll_interval=5)
        dispatcher.activate(threaded=True)
        self.reactor.start()
        testing.get_poll(dispatcher, 0)
        self.assertTrue(self.record().activated)
        self.add_agent('main', 1)
        testing.get_poll(dispatcher)
        dispatcher.deactivate()
        self.assertIs(dispatcher.activated, False)
        self.assertIsNone(self.record().activated)
        self.assertEqual(self.db.getPoolSize(), size)
        self.assertEqual(dispatcher.join(5), [])


class TestFrequentDatabaseErrors(unittest.TestCase):
    """Defect 7: cleaning up after a job that should not have been handed
    out counts its database errors and says so (CRITICAL) when they are
    frequent."""

    def setUp(self):
        zope.component.testing.setUp()
        self.clock = testing.ManualClock().install()
        self.logs = zope.testing.loggingsupport.InstalledHandler(
            'zasync.events', level=logging.CRITICAL)

    def tearDown(self):
        self.logs.uninstall()
        zope.component.testing.tearDown()

    def test_counter(self):
        from zasync.pool import AgentThreadPool

        class TM:
            failures = 25

            def begin(self):
                pass

            def abort(self):
                pass

            def commit(self):
                if self.failures:
                    self.failures -= 1
                    raise ValueError('database trouble')

        class FakeJob:
            status = interfaces.COMPLETED
            agent = None
            parent = None

        pool = AgentThreadPool(None, '', 'main')
        pool._remove_bad_job(FakeJob(), TM())
        messages = [r.getMessage() for r in self.logs.records]
        self.assertEqual(len(messages), 2)   # after 10 and 20 errors
        self.assertIn('frequent database errors (10)', messages[0])
        self.assertIn('frequent database errors (20)', messages[1])
        self.assertEqual(self.clock.sleeps, [1] * 25)


class TestLiveAnnotations(Base):
    """Defect 13: ``getLiveAnnotation`` returns ``default`` when the
    reactor does not answer in time."""

    def test_default_when_reactor_is_silent(self):
        self.reactor = testing.Reactor()   # never started: never answers
        dispatcher = Dispatcher(self.db, self.reactor)
        job = self.root['job'] = zasync.job.Job(operator.mul, 2, 3)
        self.tm.commit()
        local = zasync.local.local
        old_grace = zasync.local.REACTOR_GRACE
        zasync.local.REACTOR_GRACE = 0.05
        local.dispatcher, local.job = dispatcher, job
        try:
            self.assertEqual(
                zasync.local.getLiveAnnotation('x', default='D', timeout=0),
                'D')
        finally:
            local.dispatcher = local.job = None
            zasync.local.REACTOR_GRACE = old_grace

    def test_not_initialized(self):
        self.assertRaises(ValueError, zasync.local.setLiveAnnotation, 'a', 1)
        self.assertRaises(ValueError, zasync.local.getLiveAnnotation, 'a')
        self.assertRaises(AttributeError, zasync.local.getReactor)


class TestFastPath(Base):
    """Beyond zc.async: no waiting for polls."""

    def test_batch_claim_in_one_transaction(self):
        dispatcher = self.start_test_dispatcher()
        self.add_agent('main', 3)
        testing.get_poll(dispatcher)
        pool = dispatcher.queues['']['main']
        EVENTS['batch'] = threading.Event()
        self.tm.begin()
        jobs = [self.queue.put(zasync.job.Job(job_that_waits, 'batch'))
                for i in range(4)]
        self.tm.commit()
        storage = self.db.storage
        before = len(list(storage.iterator()))
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            items = dispatcher.claimJobs(conn, '', 'main', pool)
        finally:
            conn.close()
        self.assertEqual(len(items), 3)          # as many as there is room
        self.assertEqual(len(list(storage.iterator())), before + 1)
        for item in items:
            pool.put(item)
        EVENTS['batch'].set()
        for job in jobs:
            self.assertEqual(testing.wait_for_result(job), 'batch')
        del EVENTS['batch']

    def test_wakes_up_on_commit(self):
        # An hour between polls: only the commits can wake it up.
        dispatcher = self.start_twisted_dispatcher(poll_interval=3600)
        self.add_agent('main', 2)           # our record changed: polls now

        def polled_agent():
            poll = dispatcher.polls.first()
            return True if 'main' in (poll.get('') or {}) else None
        testing.wait(polled_agent, 6, 'no poll saw the new agent')
        polls = len(dispatcher.polls)
        self.tm.begin()
        job = self.queue.put(zasync.job.Job(operator.mul, 14, 3))
        self.tm.commit()
        self.assertEqual(testing.wait_for_result(job), 42)
        self.assertEqual(len(dispatcher.polls), polls)   # no poll needed
        self.assertEqual(dispatcher.watcher.mode, 'push')

    def test_worker_claims_the_next_job(self):
        dispatcher = self.start_test_dispatcher()
        dispatcher._wake = lambda: None      # no wake-ups: workers only
        self.add_agent('main', 1)
        testing.get_poll(dispatcher)
        self.tm.begin()
        jobs = [self.queue.put(zasync.job.Job(operator.add, i, 1))
                for i in range(3)]
        self.tm.commit()
        polls = len(dispatcher.polls)
        testing.get_poll(dispatcher)     # this poll claims the first job
        self.assertEqual([testing.wait_for_result(j, 10) for j in jobs],
                         [1, 2, 3])
        self.assertEqual(len(dispatcher.polls), polls + 1)
        self.assertEqual(
            sum(len(info['new jobs']) for poll in dispatcher.polls
                for agents in poll.values() for info in agents.values()),
            1)    # the other two were not claimed by a poll (yet)


class TestRegistry(Base):

    def test_get_pop_clear(self):
        dispatcher = Dispatcher(self.db, testing.Reactor())
        self.assertIs(zasync.dispatcher.get(), dispatcher)
        self.assertIs(zasync.dispatcher.get(self.uuid), dispatcher)
        self.assertIsNone(zasync.dispatcher.get(uuid.uuid4()))
        self.assertRaises(ValueError, Dispatcher, self.db, testing.Reactor())
        self.assertIs(zasync.dispatcher.pop(), dispatcher)
        self.assertIsNone(zasync.dispatcher.get())
        Dispatcher(self.db, testing.Reactor(), uuid=uuid.uuid4())
        zasync.dispatcher.clear()
        self.assertEqual(zasync.dispatcher.registered(), [])


class TestClaimsOfSeveralDispatchers(Base):
    """Issue 14: dispatchers of several processes claiming from one deep
    queue take from different places, so their claims do not conflict."""

    def setUp(self):
        super().setUp()
        self.reactors = []

    def tearDown(self):
        try:
            for reactor in self.reactors:
                reactor.stop()
        finally:
            super().tearDown()

    def dispatcher(self, uuid_):
        reactor = testing.Reactor()
        self.reactors.append(reactor)
        dispatcher = Dispatcher(self.db, reactor, poll_interval=3600,
                                uuid=uuid_)
        dispatcher.prefetch = 9     # claims of 10 jobs (1 thread + 9)
        dispatcher.activate()
        reactor.start()
        self.tm.begin()
        self.queue.dispatchers[uuid_]['main'] = zasync.agent.Agent(size=1)
        self.tm.commit()
        return dispatcher

    def claim(self, dispatcher):
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            items = dispatcher.claimJobs(
                conn, '', 'main', dispatcher.queues['']['main'])
        finally:
            conn.close()
        # (done with them: the agent has room again)
        self.tm.begin()
        agent = self.queue.dispatchers[dispatcher.UUID]['main']
        while len(agent):
            agent.pull()
        self.tm.commit()
        return [self.numbers[item[0]] for item in items]

    def put_jobs(self, count):
        self.tm.begin()
        jobs = [self.queue.put(zasync.job.Job(operator.add, i, 0))
                for i in range(count)]
        self.tm.commit()
        self.numbers = {zasync.dispatcher.getId(job)[0]: job.args[0]
                        for job in jobs}

    def test_each_starts_at_its_own_place(self):
        first, second = sorted([uuid.uuid4(), uuid.uuid4()])
        late = self.dispatcher(second)
        early = self.dispatcher(first)
        testing.get_poll(early)
        testing.get_poll(late)
        self.put_jobs(40)
        # the second (by UUID) skips one claim's worth of jobs
        self.assertEqual(self.claim(late), list(range(10, 20)))
        self.assertEqual(self.claim(early), list(range(10)))
        self.assertEqual(self.claim(late), list(range(30, 40)))
        self.assertEqual(self.claim(early), list(range(20, 30)))
        self.assertEqual(late.claim_conflicts + early.claim_conflicts, 0)

    def test_a_shallow_queue_is_claimed_from_the_head(self):
        first, second = sorted([uuid.uuid4(), uuid.uuid4()])
        self.dispatcher(first)
        late = self.dispatcher(second)
        testing.get_poll(late)
        self.put_jobs(4)
        self.assertEqual(self.claim(late), [0, 1, 2, 3])

    def test_overlapping_claims_commit_both(self):
        # what the places buy: two claims of 10 jobs in transactions that
        # overlap both commit (different entries of the queue's store)
        self.put_jobs(30)
        managers = [transaction.TransactionManager() for i in range(2)]
        conns = [self.db.open(transaction_manager=tm) for tm in managers]
        try:
            queues = [conn.root()[interfaces.KEY][''] for conn in conns]
            taken = [[queue.claim(skip=10 * rank).args[0]
                      for i in range(10)] for rank, queue in enumerate(queues)]
            for tm in managers:
                tm.commit()
        finally:
            for tm, conn in zip(managers, conns):
                tm.abort()
                conn.close()
        self.assertEqual(taken, [list(range(10)), list(range(10, 20))])
        self.tm.begin()
        self.assertEqual([job.args[0] for job in self.queue],
                         list(range(20, 30)))
