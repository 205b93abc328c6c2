"""The dashboard through a real WSGI test client (WebTest) over a real
FileStorage and a real dispatcher with worker threads: the pages, the JSON
API, paging, the actions and their security, the metrics; ``zasync web``
and ``zasync web-user`` on the command line.
"""
import base64
import datetime
import io
import json
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request


import webtest
import ZODB.utils

from zasync import interfaces
from zasync import testing
from zasync import utils
from zasync.job import Job
from zasync.retry import NeverRetry
from zasync.testing.fixtures import DispatcherFixture
from zasync.testing.servers import free_port
from zasync.testing.servers import subprocess_env
from zasync.testing.servers import wait_for_port
from zasync.testing.servers import wait_or_kill
from zasync.web import auth
from zasync.web import data
from zasync.web.app import WebApp

#: the blocked job waits for this
GATE = threading.Event()


def blocked():
    """A job that runs until the test lets it go."""
    GATE.wait(60)
    return 'released'


def oid(job):
    return ZODB.utils.u64(job._p_oid)


class WebFixture(DispatcherFixture):
    """A database with jobs in every state: succeeded, failed, active (the
    blocked job, holding the only worker thread), pending and pending due
    later; ``self.users`` a users file's users (alice manages, bob
    views)."""

    agent_size = 1

    def setUp(self):
        super().setUp()
        GATE.clear()
        self.tm.begin()
        self.ok = self.queue.put(Job(operator.mul, 6, 7))
        self.bad = self.queue.put(Job(operator.truediv, 1, 0),
                                  retry_policy_factory=NeverRetry)
        self.tm.commit()
        testing.wait_for_result(self.ok, 20)
        testing.wait_for_result(self.bad, 20)
        self.tm.begin()
        self.running = self.queue.put(Job(blocked))
        self.tm.commit()
        testing.wait_for_start(self.running, 20)
        self.tm.begin()
        self.pending = self.queue.put(Job(operator.add, 1, 2))
        self.later = self.queue.put(
            Job(operator.sub, 5, 3),
            begin_after=utils.now() + datetime.timedelta(hours=1))
        self.tm.commit()
        self.users = auth.Users({
            'alice': (auth.MANAGE, auth.hash_password('alice-pw')),
            'bob': (auth.VIEW, auth.hash_password('bob-pw'))})

    def tearDown(self):
        GATE.set()
        testing.wait_for_result(self.running, 20)
        super().tearDown()


def basic(login, password):
    return {'Authorization': 'Basic ' + base64.b64encode(
        ('%s:%s' % (login, password)).encode()).decode()}


ALICE = basic('alice', 'alice-pw')
BOB = basic('bob', 'bob-pw')


