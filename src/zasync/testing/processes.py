"""Worker processes for tests and documents, and waiters that poll a
database shared with them.

``WorkerProcess`` runs ``python -m zasync worker ...`` as a real child
process (its log in a file), and lets a test kill it with real signals,
restart it with the same UUID and read its log.  ``wait_until`` polls the
database through a connection (surviving a ZEO server that goes away and
comes back) until a condition holds, and fails loudly when its time is up.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

import transaction

from zasync import instanceuuid
from zasync import interfaces
from zasync.testing.servers import PostgreSQLLayer
from zasync.testing.servers import ZEOLayer
from zasync.testing.servers import subprocess_env
from zasync.testing.servers import wait_or_kill
from zasync.testing.waiters import wait
from zasync.utils import ClientDisconnected

_all = []


class WorkerProcess:
    """A ``zasync worker`` child process.

    ``uri`` is the database; ``name`` names the log file and the UUID file
    (both in ``directory``, default: the current directory); ``options``
    are more command-line options (``['--agent', 'main:3']``).
    """

    def __init__(self, uri, name='worker', directory=None, options=(),
                 env=None):
        self.uri = uri
        self.name = name
        self.directory = directory or os.getcwd()
        self.options = list(options)
        self.env = dict(env or {})
        self.uuid_file = os.path.join(self.directory, name + '.uuid')
        self.log_path = os.path.join(self.directory, name + '.log')
        self.process = None
        self.starts = 0
        _all.append(self)
        # At exit, before the servers they use (registered earlier).
        atexit.unregister(stop_all)
        atexit.register(stop_all)

    @property
    def uuid(self):
        """The worker's instance UUID (created on first use)."""
        return instanceuuid.read_file(self.uuid_file)

    @property
    def pid(self):
        return None if self.process is None else self.process.pid

    def argv(self):
        return [sys.executable, '-m', 'zasync', 'worker',
                '--zodb', self.uri, '--uuid-file', self.uuid_file,
                ] + self.options

    def start(self):
        """Start the process (again, with the same UUID); its log is
        appended to ``log_path``."""
        if self.running:
            raise RuntimeError('%s is running already' % (self,))
        self.uuid   # noqa: B018 -- create the UUID file now
        self.starts += 1
        with open(self.log_path, 'ab') as log:
            log.write(b'---- start %d\n' % self.starts)
            log.flush()
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=subprocess_env(**self.env))
        return self

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def signal(self, sig):
        self.process.send_signal(sig)

    def kill(self):
        """SIGKILL, and reap the process; return the exit status."""
        self.process.kill()
        return self.process.wait(30)

    def terminate(self):
        """SIGTERM (a graceful stop); does not wait."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, seconds=30):
        """Wait for the process to end; return its exit status."""
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s did not exit within %s seconds; its '
                                 'log ends with:\n%s' % (
                                     self, seconds, self.log_tail()))

    def log(self):
        try:
            with open(self.log_path, encoding='utf-8',
                      errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def log_tail(self, lines=20):
        return '\n'.join(self.log().splitlines()[-lines:])

    def wait_for_log(self, text, seconds=30, count=1):
        """Wait until the log shows ``text`` (``count`` times)."""
        def check():
            if self.log().count(text) >= count:
                return True
            if not self.running:
                raise AssertionError(
                    '%s exited (status %s) before logging %r; its log ends '
                    'with:\n%s' % (self, self.process.returncode, text,
                                   self.log_tail()))
            return None
        wait(check, seconds, lambda: '%s never logged %r; its log ends '
             'with:\n%s' % (self, text, self.log_tail()))

    def stop(self, seconds=30):
        """End the process if it runs: SIGTERM, then SIGKILL."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)   # if stopped
            self.process.terminate()
            wait_or_kill(self.process, seconds)
        return self.process.returncode

    def __repr__(self):
        return '<WorkerProcess %s pid %s>' % (self.name, self.pid)


def run_main(*args):
    """Run the ``zasync`` command ``ARGS`` in this process (``zasync.cli.
    main``); return ``(exit status, stdout text, stderr text)``."""
    import contextlib
    import io
    from zasync import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, out.getvalue(), err.getvalue()


def run_command(*args, timeout=120, cwd=None, **env):
    """Run ``python -m zasync ARGS`` to its end (``timeout`` seconds at
    most) in a child process that imports what we import; ``env`` adds to
    its environment (a value None removes the variable).  Return the
    ``subprocess.CompletedProcess`` (``returncode``, text ``stdout`` and
    ``stderr``)."""
    environment = subprocess_env()
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, '-m', 'zasync'] + list(args), cwd=cwd,
        env=environment, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout)


