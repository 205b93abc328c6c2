"""JobManager, JobContainer (+ installer), ProgressableJob, setProgress,
get_job_id, compute and the traversal adapters."""
import datetime
import threading

import transaction
import zope.component
import zope.component.hooks
import zope.configuration.xmlconfig
import zope.event
import zope.location
import zope.traversing as zope_traversing
from zope.publisher.browser import TestRequest
from zope.publisher.interfaces import NotFound
from zope.traversing.interfaces import TraversalError

import zasync.job
import zasync.local
from zasync import interfaces
from zasync import manager
from zasync import subscribers
from zasync import testing
from zasync import z3
from zasync.manager import JobContainer
from zasync.manager import JobContainerInstaller
from zasync.manager import ProgressableJob
from zasync.manager import get_job_id
from zasync.tests.zopefixtures import StubSite
from zasync.tests.zopefixtures import ZopeTestCase

GATE = threading.Event()


def double(x):
    return 2 * x


def report_and_look(percent):
    """Report progress, then read it back in another connection *while the
    job still runs* (nothing of the job's own transaction committed)."""
    job = zasync.local.getJob()
    zasync.local.setProgress(percent, 'halfway')
    db = job._p_jar.db()
    conn = db.open(transaction_manager=transaction.TransactionManager())
    try:
        return tuple(conn.get(job._p_oid).annotations[
            zasync.local.PROGRESS])
    finally:
        conn.transaction_manager.abort()
        conn.close()


def report_and_wait():
    zasync.local.setProgress(40, 'waiting for the gate')
    if not GATE.wait(10):
        raise RuntimeError('gate never opened')
    return 'done'


class _Principal:

    def __init__(self, id):
        self.id = id


class Base(ZopeTestCase):

    def setUp(self):
        super().setUp()
        self.load_zcml()
        self.events = []
        zope.component.provideHandler(self.events.append,
                                      (interfaces.IObjectAdded,))
        self.manager = zope.component.getUtility(interfaces.IJobManager)

    def install(self, db, db_name=None):
        opened = interfaces.DatabaseOpened(db)
        subscribers.QueueInstaller(db_name=db_name)(opened)
        JobContainerInstaller(db_name=db_name)(opened)

    def single(self):
        self.db = self.open_db()
        self.install(self.db)
        self.conn = self.connect(self.db)
        self.root = self.conn.root()
        self.site = self.root['site'] = StubSite()
        self.conn.transaction_manager.commit()


class ContainerTests(Base):

    def test_installer_is_idempotent_and_fires_object_added(self):
        db = self.open_db()
        self.install(db)
        container = [e for e in self.events if e.name == interfaces.JOBS_KEY]
        self.assertEqual(len(container), 1)
        self.assertIsInstance(container[0].object, JobContainer)
        self.install(db)
        self.assertEqual(len(self.events), 3)   # queues, queue, container
        conn = self.connect(db)
        self.assertIsInstance(conn.root()[interfaces.JOBS_KEY], JobContainer)

    def test_multidb_installer_uses_the_async_database(self):
        db = self.open_multidb()
        self.install(db, 'async')
        self.install(db, 'async')
        conn = self.connect(db)
        container = conn.root()[interfaces.JOBS_KEY]
        self.assertIsNot(container._p_jar, conn)
        self.assertEqual(container._p_jar.db().database_name, 'async')
        queues = conn.root()[interfaces.KEY]
        self.assertEqual(queues._p_jar.db().database_name, 'async')
        async_root = conn.get_connection('async').root()
        self.assertIs(async_root[interfaces.JOBS_KEY], container)
        self.assertEqual(
            [e.name for e in self.events],
            [interfaces.KEY, '', interfaces.JOBS_KEY])

    def test_container_stores_jobs_without_wrapping_them(self):
        container = JobContainer()
        job = zasync.job.Job(double, 1)
        container['1'] = job
        self.assertIs(container['1'], job)
        self.assertIsNone(job.__parent__)
        container['1'] = job   # the same again: fine
        with self.assertRaises(KeyError):
            container['1'] = zasync.job.Job(double, 2)
        with self.assertRaises(TypeError):
            container['2'] = object()
        with self.assertRaises(TypeError):
            container[2] = job
        self.assertEqual(len(container), 1)
        del container['1']
        self.assertEqual(len(container), 0)