class PagesAndAPITests(WebFixture, unittest.TestCase):

    def setUp(self):
        super().setUp()
        self.app = webtest.TestApp(WebApp(self.db, manage=True))

    def test_overview_api_counts_every_state(self):
        info = self.app.get('/api/overview').json
        queue, = info['queues']
        self.assertEqual((queue['pending'], queue['due_later'],
                          queue['active'], queue['completed'],
                          queue['held']), (2, 1, 1, 2, 0))
        record, = info['dispatchers']
        self.assertEqual(record['uuid'], str(self.uuid))
        self.assertEqual(record['state'], 'alive')
        self.assertEqual(record['agents'][0]['jobs'], [oid(self.running)])
        minutes = info['chart']['minutes']
        self.assertEqual(len(minutes), 60)
        self.assertEqual(sum(m['completed'] for m in minutes), 2)
        self.assertEqual(sum(m['failed'] for m in minutes), 1)

    def test_overview_page(self):
        page = self.app.get('/')
        self.assertEqual(page.content_type, 'text/html')
        self.assertIn('data-count="queue::pending">2<', page.text)
        self.assertIn('<svg class="chart"', page.text)
        self.assertIn(str(self.uuid), page.text)

    def test_jobs_filters(self):
        def ids(**params):
            return [job['id'] for job in
                    self.app.get('/api/jobs', params).json['jobs']]
        self.assertEqual(sorted(ids()), sorted(
            oid(j) for j in (self.ok, self.bad, self.running, self.pending,
                             self.later)))
        self.assertEqual(ids(state='failed'), [oid(self.bad)])
        self.assertEqual(ids(state='succeeded'), [oid(self.ok)])
        self.assertEqual(ids(state='active'), [oid(self.running)])
        self.assertEqual(ids(state='pending'),
                         [oid(self.pending), oid(self.later)])
        self.assertEqual(ids(callable='*truediv'), [oid(self.bad)])
        self.assertEqual(ids(q='ZeroDivision'), [oid(self.bad)])
        self.assertEqual(ids(queue='nonesuch'), [])
        # Newest first among the completed jobs.
        self.assertEqual(ids(state='completed'), [oid(self.bad),
                                                  oid(self.ok)])
        page = self.app.get('/jobs', {'state': 'failed'})
        self.assertEqual(len(page.html.select('tr.job')), 1)
        error = self.app.get('/api/jobs', {'state': 'nonsense'}, status=400)
        self.assertIn('unknown state nonsense', error.json['error'])

    def test_paging_by_cursor_sees_every_job_once(self):
        seen = []
        after = None
        for _ in range(10):
            params = {'limit': 2}
            if after:
                params['after'] = after
            page = self.app.get('/api/jobs', params).json
            seen.extend(job['id'] for job in page['jobs'])
            after = page['next']
            if after is None:
                break
        self.assertEqual(len(seen), 5)
        self.assertEqual(len(set(seen)), 5)
        self.app.get('/api/jobs', {'after': 'garbage'}, status=400)

    def test_job_page_of_a_failed_job_shows_its_traceback(self):
        page = self.app.get('/jobs/%d' % oid(self.bad))
        traceback = page.html.select_one('#traceback').text
        self.assertIn('ZeroDivisionError', traceback)
        self.assertIn('Traceback', traceback)
        info = self.app.get('/api/jobs/%d' % oid(self.bad)).json
        self.assertTrue(info['failed'])
        self.assertIn('retry', info['actions'])
        self.assertEqual(info['callable'], '_operator.truediv')
        self.app.get('/api/jobs/999999', status=404)
        self.app.get('/jobs/abc', status=400)

    def test_long_arguments_are_cut_with_a_way_to_see_all(self):
        self.tm.begin()
        job = self.queue.put(Job(operator.add, 'x' * 1000, 'y'))
        self.tm.commit()
        page = self.app.get('/jobs/%d' % oid(job))
        self.assertIn('[1002 characters in all]', page.text)
        full = self.app.get(page.html.select_one('#show-all')['href'])
        self.assertIn('x' * 1000, full.text)

    def test_security_headers(self):
        for path in ('/', '/jobs', '/api/overview', '/static/style.css',
                     '/metrics'):
            response = self.app.get(path)
            self.assertEqual(response.headers['X-Frame-Options'], 'DENY')
            self.assertEqual(response.headers['X-Content-Type-Options'],
                             'nosniff')
            csp = response.headers['Content-Security-Policy']
            self.assertIn("default-src 'none'", csp)
            self.assertIn("frame-ancestors 'none'", csp)
            self.assertIn("script-src 'self'", csp)
        self.assertEqual(self.app.get('/api/jobs').content_type,
                         'application/json')
        self.app.get('/static/../app.py', status=404)
        self.app.get('/nonesuch', status=404)

    def test_pages_refer_to_own_assets_only(self):
        page = self.app.get('/').text
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            self.assertFalse(url.startswith(('http:', 'https:', '//')), url)

    def test_metrics(self):
        text = self.app.get('/metrics').text
        self.assertIn('zasync_queue_jobs{queue="",state="pending"} 2.0',
                      text)
        self.assertIn('zasync_queue_jobs{queue="",state="active"} 1.0',
                      text)
        labels = 'agent="main",queue="",uuid="%s"' % self.uuid
        self.assertIn('zasync_jobs_completed_total{%s} 2.0' % labels, text)
        self.assertIn('zasync_jobs_failed_total{%s} 1.0' % labels, text)
        self.assertIn('zasync_jobs_started_total{%s} 3.0' % labels, text)
        self.assertIn('zasync_dispatcher_alive{queue="",state="alive",'
                      'uuid="%s"} 1.0' % self.uuid, text)
        self.assertIn('zasync_job_duration_seconds_count{queue=""} 2.0',
                      text)
        # A second scrape counts nothing twice; a new completion once.
        self.assertIn('zasync_jobs_completed_total{%s} 2.0' % labels,
                      self.app.get('/metrics').text)
        GATE.set()   # (then the pending job runs too)
        testing.wait_for_result(self.running, 20)
        testing.wait_for_result(self.pending, 20)
        text = self.app.get('/metrics').text
        self.assertIn('zasync_jobs_completed_total{%s} 4.0' % labels, text)
        self.assertIn('zasync_jobs_started_total{%s} 4.0' % labels, text)
        self.assertIn('zasync_jobs_failed_total{%s} 1.0' % labels, text)


