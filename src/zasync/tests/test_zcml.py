"""configure.zcml, the zasync ZCML directives, the ready-made policies and
the installers (subscribers), including signal handling."""
import os
import signal
import threading
import uuid

import transaction
import zope.component
import zope.configuration.xmlconfig
import zope.event
import zope.interface
import zope.security.checker
from zope.configuration.exceptions import ConfigurationError
from zope.security.interfaces import IPermission

import zasync
import zasync.dispatcher
import zasync.job
from zasync import interfaces
from zasync import subscribers
from zasync import testing
from zasync.manager import JobContainer
from zasync.manager import JobManager
from zasync.queue import Queue
from zasync.tests.zopefixtures import StubSite
from zasync.tests.zopefixtures import ZopeTestCase

HEADER = ('<configure xmlns="http://namespaces.zope.org/zope"\n'
          '           xmlns:zasync="http://namespaces.zope.org/zasync">\n')


def triple(x):
    return 3 * x


def run_through_manager(conn, number):
    """Put ``triple(number)`` with the job manager, in a site stored in
    ``conn``'s database; return its result."""
    conn.root()['site'] = site = StubSite()
    conn.transaction_manager.commit()
    manager = zope.component.getUtility(interfaces.IJobManager)
    job_id = manager.put(zasync.job.Job(triple, number), site)
    conn.transaction_manager.commit()
    return testing.wait_for_result(manager.get(job_id, site), 10)


class ConfigureTests(ZopeTestCase):

    def test_base_registrations(self):
        self.load_zcml()
        manager = zope.component.getUtility(interfaces.IJobManager)
        self.assertIsInstance(manager, JobManager)
        self.assertIsNotNone(zope.component.getUtility(interfaces.IUUID))
        for name in ('zasync.ViewJobs', 'zasync.ManageJobs'):
            self.assertIsNotNone(zope.component.getUtility(IPermission, name))
        job = interfaces.IJob(triple)
        self.assertIsInstance(job, zasync.job.Job)
        self.assertIsInstance(interfaces.IJob(len), zasync.job.Job)
        checker = zope.security.checker.getCheckerForInstancesOf(
            zasync.job.Job)
        self.assertEqual(checker.get_permissions['status'], 'zasync.ViewJobs')
        self.assertEqual(checker.set_permissions, {})
        self.assertEqual(checker.get_permissions['fail'], 'zasync.ManageJobs')

    def test_queue_and_transaction_manager_adapters(self):
        self.load_zcml()
        db = self.open_db()
        subscribers.queue_installer(interfaces.DatabaseOpened(db))
        conn = self.connect(db)
        root = conn.root()
        queue = root[interfaces.KEY]['']
        self.assertIs(interfaces.IQueue(conn), queue)
        self.assertIs(interfaces.IQueue(root), queue)
        tm = transaction.interfaces.ITransactionManager(root)
        self.assertIs(tm, conn.transaction_manager)
        self.assertIs(transaction.interfaces.ITransactionManager(conn), tm)


