"""Agents, the completed collection, serial()/parallel() edge cases."""
import datetime
import operator
import unittest
import uuid

import transaction
import zope.component.testing
from ZODB.POSException import ConflictError
from zope.testing.loggingsupport import InstalledHandler

from zasync import interfaces
from zasync.job import parallel
from zasync.job import serial
from zasync.agent import Agent
from zasync.agent import CompletedCollection
from zasync.job import Job
from zasync.job import RetryWithBackoff
from zasync.testing import ManualClock
from zasync.testing.fixtures import DatabaseFixture

UTC = datetime.timezone.utc


def results(*jobs):
    return [job.result for job in jobs]


# Module-level callables (jobs store them by import path).

attempts = []


def fails_twice(value):
    """Raise ValueError on the first two calls, then double ``value``."""
    attempts.append(value)
    if len(attempts) <= 2:
        raise ValueError('attempt %d failed' % len(attempts))
    return value * 2


def double(value):
    attempts.append(value)
    return value * 2


def die_while_running(job, tm):
    """What a dispatcher process that dies while it runs ``job`` leaves
    behind: the job started (ACTIVE, committed), and no result."""
    job.start()
    tm.commit()


def queue_inner(value):
    """Queue a job doubling ``value`` and wait for it (its result becomes
    ours)."""
    attempts.append(value)
    from zasync import local
    return local.getJob().queue.put(Job(operator.mul, value, 2))


def note(label, result):
    return '%s: %r' % (label, result)


