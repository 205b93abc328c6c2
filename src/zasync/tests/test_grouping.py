"""Group commits: short jobs of one worker thread commit together; a group
that cannot commit is split, and its jobs run again one per transaction,
each committing its effects and its result once.

Real dispatcher worker threads on a real (in-memory) database; jobs block
on events the test controls, and every wait has a timeout.
"""
import threading
import unittest

import persistent.mapping
import transaction

from zasync import interfaces
from zasync import local
from zasync import testing
from zasync.grouping import GroupSplit
from zasync.grouping import GroupingTransactionManager
from zasync.job import Job
from zasync.testing import waiters
from zasync.testing.fixtures import DispatcherFixture
from zasync.tests import jobs

#: how often each job's callable ran, by name (in this process)
RUNS = {}
#: a job named here waits until its event is set (and tells it started)
GATES = {}


def effect(name, fail=False):
    """Count a run, wait at the gate if there is one, then add 1 to
    ``root['effects'][name]`` (in the job's transaction); with ``fail``,
    raise then."""
    RUNS[name] = RUNS.get(name, 0) + 1
    gate = GATES.get(name)
    if gate is not None:
        started, release = gate
        started.set()
        if not release.wait(10):
            raise RuntimeError('the test never released %s' % name)
    effects = local.getJob()._p_jar.root()['effects']
    effects[name] = effects.get(name, 0) + 1
    if fail:
        raise ValueError('%s fails' % name)
    return name


class GroupingTransactionManagerTests(unittest.TestCase):

    def test_out_of_a_group_it_is_a_transaction_manager(self):
        tm = GroupingTransactionManager()
        txn = tm.begin()
        tm.commit()
        self.assertIsNot(tm.begin(), txn)
        tm.job_starts()   # (nothing, out of a group)
        tm.abort()
        self.assertFalse(tm.grouping)

    def test_between_jobs_abort_and_begin_change_nothing(self):
        tm = GroupingTransactionManager()
        txn = tm.start_group()
        tm.job_starts()
        tm.commit()
        tm.job_done()
        tm.abort()
        self.assertIs(tm.begin(), txn)
        tm.job_starts()
        with self.assertRaises(GroupSplit):
            tm.abort()   # (the second job must abort: the first is lost)
        tm.abandon_group()
        self.assertFalse(tm.grouping)

    def test_the_first_job_may_abort_before_it_commits(self):
        tm = GroupingTransactionManager()
        txn = tm.start_group()
        tm.job_starts()
        tm.abort()
        self.assertIsNot(tm.get(), txn)
        self.assertTrue(tm.grouping)
        tm.commit()   # (its retry policy's bookkeeping, say)
        with self.assertRaises(GroupSplit):
            tm.abort()
        tm.abandon_group()

    def test_end_group_counts_the_jobs(self):
        tm = GroupingTransactionManager()
        tm.start_group()
        for i in range(3):
            tm.job_starts()
            tm.commit()
            tm.job_done()
        self.assertEqual(tm.end_group(), 3)
        self.assertFalse(tm.grouping)

    def test_a_doomed_group_splits(self):
        tm = GroupingTransactionManager()
        tm.start_group()
        tm.job_starts()
        tm.get().doom()
        with self.assertRaises(GroupSplit):
            tm.commit()
        tm.abandon_group()