class SecurityTests(WebFixture, unittest.TestCase):

    def setUp(self):
        super().setUp()
        self.app = webtest.TestApp(WebApp(self.db, users=self.users,
                                          manage=True))

    def token(self, headers):
        page = self.app.get('/jobs/%d' % oid(self.pending), headers=headers)
        field = page.html.select_one('input[name=csrf]')
        return field['value'] if field is not None else None

    def test_anonymous_is_refused(self):
        for path in ('/', '/jobs', '/api/jobs', '/metrics',
                     '/jobs/%d' % oid(self.bad)):
            response = self.app.get(path, status=401)
            self.assertIn('Basic realm="zasync"',
                          response.headers['WWW-Authenticate'])
        self.app.get('/', headers=basic('alice', 'wrong'), status=401)
        self.app.get('/', headers=basic('mallory', 'x'), status=401)

    def test_a_read_only_user_sees_no_action_buttons_and_may_not_act(self):
        page = self.app.get('/jobs/%d' % oid(self.bad), headers=BOB)
        self.assertEqual(page.html.select('#actions'), [])
        self.assertEqual(
            self.app.get('/api/jobs/%d' % oid(self.bad),
                         headers=BOB).json['actions'], [])
        token = self.token(BOB) or auth.CSRF().token(auth.User('bob',
                                                               'view'))
        self.app.post('/jobs/%d/remove' % oid(self.pending),
                      {'csrf': token, 'confirmed': '1'}, headers=BOB,
                      status=403)

    def test_a_forged_post_is_refused(self):
        url = '/jobs/%d/remove' % oid(self.pending)
        self.app.post(url, {'confirmed': '1'}, headers=ALICE, status=403)
        self.app.post(url, {'confirmed': '1', 'csrf': 'x' * 64},
                      headers=ALICE, status=403)
        # Bob's token is not Alice's.
        bob_token = self.token(BOB)
        self.assertIsNone(bob_token)
        self.tm.begin()
        self.assertEqual(self.pending.status, interfaces.PENDING)

    def test_a_manager_removes_a_pending_job_after_confirming(self):
        token = self.token(ALICE)
        url = '/jobs/%d/remove' % oid(self.pending)
        confirm = self.app.post(url, {'csrf': token}, headers=ALICE)
        self.assertIn('Remove job %d' % oid(self.pending), confirm.text)
        done = confirm.forms['confirm'].submit(headers=ALICE)
        self.assertIn('removed from queue', done.html.select_one(
            '#message').text)
        self.tm.begin()
        self.assertNotIn(self.pending, list(self.queue))

    def test_a_manager_retries_a_failed_job(self):
        token = self.token(ALICE)
        done = self.app.post('/jobs/%d/retry' % oid(self.bad),
                             {'csrf': token, 'confirmed': '1'},
                             headers=ALICE)
        message = done.html.select_one('#message').text
        new_id = int(message.rsplit(' ', 1)[1])
        info = self.app.get('/api/jobs/%d' % new_id, headers=ALICE).json
        self.assertEqual(info['callable'], '_operator.truediv')
        self.assertEqual(info['args'], ['1', '0'])
        self.assertEqual(info['queue'], '')
        # Retrying a job that did not fail is refused.
        self.app.post('/jobs/%d/retry' % oid(self.ok),
                      {'csrf': token, 'confirmed': '1'}, headers=ALICE,
                      status=409)

    def test_a_manager_pauses_and_resumes_a_queue(self):
        from zasync.queue import Queue
        if not hasattr(Queue, 'pause'):
            self.fail('Queue.pause does not exist')
        page = self.app.get('/', headers=ALICE)
        confirm = page.forms[0].submit(headers=ALICE)
        done = confirm.forms['confirm'].submit(headers=ALICE)
        self.assertEqual(done.html.select_one('#message').text,
                         "queue '': paused")
        self.assertTrue(self.app.get('/api/overview', headers=ALICE)
                        .json['queues'][0]['paused'])
        done = done.forms[0].submit(headers=ALICE).forms['confirm'].submit(
            headers=ALICE)
        self.assertEqual(done.html.select_one('#message').text,
                         "queue '': resumed")
        self.tm.begin()
        self.assertFalse(self.queue.paused)
        # Bob sees no button, and may not.
        self.assertEqual(self.app.get('/', headers=BOB).forms, {})

    def test_without_manage_nobody_acts(self):
        app = webtest.TestApp(WebApp(self.db, users=self.users))
        page = app.get('/jobs/%d' % oid(self.bad), headers=ALICE)
        self.assertEqual(page.html.select('#actions'), [])
        token = auth.CSRF().token(auth.User('alice', 'manage'))
        app.post('/jobs/%d/retry' % oid(self.bad),
                 {'csrf': token, 'confirmed': '1'}, headers=ALICE,
                 status=403)


