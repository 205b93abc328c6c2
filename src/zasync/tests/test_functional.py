"""A real Zope application over real HTTP.

The layers build a WSGI application with zope.app.wsgi from a zope.conf
whose site ZCML includes zasync's ``single.zcml`` (one database) or
``multidb.zcml`` (the queues and the job container in the ``async`` member
of a multi-database), serve it on 127.0.0.1 with wsgiref in a thread, and
stop everything they started: the server, the dispatcher (reactor and
worker threads), the signal handlers, the databases, the temp dir.
"""
import base64
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
import wsgiref.simple_server

import zope.app.wsgi
import zope.testing.cleanup

import zasync.dispatcher
from zasync import interfaces
from zasync import subscribers
from zasync import testing
from zasync.tests import ftapp

ZOPE_CONF = """\
site-definition {dir}/site.zcml
{databases}
<eventlog>
  level info
  <logfile>
    path {dir}/event.log
  </logfile>
</eventlog>
"""

SINGLE_DATABASES = """\
<zodb>
  <filestorage>
    path {dir}/main.fs
  </filestorage>
</zodb>
"""

MULTI_DATABASES = SINGLE_DATABASES + """\
<zodb async>
  <filestorage>
    path {dir}/async.fs
  </filestorage>
</zodb>
"""

SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zasync.tests" file="ftapp.zcml" />
  <include package="zasync" file="{policy}" />
