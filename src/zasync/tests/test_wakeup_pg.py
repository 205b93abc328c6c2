"""The invalidation watcher on RelStorage/PostgreSQL: woken by LISTEN/NOTIFY.

Against the real PostgreSQL server of ``PostgreSQLLayer``.  The watchers of
the tests that must be woken by a notification poll only every 5 seconds,
and their waits end after 3: only a notification explains a wake-up.
"""
import logging
import os
import threading
import time
import unittest
import unittest.mock

import persistent.mapping
import psycopg2
import transaction
import ZODB
import ZODB.MappingStorage

from zasync import wakeup
from zasync.testing.servers import PostgreSQLLayer
from zasync.testing.servers import free_port

SLOW = 5.0     # the poll interval that must not explain a wake-up
WAIT = 3.0     # how long a test waits for one


class Recorder:
    """The watcher's callback: remembers the oids, sets an event."""

    def __init__(self):
        self.calls = []
        self.event = threading.Event()

    def __call__(self, oids):
        self.calls.append(oids)
        self.event.set()

    def wait(self):
        self.event.wait(WAIT)
        woken, self.event = self.event.is_set(), threading.Event()
        return woken


class LogEvent(logging.Handler):
    """Sets an event when a record containing ``text`` is logged."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record):
        if self.text in record.getMessage():
            self.event.set()


class WatcherOnPostgreSQLTests(unittest.TestCase):

    layer = PostgreSQLLayer

    def setUp(self):
        server = PostgreSQLLayer.server
        self.db = server.db()
        self.addCleanup(self.db.close)
        self.other_db = server.db()     # stands for another process
        self.addCleanup(self.other_db.close)
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        target = conn.root()['wakeup-target'] = (
            persistent.mapping.PersistentMapping(count=0))
        tm.commit()
        self.oid = target._p_oid
        self.admin = psycopg2.connect(wakeup.postgresql_dsn(self.db))
        self.admin.autocommit = True
        self.addCleanup(self.admin.close)
        # Every test ends with the trigger installed, as workers leave it.
        self.addCleanup(wakeup.install_notify_trigger, self.db)

    def watcher(self, pull_interval=SLOW, **attributes):
        recorder = Recorder()
        watcher = wakeup.InvalidationWatcher(self.db, recorder)
        watcher.pull_interval = pull_interval
        for name, value in attributes.items():
            setattr(watcher, name, value)
        watcher.watch({self.oid})
        watcher.start()
        self.addCleanup(watcher.stop)
        self.assertEqual(watcher.mode, 'pull')
        return watcher, recorder

    def commit_elsewhere(self):
        tm = transaction.TransactionManager()
        conn = self.other_db.open(transaction_manager=tm)
        try:
            conn.root()['wakeup-target']['count'] += 1
            tm.commit()
        finally:
            conn.close()

    def backend_count(self, pid):
        with self.admin.cursor() as cursor:
            cursor.execute(
                'SELECT count(*) FROM pg_stat_activity WHERE pid = %s',
                (pid,))
            return cursor.fetchone()[0]

    # -- woken by a notification ----------------------------------------------

    def test_a_commit_elsewhere_wakes_the_watcher_at_once(self):
        watcher, recorder = self.watcher()
        self.assertTrue(watcher.listening)
        self.assertIn(watcher._listener.trigger, ('installed', 'present'))
        for _ in range(3):
            begin = time.monotonic()
            self.commit_elsewhere()
            self.assertTrue(recorder.wait())
            self.assertLess(time.monotonic() - begin, WAIT)
        self.assertEqual(recorder.calls, [{self.oid}] * 3)
        self.assertGreaterEqual(watcher.notifications, 3)

    def test_the_trigger_is_installed_once(self):
        wakeup.uninstall_notify_trigger(self.db)
        self.assertFalse(wakeup.uninstall_notify_trigger(self.db))
        watcher, recorder = self.watcher()
        self.assertEqual(watcher._listener.trigger, 'installed')
        second, _ = self.watcher()
        self.assertEqual(second._listener.trigger, 'present')
        self.assertFalse(wakeup.install_notify_trigger(self.db))
        with self.admin.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_trigger "
                           "WHERE tgname = 'zasync_notify_commit'")
            self.assertEqual(cursor.fetchone()[0], 1)

    def test_an_operator_installs_the_trigger(self):
        # Workers that may not install it listen anyway, and poll.
        wakeup.uninstall_notify_trigger(self.db)
        with self.assertLogs('zasync.events', 'WARNING') as logged:
            watcher, recorder = self.watcher(pull_interval=0.05,
                                             listen='listen')
        self.assertIn('no NOTIFY trigger', logged.output[0])
        self.assertTrue(watcher.listening)
        self.assertIsNone(watcher._listener.trigger)
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())    # by the poll
        self.assertEqual(watcher.notifications, 0)
        # Once the trigger is there, the same watcher is notified.  (The
        # first wake-up may still come from a poll: the thread may be in a
        # 50 ms wait.  After it, the thread waits 5 s.)
        self.assertTrue(wakeup.install_notify_trigger(self.db))
        watcher.pull_interval = SLOW
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())
        self.assertGreaterEqual(watcher.notifications, 1)

    def test_without_the_rights_to_install_the_trigger(self):
        wakeup.uninstall_notify_trigger(self.db)
        with self.admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles "
                           "WHERE rolname = 'zasync_nobody'")
            if cursor.fetchone() is None:
                cursor.execute('CREATE ROLE zasync_nobody LOGIN')
        dsn = wakeup.postgresql_dsn(self.db) + " user='zasync_nobody'"
        with self.assertLogs('zasync.events', 'WARNING') as logged:
            watcher, recorder = self.watcher(pull_interval=0.05,
                                             listen_dsn=dsn)
        self.assertIn('no NOTIFY trigger (permission denied',
                      logged.output[0])
        self.assertTrue(watcher.listening)
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())    # by the poll
        self.assertEqual(watcher.notifications, 0)

    # -- falling back to the poll ---------------------------------------------

    def check_polls_without_listening(self, watcher, recorder):
        self.assertFalse(watcher.listening)
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())
        self.assertEqual(recorder.calls, [{self.oid}])
        self.assertEqual(watcher.notifications, 0)

    def test_no_server_to_listen_to(self):
        dsn = "host=127.0.0.1 port=%d dbname=nothing" % free_port()
        with self.assertLogs('zasync.events', 'WARNING') as logged:
            watcher, recorder = self.watcher(pull_interval=0.05,
                                             listen_dsn=dsn)
        self.assertIn('cannot LISTEN on PostgreSQL', logged.output[0])
        self.check_polls_without_listening(watcher, recorder)

    def test_psycopg2_missing(self):
        missing = ImportError("No module named 'psycopg2'")
        with unittest.mock.patch.object(wakeup, '_import_psycopg2',
                                        side_effect=missing):
            with self.assertLogs('zasync.events', 'INFO') as logged:
                watcher, recorder = self.watcher(pull_interval=0.05)
        self.assertIn('psycopg2 is not installed', logged.output[0])
        self.check_polls_without_listening(watcher, recorder)

    def test_turned_off_in_the_environment(self):
        with unittest.mock.patch.dict(os.environ, {'ZASYNC_LISTEN': 'off'}):
            with self.assertLogs('zasync.events', 'INFO') as logged:
                watcher, recorder = self.watcher(pull_interval=0.05)
        self.assertIn('LISTEN turned off', logged.output[0])
        self.check_polls_without_listening(watcher, recorder)

    def test_an_unexpected_error_does_not_stop_the_watcher(self):
        with unittest.mock.patch.object(wakeup, 'postgresql_dsn',
                                        side_effect=RuntimeError('oops')):
            with self.assertLogs('zasync.events', 'WARNING') as logged:
                watcher, recorder = self.watcher(pull_interval=0.05)
        self.assertIn('setting up LISTEN failed', logged.output[0])
        self.check_polls_without_listening(watcher, recorder)

    def test_a_broken_connection_is_replaced(self):
        listening_again = LogEvent('LISTENing on zasync_commit (trigger '
                                   'present) again')
        lost = LogEvent('lost the LISTEN connection')
        events = logging.getLogger('zasync.events')
        self.addCleanup(events.setLevel, events.level)
        events.setLevel(logging.INFO)
        for handler in (listening_again, lost):
            events.addHandler(handler)
            self.addCleanup(events.removeHandler, handler)
        watcher, recorder = self.watcher(relisten_interval=0)
        with self.admin.cursor() as cursor:
            cursor.execute('SELECT pg_terminate_backend(%s)',
                           (watcher._listener.conn.get_backend_pid(),))
        self.assertTrue(lost.event.wait(WAIT))
        self.assertTrue(listening_again.event.wait(WAIT))
        self.assertTrue(watcher.listening)
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())
        self.assertGreaterEqual(watcher.notifications, 1)

    # -- stopping ------------------------------------------------------------

    def test_stop_closes_the_listening_connection(self):
        watcher, recorder = self.watcher()
        conn = watcher._listener.conn
        pid = conn.get_backend_pid()
        self.assertEqual(self.backend_count(pid), 1)
        thread = watcher._thread
        begin = time.monotonic()
        watcher.stop()
        # The thread was waiting on the socket for 5 s: stop() woke it.
        self.assertLess(time.monotonic() - begin, WAIT)
        self.assertFalse(thread.is_alive())
        self.assertTrue(conn.closed)
        self.assertFalse(watcher.listening)
        self.assertIsNone(watcher._wake_fds)
        self.assertIsNone(watcher.mode)
        # ... and it can start again.
        watcher.start()
        self.assertTrue(watcher.listening)
        self.commit_elsewhere()
        self.assertTrue(recorder.wait())


class DSNTests(unittest.TestCase):

    def test_only_relstorage_on_postgresql_has_a_dsn(self):
        db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        try:
            self.assertIsNone(wakeup.postgresql_dsn(db))
            self.assertIsNone(wakeup.postgresql_dsn(db.storage))
            with self.assertRaises(ValueError):
                wakeup.install_notify_trigger(db)
        finally:
            db.close()
        self.assertEqual(wakeup.postgresql_dsn('dbname=x'), 'dbname=x')

    def test_the_trigger_sql(self):
        self.assertIn("pg_notify('zasync_commit', '')",
                      wakeup.NOTIFY_TRIGGER_SQL)
        self.assertIn('AFTER INSERT OR UPDATE ON object_state',
                      wakeup.NOTIFY_TRIGGER_SQL)
        self.assertIn('FOR EACH STATEMENT', wakeup.NOTIFY_TRIGGER_SQL)
