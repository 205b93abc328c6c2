"""Jobs that cannot be loaded never block their queue.

Each test writes a module of job code into a temporary directory, queues
jobs that refer to it, then takes the code away the way a deployment does
-- the module deleted, a function renamed, the module failing at import --
and lets a real dispatcher (worker threads, a test reactor's clock) work
on the queue.  The dispatcher's threads load the jobs from the database,
as a worker process would; they share this process's ``sys.modules``,
which the tests change accordingly.
"""
import datetime
import importlib
import operator
import os
import sys
import unittest
import uuid

import transaction
import zope.component

import zasync.agent
import zasync.dispatcher
from zasync import interfaces
from zasync import testing
from zasync.dispatcher import Dispatcher
from zasync.job import Job
from zasync.job import load_problem
from zasync.job import tolerant_class_factory
from zasync.testing.fixtures import DatabaseFixture

CODE = '''
import zasync.job


def work(x):
    return x * 2


class Arg:
    def __init__(self, value):
        self.value = value


class MyJob(zasync.job.Job):
    pass
'''


class PoisonTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def setUp(self):
        super().setUp()
        self.module_name = 'zasync_poison_%s' % uuid.uuid4().hex[:12]
        self.path = os.path.join(self.dir, self.module_name + '.py')
        sys.path.insert(0, self.dir)
        self.module = self.deploy()
        self.uuid = uuid.uuid4()
        zope.component.provideUtility(self.uuid, interfaces.IUUID)
        # (the dispatcher's test reactor drives this clock)
        self.clock = testing.ManualClock().install()
        self.queue.load_grace = datetime.timedelta(seconds=30)
        self.tm.commit()
        self.dispatcher = None

    def tearDown(self):
        testing.tear_down_dispatchers()
        zasync.dispatcher.clear()
        sys.modules.pop(self.module_name, None)
        sys.path.remove(self.dir)
        super().tearDown()

    # -- deployments ------------------------------------------------------

    def deploy(self, code=CODE):
        with open(self.path, 'w') as f:
            f.write(code)
        sys.modules.pop(self.module_name, None)
        importlib.invalidate_caches()
        return importlib.import_module(self.module_name)

    def undeploy(self):
        """The module is gone (and our connection forgets what it
        loaded)."""
        os.remove(self.path)
        sys.modules.pop(self.module_name, None)
        importlib.invalidate_caches()
        self.conn.cacheMinimize()

    def break_module(self):
        """The module fails at import (a missing dependency)."""
        with open(self.path, 'w') as f:
            f.write('raise RuntimeError("the database driver is missing")\n')
        sys.modules.pop(self.module_name, None)
        importlib.invalidate_caches()
        self.conn.cacheMinimize()

    # -- the dispatcher ---------------------------------------------------

    def start(self, size=3):
        reactor = testing.Reactor(self.clock)
        self.dispatcher = Dispatcher(self.db, reactor, poll_interval=1)
        self.dispatcher.activate()
        reactor.start()
        testing.get_poll(self.dispatcher, 0)
        self.tm.begin()
        self.queue.dispatchers[self.uuid]['main'] = zasync.agent.Agent(
            size=size)
        self.tm.commit()

    def poll(self, count=1):
        for _ in range(count):
            testing.get_poll(self.dispatcher)
        self.tm.begin()

    def put_behind(self, count=20):
        return [self.queue.put(Job(operator.mul, i, 2))
                for i in range(count)]

    def held(self):
        self.tm.begin()
        return self.queue.unloadableJobs()

    def wait_until_held(self, count=1):
        def check():
            held = self.held()
            return held if len(held) >= count else None
        return testing.wait(check, 10, 'no job was held')

    def hold(self, bad, behind=5, take_away=None):
        """Queue ``bad`` and ``behind`` jobs after it, take the code away
        (``take_away``, default: the module is gone), start the dispatcher:
        the jobs behind complete; return the record of the held job."""
        self.queue.put(bad)
        jobs = self.put_behind(behind)
        self.tm.commit()
        (take_away or self.undeploy)()
        self.start()
        self.poll()
        self.assert_behind_completed(jobs)
        [record] = self.wait_until_held()
        return record

    def assert_behind_completed(self, jobs):
        self.assertEqual([testing.wait_for_result(job) for job in jobs],
                         [i * 2 for i in range(len(jobs))])

    # -- the tests --------------------------------------------------------

    def test_missing_module_is_held_then_failed(self):
        bad = Job(self.module.work, 21)
        record = self.hold(bad, behind=20)
        self.assertIs(record.job, bad)
        self.assertIn("its callable %s.work cannot be imported: "
                      "ModuleNotFoundError: No module named '%s'"
                      % (self.module_name, self.module_name), record.reason)
        self.assertEqual(len(self.queue), 0)
        # No dispatcher can load it within the grace: it fails.
        self.poll(40)
        failure = testing.wait_for_result(bad)
        self.assertTrue(failure.check(interfaces.JobLoadError))
        self.assertIn("No module named '%s'" % self.module_name,
                      failure.getErrorMessage())
        self.assertEqual(self.held(), [])
        self.assertEqual(bad.callable.dotted_name,
                         '%s.work' % self.module_name)

    def test_held_job_runs_once_the_code_is_back(self):
        bad = self.queue.put(Job(self.module.work, 21))
        self.tm.commit()
        self.undeploy()
        self.start()
        self.poll()
        self.wait_until_held()
        self.deploy()
        self.poll(4)    # the retry: 2 s after it was held
        self.assertEqual(testing.wait_for_result(bad), 42)
        self.assertEqual(self.held(), [])

    def test_renamed_function(self):
        def rename():
            self.deploy(CODE.replace('def work(', 'def labour('))
            self.conn.cacheMinimize()
        bad = Job(self.module.work, 21)
        record = self.hold(bad, take_away=rename)
        self.assertIs(record.job, bad)
        self.assertIn("module '%s' has no attribute 'work'"
                      % self.module_name, record.reason)

    def test_module_failing_at_import(self):
        bad = Job(self.module.work, 21)
        record = self.hold(bad, take_away=self.break_module)
        self.assertIn('RuntimeError: the database driver is missing',
                      record.reason)
        self.assertIsNotNone(load_problem(bad))

    def test_missing_argument_class_never_succeeds(self):
        bad = Job(repr, self.module.Arg(1))
        record = self.hold(bad)
        self.assertIn('an argument of class %s.Arg cannot be imported'
                      % self.module_name, record.reason)
        self.poll(40)
        failure = testing.wait_for_result(bad)
        self.assertTrue(failure.check(interfaces.JobLoadError))

    def test_missing_job_class_is_held_for_an_operator(self):
        bad = self.module.MyJob(operator.add, 1, 2)
        self.root['bad'] = bad
        self.tm.commit()
        bad_id = bad._p_oid
        del self.root['bad']
        record = self.hold(bad)
        self.assertIn('its class %s.MyJob cannot be imported'
                      % self.module_name, record.reason)
        self.assertEqual(record.job._p_oid, bad_id)
        self.poll(40)
        [record] = self.held()
        self.assertTrue(record.given_up)   # it cannot be failed
        # An operator's process, which cannot load it either.
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        queue = conn.root()[interfaces.KEY]['']
        [record] = queue.unloadableJobs()
        with self.assertRaises(ValueError) as caught:
            queue.failJob(record.job, 'nobody can load it')
        self.assertIn('its class cannot be imported', str(caught.exception))
        queue.removeJob(record.job)
        tm.commit()
        conn.close()
        self.assertEqual(self.held(), [])

    def test_operator_requeues_a_held_job(self):
        bad = self.queue.put(Job(self.module.work, 21))
        self.tm.commit()
        self.undeploy()
        self.start()
        self.poll()
        [record] = self.wait_until_held()
        self.deploy()
        self.queue.requeueJob(record.job)
        self.tm.commit()
        self.poll()
        self.assertEqual(testing.wait_for_result(bad), 42)

    def test_operator_fails_a_pending_job(self):
        self.start(size=0)   # nothing runs yet
        job = self.queue.put(Job(operator.add, 1, 2))
        self.tm.commit()
        self.queue.failJob(job, 'not needed any more')
        self.tm.commit()
        self.assertEqual(len(self.queue), 1)   # the job failing it
        self.queue.dispatchers[self.uuid]['main'].size = 1
        self.tm.commit()
        self.poll()
        failure = testing.wait_for_result(job)
        self.assertTrue(failure.check(interfaces.AbortedError))
        self.assertIn('failed by an operator: not needed any more',
                      failure.getErrorMessage())

    def test_main_script_functions_are_refused(self):
        def work():
            pass
        work.__module__ = '__main__'
        work.__qualname__ = 'work'
        with self.assertRaises(interfaces.UnpicklableCallableError) as caught:
            Job(work)
        self.assertIn('__main__', str(caught.exception))


class TolerantPoisonTests(PoisonTests):
    """The same with the class factory ``zasync worker`` uses, and a job
    subclass whose module fails at import: without it, the queue's entries
    that refer to such a job could not be read at all."""

    class_factory = staticmethod(tolerant_class_factory)

    def test_job_class_of_a_module_failing_at_import(self):
        bad = self.module.MyJob(operator.add, 1, 2)
        record = self.hold(bad, take_away=self.break_module)
        self.assertIn('its class %s.MyJob cannot be imported: RuntimeError: '
                      'the database driver is missing' % self.module_name,
                      record.reason)