</configure>
"""


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):

    def log_message(self, *args):
        pass


class _LayerMethods:
    """Set up and tear down one application (class attributes).

    Not a base class of the layers: zope.testrunner would set a base up as
    a layer of its own.
    """

    def setUp(cls):
        cls.threads_before = set(threading.enumerate())
        cls.signals_before = {s: signal.getsignal(s)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        root_logger = logging.getLogger()
        cls.logging_before = (list(root_logger.handlers), root_logger.level)
        cls.old_cwd = os.getcwd()
        cls.dir = tempfile.mkdtemp(prefix='zasync-functional-')
        os.chdir(cls.dir)   # the instance UUID file, if computed now
        try:
            cls._start()
        except BaseException:
            cls.tearDown()
            raise

    def _start(cls):
        d = cls.dir
        with open(os.path.join(d, 'site.zcml'), 'w') as f:
            f.write(SITE_ZCML.format(policy=cls.policy))
        with open(os.path.join(d, 'zope.conf'), 'w') as f:
            f.write(ZOPE_CONF.format(
                dir=d, databases=cls.databases.format(dir=d)))
        cls.app = zope.app.wsgi.getWSGIApplication(
            os.path.join(d, 'zope.conf'))
        cls.db = cls.app.requestFactory._db
        cls.dispatcher = zasync.dispatcher.get()
        assert cls.dispatcher is not None, 'no dispatcher started'
        testing.get_poll(cls.dispatcher, 0, seconds=20)
        cls.server = wsgiref.simple_server.make_server(
            '127.0.0.1', 0, cls.app, handler_class=QuietHandler)
        cls.server_thread = threading.Thread(
            target=cls.server.serve_forever, kwargs={'poll_interval': 0.05},
            name='zasync functional http', daemon=True)
        cls.server_thread.start()
        cls.url = 'http://127.0.0.1:%d/' % cls.server.server_port

    def tearDown(cls):
        problems = []
        server = cls.__dict__.get('server')
        if server is not None:
            server.shutdown()
            server.server_close()
            cls.server_thread.join(10)
            del cls.server
        ftapp.GATE.set()   # never leave a job waiting
        dispatcher = cls.__dict__.get('dispatcher')
        if dispatcher is not None:
            problems.extend(subscribers.shutdown_dispatcher(dispatcher))
            del cls.dispatcher
        db = cls.__dict__.get('db')
        if db is not None:
            for member in set(db.databases.values()):
                member.close()
            del cls.db
        cls.__dict__.get('app') and delattr(cls, 'app')
        zasync.dispatcher.clear()
        zope.testing.cleanup.cleanUp()
        root_logger = logging.getLogger()
        handlers, level = cls.logging_before
        for handler in list(root_logger.handlers):
            if handler not in handlers:
                root_logger.removeHandler(handler)
                handler.close()
        root_logger.setLevel(level)
        os.chdir(cls.old_cwd)
        shutil.rmtree(cls.dir, ignore_errors=True)
        for signum, handler in cls.signals_before.items():
            if signal.getsignal(signum) is not handler:
                problems.append('signal handler %s not restored' % signum)
        leaked = [t for t in threading.enumerate()
                  if t not in cls.threads_before and t.is_alive()]
        if leaked:
            problems.append('threads left running: %r' % (leaked,))
        if problems:
            raise AssertionError('\n'.join(problems))


def _layer(name, policy, databases):
    namespace = {name: classmethod(value)
                 for name, value in vars(_LayerMethods).items()
                 if name in ('setUp', '_start', 'tearDown')}
    namespace.update(policy=policy, databases=databases, __module__=__name__)
    return type(name, (), namespace)


SingleDatabaseLayer = _layer(
    'SingleDatabaseLayer', 'single.zcml', SINGLE_DATABASES)
MultiDatabaseLayer = _layer(
    'MultiDatabaseLayer', 'multidb.zcml', MULTI_DATABASES)


def request(path, user=None, password=None):
    """GET ``path`` over HTTP; return ``(status, body)``."""
    layer_url = _current_layer.url
    req = urllib.request.Request(layer_url + path)
    if user is not None:
        token = base64.b64encode(
            ('%s:%s' % (user, password)).encode()).decode()
        req.add_header('Authorization', 'Basic ' + token)
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        e.close()
        return e.code, body


_current_layer = None


class Tests:
    """The tests of both layers."""

    def setUp(self):
        global _current_layer
        _current_layer = self.layer
        ftapp.GATE.clear()

    def tearDown(self):
        ftapp.GATE.set()

    def alice(self, path):
        return request(path, 'alice', 'alice-pw')

    def status(self, job_id):
        code, body = self.alice('++jobs++/%s/@@status' % job_id)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def wait_for_status(self, job_id, check, seconds=20):
        def look():
            data = self.status(job_id)
            return data if check(data) else None
        return testing.wait(look, seconds, 'job %s never got there (%r)'
                            % (job_id, self.status(job_id)))

    def counts(self):
        code, body = self.alice('@@count-jobs')
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def test_job_runs_as_the_principal_with_progress(self):
        code, body = self.alice('@@put-job?n=12')
        self.assertEqual(code, 200, body)
        job_id = json.loads(body)['job_id']
        # the job runs, reports 50% (seen over HTTP while it runs) ...
        data = self.wait_for_status(job_id, lambda d: d['percent'] == 50)
        self.assertEqual(data['status'], interfaces.ACTIVE)
        self.assertEqual(data['message'], 'halfway')
        self.assertIsNone(data['result'])
        # ... and, let go, completes with the right result, having run as
        # alice in the root folder
        ftapp.GATE.set()
        data = self.wait_for_status(
            job_id, lambda d: d['status'] == interfaces.COMPLETED)
        self.assertEqual(data['result'], {
            'square': 144, 'principals': ['ftapp.alice'], 'site': 'root'})

    def test_aborted_request_leaves_no_job(self):
        before = self.counts()
        code, body = self.alice('@@put-then-fail')
        self.assertEqual(code, 500)
        self.assertEqual(self.counts(), before)

    def test_permissions(self):
        before = self.counts()
        code, body = request('@@put-job')              # anonymous
        self.assertEqual(code, 401)
        code, body = request('@@put-job', 'bob', 'bob-pw')   # no permission
        self.assertIn(code, (401, 403))
        code, body = request('@@count-jobs', 'bob', 'bob-pw')
        self.assertIn(code, (401, 403))
        self.assertEqual(self.counts(), before)

    def test_unknown_job_is_not_found(self):
        code, body = self.alice('++jobs++/424242/@@status')
        self.assertEqual(code, 404)


class SingleDatabaseTests(Tests, unittest.TestCase):
    layer = SingleDatabaseLayer

    def test_queues_and_container_in_the_main_database(self):
        conn = self.layer.db.open()
        try:
            root = conn.root()
            self.assertIs(root[interfaces.KEY]._p_jar, conn)
            self.assertIs(root[interfaces.JOBS_KEY]._p_jar, conn)
        finally:
            conn.close()


class MultiDatabaseTests(Tests, unittest.TestCase):
    layer = MultiDatabaseLayer

    def test_queues_and_container_in_the_async_database(self):
        conn = self.layer.db.open()
        try:
            root = conn.root()
            for key in (interfaces.KEY, interfaces.JOBS_KEY):
                self.assertEqual(
                    root[key]._p_jar.db().database_name, 'async')
            self.assertEqual(self.layer.dispatcher.db.database_name,
                             'async')
        finally:
            conn.close()