def stop_all():
    """Stop every ``WorkerProcess`` still running (tear-downs; and at
    exit, for a test run that did not tear down)."""
    while _all:
        _all.pop().stop()


# --------------------------------------------------------------------------
# Waiting on a shared database


def wait_until(conn, condition, seconds=30, message=None):
    """Call ``condition()`` in a fresh transaction of ``conn`` until it
    returns something true; return that.  A ZEO server that is away makes
    the check wait, not fail."""
    tm = conn.transaction_manager

    def check():
        try:
            tm.begin()
            value = condition()
        except ClientDisconnected:
            tm.abort()
            return None
        return value if value else None

    return wait(check, seconds, message or (
        lambda: 'condition never held: %r' % (condition,)))


def queue_of(conn, name=''):
    return conn.root()[interfaces.KEY][name]


def wait_for_worker(conn, worker, seconds=30, queue=''):
    """Wait until ``worker``'s record in the queue is activated and has
    its agents; return the record."""
    uuid = worker.uuid

    def ready():
        if not worker.running:
            raise AssertionError('%s exited (status %s); its log ends with:'
                                 '\n%s' % (worker, worker.process.returncode,
                                           worker.log_tail()))
        queues = conn.root().get(interfaces.KEY)
        if queues is None or queue not in queues:
            return None
        da = queues[queue].dispatchers.get(uuid)
        if da is not None and da.activated and len(da):
            return da
        return None
    return wait_until(conn, ready, seconds, lambda: '%s never became ready; '
                      'its log ends with:\n%s' % (worker, worker.log_tail()))


def wait_for_status(conn, jobs, status, seconds=30):
    """Wait until every job of ``jobs`` has ``status``."""
    jobs = list(jobs)

    def done():
        return all(job.status == status for job in jobs)

    def message():
        return 'not every job reached %s: %s' % (status, [
            (job, job.status) for job in jobs if job.status != status])
    wait_until(conn, done, seconds, message)


def new_connection(db):
    """A connection with a transaction manager of its own."""
    return db.open(transaction_manager=transaction.TransactionManager())


# --------------------------------------------------------------------------
# Layers


def wipe_server(server):
    """Empty the database of a test server (see ``wipe``)."""
    db = server.db()
    try:
        wipe(db)
    finally:
        db.close()


def wipe(db):
    """Empty the root of ``db`` (a fresh start on a shared server)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        conn.root().clear()
        tm.commit()
    finally:
        tm.abort()
        conn.close()


class WorkersLayer(ZEOLayer):
    """The ZEO server of ``ZEOLayer`` for tests with worker processes:
    each test starts on an empty database (restarting the server if a
    previous test left it stopped), and every ``WorkerProcess`` still
    running after the test is stopped."""

    @classmethod
    def setUp(cls):
        pass   # ZEOLayer (the base layer) starts the server

    @classmethod
    def tearDown(cls):
        pass

    @classmethod
    def testSetUp(cls):
        server = ZEOLayer.server
        if server.process is None:
            server.start()
        wipe_server(server)

    @classmethod
    def testTearDown(cls):
        stop_all()
        if ZEOLayer.server.process is None:
            ZEOLayer.server.start()


class ScaleOutLayer(WorkersLayer, PostgreSQLLayer):
    """A ZEO server and a PostgreSQL server (RelStorage), with the worker
    clean-up of ``WorkersLayer``; the PostgreSQL database is emptied
    before each test, too."""

    @classmethod
    def setUp(cls):
        pass

    @classmethod
    def tearDown(cls):
        pass

    @classmethod
    def testSetUp(cls):
        wipe_server(PostgreSQLLayer.server)

    @classmethod
    def testTearDown(cls):
        stop_all()


# --------------------------------------------------------------------------
# A test case


class WorkersTestCase(unittest.TestCase):
    """A test of worker processes on the ZEO server of ``WorkersLayer``:
    ``self.directory`` (temporary: logs, UUID files), ``self.server``,
    ``self.db`` and ``self.conn`` / ``self.tm`` (a client of our own);
    ``self.worker(name, options)`` makes a ``WorkerProcess``.  The layer
    stops the workers after each test."""

    layer = WorkersLayer

    def setUp(self):
        super().setUp()
        self.directory = tempfile.mkdtemp(prefix='zasync-test-workers-')
        self.server = ZEOLayer.server
        self.db = self.server.db()
        self.conn = new_connection(self.db)
        self.tm = self.conn.transaction_manager

    def tearDown(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        super().tearDown()

    def worker(self, name='w', options=()):
        return WorkerProcess(self.server.uri, name, self.directory,
                             list(options))