class DirectiveTests(ZopeTestCase):

    def config(self, body, name='test.zcml'):
        path = os.path.join(self.dir, name)
        with open(path, 'w') as f:
            f.write(HEADER + '  <include package="zasync" '
                    'file="meta.zcml" />\n' + body + '\n</configure>\n')
        zope.configuration.xmlconfig.file(path)
        return path

    def test_bad_values_fail_at_configuration_time_with_file_and_line(self):
        for body in ('<zasync:dispatcher poll_interval="-1" />',
                     '<zasync:dispatcher poll_interval="often" />',
                     '<zasync:dispatcher size="0" />',
                     '<zasync:dispatcher agent="" />',
                     '<zasync:jobs database="no spaces" />',
                     '<zasync:jobs queues="good b/ad" />',
                     '<zasync:jobs colour="red" />'):
            with self.assertRaises(ConfigurationError) as raised:
                self.config(body, 'bad.zcml')
            message = str(raised.exception)
            self.assertIn(os.path.join(self.dir, 'bad.zcml'), message)
            self.assertIn('line 4', message, body)

    def test_two_dispatchers_conflict(self):
        with self.assertRaises(ConfigurationError) as raised:
            self.config('<zasync:dispatcher />\n<zasync:dispatcher />')
        self.assertIn('zasync:dispatcher', str(raised.exception))

    def test_jobs_directive_single_database(self):
        self.load_zcml()
        self.config('<zasync:jobs queues="reports mail" />')
        db = self.open_db()
        for _ in range(2):    # idempotent
            zope.event.notify(interfaces.DatabaseOpened(db))
        root = self.connect(db).root()
        self.assertEqual(sorted(root[interfaces.KEY]), ['', 'mail', 'reports'])
        self.assertIsInstance(root[interfaces.JOBS_KEY], JobContainer)
        self.assertIsNone(zasync.dispatcher.get())

    def test_jobs_directive_multi_database(self):
        self.load_zcml()
        self.config('<zasync:jobs database="async" />')
        db = self.open_multidb()
        zope.event.notify(interfaces.DatabaseOpened(db))
        conn = self.connect(db)
        for key in (interfaces.KEY, interfaces.JOBS_KEY):
            obj = conn.root()[key]
            self.assertIsNot(obj._p_jar, conn)
            self.assertEqual(obj._p_jar.db().database_name, 'async')

    def start_policy(self, policy, db):
        """Load a ready-made policy, open ``db``; return its dispatcher."""
        zope.configuration.xmlconfig.file(policy, zasync)
        zope.component.provideUtility(
            uuid.uuid4(), interfaces.IUUID)
        zope.event.notify(interfaces.DatabaseOpened(db))
        dispatcher = zasync.dispatcher.get()
        self.dispatchers.append(dispatcher)
        return dispatcher

    def test_single_policy_runs_jobs(self):
        db = self.open_db()
        dispatcher = self.start_policy('single.zcml', db)
        self.assertIs(dispatcher.db, db)
        self.assertTrue(dispatcher.thread.daemon)
        conn = self.connect(db)
        self.assertEqual(run_through_manager(conn, 14), 42)
        # the agent: 'main', 3 threads
        da = conn.root()[interfaces.KEY][''].dispatchers[dispatcher.UUID]
        self.assertEqual(list(da), ['main'])
        self.assertEqual(da['main'].size, 3)

    def test_multidb_policy_dispatches_on_the_async_database(self):
        dispatcher = self.start_policy('multidb.zcml', self.open_multidb())
        self.assertEqual(dispatcher.db.database_name, 'async')
        testing.get_poll(dispatcher, 0, seconds=10)


