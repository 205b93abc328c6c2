"""Real database servers for tests: ZEO and PostgreSQL on 127.0.0.1.

Each server runs as a separate process, on a free port of the loopback
interface, with its files in a temporary directory, and is stopped and
cleaned up by its layer.  ``subprocess_env()`` gives child processes
(servers, workers) the same import path as the test process -- under
buildout the eggs are not in the interpreter's site-packages.
"""
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from zasync.testing.waiters import wait

LOOPBACK = '127.0.0.1'


def subprocess_env(**extra):
    """The environment for a Python child process that must import what we
    import."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def wait_or_kill(process, timeout):
    """Wait for ``process`` to end; SIGKILL it if it does not in
    ``timeout`` seconds."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port, process=None, timeout=30, what='server'):
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError('%s exited with status %s before listening on '
                               'port %s' % (what, process.returncode, port))
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError('%s did not listen on port %s within %s s'
                                   % (what, port, timeout))
            time.sleep(0.05)


class ZEOServer:
    """A ``runzeo`` process serving a FileStorage on 127.0.0.1."""

    def __init__(self, directory=None, port=None):
        self.directory = directory or tempfile.mkdtemp(prefix='zasync-zeo-')
        self.port = port or free_port()
        self.path = os.path.join(self.directory, 'Data.fs')
        self.log_path = os.path.join(self.directory, 'zeo.log')
        self.process = None

    @property
    def address(self):
        return (LOOPBACK, self.port)

    @property
    def uri(self):
        return 'zeo://%s:%s' % self.address

    def start(self, timeout=30):
        """Start the server (again, on the same port and file)."""
        log = open(self.log_path, 'ab')
        try:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'ZEO.runzeo',
                 '-a', '%s:%s' % self.address, '-f', self.path],
                stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        finally:
            log.close()
        wait_for_port(self.port, self.process, timeout, 'the ZEO server')
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop the server process; SIGKILL if it does not stop in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            wait_or_kill(self.process, timeout)
        self.process = None

    def db(self, **kw):
        """A ``ZODB.DB`` on a ClientStorage connected to this server."""
        import ZEO
        kw.setdefault('wait_timeout', 30)
        kw.setdefault('server_sync', True)   # see the latest commits at once
        return ZEO.DB(self.address, **kw)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def postgresql_bindir():
    """The directory of PostgreSQL's server programs, or None."""
    for candidate in sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                            key=lambda p: int(p.split('/')[-2])
                            if p.split('/')[-2].isdigit() else 0,
                            reverse=True):
        if os.path.exists(os.path.join(candidate, 'postgres')):
            return candidate
    pg_config = shutil.which('pg_config')
    if pg_config:
        bindir = subprocess.run([pg_config, '--bindir'], capture_output=True,
                                text=True).stdout.strip()
        if os.path.exists(os.path.join(bindir, 'postgres')):
            return bindir
    return None


class PostgreSQLServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1, for RelStorage.

    PostgreSQL refuses to run as root; as root, the cluster belongs to the
    ``postgres`` system user (created by Debian's package).
    """

    user = 'zasync'
    dbname = 'zasync'

    def __init__(self, directory=None, port=None):
        self.bindir = postgresql_bindir()
        if self.bindir is None:
            raise RuntimeError(
                'PostgreSQL server programs not found: install PostgreSQL '
                '(Debian: apt-get install postgresql) for the RelStorage '
                'tests')
        self.directory = directory or tempfile.mkdtemp(prefix='zasync-pg-')
        self.data = os.path.join(self.directory, 'data')
        self.port = port or free_port()
        self.log_path = os.path.join(self.directory, 'postgres.log')
        self.process = None

    def _as_owner(self, argv):
        if os.geteuid() == 0:
            return ['runuser', '-u', 'postgres', '--'] + argv
        return argv

    def _run(self, argv):
        result = subprocess.run(self._as_owner(argv), capture_output=True,
                                text=True)
        if result.returncode:
            raise RuntimeError('%s failed (%s):\n%s%s' % (
                ' '.join(argv), result.returncode, result.stdout,
                result.stderr))
        return result

    def start(self, timeout=60):
        if os.geteuid() == 0:
            shutil.chown(self.directory, 'postgres')
        os.chmod(self.directory, 0o700)
        if not os.path.exists(self.data):
            self._run([os.path.join(self.bindir, 'initdb'), '-D', self.data,
                       '-A', 'trust', '-U', self.user, '-E', 'UTF8',
                       '--no-sync'])
        log = open(self.log_path, 'ab')
        try:
            self.process = subprocess.Popen(
                self._as_owner([
                    os.path.join(self.bindir, 'postgres'), '-D', self.data,
                    '-p', str(self.port), '-c', 'listen_addresses=' + LOOPBACK,
                    '-c', 'unix_socket_directories=' + self.directory,
                    '-c', 'fsync=off', '-c', 'max_prepared_transactions=20']),
                stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        wait_for_port(self.port, self.process, timeout, 'PostgreSQL')
        self._wait_until_ready(timeout)
        self._run([os.path.join(self.bindir, 'createdb'), '-h', LOOPBACK,
                   '-p', str(self.port), '-U', self.user, self.dbname])
        return self

    def _wait_until_ready(self, timeout):
        """Wait until the server accepts connections: ``pg_isready``
        answers 1 at once while it is still starting (and 0 once ready)."""
        argv = self._as_owner([
            os.path.join(self.bindir, 'pg_isready'), '-h', LOOPBACK,
            '-p', str(self.port), '-t', '5'])

        def ready():
            if self.process.poll() is not None:
                raise RuntimeError('PostgreSQL exited (status %s); see %s'
                                   % (self.process.returncode, self.log_path))
            result = subprocess.run(argv, capture_output=True, text=True)
            return True if result.returncode == 0 else None
        wait(ready, timeout, 'PostgreSQL never accepted connections; see %s'
             % self.log_path)

    @property
    def uri(self):
        return 'postgres://%s@%s:%s/%s?driver=psycopg2' % (
            self.user, LOOPBACK, self.port, self.dbname)

    def db(self, **kw):
        import zodburi
        import ZODB
        factory, dbkw = zodburi.resolve_uri(self.uri)
        dbkw.update(kw)
        return ZODB.DB(factory(), **dbkw)

    def stop(self, timeout=30):
        if self.process is None:
            return
        if self.process.poll() is None:
            # ``runuser`` does not pass signals on: ask pg_ctl.
            subprocess.run(self._as_owner([
                os.path.join(self.bindir, 'pg_ctl'), 'stop', '-D', self.data,
                '-m', 'fast', '-w', '-t', str(timeout)]),
                capture_output=True)
            wait_or_kill(self.process, timeout)
        self.process = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --------------------------------------------------------------------------
# zope.testrunner layers


def _server_layer(name, server_class, doc):
    """A zope.testrunner layer running a ``server_class`` server for its
    tests, as the layer's ``server``.  (A function, not a base class: the
    test runner would set up a base class as a layer of its own.)"""

    def setUp(cls):
        cls.server = server_class().start()
        # A test run that ends without tearing its layers down (an
        # interrupt, a crash in another layer) still stops the server.
        atexit.register(cls.server.cleanup)

    def tearDown(cls):
        atexit.unregister(cls.server.cleanup)
        cls.server.cleanup()
        cls.server = None

    return type(name, (), {
        '__doc__': doc, '__module__': __name__, 'server': None,
        'setUp': classmethod(setUp), 'tearDown': classmethod(tearDown)})


ZEOLayer = _server_layer(
    'ZEOLayer', ZEOServer,
    """A ZEO server for the tests of the layer: ``ZEOLayer.server``.""")

PostgreSQLLayer = _server_layer(
    'PostgreSQLLayer', PostgreSQLServer,
    """A PostgreSQL server for RelStorage: ``PostgreSQLLayer.server``.

    Where PostgreSQL is not installed, the layer fails to set up -- its
    tests are never silently skipped.
    """)
