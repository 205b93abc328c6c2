"""Edge cases of jobs, including the zc.async defects zasync fixes."""
import datetime
import logging
import operator
import pickle
import threading
import unittest

import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import zope.component.testing
import zope.interface
from zope.testing.loggingsupport import InstalledHandler

from zasync import interfaces
from zasync import local
from zasync import utils
from zasync.failure import Failure
from zasync.job import ConditionalCallbackProxy
from zasync.job import Job
from zasync.job import NeverRetry
from zasync.job import RetryCommonFourTimes
from zasync.job import RetryWithBackoff
from zasync.testing import ManualClock
from zasync.testing.fixtures import DatabaseFixture

UTC = datetime.timezone.utc


# Module-level callables: jobs can only store importable ones.

calls = []


def record(*args):
    calls.append(args)
    return args


def conflict_always():
    calls.append(1)
    raise ZODB.POSException.ConflictError()


def call_current_job():
    return local.getJob()()


def call_parent_job(result):
    return local.getJob().parent()


def give(value):
    return value


def return_persistent_unsaved():
    return threading.Lock()


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__('code %s' % code)
        self.code = code
        self.detail = detail


def raise_custom():
    raise CustomError(7, object())


deferreds = []


def return_deferred():
    from twisted.internet.defer import Deferred
    d = Deferred()
    deferreds.append(d)
    return d


@zope.interface.implementer(interfaces.IQueue)
class StubQueue(persistent.Persistent):
    parent = None

    def __init__(self):
        self.put_calls = []
        self.putback_calls = []

    def put(self, job, begin_after=None):
        job.begin_after = begin_after
        job.parent = self
        self.put_calls.append((job, begin_after))
        return job

    def putBack(self, job):
        job.parent = self
        self.putback_calls.append(job)

    def remove(self, job):
        job.parent = None


@zope.interface.implementer(interfaces.IAgent)
class StubAgent(persistent.Persistent):
    name = 'main'

    def __init__(self, queue):
        self.parent = None
        self.queue = queue
        self.jobs = []

    def remove(self, job):
        self.jobs.remove(job)
        job.parent = None

    def jobCompleted(self, job):
        self.jobs.remove(job)
        job.parent = None
        self.completed = job


def shadowed():
    """A function whose module global is rebound below."""


_shadowed_original = shadowed
shadowed = give   # (the name now imports another function)


class TestWhatAJobAccepts(unittest.TestCase):
    """A job refuses, when it is made, what could not be stored (checked
    quickly for the common cases: issue 14)."""

    def test_a_function_whose_name_imports_another_is_refused(self):
        with self.assertRaises(interfaces.UnpicklableCallableError) as caught:
            Job(_shadowed_original)
        self.assertIn('cannot be imported by its name', str(caught.exception))
        self.assertIs(Job(shadowed).callable, give)

    def test_importable_globals_are_accepted(self):
        for value in (give, operator.add, dict, Failure, len):
            self.assertIs(Job(value).callable, value)

    def test_arguments_are_checked_unless_all_are_atoms(self):
        job = Job(give, 1, 2.5, 'x', b'y', True, None, key='value')
        self.assertEqual(list(job.args), [1, 2.5, 'x', b'y', True, None])
        for args, kwargs in ((([threading.Lock()],), {}),
                             ((), {'lock': threading.Lock()}),
                             ((1, threading.Lock()), {})):
            with self.assertRaises(ValueError) as caught:
                Job(give, *args, **kwargs)
            self.assertIn('cannot be stored in the database',
                          str(caught.exception))


class DatabaseTest(DatabaseFixture, unittest.TestCase):

    global_transaction = True

    def setUp(self):
        super().setUp()
        self.clock = ManualClock().install()
        del calls[:]

    def store(self, job, name='job'):
        self.root[name] = job
        transaction.commit()
        return job

    def in_agent(self, job):
        queue = self.root['queue'] = StubQueue()
        agent = self.root['agent'] = StubAgent(queue)
        agent.jobs.append(job)
        job.parent = agent
        self.store(job)
        return queue, agent


