"""Issue 17: what a port from zc.async met -- each fix pinned here
(the fixes in jobs, agents and the dispatcher: test_port_engine)."""
import datetime
import operator
import os
import signal
import subprocess
import sys
import unittest
import unittest.mock
import uuid

import transaction
import zope.component
from persistent.mapping import PersistentMapping
import zope.component.testing
import zope.interface
from ZEO.Exceptions import ClientDisconnected

import zasync.configure
from zasync import dispatcher as zdispatcher
from zasync import ftesting
from zasync import interfaces
from zasync import local
from zasync import subscribers
from zasync import testing
from zasync import utils
from zasync.job import Job
from zasync.job import RetryCommonForever
from zasync.queue import Dispatchers
from zasync.queue import Queue
from zasync.queue import Queues
from zasync.queue import getDefaultQueue
from zasync.testing.fixtures import DatabaseFixture
from zasync.testing.fixtures import DispatcherFixture

UTC = datetime.timezone.utc


# Module-level callables (jobs store them by import path).

def wait_for_flag():
    return local.getLiveAnnotation('flag', timeout=5, poll=0.5)


class DeclarationTests(unittest.TestCase):
    """Retry policies declare what they adapt."""

    def setUp(self):
        zope.component.testing.setUp(self)

    def tearDown(self):
        zope.component.testing.tearDown(self)

    def test_retry_policy_adapts_jobs(self):
        zope.component.provideAdapter(RetryCommonForever,
                                      provides=interfaces.IRetryPolicy)
        policy = interfaces.IRetryPolicy(Job(operator.add))
        self.assertIsInstance(policy, RetryCommonForever)


class ForeignKeyTests(unittest.TestCase):
    """Keys of another type are absent, as in a dict (queue.txt)."""

    def test_queues(self):
        queues = Queues()
        queues[''] = Queue()
        self.assertIsNone(queues.get(2))
        self.assertNotIn(2, queues)
        with self.assertRaises(KeyError):
            queues[2]

    def test_dispatchers(self):
        dispatchers = Dispatchers()
        dispatchers.register(uuid.uuid4())
        self.assertIsNone(dispatchers.get(2))
        self.assertNotIn(2, dispatchers)
        with self.assertRaises(KeyError):
            dispatchers[2]


class DefaultQueueTests(DatabaseFixture, unittest.TestCase):

    queues = True

    def test_of_a_connection(self):
        self.assertIs(getDefaultQueue(self.conn), self.queue)


class NeverFailTests(unittest.TestCase):
    """A lost ZEO connection in zasync's own commits backs off (job.txt)."""

    def setUp(self):
        zope.component.testing.setUp(self)
        self.clock = testing.ManualClock().install()

    def tearDown(self):
        zope.component.testing.tearDown(self)

    def test_client_disconnected_backs_off(self):
        errors = [ClientDisconnected(), ClientDisconnected()]

        def call():
            if errors:
                raise errors.pop()
            return 42

        tm = transaction.TransactionManager()
        self.assertEqual(utils.never_fail(call, 'testing', tm), 42)
        self.assertEqual(self.clock.sleeps, [5, 10])


class LiveAnnotationTests(DispatcherFixture, unittest.TestCase):
    """getLiveAnnotation's timeout is real time: a test reactor's virtual
    time does not use it up (README_1)."""

    def test_virtual_time_does_not_count(self):
        job = self.queue.put(Job(wait_for_flag))
        self.tm.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.time_flies(30)      # virtual: far past the timeout
        job.annotations['flag'] = 'seen'
        self.tm.commit()
        for attempt in range(100):
            self.reactor.time_flies(0.5)
            self.tm.begin()
            if job.status == interfaces.COMPLETED:
                break
            self.reactor.wait_for_calls(0.05)
        self.assertEqual(testing.wait_for_result(job), 'seen')


class FtestingTearDownTests(DatabaseFixture, unittest.TestCase):
    """ftesting.tearDown() without setUp() stops the registered dispatcher
    and puts its signal handlers back (subscribers.txt)."""

    def test_stops_the_registered_dispatcher(self):
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        zasync.configure.start(self.db, poll_interval=0.1)
        dispatcher = zdispatcher.get()
        self.assertIsNotNone(dispatcher)
        try:
            testing.get_poll(dispatcher, 0)
        finally:
            ftesting.tearDown()
        self.assertIsNone(zdispatcher.get())
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertIsNone(dispatcher.signal_handlers)