class AgentTestBase(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        self.clock = ManualClock(
            datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)).install()
        self.record = self.queue.dispatchers.register(uuid.uuid4())
        self.agent = self.record['main'] = Agent()
        self.record.activate()
        self.tm.commit()
        self.others = []

    def tearDown(self):
        for tm, conn in self.others:
            tm.abort()
            conn.close()
        super().tearDown()

    def connect(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.others.append((tm, conn))
        queue = conn.root()[interfaces.KEY]['']
        return tm, queue, queue.dispatchers[self.record.UUID]['main']


class TestAgent(AgentTestBase):

    def test_pull_and_delete(self):
        jobs = [self.queue.put(Job(operator.add, i, 0)) for i in range(3)]
        for i in range(3):
            self.agent.claimJob()
        self.assertIs(self.agent.pull(1), jobs[1])
        self.assertIsNone(jobs[1].parent)
        del self.agent[0]
        self.assertEqual(list(self.agent), [jobs[2]])
        self.assertRaises(ValueError, self.agent.index, jobs[0])
        self.assertRaises(IndexError, self.agent.pull, 3)

    def test_size_zero_and_chooser_returning_none(self):
        self.queue.put(Job(operator.add, 1, 1))
        self.agent.size = 0
        self.assertIsNone(self.agent.claimJob())
        chooser = self.record['c'] = Agent(chooser=lambda agent: None)
        self.assertIsNone(chooser.claimJob())
        self.assertEqual(len(chooser), 0)

    def test_switching_filter_and_chooser(self):
        agent = Agent(filter=bool)
        self.assertRaises(ValueError, setattr, agent, 'chooser', bool)
        agent.filter = None
        agent.chooser = bool
        self.assertFalse(interfaces.IFilterAgent.providedBy(agent))
        self.assertRaises(ValueError, setattr, agent, 'filter', bool)
        agent.chooser = None
        self.assertTrue(interfaces.IFilterAgent.providedBy(agent))

    def test_agent_without_record_claims_nothing(self):
        self.assertIsNone(Agent().claimJob())

    def test_claim_and_completion_in_two_connections_merge(self):
        a = self.queue.put(Job(operator.add, 1, 1))
        self.queue.put(Job(operator.add, 2, 2))
        self.tm.commit()
        self.agent.claimJob()
        self.tm.commit()
        tm1, queue1, agent1 = self.connect()
        tm2, queue2, agent2 = self.connect()
        agent1.claimJob()                 # the dispatcher polls ...
        agent2.jobCompleted(agent2[0])    # ... while a worker completes
        tm1.commit()
        tm2.commit()
        tm1.begin()
        self.assertEqual([j.args[0] for j in agent1], [2])
        self.assertEqual([j.args[0] for j in agent1.completed], [1])
        self.assertEqual(a.args[0], 1)

    def test_claim_by_two_agents_of_same_job_conflicts(self):
        other = self.record['other'] = Agent()
        self.queue.put(Job(operator.add, 1, 1))
        self.tm.commit()
        tm1, queue1, agent1 = self.connect()
        tm2, queue2, _ = self.connect()
        agent2 = queue2.dispatchers[self.record.UUID]['other']
        self.assertIsNotNone(agent1.claimJob())
        self.assertIsNotNone(agent2.claimJob())
        tm1.commit()
        self.assertRaises(ConflictError, tm2.commit)
        self.assertEqual(len(other), 0)


class TestRetriesThroughQueueAndAgent(AgentTestBase):
    """Rescheduling and interrupts with the real Queue and Agent, as a
    dispatcher drives them: claims committed in one connection, jobs called
    in another (the worker's), results read in a third."""

    def setUp(self):
        super().setUp()
        del attempts[:]
        self.queue.quotas.create('api', size=1)
        self.tm.commit()

    def claim(self, agent, tm):
        tm.begin()
        job = agent.claimJob()
        tm.commit()
        return job

    def test_retry_with_backoff_goes_through_the_queue(self):
        job = Job(fails_twice, 21)
        job.quota_names = ('api',)
        self.queue.put(job, retry_policy_factory=RetryWithBackoff(
            base=10, jitter=False))
        told = job.addCallback(Job(note, 'told'))
        other = Job(operator.add, 1, 1)
        other.quota_names = ('api',)
        self.queue.put(other)
        self.tm.commit()
        tm, queue, agent = self.connect()       # the dispatcher's
        start = self.clock.now()

        worker_job = self.claim(agent, tm)
        self.assertEqual(worker_job._p_oid, job._p_oid)
        self.assertIsNone(self.claim(agent, tm))     # quota 'api' is full
        # First failure: back to the queue for 10 s; the worker is free,
        # the agent's slot and the quota's are released.
        self.assertIs(worker_job(), worker_job)
        self.assertEqual(worker_job.status, interfaces.PENDING)
        self.assertEqual(worker_job.begin_after,
                         start + datetime.timedelta(seconds=10))
        self.assertEqual(list(agent), [])
        self.assertIsNone(worker_job.result)
        # ... so the other job of the quota may run meanwhile.
        self.assertEqual(self.claim(agent, tm)(), 2)
        self.assertEqual(list(queue), [worker_job])
        self.assertIsNone(self.claim(agent, tm))     # not due yet

        self.clock.advance(10)
        self.assertIs(self.claim(agent, tm), worker_job)
        self.assertIs(worker_job(), worker_job)      # second failure
        self.assertEqual(worker_job.begin_after,
                         start + datetime.timedelta(seconds=30))
        self.clock.advance(19)
        self.assertIsNone(self.claim(agent, tm))
        self.clock.advance(1)
        self.assertIs(self.claim(agent, tm), worker_job)
        self.assertEqual(worker_job(), 42)

        self.tm.begin()      # a third connection sees the outcome
        self.assertEqual(attempts, [21, 21, 21])
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)
        self.assertEqual(told.result, 'told: 42')
        self.assertEqual(job.getRetryPolicy().data['attempts'], 2)
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(len(self.queue), 0)
        self.assertIs(self.agent.completed.first(), job)
        self.assertIs(job.parent, self.agent)
        self.queue.quotas['api'].clean()
        self.assertEqual(len(self.queue.quotas['api']), 0)

    def test_interrupted_job_is_put_back_first_and_completes(self):
        job = self.queue.put(Job(double, 21))
        told = job.addCallback(Job(note, 'told'))
        self.tm.commit()
        tm, queue, agent = self.connect()
        die_while_running(self.claim(agent, tm), tm)
        # The job is ACTIVE in the database, and its dispatcher is gone.
        self.tm.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)
        later = self.queue.put(Job(operator.add, 1, 1))
        self.record.deactivate()
        self.assertEqual(list(self.agent), [])
        self.assertIsNone(job.result)
        wrapper = self.queue[1]
        self.assertIs(job.parent, wrapper)
        self.assertEqual(wrapper.status, interfaces.PENDING)
        self.record.activate()
        self.tm.commit()

        # The dispatcher comes back and claims the wrapper (after ``later``,
        # which was in the queue before it).
        worker_later = self.claim(agent, tm)
        self.assertEqual(worker_later._p_oid, later._p_oid)
        self.assertEqual(worker_later(), 2)
        worker_wrapper = self.claim(agent, tm)
        self.assertEqual(worker_wrapper._p_oid, wrapper._p_oid)
        another = queue.put(Job(operator.add, 2, 2))
        tm.commit()
        self.assertIsNone(worker_wrapper())
        # The interrupted job is first in line again, ahead of ``another``.
        self.assertEqual([j._p_oid for j in queue],
                         [job._p_oid, another._p_oid])
        self.assertEqual(queue[0].status, interfaces.PENDING)
        self.assertEqual(worker_wrapper.status, interfaces.COMPLETED)
        self.assertEqual(list(agent), [])
        worker_job = self.claim(agent, tm)
        self.assertEqual(worker_job._p_oid, job._p_oid)
        self.assertEqual(worker_job.status, interfaces.ASSIGNED)
        self.assertEqual(worker_job(), 42)

        self.tm.begin()
        self.assertEqual(attempts, [21])   # (it died before it ran)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)
        self.assertEqual(told.result, 'told: 42')
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)
        self.assertIs(job.parent, self.agent)
        self.assertEqual([j._p_oid for j in self.agent.completed][:2],
                         [job._p_oid, wrapper._p_oid])

    def interrupt_while_waiting(self):
        """A job waiting for the job it returned, when its dispatcher
        dies; returns the job, its callback, the inner job and the
        wrapper."""
        job = self.queue.put(Job(queue_inner, 21))
        told = job.addCallback(Job(note, 'told'))
        self.tm.commit()
        inner = self.claim(self.agent, self.tm)()
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertIs(job.result, inner)
        self.assertEqual(list(self.agent), [job])
        self.record.deactivate()
        self.record.activate()
        self.tm.commit()
        self.assertEqual(list(self.queue), [inner, job.parent])
        return job, told, inner, job.parent

    def test_interrupted_job_waiting_for_its_inner_job_keeps_waiting(self):
        # Running the callable again would make (and queue) a second inner
        # job: the job keeps waiting for the first.
        job, told, inner, wrapper = self.interrupt_while_waiting()
        self.assertIs(self.claim(self.agent, self.tm), inner)
        self.assertIs(self.claim(self.agent, self.tm), wrapper)
        self.assertIsNone(wrapper())
        self.assertEqual(wrapper.status, interfaces.COMPLETED)
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(inner(), 42)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)
        self.assertEqual(told.result, 'told: 42')
        self.assertEqual(attempts, [21])

    def test_interrupt_of_a_job_completed_meanwhile_is_no_error(self):
        job, told, inner, wrapper = self.interrupt_while_waiting()
        self.assertEqual(self.claim(self.agent, self.tm)(), 42)   # inner
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertIs(self.claim(self.agent, self.tm), wrapper)
        log = InstalledHandler('zasync.events')
        try:
            self.assertIsNone(wrapper())
        finally:
            log.uninstall()
        self.assertIsNone(wrapper.result)
        self.assertEqual(log.records, [])
        self.assertEqual((job.result, told.result, attempts),
                         (42, 'told: 42', [21]))


