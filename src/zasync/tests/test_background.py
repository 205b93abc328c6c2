"""Edge cases of zasync.background (the narrative is docs/background.rst)."""
import queue
import unittest

import ZODB
import ZODB.FileStorage
import ZODB.utils
import zope.component
import zope.component.testing
import zope.interface
import zope.interface.verify
import zope.security.management
import zope.site.folder
import zope.site.site
import zope.testing.loggingsupport
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.component.hooks import getSite

from zasync import interfaces
from zasync.background import BackgroundWorkerThread
from zasync.tests.test_runner import DatabaseTestCase

TIMEOUT = 60


class Principal:
    def __init__(self, id):
        self.id = id


@zope.interface.implementer(IAuthentication)
class Authentication:
    """Knows one principal, 'zope.alice'."""

    def getPrincipal(self, id):
        if id != 'zope.alice':
            raise PrincipalLookupError(id)
        return Principal(id)


class Scripted(BackgroundWorkerThread):
    """Runs the steps put in ``todo`` (``None`` ends the thread) and
    records what it saw."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.todo = queue.Queue()
        self.seen = []

    def scheduleNextWork(self):
        # Between units of work: no site, no interaction.
        self.seen.append(('between', getSite(),
                          zope.security.management.queryInteraction()))
        self.step = self.todo.get(timeout=TIMEOUT)
        if self.step == 'schedule-error':
            raise RuntimeError('cannot schedule')
        return self.step is not None

    def doWork(self):
        interaction = zope.security.management.getInteraction()
        self.seen.append(('work', getSite().__name__,
                          [p.principal.id for p in
                           interaction.participations]))
        getSite().work = self.step
        if self.step == 'work-error':
            raise ValueError('work failed')
        if self.step == 'exit':
            raise SystemExit

    def doCleanup(self):
        self.seen.append(('cleanup', getSite().__name__))
        getSite().cleaned = self.step
        if self.step == 'cleanup-error':
            raise ValueError('cleanup failed')


class BackgroundTests(DatabaseTestCase):

    logger_name = 'zasync.background'

    def setUp(self):
        super().setUp()
        site = self.app['site'] = zope.site.folder.Folder()
        site.setSiteManager(zope.site.site.LocalSiteManager(site))
        self.tm.commit()
        self.site = site
        self.threads = []

    def tearDown(self):
        for thread in self.threads:
            if thread.is_alive():
                thread.todo.put(None)
            thread.join(TIMEOUT)
        super().tearDown()

    def start(self, *steps, user_name='zope.alice', cls=Scripted, **kw):
        thread = cls.forSite(self.site, user_name, **kw)
        self.threads.append(thread)
        for step in steps:
            thread.todo.put(step)
        thread.start()
        return thread

    def finish(self, thread):
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive())
        self.tm.begin()

    def test_interface_name_and_daemon(self):
        thread = Scripted.forSite(self.site, 'zope.alice', daemon=False)
        zope.interface.verify.verifyObject(
            interfaces.IBackgroundWorkerThread, thread)
        self.assertEqual(
            thread.name,
            'background worker thread (Scripted) for site site,'
            ' user zope.alice')
        self.assertFalse(thread.daemon)
        self.assertTrue(Scripted.forSite(self.site, 'x').daemon)
        self.assertIs(thread.site_db, self.db)
        self.assertEqual(thread.site_oid, self.site._p_oid)

    def test_default_thread_ends_at_once(self):
        thread = BackgroundWorkerThread.forSite(self.site, 'zope.alice')
        thread.start()
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive())

    def test_cleanup_is_committed_after_a_failed_unit(self):
        thread = self.start('work-error', None)
        self.finish(thread)
        self.assertFalse(hasattr(self.site, 'work'))   # aborted
        self.assertEqual(self.site.cleaned, 'work-error')
        self.assertEqual(
            [r.getMessage() for r in self.log.records],
            ['Error in ' + thread.name])
        # Cleanup ran with the site set.
        self.assertIn(('cleanup', 'site'), thread.seen)

    def test_errors_keep_the_thread_alive(self):
        thread = self.start('work-error', 'cleanup-error', 'ok', None)
        self.finish(thread)
        self.assertEqual(self.site.work, 'ok')
        self.assertEqual(self.site.cleaned, 'ok')
        self.assertEqual(
            [r.getMessage() for r in self.log.records],
            ['Error in ' + thread.name,
             'Error in the cleanup of ' + thread.name])

    def test_no_site_or_interaction_between_units(self):
        thread = self.start('ok', 'ok', None)
        self.finish(thread)
        between = [s for s in thread.seen if s[0] == 'between']
        self.assertEqual(len(between), 3)
        self.assertEqual(between, [('between', None, None)] * 3)

    def test_principal_from_the_sites_authentication(self):
        zope.component.provideUtility(Authentication())
        thread = self.start('ok', None)
        other = self.start('ok', None, user_name='zope.unknown')
        self.finish(thread)
        self.finish(other)
        self.assertIn(('work', 'site', ['zope.alice']), thread.seen)
        # Unknown to the site: an interaction without participations.
        self.assertIn(('work', 'site', []), other.seen)

    def test_transaction_user_and_notes(self):
        thread = self.start('ok', None)
        self.finish(thread)
        records = list(self.db.storage.iterator())[-2:]
        self.assertEqual([r.user for r in records], [b'/ zope.alice'] * 2)
        self.assertEqual(
            [r.description.decode() for r in records],
            [thread.name, thread.name + ': cleanup'])

    def test_no_user(self):
        thread = self.start('ok', None, user_name=None)
        self.finish(thread)
        self.assertEqual(list(self.db.storage.iterator())[-1].user, b'')

    def test_missing_site_is_logged_and_the_thread_goes_on(self):
        thread = Scripted(self.db, ZODB.utils.p64(424242), 'gone', 'x')
        self.threads.append(thread)
        thread.todo.put('ok')
        thread.todo.put(None)
        thread.start()
        self.finish(thread)
        self.assertEqual([r.getMessage() for r in self.log.records],
                         ['Error setting up the work of ' + thread.name])
        self.assertEqual(len([s for s in thread.seen if s[0] == 'between']),
                         2)

    def test_scheduling_error_ends_the_thread(self):
        thread = self.start('schedule-error')
        self.finish(thread)
        self.assertEqual([r.getMessage() for r in self.log.records],
                         ['Error in %s; thread terminated' % thread.name])

    def test_system_exit_still_cleans_up(self):
        thread = self.start('exit')
        self.finish(thread)
        self.assertFalse(hasattr(self.site, 'work'))
        self.assertEqual(self.site.cleaned, 'exit')

    def test_for_site_needs_a_stored_site(self):
        with self.assertRaisesRegex(ValueError, 'not stored in a database'):
            Scripted.forSite(zope.site.folder.Folder(), 'zope.alice')


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromTestCase(BackgroundTests)