class GroupFixture(DispatcherFixture):
    """A dispatcher making groups of up to 10 jobs, ``root['effects']``
    and the gates of ``effect``."""

    def setUp(self):
        super().setUp()
        RUNS.clear()
        GATES.clear()
        self.dispatcher.group_size = 10
        # (no age bound: what joins a group does not depend on how fast
        # the machine runs the jobs)
        self.dispatcher.group_age = 600
        self.root['effects'] = persistent.mapping.PersistentMapping()
        self.tm.commit()

    def tearDown(self):
        for started, release in GATES.values():
            release.set()
        super().tearDown()

    def gate(self, name):
        GATES[name] = (threading.Event(), threading.Event())
        return GATES[name]

    def committed_effects(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            return dict(conn.root()['effects'])
        finally:
            tm.abort()
            conn.close()

    def put(self, *names, **kw):
        jobs = [self.queue.put(Job(effect, name, **kw)) for name in names]
        self.tm.commit()
        return jobs


class GroupCommitTests(GroupFixture, unittest.TestCase):

    agent_size = 1

    def test_short_jobs_commit_together(self):
        import zope.testing.loggingsupport
        log = zope.testing.loggingsupport.InstalledHandler('zasync')
        self.addCleanup(log.uninstall)
        before = self.dispatcher.groups_committed
        # While the first job waits, the others are claimed with it.
        started, release = self.gate('a')
        jobs = self.put('a', 'b', 'c', 'd')
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        release.set()
        for job in jobs:
            testing.wait_for_result(job)
        self.assertEqual(self.committed_effects(),
                         {'a': 1, 'b': 1, 'c': 1, 'd': 1})
        self.assertEqual(RUNS, {'a': 1, 'b': 1, 'c': 1, 'd': 1})
        # (the thread counts a group once its commit returned: after the
        # results can be seen)
        dispatcher = self.dispatcher
        waiters.wait(lambda: True if dispatcher.grouped_jobs else None, 10,
                     lambda: 'no group counted: %s' % log)
        self.assertEqual(dispatcher.groups_committed, before + 1, log)
        self.assertEqual(dispatcher.grouped_jobs, 4, log)

    def test_a_conflict_splits_the_group(self):
        # The first job waits; meanwhile another transaction changes the
        # object every job of the group writes: the group's commit
        # conflicts, and its jobs run again, one per transaction.
        started, release = self.gate('first')
        jobs = self.put('first', 'second', 'third')
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        self.tm.begin()
        self.root['effects']['outsider'] = 1
        self.tm.commit()
        release.set()
        results = [testing.wait_for_result(job) for job in jobs]
        self.assertEqual(results, ['first', 'second', 'third'])
        # Each job's effects and its result committed once, beside the
        # outsider's change:
        self.assertEqual(self.committed_effects(), {
            'outsider': 1, 'first': 1, 'second': 1, 'third': 1})
        # The callables of the split group ran again (nothing of their
        # first run had committed).
        self.assertEqual(RUNS['first'], 2)
        for job in jobs:
            self.assertEqual(job.status, interfaces.COMPLETED)

    def test_a_failing_job_fails_alone(self):
        started, release = self.gate('one')
        jobs = self.put('one')
        failing, = self.put('two', fail=True)
        last, = self.put('three')
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        release.set()
        self.assertEqual(testing.wait_for_result(jobs[0]), 'one')
        failure = testing.wait_for_result(failing)
        self.assertTrue(failure.check(ValueError), failure)
        self.assertEqual(testing.wait_for_result(last), 'three')
        effects = self.committed_effects()
        self.assertEqual((effects['one'], effects['three']), (1, 1))
        self.assertNotIn('two', effects)   # (its write was aborted)

    def test_jobs_that_opt_out_commit_alone(self):
        started, release = self.gate('x')
        first, = self.put('x')
        job = Job(effect, 'y')
        job.group_commit = False
        alone = self.queue.put(job)
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        release.set()
        self.assertEqual(testing.wait_for_result(first), 'x')
        self.assertEqual(testing.wait_for_result(alone), 'y')
        self.assertEqual(self.committed_effects(), {'x': 1, 'y': 1})

    def test_a_cancelled_job_of_a_group(self):
        import zope.testing.loggingsupport
        log = zope.testing.loggingsupport.InstalledHandler('zasync')
        self.addCleanup(log.uninstall)
        self.log = log
        started, release = self.gate('before')
        before, = self.put('before')
        looping = self.queue.put(Job(jobs.write_then_loop, 'w'))
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        release.set()
        testing.wait_for_start(looping, 10)
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            conn.get(looping._p_oid).cancel('stop it')
            tm.commit()
        finally:
            conn.close()
        # (A poll looks for cancelled jobs too: whether the wake-up or the
        # poll finds it first, the job must end cancelled, and the group
        # must not commit its writes.)
        testing.get_poll(self.dispatcher)
        try:
            failure = testing.wait_for_result(looping, 10)
        except AssertionError:
            raise AssertionError(str(log))
        self.assertTrue(failure.check(interfaces.CancelledError), failure)
        self.assertEqual(testing.wait_for_result(before), 'before')
        self.assertEqual(self.committed_effects(), {'before': 1})
        self.tm.begin()
        self.assertNotIn('w', self.root)


class KeptJobsTests(GroupFixture, unittest.TestCase):
    """Issue 14: with group commits, the thread that claimed a batch keeps
    it for its groups (more threads are not slower than one); the other
    threads take half of what it keeps once it has kept jobs for
    ``steal_after`` seconds -- behind a long job, say."""

    agent_size = 2

    def test_jobs_kept_behind_a_long_job_are_taken_by_another_thread(self):
        started, release = self.gate('long')
        self.tm.begin()
        long_job = self.queue.put(Job(effect, 'long'))
        others = [self.queue.put(Job(effect, name)) for name in 'abc']
        self.tm.commit()
        testing.get_poll(self.dispatcher)
        self.assertTrue(started.wait(10))
        # The long job holds its thread; the other thread runs the rest.
        self.assertEqual([testing.wait_for_result(job) for job in others],
                         ['a', 'b', 'c'])
        self.assertIsNone(long_job.result)
        release.set()
        self.assertEqual(testing.wait_for_result(long_job), 'long')
        # (every job writes root['effects']: the long job's commit, after
        # the others', conflicted and ran it again; its effects committed
        # once)
        self.assertEqual(self.committed_effects(),
                         {'long': 1, 'a': 1, 'b': 1, 'c': 1})


class RunInClaimTests(GroupFixture, unittest.TestCase):
    """Issue 14: with group commits, a worker thread whose claim took a
    single job that may join a group runs it in the claim's transaction:
    the claim commits with the result (one commit before the job starts
    fewer), and until then our other claims pass over the job."""

    agent_size = 2

    def setUp(self):
        super().setUp()
        # Only wake-ups claim from now on (worker threads, as a put wakes
        # them), not the polls: after the next, none for an hour.
        self.dispatcher.poll_interval = 3600
        testing.get_poll(self.dispatcher)
        # (any callable, even one never seen to run short here)
        self.dispatcher.run_in_claim_after = 0

    def put(self, *names, **kw):
        jobs = super().put(*names, **kw)
        self.reactor.run_due()   # (the wake-up the commit asked for)
        return jobs

    def run_alone(self, name):
        """Put a job, and wait until it is done and its thread is idle
        again (it counted the run); return it."""
        job, = self.put(name)
        self.assertEqual(testing.wait_for_result(job), name)
        pool = self.dispatcher.queues['']['main']
        waiters.wait(lambda: True if pool.outstanding == 0 else None, 10,
                     lambda: 'outstanding: %d' % pool.outstanding)
        return job

    def revisions(self, job):
        """How many times ``job`` was stored."""
        return len(self.db.storage.history(job._p_oid, size=100))

    def settled(self, run_in_claim):
        """Wait until ``run_in_claim`` jobs committed with their claims,
        and no job runs in an uncommitted claim (the worker thread counts
        a run after the commit its result is seen in)."""
        dispatcher = self.dispatcher
        waiters.wait(
            lambda: True if (dispatcher.run_in_claim == run_in_claim
                             and not dispatcher.in_flight) else None, 10,
            lambda: 'run in claim: %d, in flight: %r' % (
                dispatcher.run_in_claim, dispatcher.in_flight))

    def test_a_lone_job_commits_with_its_claim(self):
        before = self.dispatcher.run_in_claim
        job, = self.put('solo')
        self.assertEqual(testing.wait_for_result(job), 'solo')
        self.assertEqual(self.committed_effects(), {'solo': 1})
        self.assertEqual(RUNS, {'solo': 1})
        self.settled(before + 1)
        # stored when it was put, and when it completed: never seen active
        self.assertEqual(self.revisions(job), 2)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.tm.begin()
        self.assertIn(job, list(self.agent.completed))

    def test_other_claims_pass_over_a_job_running_in_its_claim(self):
        started, release = self.gate('long')
        long_job, = self.put('long')
        self.assertTrue(started.wait(10))
        self.assertEqual(len(self.dispatcher.in_flight), 1)
        # Meanwhile a poll, and the other thread, claim what comes next --
        # not the job still pending for everybody else.
        testing.get_poll(self.dispatcher)
        self.tm.begin()
        self.assertEqual((long_job.status, len(self.agent), RUNS),
                         (interfaces.PENDING, 0, {'long': 1}))
        short, = self.put('short')
        self.assertEqual(testing.wait_for_result(short), 'short')
        self.tm.begin()
        self.assertEqual(long_job.status, interfaces.PENDING)
        self.assertEqual(RUNS, {'long': 1, 'short': 1})
        release.set()
        # The short job's commit changed what the long one writes: the
        # long job's commit (its claim with it) conflicted, and it was
        # claimed again the usual way and ran again; its effects and its
        # result committed once.
        self.assertEqual(testing.wait_for_result(long_job), 'long')
        self.assertEqual(self.committed_effects(), {'long': 1, 'short': 1})
        self.assertEqual(RUNS, {'long': 2, 'short': 1})
        self.assertEqual(self.revisions(long_job), 3)   # (put, claim, end)
        self.settled(1)   # (the short job's run)

    def test_a_job_that_has_to_abort_is_claimed_again(self):
        job, = self.put('failing', fail=True)
        failure = testing.wait_for_result(job)
        self.assertTrue(failure.check(ValueError), failure)
        # (its run in the claim could not abort alone: it ran again, after
        # a claim of its own, and failed there)
        self.assertEqual(RUNS, {'failing': 2})
        self.assertEqual(self.committed_effects(), {})
        self.assertEqual(self.revisions(job), 3)

    def test_jobs_that_opt_out_are_claimed_first(self):
        job = Job(effect, 'alone')
        job.group_commit = False
        job = self.queue.put(job)
        self.tm.commit()
        self.reactor.run_due()
        self.assertEqual(testing.wait_for_result(job), 'alone')
        self.assertEqual(RUNS, {'alone': 1})
        self.assertEqual(self.revisions(job), 3)

    def test_not_while_another_dispatcher_is_alive_in_the_queue(self):
        # (it would not see the claim, and could run the job too)
        import uuid
        self.tm.begin()
        other = self.queue.dispatchers.register(uuid.uuid4())
        other.activate()
        self.tm.commit()
        before = self.dispatcher.run_in_claim
        job, = self.put('shared')
        self.assertEqual(testing.wait_for_result(job), 'shared')
        self.settled(before)
        self.assertEqual(self.revisions(job), 3)

    def test_only_callables_seen_to_run_short(self):
        # A job of a callable that has not run here yet, or that ran
        # long, has its claim committed first: it shows as active while
        # it runs, as a long job should.
        self.dispatcher.run_in_claim_after = 2
        self.dispatcher.short_run = 60   # (any run of effect is short)
        first, second, third = [self.run_alone(name) for name in '123']
        self.settled(1)
        self.assertEqual([self.revisions(job) for job in (first, second)],
                         [3, 3])
        self.assertEqual(self.revisions(third), 2)
        self.dispatcher.short_run = 0    # (now every run is long)
        self.run_alone('4')   # (its last runs were short)
        self.settled(2)
        fifth = self.run_alone('5')    # (but that one ran long)
        self.settled(2)
        self.assertEqual(self.revisions(fifth), 3)