class UsersFileTests(unittest.TestCase):

    def write(self, text):
        fd, path = tempfile.mkstemp()
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        return path

    def test_good_file(self):
        path = self.write('# users\nalice:manage:%s\n\nbob:view:%s\n' % (
            auth.hash_password('a'), auth.hash_password('b')))
        users = auth.load_users(path)
        self.assertEqual(users.authenticate('alice', 'a').role, 'manage')
        self.assertEqual(users.authenticate('bob', 'b').role, 'view')
        self.assertIsNone(users.authenticate('bob', 'a'))

    def test_bad_files(self):
        for text, message in [
                ('alice:admin:{SSHA}x\n', "role 'admin' is not one of"),
                ('alice:view:secret\n', 'is not a salted hash'),
                ('alice:view\n', 'expected LOGIN:ROLE:HASH'),
                ('# nobody\n', 'has no users')]:
            with self.assertRaises(ValueError) as caught:
                auth.load_users(self.write(text))
            self.assertIn(message, str(caught.exception))


class CommandLineTests(unittest.TestCase):

    def run_command(self, *argv, stdin=''):
        import contextlib
        from zasync.cli import main
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err):
                try:
                    status = main(list(argv))
                except SystemExit as e:
                    status = e.code
        finally:
            sys.stdin = old_stdin
        return status, out.getvalue(), err.getvalue()

    def test_web_user_prints_a_salted_hash(self):
        status, out, err = self.run_command(
            'web-user', 'carol', '--role', 'manage', '--password-stdin',
            stdin='s3cret\n')
        self.assertEqual(status, 0, err)
        login, role, encoded = out.strip().split(':', 2)
        self.assertEqual((login, role), ('carol', 'manage'))
        self.assertTrue(encoded.startswith('{SSHA}'))
        users = auth.Users({login: (role, encoded)})
        self.assertIsNotNone(users.authenticate('carol', 's3cret'))

    def test_one_line_errors(self):
        for argv, status, message in [
                (['web', '--zodb', 'file:///nonesuch/Data.fs',
                  '--listen', 'nonsense'], 2, 'expected HOST:PORT'),
                (['web', '--zodb', 'file:///nonesuch/Data.fs',
                  '--listen', '0.0.0.0:8080'], 2,
                 '--users FILE is required when listening on 0.0.0.0'),
                (['web', '--zodb', 'file:///nonesuch/Data.fs'], 1,
                 'no database at /nonesuch/Data.fs'),
                (['web', '--zodb', 'file:///nonesuch/Data.fs', '--users',
                  '/nonesuch/users'], 1, 'cannot read the users file'),
                (['web'], 2, 'give the database')]:
            code, out, err = self.run_command(*argv)
            self.assertEqual(code, status, (argv, err))
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn(message, err)


class DataTests(WebFixture, unittest.TestCase):

    def test_a_filter_page_stops_at_its_budget_and_goes_on(self):
        self.tm.begin()
        page = data.list_jobs(self.root, data.Filter({'failed'}),
                              limit=10, budget=2)
        self.assertFalse(page['exhausted'])
        self.assertEqual(page['examined'], 2)
        found = list(page['jobs'])
        while page['next']:
            page = data.list_jobs(self.root, data.Filter({'failed'}),
                                  cursor=page['next'], limit=10, budget=2)
            found.extend(page['jobs'])
        self.assertEqual([job['id'] for job in found], [oid(self.bad)])

    def test_cursor_round_trip(self):
        cursor = data.encode_cursor(['pending', ['q:1', 3]])
        self.assertEqual(data.decode_cursor(cursor), ['pending', ['q:1', 3]])
        self.assertRaises(ValueError, data.decode_cursor, 'bm90IGpzb24')