class TestCompletedCollection(AgentTestBase):

    def test_empty(self):
        completed = CompletedCollection()
        self.assertFalse(completed)
        self.assertEqual(list(completed), [])
        self.assertRaises(ValueError, completed.first)
        self.assertRaises(ValueError, completed.last)

    def test_bounded_by_age(self):
        completed = CompletedCollection(period=datetime.timedelta(hours=1))
        self.conn.root()['completed'] = completed
        for i in range(600):
            completed.add(Job(operator.add, i))
            self.clock.advance(60)
            # only an hour's worth (plus the one just added) is shown
            self.assertLessEqual(len(list(completed)), 61)
            # what is kept is bounded by the inbox, archived when full
            self.assertLessEqual(len(completed), 61 + completed.inbox_limit)
        completed.archive()
        self.assertEqual(len(completed), len(list(completed)))
        newest = completed.first()
        self.assertEqual(newest.args[0], 599)
        self.assertEqual(completed.last().args[0], 540)

    def test_same_microsecond_keeps_order(self):
        completed = CompletedCollection()
        jobs = [Job(operator.add, i) for i in range(20)]
        for job in jobs:
            completed.add(job)
        self.assertEqual(list(completed), jobs[::-1])
        self.assertEqual(len({job.key for job in jobs}), 20)
        self.assertLessEqual(
            abs(jobs[0].initial_callbacks_end - self.clock.now()),
            datetime.timedelta(microseconds=2))

    def test_first_and_last_bounds(self):
        completed = CompletedCollection()
        jobs = []
        for i in range(3):
            jobs.append(Job(operator.add, i))
            completed.add(jobs[-1])
            self.clock.advance(10)
        t1 = jobs[1].initial_callbacks_end
        self.assertIs(completed.first(t1), jobs[1])
        self.assertIs(completed.last(t1), jobs[1])
        self.assertIs(completed.first(), jobs[2])
        self.assertIs(completed.last(), jobs[0])