class StatusTests(DatabaseTest):

    def test_status_follows_parent_chain(self):
        job = Job(operator.mul, 6, 7)
        self.assertEqual(job.status, interfaces.NEW)
        queue = StubQueue()
        job.parent = queue
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertIs(job.queue, queue)
        agent = StubAgent(queue)
        job.parent = agent
        self.assertEqual(job.status, interfaces.ASSIGNED)
        self.assertIs(job.agent, agent)
        callback = job.addCallback(Job(operator.add, 1))
        self.assertEqual(callback.status, interfaces.ASSIGNED)
        self.assertIs(callback.agent, agent)

    def test_status_and_result_are_read_only(self):
        job = Job(operator.mul, 6, 7)
        with self.assertRaises(AttributeError):
            job.status = interfaces.COMPLETED
        with self.assertRaises(AttributeError):
            job.result = 42

    def test_status_titles(self):
        self.assertEqual(interfaces.CALLBACKS.title, 'Performing Callbacks')
        self.assertEqual(interfaces.status_title('completed-status'),
                         'Completed')
        # statuses pickle as plain strings
        self.assertIs(type(pickle.loads(pickle.dumps(interfaces.NEW))), str)

    def test_pending_job_cannot_be_called(self):
        job = Job(operator.mul, 6, 7)
        job.parent = StubQueue()
        with self.assertRaises(interfaces.BadStatusError):
            job()

    def test_no_callable(self):
        with self.assertRaises(TypeError):
            Job()

    def test_keyword_arguments_named_like_parameters(self):
        job = Job(record, self='me', callable='too')
        self.assertEqual(dict(job.kwargs), {'self': 'me', 'callable': 'too'})

    def test_parent_setter_keeps_value(self):
        # zc.async defect 4: the __parent__ setter dropped the value.
        job = Job(operator.mul, 6, 7)
        marker = StubQueue()
        job.__parent__ = marker
        self.assertIs(job.__parent__, marker)
        job.__parent__ = None
        job.parent = 'fallback'
        self.assertEqual(job.__parent__, 'fallback')

    def test_job_as_callable_gets_parent(self):
        inner = Job(operator.mul, 6, 7)
        outer = Job(inner)
        self.assertIs(inner.parent, outer)

    def test_classmethod_and_builtin_callables(self):
        job = Job(datetime.datetime.fromtimestamp, 0, UTC)
        self.assertEqual(job(), datetime.datetime(1970, 1, 1, tzinfo=UTC))
        self.assertEqual(Job(len, [1, 2])(), 2)


