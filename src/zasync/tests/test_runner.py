"""Edge cases of zasync.runner (the narrative is docs/runner.rst)."""
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import zope.app.appsetup.product
import zope.component.testing
import zope.interface.verify
import zope.security.management
import zope.site.folder
import zope.site.site
import zope.testing.loggingsupport
from zope.component.hooks import getSite

from zasync import interfaces
from zasync import runner
from zasync.testing.fixtures import DatabaseFixture

SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zope.component" file="meta.zcml" />
  %s
</configure>
"""

BOOTSTRAP = """\
  <subscriber for="zope.processlifetime.IDatabaseOpened"
      handler="zope.app.appsetup.bootstrap.bootStrapSubscriber" />
"""

ZOPE_CONF = """\
site-definition site.zcml
%(extra)s
<zodb>
  <filestorage>
    path %(tmp)s/Data.fs
  </filestorage>
</zodb>
<product-config test>
  principal zope.mgr
</product-config>
<eventlog>
  <logfile>
    path %(log)s
  </logfile>
</eventlog>
"""


class Principal:
    def __init__(self, id):
        self.id = id


class DatabaseTestCase(DatabaseFixture, unittest.TestCase):
    """A FileStorage database with a root folder, in a temp dir; the
    records of the logger ``logger_name`` in ``self.log``."""

    logger_name = 'zasync.runner'

    def setUp(self):
        super().setUp()
        folder = zope.site.folder.rootFolder()
        folder.setSiteManager(zope.site.site.LocalSiteManager(folder))
        self.conn.root()['Application'] = folder
        self.tm.commit()
        self.app = folder
        self.log = zope.testing.loggingsupport.InstalledHandler(
            self.logger_name)

    def tearDown(self):
        self.log.uninstall()
        super().tearDown()

    def committed(self, name, default=None):
        """The committed value of ``name`` on the root folder."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            return getattr(conn.root()['Application'], name, default)
        finally:
            conn.close()

    def messages(self, level=None):
        return [r.getMessage() for r in self.log.records
                if level is None or r.levelname == level]