class TestSerialParallel(AgentTestBase):
    """Reference section 12, defect 10: zero components."""

    def run_queue(self):
        while True:
            job = self.agent.claimJob()
            self.tm.commit()
            if job is None:
                return
            job()

    def test_zero_components(self):
        for helper in (serial, parallel):
            main = self.queue.put(helper(postprocess=results))
            self.tm.commit()
            self.run_queue()
            self.assertEqual(main.status, interfaces.COMPLETED)
            self.assertEqual(main.result, [])

    def test_default_postprocess_and_keyword_check(self):
        main = self.queue.put(parallel(Job(operator.add, 1, 2)))
        self.tm.commit()
        self.run_queue()
        self.assertEqual([j.result for j in main.result], [3])
        self.assertRaises(TypeError, serial, Job(operator.add), nope=1)

    def test_plain_callables_are_adapted(self):
        main = self.queue.put(serial(Job(operator.add, 1, 2),
                                     Job(operator.mul, 2, 3),
                                     postprocess=results))
        self.tm.commit()
        self.run_queue()
        self.assertEqual(main.result, [3, 6])

    def run_interrupted(self, main, first, interrupted, last):
        """Run ``main`` until ``interrupted`` dies, let the dispatcher be
        found dead, run everything again; ``last`` must never start before
        ``interrupted`` has finished."""
        del attempts[:]
        self.queue.put(main)
        self.tm.commit()
        while interrupted.status != interfaces.ACTIVE:
            job = self.agent.claimJob()
            self.tm.commit()
            if job is interrupted:
                die_while_running(job, self.tm)
            else:
                job()
        self.assertEqual(first.status, interfaces.COMPLETED)
        self.record.deactivate()
        self.record.activate()
        self.tm.commit()
        self.assertEqual(len(self.queue), 2)    # the interrupt wrappers
        while True:
            if last.status != interfaces.NEW:
                self.assertIn(interrupted.status,
                              (interfaces.CALLBACKS, interfaces.COMPLETED))
            job = self.agent.claimJob()
            self.tm.commit()
            if job is None:
                break
            job()
        self.assertEqual(main.status, interfaces.COMPLETED)

    def test_serial_interrupted_in_a_component(self):
        components = [Job(operator.add, 1, 1), Job(double, 2),
                      Job(operator.add, 3, 3)]
        main = serial(*components, postprocess=results)
        self.run_interrupted(main, *components)
        self.assertEqual(main.result, [2, 4, 6])
        self.assertEqual(attempts, [2])   # (run once: it died before)

    def test_serial_resumes_a_component_queued_by_hand(self):
        # A component that is in the queue, but without the callback that
        # continues the chain, is given one.
        first, second = Job(operator.add, 1, 1), Job(operator.add, 2, 2)
        main = serial(first, second, postprocess=results)
        self.queue.put(first)
        self.queue.put(main)
        self.tm.commit()
        self.run_queue()
        self.assertEqual(main.status, interfaces.COMPLETED)
        self.assertEqual(main.result, [2, 4])

    def test_parallel_interrupted_in_a_component(self):
        components = [Job(operator.add, 1, 1), Job(double, 2)]
        main = parallel(*components, postprocess=results)
        self.run_interrupted(main, components[0], components[1],
                             main.kwargs['postprocess'])
        self.assertEqual(main.result, [2, 4])
        self.assertEqual(attempts, [2])   # (run once: it died before)

    def test_rerun_scheduler_skips_started_components(self):
        # A retried serial scheduler resumes with the first NEW component.
        done = Job(operator.add, 1, 1)
        main = serial(done, Job(operator.add, 2, 2), postprocess=results)
        self.queue.put(done)
        self.tm.commit()
        self.assertIs(self.agent.claimJob(), done)
        self.tm.commit()
        done()
        self.queue.put(main)
        self.tm.commit()
        self.run_queue()
        self.assertEqual(main.result, [2, 4])