class CallTests(DatabaseTest):

    def test_job_calling_itself_fails(self):
        job = self.store(Job(call_current_job))
        result = job()
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(interfaces.BadStatusError))

    def test_callback_calling_its_parent_fails(self):
        job = Job(operator.mul, 6, 7)
        callback = job.addCallback(Job(call_parent_job))
        self.store(job)
        self.assertEqual(job(), 42)
        self.assertTrue(callback.result.check(interfaces.BadStatusError))

    def test_unstorable_result_becomes_failure(self):
        job = self.store(Job(return_persistent_unsaved))
        result = job()
        self.assertIsInstance(result, Failure)
        self.assertIn('pickle', result.getErrorMessage())
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_failing_setup_is_a_job_error_and_skips_teardown(self):
        events = []

        class Hooked(Job):
            def setUp(self):
                events.append('setUp')
                raise RuntimeError('no context')

            def tearDown(self, info):  # pragma: no cover - must not run
                events.append('tearDown')

        job = Hooked(record, 1)
        result = job()
        self.assertTrue(result.check(RuntimeError))
        self.assertEqual(events, ['setUp'])
        self.assertEqual(calls, [])

    def test_custom_exception_survives_pickling(self):
        job = self.store(Job(raise_custom))
        job()
        failure = pickle.loads(pickle.dumps(job.result))
        self.assertEqual(failure.type, CustomError)
        self.assertEqual(failure.getErrorMessage(), 'code 7')
        # The exception cannot be rebuilt from its args: a stand-in.
        self.assertIn('CustomError: code 7', str(failure.value))

    def test_deadline_passed_means_no_retry(self):
        # zc.async defect 1: the comparison was inverted, so jobs with a
        # begin_by were *not* retried while still inside their window.
        job = Job(conflict_always)
        job.begin_after = self.clock.now()
        job.begin_by = datetime.timedelta(hours=1)
        self.store(job)
        job()
        self.assertEqual(len(calls), 5)   # inside the window: retried
        del calls[:]
        job = Job(conflict_always)
        job.begin_after = self.clock.now() - datetime.timedelta(hours=2)
        job.begin_by = datetime.timedelta(hours=1)
        self.store(job, 'late')
        job()
        self.assertEqual(len(calls), 1)   # past the deadline: not retried

    def test_returning_a_completed_job_adopts_its_result(self):
        # The inner job calls back at once; its result must not then be
        # overwritten by the inner job itself.
        inner = self.store(Job(operator.add, 40, 2), 'inner')
        inner()
        outer = Job(give, inner)
        told = outer.addCallback(Job(record, 'told'))
        self.store(outer)
        outer()
        self.assertEqual(outer.status, interfaces.COMPLETED)
        self.assertEqual(outer.result, 42)
        self.assertEqual(told.result, ('told', 42))
        self.assertEqual(calls, [('told', 42)])
        transaction.abort()
        self.assertEqual(outer.result, 42)

    def test_returning_a_job_waits_for_it(self):
        inner = self.store(Job(operator.add, 40, 2), 'inner')
        outer = Job(give, inner)
        told = outer.addCallback(Job(record, 'told'))
        self.store(outer)
        self.assertIs(outer(), inner)
        self.assertEqual(outer.status, interfaces.ACTIVE)
        self.assertIs(outer.result, inner)
        inner()
        self.assertEqual(outer.status, interfaces.COMPLETED)
        self.assertEqual(outer.result, 42)
        self.assertEqual(told.result, ('told', 42))

    def test_deferred_result_commits_from_another_connection(self):
        job = self.store(Job(return_deferred))
        self.assertEqual(job().__class__.__name__, 'Deferred')
        self.assertEqual(job.status, interfaces.ACTIVE)
        thread = threading.Thread(target=deferreds.pop().callback, args=(42,))
        thread.start()
        thread.join(10)
        transaction.begin()
        self.assertEqual(job.result, 42)
        self.assertEqual(job.status, interfaces.COMPLETED)


class RescheduleTests(DatabaseTest):

    def test_timedelta_reschedules_into_queue(self):
        job = Job(operator.mul, 6, 7)
        queue, agent = self.in_agent(job)
        job._status_id = 1
        self.assertIs(job._reschedule(datetime.timedelta(hours=1)), job)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(agent.jobs, [])
        self.assertEqual(queue.put_calls,
                         [(job, self.clock.now()
                           + datetime.timedelta(hours=1))])
        self.assertIsNone(job.active_start)

    def test_naive_datetime_taken_as_utc(self):
        job = Job(operator.mul, 6, 7)
        queue, agent = self.in_agent(job)
        job._reschedule(datetime.datetime(3000, 1, 1))
        self.assertEqual(job.begin_after,
                         datetime.datetime(3000, 1, 1, tzinfo=UTC))

    def test_past_time_puts_back_first_in_line(self):
        job = Job(operator.mul, 6, 7)
        queue, agent = self.in_agent(job)
        job._reschedule(datetime.timedelta(0))
        self.assertEqual(queue.putback_calls, [job])

    def test_wrong_type(self):
        with self.assertRaises(TypeError):
            Job(operator.mul)._reschedule(5)

    def test_retry_with_backoff_reschedules_from_agent(self):
        job = Job(raise_custom)
        job.retry_policy_factory = RetryWithBackoff(base=2, jitter=False)
        queue, agent = self.in_agent(job)
        self.assertIs(job(), job)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(job.begin_after,
                         self.clock.now() + datetime.timedelta(seconds=2))


