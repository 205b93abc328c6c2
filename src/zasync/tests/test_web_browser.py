"""The dashboard in a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, which ``.ci/run`` installs) driven
by Selenium, against ``zasync web``'s application served by a real
waitress server on 127.0.0.1, over a real FileStorage and dispatcher.

Screenshots of each test go to ``$ZASYNC_ARTIFACTS`` when set, else to
the test's temporary directory.  Without Chromium the tests fail, saying
what to install: they are not skipped.
"""
import base64
import os
import shutil
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

import waitress.server
import ZODB.utils

from zasync import interfaces
from zasync import testing
from zasync.tests.test_web import GATE
from zasync.tests.test_web import WebFixture
from zasync.tests.test_web import oid
from zasync.web.app import WebApp

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--window-size=1200,900')
WAIT = 20


def start_browser(profile):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER)
               if not os.path.exists(path)]
    if missing:
        raise AssertionError(
            'the browser tests need Chromium and its driver (%s missing): '
            'apt-get install chromium chromium-driver' % ', '.join(missing))
    os.environ.setdefault('SE_OFFLINE', 'true')   # no Selenium Manager
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument('--user-data-dir=' + profile)
    # (the network log tells the status of what the browser got)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Server:
    """A waitress server of ``app`` on 127.0.0.1, in a thread."""

    def __init__(self, app):
        self.map = {}   # (the server's sockets, to close them all)
        self.server = waitress.server.create_server(
            app, map=self.map, host='127.0.0.1', port=0, threads=2,
            ident='zasync-test')
        self.url = 'http://127.0.0.1:%s' % self.server.effective_port
        self.thread = threading.Thread(target=self.server.run,
                                       name='zasync web test server',
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.close()
        for channel in list(self.map.values()):
            channel.close()   # (connections the browser kept alive)
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=10)
        self.thread.join(10)
        assert not self.thread.is_alive(), 'the web server did not stop'


def credentials(login, password):
    return 'Basic ' + base64.b64encode(
        ('%s:%s' % (login, password)).encode()).decode()