class TestDispatchedJobCommits(AgentTestBase):
    """What a dispatcher does with a job costs two commits, and jobs of one
    agent completing at the same time in different connections merge."""

    def transactions(self):
        return self.db.lastTransaction()

    def test_claim_start_then_result_is_two_commits(self):
        job = self.queue.put(Job(operator.mul, 6, 7))
        self.tm.commit()
        before = self.transactions()
        claimed = self.agent.claimJob()
        claimed.start()
        self.tm.commit()                      # commit 1: claimed + ACTIVE
        self.assertIs(claimed, job)
        self.assertEqual(job.status, interfaces.ACTIVE)
        after_claim = self.transactions()
        self.assertEqual(job.runStarted(), 42)   # commit 2
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(list(self.agent.completed), [job])
        self.assertNotEqual(before, after_claim)
        self.assertEqual(
            len(list(self.db.storage.iterator(after_claim))) - 1, 1)

    def test_run_started_needs_a_started_job(self):
        job = self.queue.put(Job(operator.mul, 6, 7))
        self.tm.commit()
        with self.assertRaises(interfaces.BadStatusError):
            job.runStarted()
        job.parent = None
        job()
        with self.assertRaises(interfaces.BadStatusError):
            job.start()

    def test_concurrent_completions_in_one_agent_merge(self):
        jobs = [self.queue.put(Job(operator.mul, i, 2)) for i in range(40)]
        self.tm.commit()
        for job in jobs[:3]:
            self.agent.claimJob().start()
        self.tm.commit()
        (tm1, _, agent1), (tm2, _, agent2) = (
            self.connect(), self.connect())
        done = []
        for i in range(20):
            # two connections complete a job each, from the same snapshot
            first, second = agent1[0], agent2[1]
            self.assertIsNot(first._p_oid, second._p_oid)
            done.append(first.runStarted())
            done.append(second.runStarted())   # merges, never re-runs
            # (a conflict would have asked the retry policy)
            self.assertIsNone(second._retry_policy)
            self.assertEqual(second.status, interfaces.COMPLETED)
            for tm, agent in ((tm1, agent1), (tm2, agent2)):
                tm.begin()
            self.tm.begin()
            for job in (self.agent.claimJob(), self.agent.claimJob()):
                if job is not None:
                    job.start()
            self.tm.commit()
            tm1.begin()
            tm2.begin()
            if len(agent1) < 2:
                break
        self.assertEqual(len(done), len(set(done)))
        self.tm.begin()
        self.assertEqual(len(self.agent.completed), len(done))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
