"""``browser.zcml`` in a real Zope WSGI application (zope.app.wsgi, the
functional layer's zope.conf and ftapp.zcml, single.zcml's dispatcher):
the dashboard as the view ``dashboard`` of the job manager, through a WSGI
test client, guarded by ``zasync.ViewJobs`` and ``zasync.ManageJobs``.
"""
import base64
import os
import unittest

import webtest
import zope.app.wsgi

import zasync.dispatcher
from zasync import testing
from zasync.tests import test_functional

SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zasync.tests" file="ftapp.zcml" />
  <include package="zasync" file="single.zcml" />
  <include package="zasync" file="browser.zcml" />
</configure>
"""


def _start(cls):
    d = cls.dir
    with open(os.path.join(d, 'site.zcml'), 'w') as f:
        f.write(SITE_ZCML)
    with open(os.path.join(d, 'zope.conf'), 'w') as f:
        f.write(test_functional.ZOPE_CONF.format(
            dir=d, databases=test_functional.SINGLE_DATABASES.format(dir=d)))
    cls.app = zope.app.wsgi.getWSGIApplication(os.path.join(d, 'zope.conf'))
    cls.db = cls.app.requestFactory._db
    cls.dispatcher = zasync.dispatcher.get()
    assert cls.dispatcher is not None, 'no dispatcher started'
    testing.get_poll(cls.dispatcher, 0, seconds=20)


BrowserZCMLLayer = type('BrowserZCMLLayer', (), {
    'setUp': classmethod(vars(test_functional._LayerMethods)['setUp']),
    'tearDown': classmethod(vars(test_functional._LayerMethods)['tearDown']),
    '_start': classmethod(_start),
    '__module__': __name__})


def basic(login, password):
    return {'Authorization': 'Basic ' + base64.b64encode(
        ('%s:%s' % (login, password)).encode()).decode()}


ALICE = basic('alice', 'alice-pw')   # ViewJobs and ManageJobs
BOB = basic('bob', 'bob-pw')         # neither


class BrowserZCMLTests(unittest.TestCase):

    layer = BrowserZCMLLayer

    def setUp(self):
        self.app = webtest.TestApp(self.layer.app)
        test_functional.ftapp.GATE.set()

    def put_job(self):
        return int(self.app.get('/@@put-job?n=7', headers=ALICE)
                   .json['job_id'])

    def test_the_pages_for_a_viewer(self):
        job_id = self.put_job()
        page = self.app.get('/++jobs++/dashboard', headers=ALICE)
        self.assertIn('<title>Overview - zasync</title>', page.text)
        self.assertEqual(page.headers['X-Frame-Options'], 'DENY')
        self.assertIn("frame-ancestors 'none'",
                      page.headers['Content-Security-Policy'])
        # Links and assets are below the view.
        self.assertIn('href="/++jobs++/dashboard/static/style.css"',
                      page.text)
        self.app.get('/++jobs++/dashboard/static/style.css', headers=ALICE)
        jobs = self.app.get('/++jobs++/dashboard/api/jobs', headers=ALICE)
        self.assertIn(job_id, [job['id'] for job in jobs.json['jobs']])
        info = self.app.get('/++jobs++/dashboard/api/jobs/%d' % job_id,
                            headers=ALICE).json
        self.assertEqual(info['callable'], 'zasync.tests.ftapp.whoami_job')
        self.assertEqual(info['principals'], ['ftapp.alice'])
        page = self.app.get('/++jobs++/dashboard/jobs/%d' % job_id,
                            headers=ALICE)
        self.assertIn('ftapp.alice', page.html.select_one('dl').text)

    def test_without_view_jobs_nobody_sees_anything(self):
        for headers in ({}, BOB):
            for path in ('/++jobs++/dashboard', '/++jobs++/dashboard/jobs',
                         '/++jobs++/dashboard/api/overview'):
                response = self.app.get(path, headers=headers,
                                        expect_errors=True)
                self.assertIn(response.status_int, (401, 403), path)
                self.assertNotIn('zasync', response.text.lower()
                                 .replace('zasync.viewjobs', ''))

    def test_a_manager_acts_with_a_token_and_a_forged_post_fails(self):
        gate = test_functional.ftapp.GATE
        gate.clear()
        self.addCleanup(gate.set)
        # Four jobs for the three threads of the agent: those it runs wait
        # at the gate (at 50 %), one stays pending.
        ids = [self.put_job() for _ in range(4)]

        def where():
            found = {}
            for job_id in ids:
                info = self.app.get('/++jobs++/dashboard/api/jobs/%d'
                                    % job_id, headers=ALICE).json
                found.setdefault(info['where'], []).append(info)
            if len(found.get('claimed', ())) == 3 and all(
                    info['progress'] for info in found['claimed']):
                return found
            return None

        found = testing.wait(where, 20, 'the agent never ran three jobs')
        running = found['claimed'][0]
        self.assertEqual(running['progress'], {'percent': 50,
                                               'message': 'halfway'})
        pending, = found['pending']
        url = '/++jobs++/dashboard/jobs/%d/remove' % pending['id']
        self.assertTrue({'fail', 'remove'} <= set(pending['actions']))
        self.assertEqual(running['actions'], ['cancel'] if 'cancel' in
                         pending['actions'] else [])
        # No token, a wrong one: refused.
        self.app.post(url, {'confirmed': '1'}, headers=ALICE, status=403)
        self.app.post(url, {'confirmed': '1', 'csrf': 'f' * 64},
                      headers=ALICE, status=403)
        # Without ManageJobs: refused.
        self.app.post(url, {'confirmed': '1'}, headers=BOB,
                      expect_errors=True)
        page = self.app.get('/++jobs++/dashboard/jobs/%d' % pending['id'],
                            headers=ALICE)
        token = page.html.select_one('#actions input[name=csrf]')['value']
        done = self.app.post(url, {'confirmed': '1', 'csrf': token},
                             headers=ALICE)
        self.assertIn('removed from queue', done.html.select_one(
            '#message').text)
        info = self.app.get('/++jobs++/dashboard/api/jobs/%d'
                            % pending['id'], headers=ALICE).json
        self.assertNotEqual(info['where'], 'pending')