class BrowserTests(WebFixture, unittest.TestCase):

    def setUp(self):
        super().setUp()
        app = WebApp(self.db, users=self.users, manage=True)
        app.dashboard.refresh = 1   # (seconds between count refreshes)
        self.server = Server(app)
        self.profile = tempfile.mkdtemp(prefix='zasync-chromium-')
        self.addCleanup(shutil.rmtree, self.profile, True)
        self.artifacts = os.environ.get('ZASYNC_ARTIFACTS') or self.dir
        os.makedirs(self.artifacts, exist_ok=True)
        try:
            self.browser = start_browser(self.profile)
        except BaseException:
            self.server.stop()
            raise

    def tearDown(self):
        try:
            self.screenshot('end')
            self.browser.quit()
        finally:
            self.server.stop()
            super().tearDown()

    def screenshot(self, name):
        self.browser.save_screenshot(os.path.join(
            self.artifacts, '%s-%s.png' % (self._testMethodName, name)))

    def sign_in(self, login, password):
        # (HTTP Basic credentials on every request of the page: its CSS,
        # its script and the script's fetches of /api/overview too)
        self.browser.execute_cdp_cmd('Network.enable', {})
        self.browser.execute_cdp_cmd('Network.setExtraHTTPHeaders', {
            'headers': {'Authorization': credentials(login, password)}})

    def open(self, path):
        self.browser.get(self.server.url + path)

    def wait(self, condition, message):
        from selenium.common.exceptions import NoSuchElementException
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait
        # (while a page loads, elements found a moment ago go stale)
        return WebDriverWait(self.browser, WAIT, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(
            condition, message)

    def find(self, css):
        from selenium.webdriver.common.by import By
        return self.browser.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        from selenium.webdriver.common.by import By
        return self.browser.find_elements(By.CSS_SELECTOR, css)

    def count(self, key):
        return self.find('[data-count="%s"]' % key).text

    # -- the tests ---------------------------------------------------------

    def test_overview_shows_the_counts_of_every_state(self):
        self.sign_in('bob', 'bob-pw')
        self.open('/')
        self.assertEqual(self.browser.title, 'Overview - zasync')
        self.assertEqual(self.count('queue::pending'), '2')
        self.assertEqual(self.count('queue::due_later'), '1')
        self.assertEqual(self.count('queue::active'), '1')
        self.assertEqual(self.count('queue::completed'), '2')
        self.assertEqual(self.count('queue::held'), '0')
        self.assertIn('alive', self.find('#dispatchers').text)
        self.assertTrue(self.find('#chart').is_displayed())
        self.screenshot('overview')
        # The counts refresh without a reload: let the blocked job (and
        # then the pending one) finish.
        marker = self.browser.execute_script(
            'window.zasyncMarker = 1; return window.zasyncMarker;')
        self.assertEqual(marker, 1)
        GATE.set()
        testing.wait_for_result(self.running, WAIT)
        testing.wait_for_result(self.pending, WAIT)
        self.wait(lambda b: self.count('queue::completed') == '4',
                  'the completed count never refreshed to 4')
        self.assertEqual(self.count('queue::active'), '0')
        self.assertEqual(self.browser.execute_script(
            'return window.zasyncMarker;'), 1, 'the page was reloaded')
        self.screenshot('refreshed')

    def test_the_jobs_filter_narrows_the_list(self):
        self.sign_in('bob', 'bob-pw')
        self.open('/jobs')
        self.assertEqual(len(self.find_all('tr.job')), 5)
        self.find('#filter-state').send_keys('failed')
        self.find('#filter-submit').click()
        self.wait(lambda b: len(self.find_all('tr.job')) == 1,
                  'the filter did not narrow the list')
        row, = self.find_all('tr.job')
        self.assertEqual(row.get_attribute('data-id'), str(oid(self.bad)))
        self.screenshot('failed')
        self.find('#filter-state').clear()
        self.find('#filter-callable').send_keys('*add')
        self.find('#filter-submit').click()
        self.wait(lambda b: [r.get_attribute('data-id') for r in
                             self.find_all('tr.job')]
                  == [str(oid(self.pending))], 'the glob did not filter')

    def test_the_page_of_a_failed_job_shows_its_traceback(self):
        self.sign_in('bob', 'bob-pw')
        self.open('/jobs?state=failed')
        self.find('tr.job a').click()
        self.wait(lambda b: b.title == 'Job %d - zasync' % oid(self.bad),
                  'the job page did not open')
        traceback = self.find('#traceback').text
        self.assertIn('ZeroDivisionError', traceback)
        self.assertIn('Traceback (most recent call last)', traceback)
        self.assertEqual(self.find('#status').text, 'failed')
        self.screenshot('job')

    def test_a_manager_cancels_a_pending_job_through_the_buttons(self):
        from zasync.job import Job
        if not hasattr(Job, 'cancel'):
            self.fail('Job.cancel does not exist: the cancel button has '
                      'nothing to call')
        self.sign_in('alice', 'alice-pw')
        self.open('/jobs/%d' % oid(self.later))
        self.click_action('Cancel')
        self.find('#reason').send_keys('not needed any more')
        self.screenshot('confirm')
        self.find('#confirm-button').click()
        self.wait(lambda b: self.find_all('#message'),
                  'no result message')
        self.assertIn('cancelled', self.find('#message').text)
        self.screenshot('cancelled')
        self.tm.begin()
        self.assertNotIn(self.later, list(self.queue))
        if self.later.status == interfaces.COMPLETED:
            self.assertTrue(self.later.result.check(
                interfaces.CancelledError))

    def test_a_manager_retries_a_failed_job_through_the_buttons(self):
        self.sign_in('alice', 'alice-pw')
        self.open('/jobs/%d' % oid(self.bad))
        self.click_action('Retry')
        self.find('#confirm-button').click()
        self.wait(lambda b: self.find_all('#message'), 'no result message')
        message = self.find('#message').text
        self.assertIn('retried: the new job is', message)
        new_id = int(message.rsplit(' ', 1)[1])
        self.screenshot('retried')
        self.tm.begin()
        new = self.conn.get(ZODB.utils.p64(new_id))
        self.assertEqual((new.callable, list(new.args)),
                         (self.bad.callable, [1, 0]))

    def click_action(self, label):
        buttons = [b for b in self.find_all('#actions button')
                   if b.text == label]
        self.assertEqual(len(buttons), 1, 'no %s button' % label)
        buttons[0].click()
        self.wait(lambda b: self.find_all('#confirm'),
                  'no confirmation asked')

    def test_a_read_only_user_sees_no_buttons_and_a_forged_post_fails(self):
        self.sign_in('bob', 'bob-pw')
        for job in (self.bad, self.pending, self.later):
            self.open('/jobs/%d' % oid(job))
            self.assertEqual(self.find_all('#actions'), [])
            self.assertEqual(self.find_all('form[method=post]'), [])
        self.screenshot('read-only')
        # A page of another site posting to the dashboard: no token.
        forged = os.path.join(self.dir, 'forged.html')
        with open(forged, 'w') as f:
            f.write('<form id="f" method="post" action="%s/jobs/%d/remove">'
                    '<input name="confirmed" value="1"></form>'
                    % (self.server.url, oid(self.pending)))
        self.sign_in('alice', 'alice-pw')
        self.browser.get('file://' + forged)
        self.browser.execute_script('document.getElementById("f").submit()')
        self.wait(lambda b: b.current_url.startswith(self.server.url),
                  'the forged form was not sent')
        self.wait(lambda b: 'no valid token' in b.page_source,
                  'the forged post was not refused')
        self.screenshot('forged')
        request = urllib.request.Request(
            '%s/jobs/%d/remove' % (self.server.url, oid(self.pending)),
            data=b'confirmed=1', method='POST',
            headers={'Authorization': credentials('alice', 'alice-pw')})
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=WAIT)
        self.assertEqual(caught.exception.code, 403)
        caught.exception.close()
        self.tm.begin()
        self.assertIn(self.pending, list(self.queue))

    def statuses(self):
        """``{url: HTTP status}`` of the responses the browser got."""
        import json
        found = {}
        for entry in self.browser.get_log('performance'):
            message = json.loads(entry['message'])['message']
            if message.get('method') == 'Network.responseReceived':
                response = message['params']['response']
                found[response['url']] = response['status']
        return found

    def test_an_anonymous_user_is_refused(self):
        self.open('/')
        self.wait(lambda b: self.statuses().get(self.server.url + '/')
                  == 401 or None, 'the anonymous user was not refused')
        self.assertEqual(self.find_all('#queues'), [])
        self.assertNotIn('Pending', self.browser.page_source)
        self.screenshot('anonymous')
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(self.server.url + '/api/jobs',
                                   timeout=WAIT)
        self.assertEqual(caught.exception.code, 401)
        caught.exception.close()