class ManagerTests(Base):

    def test_site_lookup(self):
        self.single()
        with self.assertRaises(LookupError):
            self.manager.jobs()                 # no site at all
        with self.assertRaises(LookupError):
            self.manager.jobs(StubSite())       # not stored
        self.assertEqual(list(self.manager.jobs(self.site)), [])
        zope.component.hooks.setSite(self.site)
        self.assertEqual(list(self.manager.jobs()), [])

    def test_missing_container(self):
        db = self.open_db()
        conn = self.connect(db)
        conn.root()['site'] = site = StubSite()
        conn.transaction_manager.commit()
        with self.assertRaises(LookupError) as raised:
            self.manager.put(zasync.job.Job(double, 1), site)
        self.assertIn('<zasync:jobs />', str(raised.exception))

    def test_put_get_jobs_remove(self):
        self.single()
        job = zasync.job.Job(double, 21)
        job_id = self.manager.put(job, self.site)
        self.assertEqual(job_id, get_job_id(job))
        self.assertEqual(job_id, str(int.from_bytes(job._p_oid, 'big')))
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertIs(self.manager.get(job_id, self.site), job)
        self.assertIs(self.manager.get(int(job_id), self.site), job)
        self.assertIsNone(self.manager.get('4242', self.site))
        self.assertEqual(list(self.manager.jobs(self.site)), [(job_id, job)])
        self.assertEqual(list(self.root[interfaces.KEY]['']), [job])
        self.manager.remove('4242', self.site)   # ignored
        self.manager.remove(job_id, self.site)
        self.assertIsNone(self.manager.get(job_id, self.site))
        # removing does not unqueue
        self.assertEqual(list(self.root[interfaces.KEY]['']), [job])

    def test_cancel_records_the_principals(self):
        import zope.security.management
        self.single()
        tm = self.conn.transaction_manager
        job_id = self.manager.put(zasync.job.Job(double, 3), self.site)
        tm.commit()
        with self.assertRaises(LookupError):
            self.manager.cancel('4242', site=self.site)
        zope.security.management.newInteraction(
            z3.Participation(_Principal('zope.alice')))
        try:
            request = self.manager.cancel(job_id, 'no longer needed',
                                          site=self.site)
        finally:
            zope.security.management.endInteraction()
        self.assertEqual(request.principal, 'zope.alice')
        job = self.manager.get(job_id, self.site)
        self.assertIs(job.cancel_requested, request)
        self.assertEqual(len(self.root[interfaces.KEY]['']), 1)  # its failer
        tm.commit()
        self.assertIn('cancelled by zope.alice at ',
                      str(request.error()))

    def test_retry_a_failed_job(self):
        self.single()
        tm = self.conn.transaction_manager
        job_id = self.manager.put(zasync.job.Job(double, 3), self.site,
                                  priority=2, unique_key='triple')
        tm.commit()
        self.assertEqual(self.manager.put(zasync.job.Job(double, 4),
                                          self.site, unique_key='triple'),
                         job_id)
        with self.assertRaises(ValueError):   # (it has not failed)
            self.manager.retry(job_id, self.site)
        job = self.manager.get(job_id, self.site)
        job.fail(RuntimeError('the printer is out of paper'))
        new_id = self.manager.retry(job_id, self.site)
        new = self.manager.get(new_id, self.site)
        self.assertNotEqual(new_id, job_id)
        self.assertIs(new.retried_from, job)
        self.assertEqual((new.priority, new.unique_key, list(new.args)),
                         (2, 'triple', [3]))
        self.assertEqual(new.status, interfaces.PENDING)
        with self.assertRaises(LookupError):
            self.manager.retry('4242', self.site)

    def test_put_never_commits(self):
        self.single()
        tm = self.conn.transaction_manager
        job_id = self.manager.put(zasync.job.Job(double, 1), self.site)
        tm.abort()
        self.assertIsNone(self.manager.get(job_id, self.site))
        self.assertEqual(len(self.root[interfaces.KEY]['']), 0)
        other = self.connect(self.db)
        job_id = self.manager.put(zasync.job.Job(double, 2), self.site)
        other.transaction_manager.begin()
        self.assertEqual(len(other.root()[interfaces.JOBS_KEY]), 0)
        tm.commit()
        other.transaction_manager.begin()
        self.assertEqual(list(other.root()[interfaces.JOBS_KEY]), [job_id])

    def test_put_secures_jobs_and_callables(self):
        self.single()
        zope.component.hooks.setSite(self.site)
        job_id = self.manager.put(double)
        job = self.manager.get(job_id)
        self.assertIsInstance(job, z3.Job)
        self.assertIs(job.site, self.site)
        self.assertEqual(job.participants, ())

    def test_multidb_put(self):
        db = self.open_multidb()
        self.install(db, 'async')
        conn = self.connect(db)
        conn.root()['site'] = site = StubSite()
        conn.transaction_manager.commit()
        job_id = self.manager.put(zasync.job.Job(double, 4), site)
        conn.transaction_manager.commit()
        job = self.manager.get(job_id, site)
        self.assertEqual(job._p_jar.db().database_name, 'async')
        self.assertEqual(site._p_jar.db().database_name, '')
        self.assertIs(job.site, site)   # no current site: the given ISite
        zope.component.hooks.setSite(site)
        self.assertIs(self.manager.get(job_id), job)

    def test_start_test_job(self):
        self.single()
        job_id = self.manager.start_test_job(duration=0, site=self.site)
        job = self.manager.get(job_id, self.site)
        self.assertIsInstance(job, ProgressableJob)
        self.assertEqual(list(job.args), [23, 0])
        self.assertIs(self.root[interfaces.KEY][''].claim(), job)
        self.conn.transaction_manager.commit()
        self.assertEqual(job(), 529)
        self.assertEqual(job.percent, 100)
        self.assertEqual(job.progress_message, 'step 10 of 10')

    def test_get_job_id_of_unstored_job(self):
        with self.assertRaises(ValueError):
            get_job_id(zasync.job.Job(double, 1))