class InterruptTests(DatabaseTest):

    def active_job(self, policy=None):
        job = Job(operator.mul, 6, 7)
        if policy is not None:
            job.retry_policy_factory = policy
        queue = self.root['queue'] = StubQueue()
        wrapper = Job(job.handleInterrupt)
        wrapper.parent = queue
        job._status_id = 1
        self.store(job)
        return job, queue, wrapper

    def test_interrupted_job_goes_back_first_in_line(self):
        job, queue, wrapper = self.active_job()
        self.assertIs(job.parent, wrapper)
        job.handleInterrupt()
        self.assertEqual(queue.putback_calls, [job])
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_interrupted_job_aborted_when_policy_declines(self):
        job, queue, wrapper = self.active_job(NeverRetry)
        told = job.addCallback(Job(record))
        transaction.commit()
        job.handleInterrupt()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(job.result.check(interfaces.AbortedError))
        self.assertTrue(told.result[0].check(interfaces.AbortedError))

    def test_interrupted_job_in_no_queue_is_aborted_not_stuck(self):
        job = Job(operator.mul, 6, 7)
        wrapper = Job(job.handleInterrupt)   # claimed: no parent any more
        job._status_id = 1
        self.store(job)
        self.store(wrapper, 'wrapper')
        log = InstalledHandler('zasync.events')
        try:
            wrapper()
        finally:
            log.uninstall()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(job.result.check(interfaces.AbortedError))
        self.assertIn('its dispatcher stopped or died while it ran',
                      job.result.getErrorMessage())
        self.assertIn('cannot be retried: it is in no queue',
                      log.records[0].getMessage())

    def test_handle_interrupt_needs_active_or_callbacks(self):
        with self.assertRaises(interfaces.BadStatusError):
            Job(operator.mul, 6, 7).handleInterrupt()

    def interrupted_callback(self, callback, inner=None, **kw):
        """Add ``callback`` to a job that is in CALLBACKS with the result
        42; the callback is ACTIVE, as when its dispatcher died.  Return
        that job."""
        parent = Job(operator.mul, 6, 7)
        parent.addCallback(callback, **kw)
        self.store(parent)
        if inner is not None:
            self.root['inner'] = inner
            callback._result = inner
        parent._result = 42
        parent._status_id = 2
        callback._status_id = 1
        transaction.commit()
        return parent

    def test_callback_interrupt_abort_does_not_raise(self):
        # zc.async defect 6: the abort path called fail() on an ACTIVE job.
        callback = Job(record)
        parent = self.interrupted_callback(
            callback, retry_policy_factory=NeverRetry)
        callback.handleCallbackInterrupt(parent)
        self.assertTrue(callback.result.check(interfaces.AbortedError))
        self.assertEqual(callback.status, interfaces.COMPLETED)

    def test_callback_interrupt_adopts_completed_inner_job(self):
        # zc.async defect 6: adopting the inner job's result lacked the
        # transaction manager.
        callback, inner = Job(record), Job(operator.add, 40, 2)
        parent = self.interrupted_callback(callback, inner)
        inner()
        log = InstalledHandler('zasync.events')
        try:
            callback.handleCallbackInterrupt(parent)
        finally:
            log.uninstall()
        self.assertEqual(callback.result, 42)
        self.assertEqual(callback.status, interfaces.COMPLETED)
        self.assertEqual(log.records[0].levelname, 'WARNING')

    def test_callback_interrupt_retried(self):
        callback = Job(record, 'again')
        parent = self.interrupted_callback(callback)
        callback.handleCallbackInterrupt(parent)
        self.assertEqual(callback.result, ('again', 42))

    def test_resume_callbacks_in_every_state(self):
        parent = Job(operator.mul, 6, 7)
        done = parent.addCallback(Job(record, 'done'))
        in_callbacks = parent.addCallback(Job(record, 'in callbacks'))
        sub = in_callbacks.addCallback(Job(operator.mul, 2))
        active = parent.addCallback(Job(operator.add, 8))
        new = parent.addCallback(Job(operator.add, 18))
        self.store(parent)
        parent._result = 42
        parent._status_id = 2
        done._status_id, done._result = 3, 'already'
        in_callbacks._status_id, in_callbacks._result = 2, 40
        active._status_id = 1
        transaction.commit()
        parent.resumeCallbacks()
        self.assertEqual(parent.status, interfaces.COMPLETED)
        self.assertEqual(done.result, 'already')
        self.assertEqual(sub.result, 80)
        self.assertEqual(active.result, 50)
        self.assertEqual(new.result, 60)

    def test_resume_callbacks_needs_callbacks_status(self):
        with self.assertRaises(interfaces.BadStatusError):
            Job(operator.mul, 6, 7).resumeCallbacks()

    def test_completion_in_agent_reports_to_agent(self):
        job = Job(operator.mul, 6, 7)
        queue, agent = self.in_agent(job)
        self.assertEqual(job(), 42)
        self.assertIs(agent.completed, job)