class InstallerTests(ZopeTestCase):

    def setUp(self):
        super().setUp()
        self.load_zcml()
        self.events = []
        zope.component.provideHandler(
            self.events.append, (zope.interface.Interface,))
        self.db = self.open_db()

    def interesting(self):
        kinds = (interfaces.IObjectAdded, interfaces.IDispatcherRegistered,
                 interfaces.IDispatcherActivated)
        return [e for e in self.events
                if any(k.providedBy(e) for k in kinds)]

    def start(self, **kw):
        zope.component.provideHandler(subscribers.agent_installer)
        dispatcher = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.2, **kw)(interfaces.DatabaseOpened(self.db))
        self.dispatchers.append(dispatcher)
        testing.get_poll(dispatcher, 0, seconds=10)
        return dispatcher

    def test_events_in_order(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        self.start()
        events = self.interesting()
        self.assertEqual(
            [(type(e).__name__, type(e.object).__name__) for e in events],
            [('ObjectAdded', 'Queues'), ('ObjectAdded', 'Queue'),
             ('DispatcherRegistered', 'DispatcherAgents'),
             ('DispatcherActivated', 'DispatcherAgents')])
        self.assertEqual((events[0].name, events[1].name),
                         (interfaces.KEY, ''))

    def test_queue_installer_factory_and_idempotence(self):
        made = []

        def factory(conn, name):
            made.append(name)
            return Queue()
        installer = subscribers.QueueInstaller(('', 'b'), factory=factory)
        installer(interfaces.DatabaseOpened(self.db))
        installer(interfaces.DatabaseOpened(self.db))
        self.assertEqual(made, ['', 'b'])
        with self.assertRaises(TypeError):
            subscribers.QueueInstaller('abc')

    def test_dispatcher_installer_is_idempotent(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        dispatcher = self.start()
        again = subscribers.ThreadedDispatcherInstaller()(
            interfaces.DatabaseOpened(self.db))
        self.assertIs(again, dispatcher)

    def test_agent_installer(self):
        with self.assertRaises(ValueError):
            subscribers.AgentInstaller('x', chooser=len, filter=len)
        subscribers.QueueInstaller(('', 'other'))(
            interfaces.DatabaseOpened(self.db))
        zope.component.provideHandler(subscribers.AgentInstaller(
            'reports', size=2, queue_names=('other',)))
        dispatcher = self.start()
        conn = self.connect(self.db)
        queues = conn.root()[interfaces.KEY]
        testing.get_poll(dispatcher, seconds=10)
        conn.transaction_manager.begin()
        self.assertEqual(list(queues[''].dispatchers[dispatcher.UUID]),
                         ['main'])
        agents = queues['other'].dispatchers[dispatcher.UUID]
        self.assertEqual(sorted(agents), ['main', 'reports'])
        self.assertEqual(agents['reports'].size, 2)

    def test_sigint_stops_the_dispatcher_and_chains(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        called = []

        def previous(signum, frame):
            called.append(signum)
        old = signal.signal(signal.SIGINT, previous)
        try:
            dispatcher = self.start()
            self.assertIsNot(signal.getsignal(signal.SIGINT), previous)
            os.kill(os.getpid(), signal.SIGINT)
            dispatcher.thread.join(10)
            self.assertFalse(dispatcher.thread.is_alive())
            self.assertEqual(called, [signal.SIGINT])
            conn = self.connect(self.db)
            da = conn.root()[interfaces.KEY][''].dispatchers[dispatcher.UUID]
            self.assertIsNone(da.activated)     # deactivated in the queue
            subscribers.restore_signal_handlers(dispatcher)
            self.assertIs(signal.getsignal(signal.SIGINT), previous)
        finally:
            signal.signal(signal.SIGINT, old)

    def test_restore_keeps_a_newer_foreign_handler(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        before = signal.getsignal(signal.SIGTERM)
        dispatcher = self.start()

        def foreign(signum, frame):
            pass
        signal.signal(signal.SIGTERM, foreign)
        try:
            subscribers.restore_signal_handlers(dispatcher)
            self.assertIs(signal.getsignal(signal.SIGTERM), foreign)
            self.assertIs(signal.getsignal(signal.SIGINT),
                          signal.default_int_handler)
        finally:
            signal.signal(signal.SIGTERM, before)

    def test_no_signal_handlers_outside_the_main_thread(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        zope.component.provideHandler(subscribers.agent_installer)
        found = []

        def install():
            found.append(subscribers.ThreadedDispatcherInstaller(
                poll_interval=0.2)(interfaces.DatabaseOpened(self.db)))
        thread = threading.Thread(target=install)
        thread.start()
        thread.join(10)
        self.dispatchers.extend(found)
        self.assertIsNone(found[0].signal_handlers)

    def test_shutdown_releases_everything(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        fds = len(os.listdir('/proc/self/fd'))
        dispatcher = self.start()
        self.assertEqual(subscribers.shutdown_dispatcher(dispatcher), [])
        self.dispatchers.remove(dispatcher)
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertIsNone(zasync.dispatcher.get(dispatcher.UUID))
        self.assertIsNone(dispatcher.signal_handlers)
        self.assertLessEqual(len(os.listdir('/proc/self/fd')), fds)


class FtestingTests(ZopeTestCase):

    def test_setup_and_teardown(self):
        from zasync import ftesting
        self.load_zcml()
        db = self.open_db()
        before = signal.getsignal(signal.SIGINT)
        dispatcher = ftesting.setUp(db=db, log_file=None)
        try:
            self.assertEqual(dispatcher.poll_interval, 0.1)
            self.assertTrue(dispatcher.activated)
            with self.assertRaises(RuntimeError):
                ftesting.setUp(db=db)
            conn = self.connect(db)
            self.assertEqual(run_through_manager(conn, 5), 15)
        finally:
            ftesting.tearDown()
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertIsNone(zasync.dispatcher.get(dispatcher.UUID))
        self.assertIs(signal.getsignal(signal.SIGINT), before)
        ftesting.tearDown()   # twice: nothing left to do

    def test_connection_from_the_callers_getRootFolder(self):
        from zasync import ftesting
        self.load_zcml()
        db = self.open_db()
        conn = self.connect(db)
        conn.root()['folder'] = StubSite('folder')
        conn.transaction_manager.commit()
        namespace = {'getRootFolder': lambda: conn.root()['folder'],
                     'ftesting': ftesting}
        exec('dispatcher = ftesting.setUp(log_file=None)', namespace)
        try:
            self.assertIs(namespace['dispatcher'].db, db)
        finally:
            ftesting.tearDown()
