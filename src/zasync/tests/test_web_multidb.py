"""The dashboard over a multi-database: the queues live in the member
database ``async`` (as with ``multidb.zcml``), and so do the jobs put
there, while the main database holds other jobs under the same oids --
some of them pending in the same queue.  The pages and the JSON API name
a job as ``zasync jobs`` does (``inspection.job_name``): its oid for a job
of the main database, ``OID@async`` for a job of ``async``; every link to
a job (the listing's, a callback's, a parent's, an action's) opens that
job's page, an action on ``OID@async`` changes that job only and its
message names it so, and a bad id is a plain 404 or 400.

The real WSGI application (``WebApp``, through WebTest, signed in as a
manager, with the forms' CSRF tokens) over two FileStorages in a
temporary directory.
"""
import base64
import logging
import operator
import os
import re
import shutil
import tempfile
import unittest

import persistent.list
import transaction
import webtest
import ZODB
import ZODB.FileStorage
import ZODB.utils

from zasync import inspection
from zasync import interfaces
from zasync.agent import Agent
from zasync.job import Job
from zasync.queue import install_queues
from zasync.retry import NeverRetry
from zasync.testing.fixtures import assigner_uuid
from zasync.web import auth
from zasync.web.app import WebApp

MANAGER = {'Authorization': 'Basic ' + base64.b64encode(
    b'carol:carol-pw').decode()}


def number(job):
    return ZODB.utils.u64(job._p_oid)


def close_all(db):
    for member in list(db.databases.values()):
        member.close()