class ReassignmentTests(DatabaseTest):

    def test_job_in_another_agent_is_not_run(self):
        job = Job(record, 'x')
        queue, agent = self.in_agent(job)
        local.local.name = 'other-agent'
        log = InstalledHandler('zasync.events')
        try:
            with self.assertRaises(interfaces.ReassignedError):
                job()
        finally:
            local.local.name = None
            log.uninstall()
        self.assertEqual(calls, [])
        self.assertIn('was reassigned', log.records[0].getMessage())


class ProxyTests(DatabaseTest):

    def test_pass_through_keeps_result(self):
        # zc.async defect 15: the pass-through returned ``(result,)``.
        job = Job(operator.mul, 6, 7)
        proxy = job.addCallback(ConditionalCallbackProxy())
        self.store(job)
        job()
        self.assertEqual(proxy.result, 42)

    def test_proxy_status_before_and_after_choice(self):
        job = Job(operator.mul, 6, 7)
        proxy = job.addCallbacks(Job(record))
        self.assertEqual(proxy.status, interfaces.NEW)
        job.parent = StubQueue()
        self.assertEqual(proxy.status, interfaces.PENDING)
        job.parent = None
        self.store(job)
        job()
        self.assertEqual(proxy.status, interfaces.COMPLETED)
        self.assertIs(proxy.success, proxy.default)
        self.assertIsNone(proxy.failure)

    def test_failure_handler_chain(self):
        job = Job(operator.mul, 5, None)
        handled = job.addCallbacks(failure=Job(record, 'handled'))
        after = handled.addCallbacks(Job(record, 'after'))
        self.store(job)
        job()
        self.assertEqual(after.result[0], 'after')


class PolicyTests(unittest.TestCase):

    def test_update_data_keeps_first_active(self):
        job = Job(operator.mul, 6, 7)
        policy = RetryCommonFourTimes(job)
        policy.updateData({'first_active': 1, 'transaction_error': 2})
        policy.updateData({'first_active': 3, 'transaction_error': 4})
        self.assertEqual(dict(policy.data),
                         {'first_active': 1, 'transaction_error': 4})

    def test_backoff_validation(self):
        with self.assertRaises(ValueError):
            RetryWithBackoff(max_attempts=0)
        with self.assertRaises(ValueError):
            RetryWithBackoff(base=0)

    def test_backoff_class_as_factory(self):
        job = Job(operator.mul, 6, 7)
        job.retry_policy_factory = RetryWithBackoff
        self.assertEqual(job.getRetryPolicy().max_attempts, 5)


class UtilsTests(unittest.TestCase):

    def test_time_keys_round_trip_and_order(self):
        times = [datetime.datetime(1, 1, 1, tzinfo=UTC),
                 datetime.datetime(2006, 8, 10, 15, 44, 22, 211, tzinfo=UTC),
                 datetime.datetime(9999, 12, 31, 23, 59, 59, 999999,
                                   tzinfo=UTC)]
        keys = [utils.dt_to_long(t) for t in times]
        self.assertEqual([utils.long_to_dt(k) for k in keys], times)
        self.assertEqual(keys, sorted(keys, reverse=True))
        self.assertLess(max(keys), 2 ** 63)

    def test_naive_times_refused(self):
        with self.assertRaises(ValueError):
            utils.to_utc(datetime.datetime(2020, 1, 1))

    def test_failure_needs_an_exception(self):
        with self.assertRaises(ValueError):
            Failure()
        with self.assertRaises(TypeError):
            Failure('not an exception')
        self.assertEqual(repr(Failure(KeyError)),
                         '<zasync.Failure builtins.KeyError: >')

    def test_failure_detail_validated(self):
        with self.assertRaises(ValueError):
            Failure(KeyError('x')).getTraceback(detail='loud')

    def test_never_fail_retries_conflicts(self):
        tm = transaction.TransactionManager()
        attempts = []

        def call():
            attempts.append(1)
            if len(attempts) < 7:
                raise ZODB.POSException.ConflictError()
            return 'ok'
        log = InstalledHandler('zasync.events')
        try:
            self.assertEqual(utils.never_fail(call, 'testing', tm), 'ok')
        finally:
            log.uninstall()
        self.assertEqual(len(attempts), 7)
        self.assertEqual([r.levelno for r in log.records], [logging.WARNING])

    def test_try_five_times_gives_up(self):
        tm = transaction.TransactionManager()

        def call():
            raise ZODB.POSException.ConflictError()
        log = InstalledHandler('zasync.events')
        try:
            result = utils.try_five_times(call, 'testing', tm)
        finally:
            log.uninstall()
        self.assertTrue(result.check(ZODB.POSException.ConflictError))
        self.assertEqual(log.records[0].levelno, logging.CRITICAL)