class CommandServerTests(unittest.TestCase):
    """``zasync web`` as a process after ``zasync demo`` (issue 15's "done
    when"): the overview, a job list, a failed job's traceback and
    ``/metrics`` with the demo's counts over real HTTP; SIGTERM stops it
    with status 0.  ``zasync worker --metrics-listen`` as a process."""

    def test_serving_the_demo_database(self):
        directory = tempfile.mkdtemp(prefix='zasync-web-demo-')
        self.addCleanup(shutil.rmtree, directory, True)
        env = subprocess_env()
        demo = subprocess.run([sys.executable, '-m', 'zasync', 'demo'],
                              cwd=directory, env=env, capture_output=True,
                              text=True, timeout=120)
        self.assertEqual(demo.returncode, 0, demo.stderr)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, '-m', 'zasync', 'web', '--zodb',
             'file://var/Data.fs', '--listen', '127.0.0.1:%d' % port],
            cwd=directory, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.addCleanup(wait_or_kill, server, 10)
        self.addCleanup(server.stdout.close)
        self.addCleanup(server.stderr.close)
        wait_for_port(port, server, what='zasync web')
        url = 'http://127.0.0.1:%d' % port

        def get(path):
            with urllib.request.urlopen(url + path, timeout=20) as response:
                return response.read().decode()

        self.assertIn('<title>Overview - zasync</title>', get('/'))
        jobs = json.loads(get('/api/jobs?limit=500'))['jobs']
        self.assertGreater(len(jobs), 10)
        failed = [job for job in jobs if job['outcome'] == 'failed']
        self.assertEqual(len(failed), 1)
        self.assertIn('zasync.cli.demo.doomed', get('/jobs'))
        page = get('/jobs/%d' % failed[0]['id'])
        self.assertIn('ValueError: the answer is not', page)
        self.assertIn('id="traceback"', page)
        metrics = get('/metrics')
        completed = sum(float(line.rsplit(' ', 1)[1])
                        for line in metrics.splitlines()
                        if line.startswith('zasync_jobs_completed_total'))
        self.assertEqual(completed, len(jobs))
        self.assertIn('zasync_jobs_failed_total', metrics)
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(20), 0)
        self.assertIn('serving file://var/Data.fs on http://127.0.0.1:%d/ '
                      '(read-only)' % port, server.stdout.read())

    def test_a_worker_serves_metrics(self):
        directory = tempfile.mkdtemp(prefix='zasync-worker-metrics-')
        self.addCleanup(shutil.rmtree, directory, True)
        port = free_port()
        worker = subprocess.Popen(
            [sys.executable, '-m', 'zasync', 'worker', '--zodb',
             'file://%s/Data.fs' % directory, '--create', '--uuid-file',
             os.path.join(directory, 'uuid.txt'), '--metrics-listen',
             '127.0.0.1:%d' % port], cwd=directory, env=subprocess_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(wait_or_kill, worker, 10)
        self.addCleanup(worker.stderr.close)
        wait_for_port(port, worker, what='the metrics of zasync worker')

        def scrape():
            with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                        timeout=20) as response:
                text = response.read().decode()
            # (alive once the worker's first poll pinged)
            return text if 'state="alive"' in text else None

        text = testing.wait(scrape, 30, 'the worker never showed as alive')
        from zasync import instanceuuid
        worker_uuid = instanceuuid.read_file(os.path.join(directory,
                                                          'uuid.txt'))
        self.assertIn('zasync_dispatcher_alive{queue="",state="alive",'
                      'uuid="%s"} 1.0' % worker_uuid, text)
        self.assertIn('zasync_worker_active_jobs 0.0', text)
        for name in ('claim_conflicts', 'group_commits', 'grouped_jobs',
                     'run_in_claim'):
            self.assertIn('# TYPE zasync_worker_%s_total counter' % name,
                          text)
        self.assertIn('zasync_queue_jobs{queue="",state="pending"} 0.0',
                      text)
        worker.send_signal(signal.SIGTERM)
        self.assertEqual(worker.wait(30), 0, worker.stderr.read())
