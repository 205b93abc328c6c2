"""Issue 17: the fixes in jobs, agents and the dispatcher for ports from
zc.async (the others: test_port_fixes)."""
import datetime
import operator
import unittest
import unittest.mock

import persistent
import transaction
import twisted.python.failure
import zope.component
import zope.component.testing
import zope.interface
from ZEO.Exceptions import ClientDisconnected

from zasync import agent as zagent
from zasync import interfaces
from zasync import testing
from zasync.failure import Failure
from zasync.job import Job
from zasync.job import parallel
from zasync.queue import Dispatchers
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture
from zasync.tests.test_agent import AgentTestBase


# Module-level callables (jobs store them by import path).

def results(*jobs):
    return [job.result for job in jobs]


def second_job():
    return 'second'


def third_job():
    return 'third'


def schedule_third(main_job, ignored):
    main_job.args.append(Job(third_job))


def first_job(main_job):
    job = Job(second_job)
    main_job.args.append(job)
    job.addCallback(Job(schedule_third, main_job))
    return 'first'


def raise_type_error():
    raise TypeError('try again later')


class Counter(persistent.Persistent):
    value = 0


def count_and_return_twisted_failure(counter):
    counter.value += 1
    try:
        raise RuntimeError('returned, not raised')
    except RuntimeError:
        return twisted.python.failure.Failure()


@zope.interface.implementer(interfaces.IRetryPolicy)
class InAnHour(persistent.Persistent):

    def __init__(self, job):
        self.parent = job

    def jobError(self, failure, data_cache):
        return datetime.timedelta(hours=1)

    commitError = jobError

    def interrupted(self):
        return True

    def updateData(self, data_cache):
        pass


@zope.interface.implementer(interfaces.IQueue)
class StubQueue(persistent.Persistent):

    def put(self, job, begin_after=None):
        self.put_job, self.put_begin_after = job, begin_after
        job.parent = self


@zope.interface.implementer(interfaces.IAgent)
class StubAgent(persistent.Persistent):
    """An agent as zc.async's job.txt had: no ``queue`` attribute, the
    queue among its parents."""

    def __init__(self):
        self.parent = StubQueue()

    def remove(self, job):
        job.parent = None
        self.removed = job


class ParallelExtendedTests(AgentTestBase):
    """A parallel() job extended while it runs completes (README_1)."""

    def run_queue(self):
        while True:
            job = self.agent.claimJob()
            self.tm.commit()
            if job is None:
                return
            job()

    def test_components_added_by_components_and_callbacks_run(self):
        main = self.queue.put(parallel(postprocess=results))
        main.args.append(Job(first_job, main))
        self.tm.commit()
        self.run_queue()
        self.assertEqual(main.status, interfaces.COMPLETED)
        self.assertEqual(main.result, ['first', 'second', 'third'])


class RescheduleTests(DatabaseFixture, unittest.TestCase):
    """A retry policy answering a timedelta reschedules a job whose agent
    only has its queue among its parents (job.txt); it hung."""

    global_transaction = True

    def test_queue_found_through_the_parents(self):
        clock = testing.ManualClock().install()
        job = self.root['j'] = Job(raise_type_error)
        stub = job.parent = StubAgent()
        job.retry_policy_factory = InAnHour
        transaction.commit()
        self.assertIs(job(), job)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertIs(stub.removed, job)
        self.assertIs(stub.parent.put_job, job)
        self.assertEqual(stub.parent.put_begin_after,
                         clock.now() + datetime.timedelta(hours=1))


class HandlerDeclarationTests(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp(self)

    def tearDown(self):
        zope.component.testing.tearDown(self)

    def test_main_agent_handler_subscribes_to_activation(self):
        zope.component.provideHandler(zagent.addMainAgentActivationHandler)
        self.assertEqual(
            zope.component.adaptedBy(zagent.addMainAgentActivationHandler),
            (interfaces.IDispatcherActivated,))


class TwistedFailureTests(DatabaseFixture, unittest.TestCase):
    """A returned Twisted Failure is recorded as a zasync Failure, and the
    callable's work commits (job.txt); it failed to pickle."""

    global_transaction = True

    def test_converted_and_committed(self):
        counter = self.root['counter'] = Counter()
        job = self.root['j'] = Job(count_and_return_twisted_failure, counter)
        transaction.commit()
        result = job()
        self.assertIsInstance(result, Failure)
        transaction.abort()
        self.assertEqual(counter.value, 1)
        self.assertIsInstance(job.result, Failure)
        self.assertTrue(job.result.check(RuntimeError))


class PingFailureTests(DispatcherFixture, unittest.TestCase):
    """A poll whose ping fails still claims (catastrophes.txt)."""

    def test_claims_without_ping(self):
        def lost(self, uuid):
            raise ClientDisconnected()

        job = self.queue.put(Job(operator.mul, 6, 7))
        self.tm.commit()
        with unittest.mock.patch.object(Dispatchers, 'ping', lost):
            self.reactor.time_flies(1)
            self.assertEqual(testing.wait_for_result(job), 42)