class SignalHandlerRecordTests(DatabaseFixture, unittest.TestCase):
    """zasync.subscribers.signal_handlers: zc.async's record of what the
    threaded installer installed, keyed by id(dispatcher) (subscribers.txt).
    """

    def setUp(self):
        super().setUp()
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        self.before = {signum: signal.getsignal(signum)
                       for signum in (signal.SIGINT, signal.SIGTERM)}

    def tearDown(self):
        for signum, handler in self.before.items():
            signal.signal(signum, handler)
        subscribers.signal_handlers.clear()
        zdispatcher.clear()
        super().tearDown()

    def start(self):
        opened = interfaces.DatabaseOpened(self.db)
        subscribers.queue_installer(opened)
        dispatcher = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.1)(opened)
        testing.get_poll(dispatcher, 0)
        return dispatcher

    def test_recorded_and_dropped_by_tear_down(self):
        dispatcher = self.start()
        try:
            record = subscribers.signal_handlers[id(dispatcher)]
            self.assertEqual(sorted(record),
                             sorted([signal.SIGINT, signal.SIGTERM]))
            for signum, (previous, ours) in record.items():
                self.assertIs(previous, self.before[signum])
                self.assertIs(signal.getsignal(signum), ours)
        finally:
            testing.tear_down_dispatcher(dispatcher)
        self.assertNotIn(id(dispatcher), subscribers.signal_handlers)
        self.assertIs(signal.getsignal(signal.SIGINT),
                      self.before[signal.SIGINT])

    def test_kept_after_the_dispatcher_restored_them_until_ftesting(self):
        dispatcher = self.start()
        self.assertEqual(dispatcher.shutdown(10), [])
        # The dispatcher put the handlers back itself; the record stays
        # (zc.async's tests read it then) until ftesting.tearDown().
        self.assertIs(signal.getsignal(signal.SIGTERM),
                      self.before[signal.SIGTERM])
        record = subscribers.signal_handlers[id(dispatcher)]
        self.assertIs(record[signal.SIGTERM][0], self.before[signal.SIGTERM])
        ftesting.tearDown()
        self.assertEqual(subscribers.signal_handlers, {})

    def test_restore_signal_handlers_drops_the_entry(self):
        dispatcher = self.start()
        try:
            subscribers.restore_signal_handlers(dispatcher)
            self.assertNotIn(id(dispatcher), subscribers.signal_handlers)
            self.assertIsNone(dispatcher.signal_handlers)
            self.assertIs(signal.getsignal(signal.SIGINT),
                          self.before[signal.SIGINT])
        finally:
            testing.tear_down_dispatcher(dispatcher)


CLOCK_SCRIPT = r'''
import datetime, pickle
import zasync.testing, zasync.utils
real = datetime.datetime
zasync.testing.setUpDatetime()
assert datetime.datetime is not real
now = datetime.datetime.now(datetime.timezone.utc)
assert now == zasync.utils.now() == zasync.testing.compat.PINNED, now
zasync.testing.set_now(real(2010, 1, 1, tzinfo=datetime.timezone.utc))
assert zasync.utils.now().year == 2010
assert datetime.datetime.utcnow() == real(2010, 1, 1)
made = datetime.datetime(2020, 5, 5)
assert type(made) is real and isinstance(made, datetime.datetime)
assert type(pickle.loads(pickle.dumps(made))) is real
zasync.testing.tearDownDatetime()
assert datetime.datetime is real
assert zasync.utils.now().year > 2020
print('ok')
'''


class ClockHelperTests(unittest.TestCase):
    """setUpDatetime() patches datetime: checked in a process of its own
    (zasync's own tests never patch datetime)."""

    def test_ported_suite_clock(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        out = subprocess.run(
            [sys.executable, '-c', CLOCK_SCRIPT], env=env,
            capture_output=True, text=True, timeout=60)
        self.assertEqual((out.stdout, out.stderr), ('ok\n', ''))

    def test_set_now_drives_the_clock_without_patching(self):
        zope.component.testing.setUp(self)
        try:
            real = datetime.datetime
            testing.setUpDatetime(patch_datetime=False)
            self.assertIs(datetime.datetime, real)
            self.assertEqual(utils.now(),
                             real(2006, 8, 10, 15, 44, 22, 211, tzinfo=UTC))
            testing.set_now(real(2010, 1, 1))      # naive: UTC
            self.assertEqual(utils.now(), real(2010, 1, 1, tzinfo=UTC))
            # zc.async's name of the stand-in (testing.txt)
            self.assertIs(testing._datetime, testing.compat.ClockDatetime)
            self.assertEqual(testing._datetime.now(tz=UTC),
                             real(2010, 1, 1, tzinfo=UTC))
            testing.tearDownDatetime()
            self.assertIs(utils.get_clock(), utils.system_clock)
        finally:
            zope.component.testing.tearDown(self)


class TestReactorTests(DatabaseFixture, unittest.TestCase):
    """The test reactor: a dispatcher activated on it while it runs polls
    when time passes, and the test's thread sees what the poll committed
    (README_1)."""

    queues = True
    global_transaction = True

    def test_activation_polls_when_time_flies(self):
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)
        reactor = testing.Reactor()
        reactor.start()
        dispatcher = zdispatcher.Dispatcher(self.db, reactor)
        try:
            dispatcher.activate()
            self.assertEqual(len(dispatcher.polls), 0)
            self.assertNotIn(dispatcher.UUID, self.queue.dispatchers)
            self.assertEqual(reactor.time_flies(1), 1)
            # no transaction.begin(): the reactor began one
            self.assertIn(dispatcher.UUID, self.queue.dispatchers)
        finally:
            testing.tear_down_dispatcher(dispatcher)

    def test_a_transaction_with_changes_is_kept(self):
        self.root['box'] = PersistentMapping()
        self.tm.commit()
        reactor = testing.Reactor()
        reactor.start()
        try:
            self.root['pending'] = 1
            reactor.callLater(0, other_commit, self.db)
            self.assertEqual(reactor.time_flies(1), 1)
            self.assertEqual(self.root['pending'], 1)
            self.assertNotIn('other', self.root['box'])
            self.tm.commit()
            self.assertEqual(self.root['box']['other'], 2)
        finally:
            reactor.stop()

    def test_sync_can_be_turned_off(self):
        self.root['box'] = PersistentMapping()
        self.tm.commit()
        reactor = testing.Reactor()
        reactor.sync_transactions = False
        reactor.start()
        try:
            self.assertNotIn('other', self.root['box'])
            reactor.callLater(0, other_commit, self.db)
            self.assertEqual(reactor.time_flies(1), 1)
            self.assertNotIn('other', self.root['box'])
            self.tm.begin()
            self.assertEqual(self.root['box']['other'], 2)
        finally:
            reactor.stop()


def other_commit(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        conn.root()['box']['other'] = 2
        tm.commit()
    finally:
        conn.close()