class MultiDatabaseWebTests(unittest.TestCase):
    """``main.fs`` (the main database, ``''``) and ``async.fs`` (the
    member ``async``, which holds the queues).  In ``async``: ``ok``
    (succeeded) and ``bad`` (failed), completed by agent ``main``;
    ``parent`` and ``other``, pending, ``parent`` with the callback
    ``callback``.  In the main database, a job with the oid of each of
    those (``twin[name]``, calling ``operator.neg(n)``): the twins of
    ``ok``, ``parent`` and ``other`` are in the queue too (the first
    completed by the same agent, the others pending), those of ``bad``
    and ``callback`` are only kept in ``root['kept']``."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='zasync-test-web-multidb-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        databases = {}
        self.db = ZODB.DB(
            ZODB.FileStorage.FileStorage(os.path.join(self.dir, 'main.fs')),
            databases=databases, database_name='')
        self.addCleanup(close_all, self.db)
        ZODB.DB(
            ZODB.FileStorage.FileStorage(os.path.join(self.dir,
                                                      'async.fs')),
            databases=databases, database_name='async')
        assigner = assigner_uuid()
        assigner.__enter__()
        self.addCleanup(assigner.__exit__, None, None, None)
        install_queues(self.db, db_name='async')
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.addCleanup(self.conn.close)
        self.addCleanup(self.tm.abort)
        self.populate(assigner.uuid)
        users = auth.Users({'carol': (auth.MANAGE,
                                      auth.hash_password('carol-pw'))})
        self.app = webtest.TestApp(WebApp(self.db, users=users,
                                          manage=True))

    def populate(self, uuid):
        logger = logging.getLogger('zasync')
        level = logger.level
        logger.setLevel(logging.CRITICAL)   # (bad fails on purpose)
        self.addCleanup(logger.setLevel, level)
        root = self.conn.root()
        self.queue = queue = root[interfaces.KEY]['']
        record = queue.dispatchers.register(uuid)
        record.activate()
        self.agent = record['main'] = Agent(size=1)
        self.ok = queue.put(Job(operator.mul, 6, 7))
        self.bad = queue.put(Job(operator.truediv, 1, 0),
                             retry_policy_factory=NeverRetry)
        self.tm.commit()
        self.run_next()
        self.run_next()
        # Stored in async, not queued yet: their oids are known.
        member = self.conn.get_connection('async')
        self.parent = Job(operator.add, 1, 2)
        self.other = Job(operator.add, 3, 4)
        self.callback = Job(operator.pos)
        for job in (self.parent, self.other, self.callback):
            member.add(job)
        self.parent.addCallback(self.callback)
        self.tm.commit()
        names = {'ok': self.ok, 'bad': self.bad, 'parent': self.parent,
                 'other': self.other, 'callback': self.callback}
        for job in names.values():
            self.assertEqual(job._p_jar.db().database_name, 'async')
        wanted = {number(job): name for name, job in names.items()}
        kept = root['kept'] = persistent.list.PersistentList()
        self.conn.add(kept)
        self.twin = {}
        while len(self.twin) < len(wanted):
            decoy = Job(operator.neg, len(kept))
            self.conn.add(decoy)
            self.assertLess(len(kept), 10000)
            kept.append(decoy)
            name = wanted.get(number(decoy))
            if name is not None:
                self.twin[name] = decoy
        self.tm.commit()
        queue.put(self.twin['ok'])
        self.tm.commit()
        self.assertIs(self.run_next(), self.twin['ok'])
        queue.put(self.parent)
        queue.put(self.twin['parent'])
        queue.put(self.other)
        queue.put(self.twin['other'])
        record.deactivate()
        self.tm.commit()
        for name, twin in self.twin.items():
            self.assertEqual(twin._p_jar.db().database_name, '')
            self.assertEqual(number(twin), number(names[name]))

    def run_next(self):
        job = self.agent.claimJob()
        self.tm.commit()
        job()
        self.tm.begin()
        return job

    def name_of(self, job):
        return inspection.job_name(job, '')

    def page(self, url, **kw):
        return self.app.get(url, headers=MANAGER, **kw)

    def token(self):
        """The manager's CSRF token, from a form of the overview."""
        return self.page('/').html.select_one('input[name=csrf]')['value']

    def post(self, url, **kw):
        return self.app.post(url, {'csrf': self.token(), 'confirmed': '1'},
                             headers=MANAGER, **kw)

    def field(self, page, name):
        """The value of the field ``name`` of a job page."""
        for dt in page.html.select('dl.fields dt'):
            if dt.text == name:
                return dt.find_next_sibling('dd')
        return None

    def assertJobPage(self, page, job):
        """``page`` is the page of ``job``."""
        self.assertEqual(page.html.title.text, 'Job %s - zasync'
                         % (self.name_of(job),))
        self.assertEqual(page.html.select_one('#call').text,
                         inspection.call_text(job))

    # -- the listing ---------------------------------------------------

    def test_ids_in_the_two_databases(self):
        # (What the tests rely on: same oids, told apart by the database.)
        oid = number(self.parent)
        self.assertEqual(self.name_of(self.parent), '%d@async' % oid)
        self.assertEqual(self.name_of(self.twin['parent']), oid)

    def test_the_listing_shows_each_job_under_its_own_id(self):
        expected = [self.name_of(job) for job in (
            self.parent, self.twin['parent'], self.other,
            self.twin['other'], self.twin['ok'], self.bad, self.ok)]
        self.assertEqual(len(set(expected)), 7)
        jobs = self.page('/api/jobs').json['jobs']
        self.assertEqual([job['id'] for job in jobs], expected)
        calls = {job['id']: job['call'] for job in jobs}
        self.assertEqual(calls[self.name_of(self.ok)], '_operator.mul(6, 7)')
        self.assertEqual(calls[number(self.ok)],
                         inspection.call_text(self.twin['ok']))
        self.assertNotEqual(calls[number(self.ok)], '_operator.mul(6, 7)')
        page = self.page('/jobs')
        rows = page.html.select('tr.job')
        self.assertEqual([row['data-id'] for row in rows],
                         [str(id) for id in expected])
        self.assertEqual([row.a.text for row in rows],
                         [str(id) for id in expected])
        # The filters see the ids too; paging loses no job.
        self.assertEqual(
            [job['id'] for job in self.page(
                '/api/jobs', params={'q': '@async'}).json['jobs']],
            [id for id in expected if isinstance(id, str)])
        seen, after = [], None
        while True:
            params = {'limit': 2}
            if after:
                params['after'] = after
            chunk = self.page('/api/jobs', params=params).json
            seen.extend(job['id'] for job in chunk['jobs'])
            after = chunk['next']
            if not after:
                break
        self.assertEqual(seen, expected)

    def test_every_listed_link_opens_that_jobs_page(self):
        listing = self.page('/jobs')
        jobs = {str(self.name_of(job)): job
                for job in [self.ok, self.bad, self.parent, self.other]
                + [self.twin[name] for name in ('ok', 'parent', 'other')]}
        rows = listing.html.select('tr.job')
        self.assertEqual(sorted(row['data-id'] for row in rows),
                         sorted(jobs))
        for row in rows:
            id = row['data-id']
            job = jobs[id]
            href = row.a['href']
            self.assertEqual(href, '/jobs/%s' % id)
            page = self.page(href)
            self.assertJobPage(page, job)
            self.assertEqual(row.select('td code')[0].text,
                             page.html.select_one('#call').text)
            info = self.page('/api/jobs/%s' % id).json
            self.assertEqual((info['id'], info['call']),
                             (self.name_of(job), inspection.call_text(job)))
        # The '@' may come quoted.
        self.assertJobPage(self.page('/jobs/%d%%40async'
                                     % number(self.parent)), self.parent)

    def test_callback_and_parent_links_of_a_member_job(self):
        page = self.page('/jobs/%s' % self.name_of(self.parent))
        links = self.field(page, 'Callbacks').select('a')
        self.assertEqual([a.text for a in links],
                         ['job %s' % self.name_of(self.callback)])
        callback = self.page(links[0]['href'])
        self.assertJobPage(callback, self.callback)
        info = self.page('/api/jobs/%s' % self.name_of(self.parent)).json
        self.assertEqual([cb['id'] for cb in info['callbacks']],
                         [self.name_of(self.callback)])
        # The callback's page links back to its parent, in async too.
        link = self.field(callback, 'Callback of').a
        self.assertEqual(link.text, 'job %s' % self.name_of(self.parent))
        self.assertJobPage(self.page(link['href']), self.parent)
        info = self.page('/api/jobs/%s' % self.name_of(self.callback)).json
        self.assertEqual(info['parent']['id'], self.name_of(self.parent))
        # The main database's job with the callback's oid is another job.
        self.assertJobPage(self.page('/jobs/%d' % number(self.callback)),
                           self.twin['callback'])

    def test_parts_link_to_their_own_database(self):
        member = self.conn.get_connection('async')
        first, second = Job(operator.add, 7, 8), Job(operator.add, 9, 10)
        member.add(first)
        member.add(second)
        from zasync.job import serial
        whole = self.queue.put(serial(first, second))
        self.tm.commit()
        parts = [first, second, whole.kwargs['postprocess']]
        page = self.page('/jobs/%s' % self.name_of(whole))
        links = self.field(page, 'Parts').select('a')
        self.assertEqual([a.text for a in links],
                         ['job %s' % self.name_of(job) for job in parts])
        for link, job in zip(links, parts):
            self.assertRegex(link.text, r'^job \d+@async$')
            self.assertJobPage(self.page(link['href']), job)

    # -- actions -------------------------------------------------------

    def pending_in_queue(self):
        self.tm.begin()
        return [self.name_of(job) for job in self.queue]

    def test_cancel_a_member_job_by_its_id(self):
        other = self.name_of(self.other)
        confirm = self.page('/jobs/%s/cancel' % other)
        self.assertEqual(confirm.html.title.text,
                         'Cancel job %s - zasync' % other)
        self.assertEqual(confirm.forms['confirm'].action,
                         '/jobs/%s/cancel' % other)
        confirm.forms['confirm']['reason'] = 'not needed'
        done = confirm.forms['confirm'].submit(headers=MANAGER)
        self.assertEqual(done.html.select_one('#message').text,
                         'job %s cancelled' % other)
        self.assertJobPage(done, self.other)
        self.tm.begin()
        self.assertEqual(self.other.cancel_requested.reason, 'not needed')
        # Only that job: its twin in the main database is still pending.
        twin = self.twin['other']
        self.assertIsNone(twin.cancel_requested)
        self.assertEqual(twin.status, interfaces.PENDING)
        self.assertIn(self.name_of(twin), self.pending_in_queue())
        self.assertNotIn(other, self.pending_in_queue())
        # And the other way round: a plain id is the main database's.
        done = self.post('/jobs/%d/cancel' % number(self.parent))
        self.assertEqual(done.html.select_one('#message').text,
                         'job %d cancelled' % number(self.parent))
        self.tm.begin()
        self.assertIsNotNone(self.twin['parent'].cancel_requested)
        self.assertIsNone(self.parent.cancel_requested)
        self.assertIn(self.name_of(self.parent), self.pending_in_queue())

    def test_the_action_buttons_post_to_the_jobs_own_id(self):
        page = self.page('/jobs/%s' % self.name_of(self.bad))
        actions = [form['action'] for form in page.html.select(
            '#actions form')]
        self.assertEqual(actions, ['/jobs/%s/retry' % self.name_of(self.bad)])

    def test_retry_a_member_job_names_the_new_one(self):
        bad = self.name_of(self.bad)
        done = self.post('/jobs/%s/retry' % bad)
        message = done.html.select_one('#message').text
        match = re.match(r'^job %s retried: the new job is (\d+@async)$'
                         % re.escape(bad), message)
        self.assertIsNotNone(match, message)
        new = self.page('/jobs/%s' % match.group(1))
        self.assertEqual(new.html.select_one('#call').text,
                         '_operator.truediv(1, 0)')
        self.assertEqual(new.html.select_one('#status').text, 'pending')
        # The main database's job with that oid was not retried.
        self.post('/jobs/%d/retry' % number(self.bad), status=409)

    def test_a_retry_while_another_job_holds_its_unique_key(self):
        self.tm.begin()
        self.bad.unique_key = 'report'
        holder = self.queue.put(Job(operator.mul, 2, 3), unique_key='report')
        self.tm.commit()
        done = self.post('/jobs/%s/retry' % self.name_of(self.bad))
        self.assertEqual(
            done.html.select_one('#message').text,
            "job %s not retried: job %s holds its unique key 'report'"
            % (self.name_of(self.bad), self.name_of(holder)))

    def test_remove_and_fail_name_the_jobs(self):
        parent = self.name_of(self.parent)
        done = self.post('/jobs/%s/remove' % parent)
        self.assertEqual(done.html.select_one('#message').text,
                         "job %s removed from queue ''" % parent)
        self.assertEqual(self.pending_in_queue(), [
            number(self.parent), self.name_of(self.other),
            number(self.other)])
        other = self.name_of(self.other)
        done = self.app.post('/jobs/%s/fail' % other,
                             {'csrf': self.token(), 'confirmed': '1',
                              'reason': 'not wanted'}, headers=MANAGER)
        message = done.html.select_one('#message').text
        match = re.match(r"^job %s failed: job (\d+@async) fails it with "
                         r"AbortedError\('not wanted'\)$" % re.escape(other),
                         message)
        self.assertIsNotNone(match, message)
        self.assertIn(match.group(1), self.pending_in_queue())
        # Refusals name the job by its id too.
        refused = self.post('/jobs/%s/remove' % parent, status=409)
        self.assertIn('job %s is ' % parent, refused.text)
        refused = self.post('/jobs/%s/retry' % self.name_of(self.ok),
                            status=409)
        self.assertIn('job %s has not failed' % self.name_of(self.ok),
                      refused.text)
        refused = self.page('/jobs/%s/retry' % self.name_of(self.ok),
                            status=409)
        self.assertIn('job %s is succeeded' % self.name_of(self.ok),
                      refused.text)

    # -- bad ids -------------------------------------------------------

    def test_bad_ids_are_a_clean_400_or_404(self):
        oid = number(self.parent)
        kept = number(self.conn.root()['kept'])
        for id, status, message in [
                ('x', 400, "job ids are whole numbers, not 'x'"),
                ('-1', 400, "job ids are whole numbers, not '-1'"),
                ('x@async', 400, 'job ids are whole numbers, or '
                 'NUMBER@DATABASE for a job of another database than the '
                 "main one, not 'x@async'"),
                ('%40async', 400, 'or NUMBER@DATABASE'),
                ('%d@nope' % oid, 404,
                 "no database named 'nope' (there are: '', 'async')"),
                ('%d@async@async' % oid, 404, 'no database named'),
                ('999999@async', 404, 'no job with id 999999@async'),
                ('0@async', 404, 'object 0@async is not a job'),
                ('%d' % kept, 404, 'a job of another database has its '
                 'name after the number: %d@async' % kept),
                ('99999999999999999999999999@async', 400,
                 'job ids are whole numbers'),
                ('%ff', 400, None),
        ]:
            for path in ('/jobs/%s', '/api/jobs/%s', '/jobs/%s/cancel'):
                response = self.page(path % id, expect_errors=True)
                self.assertEqual(response.status_int, status,
                                 (path % id, response.text))
                self.assertNotIn('Traceback', response.text)
                if message is not None:
                    self.assertIn(message, response.text
                                  .replace('&#x27;', "'"))
            response = self.app.post('/jobs/%s/cancel' % id,
                                     {'csrf': self.token(),
                                      'confirmed': '1'}, headers=MANAGER,
                                     expect_errors=True)
            self.assertEqual(response.status_int, status, id)
        self.assertEqual(len(self.pending_in_queue()), 4)

    # -- metrics -------------------------------------------------------

    def test_metrics_count_both_completed_jobs_of_one_oid(self):
        text = self.page('/metrics').text
        self.assertIn('zasync_jobs_completed_total{agent="main",queue="",'
                      'uuid="%s"} 3.0' % self.agent.parent.UUID, text)
        self.assertIn('zasync_jobs_started_total{agent="main",queue="",'
                      'uuid="%s"} 3.0' % self.agent.parent.UUID, text)