class MainLoopTests(DatabaseTestCase):

    def test_interface(self):
        loop = runner.MainLoop(self.app, 1, lambda: None)
        zope.interface.verify.verifyObject(interfaces.IMainLoop, loop)
        zope.interface.verify.verifyObject(
            interfaces.IConfigValue, runner.from_config('a', 'b'))

    def test_sigterm_stops_after_the_current_tick(self):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            before = signal.getsignal(signum)
            calls = []

            def worker():
                calls.append(1)
                self.app.ticks = len(calls)
                if len(calls) == 2:
                    os.kill(os.getpid(), signum)
                    # The handler has run; the tick goes on and commits.
                    self.app.after_signal = True
            runner.main_loop(self.app, 0, worker)
            self.assertEqual(len(calls), 2)
            self.assertEqual(self.committed('ticks'), 2)
            self.assertTrue(self.committed('after_signal'))
            self.assertIn('Received signal %d, terminating.' % signum,
                          self.messages('INFO'))
            self.assertEqual(signal.getsignal(signum), before)

    def test_stop_from_another_thread_cuts_the_pause_short(self):
        ticked = threading.Event()

        def worker():
            ticked.set()
        loop = runner.MainLoop(self.app, 3600, worker)
        thread = threading.Thread(target=loop)
        thread.start()
        self.assertTrue(ticked.wait(30))
        self.assertTrue(loop.running)
        loop.stop()
        thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertFalse(loop.running)

    def test_no_signal_handlers_outside_the_main_thread(self):
        before = signal.getsignal(signal.SIGTERM)
        seen = []

        def worker():
            seen.append(signal.getsignal(signal.SIGTERM))
            return runner.Exit
        thread = threading.Thread(
            target=runner.main_loop, args=(self.app, 0, worker))
        thread.start()
        thread.join(30)
        self.assertEqual(seen, [before])

    def test_ctrl_c_during_the_pause_stops_cleanly(self):
        before = signal.getsignal(signal.SIGINT)
        calls = []
        killers = []
        loop = runner.MainLoop(self.app, 3600, lambda: calls.append(1))
        real_wait = loop._waker.wait

        def wait(seconds):
            # Ctrl-C arrives while the loop waits: the default SIGINT
            # handler raises KeyboardInterrupt there.
            killer = threading.Thread(
                target=os.kill, args=(os.getpid(), signal.SIGINT))
            killers.append(killer)
            killer.start()
            return real_wait(seconds)
        loop._waker.wait = wait
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            loop()
        finally:
            signal.signal(signal.SIGINT, before)
            for killer in killers:
                killer.join(30)
        self.assertEqual(calls, [1])
        self.assertIn('Interrupted, terminating.', self.messages('INFO'))
        self.assertIsNone(getSite())

    def test_keyboard_interrupt_aborts_and_stops(self):
        def worker():
            self.app.changed = True
            raise KeyboardInterrupt
        runner.main_loop(self.app, 0, worker)
        self.assertIsNone(self.committed('changed'))
        self.assertIsNone(getSite())

    def test_exit_returned_commits_exit_raised_aborts(self):
        def returns_exit():
            self.app.returned = True
            return runner.Exit()
        runner.main_loop(self.app, 3600, returns_exit)
        self.assertTrue(self.committed('returned'))

        def raises_exit():
            self.app.raised = True
            raise runner.Exit
        runner.main_loop(self.app, 3600, raises_exit)
        self.assertIsNone(self.committed('raised'))

    def test_pause_after_error_and_returned_numbers(self):
        answers = iter([ValueError('boom'), 0.5, 2, True, None])

        def worker():
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer
        loop = runner.MainLoop(self.app, 7, worker)
        # an error: the default pause; numbers: the pause; a bool is no
        # number; None: the default.
        self.assertEqual([loop.tick() for _ in range(5)], [7, 0.5, 2, 7, 7])
        self.assertEqual(
            self.messages('ERROR'),
            ['Error in zasync.tests.test_runner.MainLoopTests.'
             'test_pause_after_error_and_returned_numbers.<locals>.worker'])

    def test_conflict_is_a_warning_and_the_loop_goes_on(self):
        calls = []

        def worker():
            calls.append(1)
            if len(calls) == 1:
                self.app.value = 'mine'
                # Someone else changes the same object meanwhile.
                tm = transaction.TransactionManager()
                other = self.db.open(transaction_manager=tm)
                other.root()['Application'].value = 'theirs'
                tm.commit()
                other.close()
                return None
            self.app.value = 'retried'
            return runner.Exit
        runner.main_loop(self.app, 0, worker)
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.committed('value'), 'retried')
        warnings = self.messages('WARNING')
        self.assertEqual(len(warnings), 1)
        self.assertIn('Conflict while committing zasync.tests.', warnings[0])

    def test_once_returns_the_result_and_reraises_errors(self):
        def worker():
            self.app.once = True
            return 42
        self.assertEqual(runner.main_loop(self.app, 0, worker, once=True), 42)
        self.assertTrue(self.committed('once'))

        def failing():
            self.app.failed = True
            raise ValueError('no')
        with self.assertRaises(ValueError):
            runner.main_loop(self.app, 0, failing, once=True)
        self.assertIsNone(self.committed('failed'))
        self.assertIsNone(getSite())

    def test_principal_object_callable_and_errors(self):
        seen = []

        def worker():
            interaction = zope.security.management.getInteraction()
            seen.append(interaction.participations[0].principal.id)
        runner.main_loop(self.app, 0, worker, principal=Principal('p1'),
                         once=True)
        runner.main_loop(self.app, 0, worker,
                         principal=lambda: Principal('p2'), once=True)
        self.assertEqual(seen, ['p1', 'p2'])
        self.assertIsNone(zope.security.management.queryInteraction())

        with self.assertRaises(LookupError) as e:
            runner.main_loop(self.app, 0, worker, principal=lambda: None,
                             once=True)
        self.assertIn('returned None', str(e.exception))
        self.assertIsNone(zope.security.management.queryInteraction())

    def test_an_interaction_ends_also_when_the_worker_fails(self):
        calls = []

        def worker():
            calls.append(zope.security.management.queryInteraction())
            if len(calls) == 1:
                raise ValueError('first')
            return runner.Exit
        runner.main_loop(self.app, 0, worker, principal=Principal('p'))
        self.assertEqual(len(calls), 2)
        self.assertIsNotNone(calls[1])
        self.assertIsNot(calls[0], calls[1])
        self.assertIsNone(zope.security.management.queryInteraction())

    def test_previous_site_is_restored(self):
        other = zope.site.folder.rootFolder()
        other.setSiteManager(zope.site.site.LocalSiteManager(other))
        zope.component.hooks.setSite(other)
        try:
            seen = []
            runner.main_loop(self.app, 0, lambda: seen.append(getSite()),
                             once=True)
            self.assertIs(seen[0], self.app)
            self.assertIs(getSite(), other)
        finally:
            zope.component.hooks.setSite(None)

    def test_waker(self):
        waker = runner._Waker()
        try:
            self.assertFalse(waker.wait(0))
            waker.wake()
            waker.wake()
            self.assertTrue(waker.wait(3600))
            self.assertFalse(waker.wait(0))   # drained
        finally:
            waker.close()