class ProgressTests(Base):

    def test_percent(self):
        job = ProgressableJob(double, 1)
        self.assertIsNone(job.percent)
        job.percent = 12.5
        self.assertEqual((job.percent, job.progress_message), (12.5, None))
        for bad in (-1, 101, '50', True):
            with self.assertRaises(ValueError):
                job.percent = bad

    def test_setProgress_outside_a_job(self):
        with self.assertRaises(ValueError):
            zasync.local.setProgress(10)
        job = ProgressableJob(double, 1)
        zasync.local.setProgress(10, 'ten', job=job)   # unstored: direct
        self.assertEqual(job.percent, 10)
        with self.assertRaises(ValueError):
            zasync.local.setProgress(200, job=job)
        with self.assertRaises(ValueError):
            zasync.local.setProgress(20, 3, job=job)

    def test_setProgress_is_visible_while_the_job_runs(self):
        self.single()
        job = self.root['job'] = ProgressableJob(report_and_look, 50)
        self.conn.transaction_manager.commit()
        self.assertEqual(job(), (50, 'halfway'))
        self.assertEqual(job.percent, 50)

    def test_setProgress_in_a_dispatcher(self):
        self.single()
        GATE.clear()
        zope.component.provideHandler(subscribers.agent_installer)
        dispatcher = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.2)(interfaces.DatabaseOpened(self.db))
        self.dispatchers.append(dispatcher)
        try:
            job_id = self.manager.put(
                ProgressableJob(report_and_wait), self.site)
            self.conn.transaction_manager.commit()
            job = self.manager.get(job_id, self.site)
            value = testing.wait_for_annotation(
                job, zasync.local.PROGRESS, 10)
            self.assertEqual(value, (40, 'waiting for the gate'))
            self.assertEqual(job.percent, 40)
            self.assertEqual(job.status, interfaces.ACTIVE)
        finally:
            GATE.set()
        self.assertEqual(testing.wait_for_result(job, 10), 'done')


class ComputeTests(Base):

    def test_compute_takes_its_time_on_the_clock(self):
        clock = testing.ManualClock()
        clock.install()
        try:
            start = clock.now()
            self.assertEqual(manager.compute(3, duration=10), 9)
            self.assertEqual(clock.now() - start,
                             datetime.timedelta(seconds=10))
        finally:
            clock.uninstall()


class TraversalTests(Base):

    def test_publish_traverse(self):
        self.single()
        zope.component.hooks.setSite(self.site)
        job_id = self.manager.put(zasync.job.Job(double, 1))
        request = TestRequest()
        traverser = manager.JobManagerTraverser(self.manager, request)
        self.assertIs(traverser.publishTraverse(request, job_id),
                      self.manager.get(job_id))
        for name in ('4242', 'nonsense'):
            with self.assertRaises(NotFound):
                traverser.publishTraverse(request, name)
        self.assertEqual(traverser.browserDefault(request),
                         (self.manager, ()))

    def test_path_traversal_and_namespace(self):
        self.single()
        zope.component.hooks.setSite(self.site)
        job_id = self.manager.put(zasync.job.Job(double, 1))
        located = manager.JobsNamespace(self.site).traverse('', ())
        self.assertIsInstance(located, zope.location.LocationProxy)
        self.assertIs(located.__parent__, self.site)
        self.assertTrue(interfaces.IJobManager.providedBy(located))
        traversable = manager.JobManagerTraversable(located)
        self.assertIs(traversable.traverse(job_id, []),
                      self.manager.get(job_id))
        with self.assertRaises(TraversalError):
            traversable.traverse('4242', [])
        # the registered adapters (configure.zcml) find the same
        zope.configuration.xmlconfig.file('configure.zcml', zope_traversing)
        from zope.traversing.api import traverse
        self.assertIs(traverse(self.site, '++jobs++/' + job_id),
                      self.manager.get(job_id))