class TestWhatAJobStores(DatabaseFixture, unittest.TestCase):
    """Issue 14: a job stores its callbacks list and its annotations tree
    only once it has some, and its positional arguments in its own record
    (three objects fewer per put)."""

    def stored(self, job):
        self.root['job'] = job
        self.tm.commit()
        self.tm.begin()
        return job

    def test_a_plain_job_is_one_object_with_its_arguments(self):
        self.root['other'] = 1   # (the root exists: not counted below)
        self.tm.commit()
        before = len(self.db.storage)
        self.stored(Job(operator.add, 1, 2))
        # the job alone
        self.assertEqual(len(self.db.storage) - before, 1)
        self.stored(Job(operator.add, 1, 2, x=1))
        # ... and a kwargs mapping for a job called with some
        self.assertEqual(len(self.db.storage) - before, 3)

    def test_arguments_are_a_list_stored_with_the_job(self):
        job = self.stored(Job(max, 1, 2))
        args = job.args
        self.assertEqual((args, list(args), len(args), args[0], args[-1:],
                          2 in args, args.index(2), args + [3], repr(args)),
                         ([1, 2], [1, 2], 2, 1, [2], True, 1, [1, 2, 3],
                          '[1, 2]'))
        self.assertFalse(job._p_changed)   # (reading never writes)
        job.args.append(3)
        self.assertTrue(job._p_changed)
        self.tm.commit()
        self.assertEqual(job(), 3)
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            self.assertEqual(list(conn.get(job._p_oid).args), [1, 2, 3])
        finally:
            conn.close()

    def test_each_write_to_the_arguments_changes_the_job(self):
        job = self.stored(Job(operator.add))
        for write in (lambda a: a.extend([1, 2]), lambda a: a.insert(0, 0),
                      lambda a: a.__setitem__(0, 5), lambda a: a.pop(0),
                      lambda a: a.__iadd__([]), lambda a: a.remove(1),
                      lambda a: a.__delitem__(0), lambda a: a.extend([4, 6])):
            write(job.args)
            self.assertTrue(job._p_changed)
            self.tm.commit()
        self.assertEqual(job.args, [4, 6])
        job.args = (7, 8)
        self.tm.commit()
        self.assertEqual(job(), 15)

    def test_a_bound_job_stores_a_reference_to_itself(self):
        job = self.stored(Job.bind(getattr, 'args'))
        self.tm.commit()
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            other = conn.get(job._p_oid)
            self.assertIs(other.args[0], other)
        finally:
            conn.close()

    def test_keyword_arguments_made_on_first_write(self):
        job = self.stored(Job(dict))
        self.assertEqual((dict(job.kwargs), len(job.kwargs), job.kwargs,
                          job.kwargs.get('a')), ({}, 0, {}, None))
        self.assertFalse(job._p_changed)
        # (nor asking the stand-in about itself: prefetching does)
        self.assertIsNone(getattr(job.kwargs, '_p_changed', None))
        self.assertFalse(hasattr(job.annotations, '_p_oid'))
        self.assertFalse(job._p_changed)
        job.kwargs['a'] = 1
        job.kwargs.update(b=2)
        self.assertIsInstance(job.kwargs,
                              persistent.mapping.PersistentMapping)
        self.tm.commit()
        self.assertEqual(job(), {'a': 1, 'b': 2})

    def test_reading_annotations_does_not_change_the_job(self):
        job = self.stored(Job(operator.add, 1, 2))
        annotations = job.annotations
        self.assertEqual((len(annotations), list(annotations),
                          annotations.get('x', 'none'), 'x' in annotations,
                          bool(annotations), list(annotations.items())),
                         (0, [], 'none', False, False, []))
        with self.assertRaises(KeyError):
            annotations['x']
        self.assertFalse(job._p_changed)
        self.assertEqual(job.callbacks, ())
        self.assertFalse(job._p_changed)

    def test_the_first_write_makes_the_tree(self):
        job = self.stored(Job(operator.add, 1, 2))
        annotations = job.annotations
        annotations['x'] = 1
        annotations.update({'y': 2})
        self.assertTrue(job._p_changed)
        self.tm.commit()
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            other = conn.get(job._p_oid)
            self.assertEqual(dict(other.annotations.items()),
                             {'x': 1, 'y': 2})
            self.assertIsInstance(other.annotations, BTrees.OOBTree.OOBTree)
        finally:
            conn.close()

    def test_callbacks_list_made_by_the_first_callback(self):
        job = self.stored(Job(operator.add, 1, 2))
        callback = job.addCallback(Job(operator.neg))
        self.tm.commit()
        self.assertEqual(list(job.callbacks), [callback])
        self.assertIsInstance(job.callbacks, persistent.list.PersistentList)

    def test_state_under_the_public_names_loads(self):
        # (zc.async's jobs, migrated: their callbacks and annotations were
        # stored under the public names)
        job = Job(operator.add, 1, 2)
        state = job.__getstate__()
        tree = BTrees.OOBTree.OOBTree({'k': 'v'})
        state['annotations'] = tree
        state['callbacks'] = persistent.list.PersistentList(['cb'])
        state['kwargs'] = persistent.mapping.PersistentMapping({'k': 1})
        # (and their arguments in a list of their own, as earlier zasync)
        args = state['args'] = persistent.list.PersistentList([1, 2])
        del state['_args']
        loaded = Job.__new__(Job)
        loaded.__setstate__(state)
        self.assertIs(loaded.args, args)
        loaded.args.append(3)
        self.assertEqual(list(args), [1, 2, 3])
        self.assertIs(loaded.annotations, tree)
        self.assertEqual(list(loaded.callbacks), ['cb'])
        self.assertEqual(dict(loaded.kwargs), {'k': 1})
        self.assertNotIn('annotations', loaded.__dict__)

    def concurrently(self, job, here, there):
        """``here(job)`` in the test's connection and ``there(job)`` in
        another, from the same state; commit there, then here."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            here(job)
            there(conn.get(job._p_oid))
            tm.commit()
            self.tm.commit()
        finally:
            tm.abort()
            conn.close()
        self.tm.begin()

    def test_a_first_callback_conflicts_with_the_jobs_own_change(self):
        # (as before it was made lazily: addCallback marks the job changed,
        # so that a callback is never added to a job completing meanwhile)
        job = self.stored(Job(operator.add, 1, 2))
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(
                job, lambda j: setattr(j, 'failure_log_level', logging.ERROR),
                lambda j: j.addCallback(Job(operator.neg)))
        self.tm.abort()
        self.assertEqual(len(job.callbacks), 1)

    def test_a_first_live_annotation_merges_with_the_jobs_own_change(self):
        job = self.stored(Job(operator.add, 1, 2))
        self.concurrently(
            job, lambda j: j.annotations.__setitem__('mine', 1),
            lambda j: setattr(j, 'failure_log_level', logging.ERROR))
        self.concurrently(
            job, lambda j: setattr(j, 'failure_log_level', logging.INFO),
            lambda j: j.annotations.__setitem__('theirs', 2))
        self.assertEqual(dict(job.annotations.items()),
                         {'mine': 1, 'theirs': 2})
        self.assertEqual(job.failure_log_level, logging.INFO)

    def test_two_first_callbacks_conflict(self):
        job = self.stored(Job(operator.add, 1, 2))
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(job, lambda j: j.addCallback(Job(operator.neg)),
                              lambda j: j.addCallback(Job(operator.pos)))
        self.tm.abort()
        self.assertEqual(len(job.callbacks), 1)

    def test_other_concurrent_changes_still_conflict(self):
        job = self.stored(Job(operator.add, 1, 2))
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(
                job, lambda j: setattr(j, 'failure_log_level', logging.INFO),
                lambda j: setattr(j, 'failure_log_level', logging.ERROR))