class FromConfigTests(unittest.TestCase):

    def tearDown(self):
        zope.app.appsetup.product.setProductConfigurations([])

    def test_lookup(self):
        value = runner.from_config('app', 'user')
        with self.assertRaisesRegex(LookupError,
                                    r'no <product-config app>'):
            value()
        zope.app.appsetup.product.setProductConfiguration(
            'app', {'other': 'x'})
        with self.assertRaisesRegex(LookupError,
                                    r"no 'user' in <product-config app>"):
            value()
        zope.app.appsetup.product.setProductConfiguration(
            'app', {'user': 'zope.mgr'})
        self.assertEqual(value(), 'zope.mgr')


class ApplicationTests(unittest.TestCase):
    """``appmain`` / ``application`` with real zope.conf files."""

    def setUp(self):
        zope.component.testing.setUp(self)
        self.tmp = tempfile.mkdtemp(prefix='zasync-runner-')
        self.conf = os.path.join(self.tmp, 'zope.conf')

    def tearDown(self):
        zope.component.testing.tearDown(self)
        shutil.rmtree(self.tmp)

    def write(self, zcml=BOOTSTRAP, extra='', log=None):
        if log is None:
            log = os.path.join(self.tmp, 'runner.log')
        with open(os.path.join(self.tmp, 'site.zcml'), 'w') as f:
            f.write(SITE_ZCML % zcml)
        with open(self.conf, 'w') as f:
            f.write(ZOPE_CONF % dict(extra=extra, log=log, tmp=self.tmp))

    def test_without_root_folder(self):
        self.write(zcml='')
        with self.assertRaisesRegex(LookupError, 'has no root folder'):
            with runner.application(None, self.conf):
                pass   # pragma: no cover
        # The database was closed: it can be opened again.
        ZODB.FileStorage.FileStorage(
            os.path.join(self.tmp, 'Data.fs')).close()

    def test_logging_and_path_are_restored(self):
        root = logging.getLogger()
        access = logging.getLogger('accesslog')
        before = (list(root.handlers), root.level,
                  list(access.handlers), access.propagate)
        self.write(extra='path %s\n<accesslog>\n</accesslog>' % self.tmp)
        self.assertNotIn(self.tmp, sys.path)
        with runner.application(None, self.conf) as app:
            self.assertEqual(app.__name__, None)
            self.assertIn(self.tmp, sys.path)
            self.assertFalse(access.propagate)
            self.assertEqual(root.level, logging.INFO)
            logging.getLogger('zasync.test').info('logged')
        self.assertNotIn(self.tmp, sys.path)
        self.assertEqual(before, (list(root.handlers), root.level,
                                  list(access.handlers), access.propagate))
        with open(os.path.join(self.tmp, 'runner.log')) as f:
            self.assertIn('INFO zasync.test logged', f.read())

    def test_bad_zcml_leaves_no_interaction(self):
        self.write(zcml='<no-such-directive />')
        with self.assertRaises(Exception):
            with runner.application(None, self.conf):
                pass   # pragma: no cover
        self.assertIsNone(zope.security.management.queryInteraction())

    def test_appmain_keeps_the_name_and_works(self):
        self.write()

        @runner.once(principal=runner.from_config('test', 'principal'))
        def my_worker():
            """Docs."""
            return 'unreachable'
        self.assertEqual(my_worker.__name__, 'my_worker')
        self.assertEqual(my_worker.__doc__, 'Docs.')
        # No IAuthentication is configured: the lookup fails, once re-raises.
        with self.assertRaises(LookupError):
            my_worker(None, self.conf)
        self.assertIsNone(getSite())
        self.assertIsNone(zope.security.management.queryInteraction())


def test_suite():
    loader = unittest.defaultTestLoader
    return unittest.TestSuite([
        loader.loadTestsFromTestCase(MainLoopTests),
        loader.loadTestsFromTestCase(FromConfigTests),
        loader.loadTestsFromTestCase(ApplicationTests),
    ])
