"""The dashboard: pages, the JSON API, actions and ``/metrics``.

``Dashboard.handle(call)`` answers one ``Call`` (method, path below the
dashboard, parameters, user) with a ``Reply``; it reads and writes through
a *store*: ``DatabaseStore`` (the standalone server: a connection of its
own for each request, a read in a transaction that is aborted, an action
in one that is committed, retried on conflicts) or the Zope request's
connection (``zasync.web.zope``).  ``WebApp`` is the standalone WSGI
application: authentication, the security headers, webob requests.

Paths (GET unless said): ``/`` the overview; ``/jobs`` the jobs (filters
``state``, ``queue``, ``callable``, ``q``; ``limit``; ``after`` a cursor);
``/jobs/ID`` a job (``full=1``: reprs not cut); ``/jobs/ID/ACTION`` (GET:
confirm; POST: do it) for ``retry``, ``cancel``, ``fail``, ``remove``,
``requeue``; ``/queues/ACTION?queue=NAME`` for ``pause`` and ``resume``;
``/api/overview``, ``/api/jobs``, ``/api/jobs/ID`` (JSON); ``/metrics``
(Prometheus); ``/static/NAME``.

An ``ID`` is a job's id as ``zasync jobs`` shows it
(``inspection.job_name``): ``19`` for a job of the main database,
``19@async`` for a job of the member database ``async`` of a
multi-database (``/jobs/19@async``; ``%40`` for the ``@`` works too).  The
pages link to jobs, and the actions' messages name them, by those ids; a
malformed id is a 400, one that names no job (or no database) a 404.
"""
import contextlib
import html
import json
import os
import string
import urllib.parse

import transaction
import ZODB.POSException

from zasync import actions
from zasync import inspection
from zasync import interfaces
from zasync import utils
from zasync.web import auth
from zasync.web import data

__all__ = ['Call', 'Dashboard', 'DatabaseStore', 'JOB_ACTIONS',
           'QUEUE_ACTIONS', 'Reply', 'SECURITY_HEADERS', 'WebApp']

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, 'static')
STATIC_TYPES = {'.css': 'text/css; charset=utf-8',
                '.js': 'text/javascript; charset=utf-8'}

JOB_ACTIONS = ('retry', 'cancel', 'fail', 'remove', 'requeue')
QUEUE_ACTIONS = ('pause', 'resume')
ATTEMPTS = 5

SECURITY_HEADERS = [
    ('X-Frame-Options', 'DENY'),
    ('X-Content-Type-Options', 'nosniff'),
    ('Referrer-Policy', 'same-origin'),
    ('Cache-Control', 'no-store'),
    ('Content-Security-Policy',
     "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
     "frame-ancestors 'none'; base-uri 'none'"),
]


def e(value):
    return html.escape('' if value is None else str(value), quote=True)


def _template(name):
    with open(os.path.join(HERE, 'templates', name), encoding='utf-8') as f:
        return string.Template(f.read())


class Call:
    """One request to the dashboard.

    ``path`` is below the dashboard (``/jobs/12``), ``params`` a dict of
    strings, ``user`` an ``auth.User`` (or anything with ``login``),
    ``may_manage`` whether this user may act, ``base`` the dashboard's
    URL path (links start with it)."""

    def __init__(self, method, path, params, user, may_manage, base=''):
        self.method = method.upper()
        self.path = path
        self.params = params
        self.user = user
        self.may_manage = may_manage
        self.base = base.rstrip('/')


class Reply:

    def __init__(self, body, status=200, content_type='text/html; '
                 'charset=utf-8', headers=()):
        self.body = body.encode('utf-8') if isinstance(body, str) else body
        self.status = status
        self.content_type = content_type
        self.headers = list(headers)


class Refused(Exception):

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class DatabaseStore:
    """Reads and writes in connections of their own (standalone server)."""

    def __init__(self, db):
        self.db = db

    @contextlib.contextmanager
    def read(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            tm.begin()
            yield conn.root()
        finally:
            tm.abort()
            conn.close()

    def write(self, action, note=''):
        """``action(root)`` in a transaction, committed (retried on a
        conflict); its value."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            for attempt in range(ATTEMPTS):
                txn = tm.begin()
                if note:
                    txn.note(note)
                result = action(conn.root())
                try:
                    tm.commit()
                except ZODB.POSException.ConflictError:
                    tm.abort()
                    if attempt == ATTEMPTS - 1:
                        raise Refused(409, 'the database kept changing; '
                                           'try again')
                    continue
                return result
        finally:
            tm.abort()
            conn.close()


def _job_path(id, action=None):
    """The path of the page of the job ``id`` (``inspection.job_name``),
    or of its ``action``."""
    path = '/jobs/' + urllib.parse.quote(str(id), safe='@')
    return path + '/' + action if action else path


def _json(value, status=200):
    return Reply(json.dumps(value, indent=1, sort_keys=True, default=str),
                 status, 'application/json')


def _int(text, default, what):
    if text in (None, ''):
        return default
    try:
        return int(text)
    except ValueError:
        raise Refused(400, '%s must be a whole number, not %r' % (what, text))


class Dashboard:
    """The pages, API and actions over a store (see the module)."""

    #: seconds between refreshes of the overview's counts (0: none)
    refresh = 5

    def __init__(self, store, csrf=None, metrics=None, manage=True,
                 clock=None):
        self.store = store
        self.csrf = csrf or auth.CSRF()
        self.metrics = metrics     # a prometheus CollectorRegistry
        self.manage = manage
        self.clock = clock or utils.now
        self.page = _template('page.html')

    # -- dispatching -------------------------------------------------------

    def handle(self, call):
        try:
            return self._route(call)
        except Refused as refused:
            if call.path.startswith('/api/'):
                return _json({'error': str(refused)}, refused.status)
            return self._render(call, 'Error', '<p class="message error">%s'
                                '</p>' % e(refused), status=refused.status)

    def _route(self, call):
        parts = [urllib.parse.unquote(p) for p in call.path.split('/') if p]
        if call.method not in ('GET', 'HEAD', 'POST'):
            raise Refused(405, 'method not allowed')
        if call.method == 'POST':
            if not self.csrf.check(call.user, call.params.get('csrf')):
                raise Refused(403, 'refused: this form has no valid token '
                                   '(reload the page and try again)')
            if not (len(parts) == 3 and parts[0] == 'jobs'
                    and parts[2] in JOB_ACTIONS) and not (
                    len(parts) == 2 and parts[0] == 'queues'
                    and parts[1] in QUEUE_ACTIONS):
                raise Refused(405, 'nothing to post here')
        if not parts:
            return self.overview_page(call)
        head = parts[0]
        if head == 'static' and len(parts) == 2:
            return self.static(parts[1])
        if head == 'metrics' and len(parts) == 1:
            return self.metrics_text()
        if head == 'api':
            if parts[1:] == ['overview']:
                with self.store.read() as root:
                    return _json(data.overview(root, self.clock()))
            if parts[1:] == ['jobs']:
                return _json(self._list(call))
            if len(parts) == 3 and parts[1] == 'jobs':
                with self.store.read() as root:
                    job = self._load(root, parts[2])
                    info = data.job_info(job, root, full=bool(
                        call.params.get('full')))
                    info['actions'] = self._job_actions(call, job, info)
                    return _json(info)
        if head == 'jobs':
            if len(parts) == 1:
                return self.jobs_page(call)
            if len(parts) == 2:
                return self.job_page(call, parts[1])
            if len(parts) == 3 and parts[2] in JOB_ACTIONS:
                return self.job_action(call, parts[1], parts[2])
        if head == 'queues' and len(parts) == 2 and parts[1] in QUEUE_ACTIONS:
            return self.queue_action(call, call.params.get('queue', ''),
                                     parts[1])
        raise Refused(404, 'not found: %s' % (call.path,))

    # -- helpers -----------------------------------------------------------

    def _render(self, call, title, body, status=200, refresh=0):
        who = ''
        login = getattr(call.user, 'login', None)
        if login:
            who = 'signed in as %s (%s)' % (
                login, 'manage' if call.may_manage else 'read-only')
        elif not call.may_manage:
            who = 'read-only'
        html_text = self.page.substitute(
            title=e(title), base=e(call.base), body=body, who=e(who),
            refresh=int(refresh))
        return Reply(html_text, status)

    def _load(self, root, text):
        try:
            return inspection.load_job(root._p_jar, text)
        except ValueError as error:
            raise Refused(400, str(error))
        except LookupError as error:
            raise Refused(404, str(error))

    def _url(self, call, path, **params):
        query = urllib.parse.urlencode(
            {k: v for k, v in params.items() if v not in (None, '')})
        return call.base + path + ('?' + query if query else '')

    def _token_field(self, call):
        return '<input type="hidden" name="csrf" value="%s">' % e(
            self.csrf.token(call.user))

    def static(self, name):
        extension = os.path.splitext(name)[1]
        if name not in os.listdir(STATIC) or extension not in STATIC_TYPES:
            raise Refused(404, 'not found')
        with open(os.path.join(STATIC, name), 'rb') as f:
            body = f.read()
        return Reply(body, 200, STATIC_TYPES[extension],
                     [('Cache-Control', 'max-age=300')])

    def metrics_text(self):
        import prometheus_client
        if self.metrics is None:
            raise Refused(404, 'no metrics here')
        return Reply(prometheus_client.generate_latest(self.metrics), 200,
                     prometheus_client.CONTENT_TYPE_LATEST)

    # -- the overview --------------------------------------------------------

    def overview_page(self, call):
        with self.store.read() as root:
            info = data.overview(root, self.clock())
        parts = ['<p class="muted">As of <span data-count="time">%s</span>'
                 '</p>' % e(info['time'])]
        totals = info['totals']
        parts.append(
            '<p>Pending <strong data-count="total:pending">%d</strong>, '
            'held <strong data-count="total:held">%d</strong>, active '
            '<strong data-count="total:active">%d</strong>, completed (kept) '
            '<strong data-count="total:completed">%d</strong></p>'
            % (totals['pending'], totals['held'], totals['active'],
               totals['completed']))
        parts.append('<h2>Queues</h2><table id="queues"><tr><th>Queue</th>'
                     '<th>Pending</th><th>Due later</th><th>Held</th>'
                     '<th>Active</th><th>Completed</th><th>Paused</th>'
                     '</tr>')
        for queue in info['queues']:
            name = queue['name']
            cells = ''.join(
                '<td class="num" data-count="queue:%s:%s">%d</td>'
                % (e(name), key, queue[key])
                for key in ('pending', 'due_later', 'held', 'active',
                            'completed'))
            paused = queue['paused']
            state = '-' if paused is None else ('yes' if paused else 'no')
            if paused is not None and call.may_manage:
                action = 'resume' if paused else 'pause'
                state += ' ' + self._post_button(
                    call, self._url(call, '/queues/' + action, queue=name),
                    action.capitalize())
            parts.append('<tr><td><a href="%s">%s</a></td>%s<td>%s</td>'
                         '</tr>' % (e(self._url(call, '/jobs', queue=name)),
                                    e(name or '(default)'), cells, state))
        parts.append('</table>')
        parts.append('<h2>Dispatchers</h2><table id="dispatchers"><tr>'
                     '<th>UUID</th><th>Queue</th><th>State</th>'
                     '<th>Last ping</th><th>Agents (jobs/size)</th></tr>')
        for record in info['dispatchers']:
            agents = ', '.join('%s (%d/%d)' % (e(a['name']), len(a['jobs']),
                                               a['size'])
                               for a in record['agents'])
            age = record['last_ping_age']
            parts.append(
                '<tr><td><code>%s</code></td><td>%s</td>'
                '<td class="state-%s">%s</td><td>%s%s</td><td>%s</td></tr>'
                % (e(record['uuid']), e(record['queue'] or '(default)'),
                   e(record['state']), e(record['state']),
                   e(record['last_ping'] or '-'),
                   (' (%.0f s ago)' % age) if age is not None else '',
                   agents or '-'))
        parts.append('</table>')
        if info['schedules']:
            parts.append('<h2>Schedules</h2><table id="schedules"><tr>'
                         '<th>Queue</th><th>Name</th><th>Schedule</th>'
                         '<th>Last run</th><th>Next run</th></tr>')
            for schedule in info['schedules']:
                parts.append('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s'
                             '</td><td>%s</td></tr>' % tuple(
                                 e(schedule[k] or '-') for k in (
                                     'queue', 'name', 'schedule',
                                     'last_run', 'next_run')))
            parts.append('</table>')
        parts.append('<h2>Completed and failed jobs per minute, last hour'
                     '</h2>')
        parts.append(chart_svg(info['chart']))
        return self._render(call, 'Overview', '\n'.join(parts),
                            refresh=self.refresh)

    def _post_button(self, call, url, label, danger=False):
        return ('<form class="inline" method="post" action="%s">%s'
                '<button type="submit"%s>%s</button></form>'
                % (e(url), self._token_field(call),
                   ' class="danger"' if danger else '', e(label)))

    # -- the jobs ------------------------------------------------------------

    def _filter(self, call):
        try:
            states = inspection.parse_states(call.params.get('state'))
        except ValueError as error:
            raise Refused(400, str(error))
        return data.Filter(states, call.params.get('queue'),
                           call.params.get('callable'),
                           call.params.get('q'))

    def _list(self, call):
        limit = _int(call.params.get('limit'), data.DEFAULT_LIMIT, 'limit')
        if limit < 1:
            raise Refused(400, 'limit must be 1 or more')
        with self.store.read() as root:
            try:
                return data.list_jobs(root, self._filter(call),
                                      call.params.get('after'), limit)
            except ValueError as error:
                raise Refused(400, str(error))

    def jobs_page(self, call):
        page = self._list(call)
        params = call.params
        parts = ['<form class="filters" method="get" action="%s">'
                 % e(call.base + '/jobs')]
        for name, label in (('state', 'State'), ('queue', 'Queue'),
                            ('callable', 'Callable (glob)'),
                            ('q', 'Text')):
            parts.append('<label>%s <input name="%s" id="filter-%s" '
                         'value="%s"></label>' % (label, name, name,
                                                  e(params.get(name, ''))))
        parts.append('<button type="submit" id="filter-submit">Filter'
                     '</button></form>')
        parts.append('<table id="jobs"><tr><th>Id</th><th>Status</th>'
                     '<th>Queue</th><th>Where</th><th>Call</th>'
                     '<th>Started</th><th>Ended</th><th>Result</th></tr>')
        for job in page['jobs']:
            state = job['outcome'] or job['status']
            parts.append(
                '<tr class="job" data-id="%s"><td><a href="%s">%s</a></td>'
                '<td class="state-%s">%s</td><td>%s</td><td>%s</td>'
                '<td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td>'
                '</tr>' % (
                    e(job['id']), e(self._url(call, _job_path(job['id']))),
                    e(job['id']), e(state), e(state),
                    e(job['queue'] if job['queue'] is not None else '-'),
                    e(job['where']), e(inspection.cut(job['call'], 120)),
                    e(job['started'] or ''), e(job['ended'] or ''),
                    e(inspection.cut(job['problem'] or job['result'] or '',
                                     80))))
        parts.append('</table>')
        if not page['jobs']:
            parts.append('<p class="muted" id="no-jobs">No jobs found.</p>')
        if page['next']:
            more = dict(params)
            more['after'] = page['next']
            note = '' if page['exhausted'] else (
                ' <span class="muted">(%d jobs examined; the search goes on '
                'from there)</span>' % page['examined'])
            parts.append('<p class="pager"><a id="next-page" href="%s">'
                         'Next page</a>%s</p>' % (
                             e(self._url(call, '/jobs', **more)), note))
        return self._render(call, 'Jobs', '\n'.join(parts))

    # -- one job -------------------------------------------------------------

    def _job_actions(self, call, job, info):
        if not (self.manage and call.may_manage):
            return []
        possible = []
        if actions.can_retry(job):
            possible.append('retry')
        if actions.can_cancel(job):
            possible.append('cancel')
        if info['where'] in ('pending', 'held') and info['status'] in (
                'pending', inspection.UNKNOWN):
            possible.extend(['fail', 'remove'])
        if info['where'] == 'held':
            possible.append('requeue')
        return possible

    def job_page(self, call, text, message=None):
        full = bool(call.params.get('full'))
        with self.store.read() as root:
            job = self._load(root, text)
            info = data.job_info(job, root, full=full)
            possible = self._job_actions(call, job, info)
        job_url = _job_path(info['id'])
        parts = []
        if message:
            parts.append('<p class="message" id="message">%s</p>'
                         % e(message))
        state = info['outcome'] or info['status']
        fields = [
            ('Status', '<span class="state-%s" id="status">%s</span>'
             % (e(state), e(state))),
            ('Call', '<code id="call">%s</code>' % e(info['call'])),
            ('Queue', e(info['queue'] if info['queue'] is not None
                        else '-')),
            ('Where', e(info['where']) + (
                ' (agent %s of %s)' % (e(info['agent']),
                                       e(info['dispatcher']))
                if info['agent'] else '')),
            ('Due', e(info['begin_after'] or '-')),
            ('Started', e(info['started'] or '-')),
            ('Ended', e(info['ended'] or '-')),
            ('Duration', e('%.3f s' % info['duration'] if info['duration']
                           is not None else '-')),
            ('Retries', e(info['retries'])),
            ('Retry policy', e(info['retry_policy'] or '-')),
            ('Runs as', e(', '.join(info['principals']) or '-')
             + (' in site %s' % e(info['site']) if info['site'] else '')),
        ]
        if info['progress']:
            progress = info['progress']
            fields.append(('Progress', '%s %%%s' % (
                e(progress['percent']), (' - ' + e(progress['message']))
                if progress['message'] else '')))
        if info['problem']:
            fields.append(('Problem', e(info['problem'])))
        if info['result'] is not None:
            fields.append(('Result', '<code>%s</code>' % e(info['result'])))
        if info['error']:
            fields.append(('Error', '<code>%s</code>' % e(info['error'])))
        if info['parent']:
            fields.append(('Callback of', self._job_link(call,
                                                         info['parent'])))
        if info['parts']:
            fields.append(('Parts', '<br>'.join(
                self._job_link(call, part) for part in info['parts'])))
        if info['callbacks']:
            fields.append(('Callbacks', '<br>'.join(
                self._job_link(call, cb) for cb in info['callbacks'])))
        parts.append('<dl class="fields">%s</dl>' % ''.join(
            '<dt>%s</dt><dd>%s</dd>' % (e(name), value)
            for name, value in fields))
        parts.append('<h2>Arguments</h2><ol id="args">%s</ol>' % ''.join(
            '<li><code>%s</code></li>' % e(arg) for arg in info['args']))
        if info['kwargs']:
            parts.append('<ul id="kwargs">%s</ul>' % ''.join(
                '<li><code>%s=%s</code></li>' % (e(k), e(v))
                for k, v in sorted(info['kwargs'].items())))
        if not full:
            parts.append('<p><a id="show-all" href="%s">Show every repr in '
                         'full</a></p>' % e(self._url(call, job_url,
                                                      full='1')))
        if info['annotation_values']:
            parts.append('<h2>Annotations</h2><dl class="fields">%s</dl>'
                         % ''.join('<dt>%s</dt><dd><code>%s</code></dd>'
                                   % (e(k), e(v)) for k, v in
                                   info['annotation_values'].items()))
        if info['traceback']:
            parts.append('<h2>Traceback</h2><pre class="traceback" '
                         'id="traceback">%s</pre>' % e(info['traceback']))
        if possible:
            parts.append('<div class="actions" id="actions">%s</div>'
                         % ''.join(
                             self._post_button(
                                 call, self._url(call, _job_path(
                                     info['id'], action)),
                                 action.capitalize(),
                                 danger=action in ('cancel', 'fail',
                                                   'remove'))
                             for action in possible))
        return self._render(call, 'Job %s' % info['id'], '\n'.join(parts))

    def _job_link(self, call, link):
        if link['id'] is None:
            return '<code>%s</code>' % e(link['call'])
        return '<a href="%s">job %s</a> <code>%s</code> (%s)' % (
            e(self._url(call, _job_path(link['id']))), e(link['id']),
            e(link['call']), e(link['status']))

    # -- actions -------------------------------------------------------------

    def _check_manager(self, call):
        if not (self.manage and call.may_manage):
            raise Refused(403, 'refused: you may not change jobs here'
                          + ('' if self.manage else
                             ' (the dashboard is read-only: start it with '
                             '--manage)'))

    def _confirm(self, call, title, question, url, reason=False):
        parts = ['<form method="post" action="%s" id="confirm">%s'
                 % (e(url), self._token_field(call)),
                 '<input type="hidden" name="confirmed" value="1">',
                 '<p>%s</p>' % e(question)]
        if reason:
            parts.append('<p><label>Reason <input name="reason" '
                         'id="reason" required></label></p>')
        parts.append('<button type="submit" id="confirm-button">Yes, %s'
                     '</button> <a href="%s">No, go back</a></form>'
                     % (e(title.split()[0].lower()),
                        e(call.base + '/')))
        return self._render(call, title, '\n'.join(parts))

    def job_action(self, call, text, action):
        self._check_manager(call)
        if call.method != 'POST' or not call.params.get('confirmed'):
            with self.store.read() as root:
                job = self._load(root, text)
                info = data.job_info(job, root)
                name = info['id']
                if action not in self._job_actions(call, job, info):
                    raise Refused(409, 'job %s is %s: it cannot be %s' % (
                        name, info['outcome'] or info['status'],
                        PAST[action]))
            return self._confirm(
                call, '%s job %s' % (action.capitalize(), name),
                '%s job %s, %s?' % (action.capitalize(), name,
                                    info['call']),
                self._url(call, _job_path(name, action)),
                reason=action in ('fail', 'cancel'))
        reason = (call.params.get('reason') or '').strip()
        who = getattr(call.user, 'login', None) or 'an operator'
        if action == 'fail' and not reason:
            raise Refused(400, 'give a reason to fail a job')

        def act(root):
            job = self._load(root, text)
            return perform(root, job, action, reason, who)

        message = self.store.write(act, 'zasync web: %s job %s by %s'
                                   % (action, text.strip(), who))
        return self.job_page(call, text, message=message)

    def queue_action(self, call, name, action):
        self._check_manager(call)
        if call.method != 'POST' or not call.params.get('confirmed'):
            return self._confirm(
                call, '%s queue %s' % (action.capitalize(), name or
                                       '(default)'),
                '%s queue %r?' % (action.capitalize(), name),
                self._url(call, '/queues/' + action, queue=name))

        def act(root):
            queues = root.get(interfaces.KEY) or {}
            queue = queues.get(name)
            if queue is None:
                raise Refused(404, 'no queue %r' % (name,))
            method = getattr(queue, action, None)
            if method is None:
                raise Refused(409, 'queues cannot be paused here')
            method()
            return 'queue %r: %s' % (name, PAST[action])

        message = self.store.write(act, 'zasync web: %s queue %r' % (
            action, name))
        page = self.overview_page(call)
        banner = '<p class="message" id="message">%s</p>' % e(message)
        page.body = page.body.replace(b'</h1>', b'</h1>\n'
                                      + banner.encode('utf-8'), 1)
        return page


PAST = {'retry': 'retried', 'cancel': 'cancelled', 'fail': 'failed',
        'remove': 'removed', 'requeue': 'requeued', 'pause': 'paused',
        'resume': 'resumed'}


def _queue_holding(root, job, name):
    """``(queue, 'held' | 'pending')`` for a held or pending job (``name``
    its id)."""
    address = inspection.job_address(job)
    for queue in (root.get(interfaces.KEY) or {}).values():
        for record in queue.unloadableJobs():
            if inspection.job_address(record.job) == address:
                return queue, 'held'
    queue = job.parent
    if job.status == interfaces.PENDING and interfaces.IQueue.providedBy(
            queue):
        return queue, 'pending'
    raise Refused(409, 'job %s is %s, not pending or held' % (
        name, job.status.title.lower()))


def perform(root, job, action, reason, who):
    """Do ``action`` to ``job`` (the same engine functions as the
    ``zasync`` commands); return a message naming the jobs by their ids
    (``inspection.job_name``)."""
    main = inspection.main_name(root)
    name = inspection.job_name(job, main)
    try:
        if action == 'retry':
            new = actions.retry_job(job)
            if new.retried_from is not job:   # (put found its unique key)
                return 'job %s not retried: job %s holds its unique key %r' % (
                    name, inspection.job_name(new, main), new.unique_key)
            return 'job %s retried: the new job is %s' % (
                name, inspection.job_name(new, main))
        if action == 'cancel':
            actions.cancel_job(job, reason or 'cancelled by %s' % who)
            return 'job %s cancelled' % (name,)
        queue, where = _queue_holding(root, job, name)
        if action == 'fail':
            wrapper = queue.failJob(job, reason)
            return ('job %s failed: job %s fails it with AbortedError(%r)'
                    % (name, inspection.job_name(wrapper, main), reason))
        if action == 'remove':
            queue.removeJob(job)
            return 'job %s removed from queue %r' % (name, queue.name)
        if action == 'requeue':
            queue.requeueJob(job)
            return 'job %s back at the front of queue %r' % (name,
                                                             queue.name)
    except (ValueError, LookupError) as error:
        raise Refused(409, inspection.name_in_message(str(error), job, main))
    raise Refused(404, 'no action %r' % (action,))


def chart_svg(chart, width=600, height=120):
    """The chart of ``data.chart`` as inline SVG (no script)."""
    minutes = chart['minutes']
    peak = max([m['completed'] for m in minutes] + [1])
    bar = width / len(minutes)
    plot = height - 16
    parts = ['<svg class="chart" id="chart" xmlns="http://www.w3.org/2000/'
             'svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
             'aria-label="completed and failed jobs per minute">'
             % (width, height, width, height)]
    for index, minute in enumerate(minutes):
        x = index * bar
        done = minute['completed'] * plot / peak
        failed = minute['failed'] * plot / peak
        if minute['completed']:
            parts.append('<rect class="completed" x="%.1f" y="%.1f" '
                         'width="%.1f" height="%.1f"><title>%s: %d completed'
                         ', %d failed</title></rect>' % (
                             x, plot - done, bar - 1, done,
                             e(minute['minute']), minute['completed'],
                             minute['failed']))
        if minute['failed']:
            parts.append('<rect class="failed" x="%.1f" y="%.1f" '
                         'width="%.1f" height="%.1f"></rect>' % (
                             x, plot - failed, bar - 1, failed))
    parts.append('<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"></line>'
                 % (plot, width, plot))
    parts.append('<text x="0" y="%d">-60 min</text><text x="%d" y="%d" '
                 'text-anchor="end">now (peak %d/min)</text>'
                 % (height - 3, width, height - 3, peak))
    parts.append('</svg>')
    legend = ('<p><span class="legend-completed">&#9632; completed</span> '
              '<span class="legend-failed">&#9632; failed</span>%s</p>'
              % (' <span class="muted">(failed: of the newest %d jobs)'
                 '</span>' % chart['read'] if chart['partial'] else ''))
    return ''.join(parts) + legend


# --------------------------------------------------------------------------
# The standalone WSGI application


class WebApp:
    """The dashboard of ``db`` as a WSGI application (``zasync web``).

    ``users``: an ``auth.IUsers`` (None: no authentication, every caller
    is ``auth.ANONYMOUS`` -- only for a server on loopback);
    ``manage``: whether managers may act (else read-only for all);
    ``metrics``: serve ``/metrics`` (a registry of its own)."""

    realm = 'zasync'

    def __init__(self, db, users=None, manage=False, metrics=True,
                 clock=None):
        from zasync.web import metrics as metrics_module
        self.db = db
        self.users = users
        self.manage = manage
        store = DatabaseStore(db)
        registry = None
        if metrics:
            self.collector = metrics_module.DatabaseCollector(
                store.read, clock=clock)
            registry = metrics_module.make_registry(self.collector)
        self.dashboard = Dashboard(store, metrics=registry, manage=manage,
                                   clock=clock)

    def __call__(self, environ, start_response):
        import webob
        request = webob.Request(environ)
        reply = self.respond(request)
        status = '%d %s' % (reply.status, STATUS_TEXT.get(reply.status,
                                                          'Error'))
        headers = [('Content-Type', reply.content_type),
                   ('Content-Length', str(len(reply.body)))]
        headers.extend(SECURITY_HEADERS)
        named = {name.lower() for name, value in reply.headers}
        headers = [(n, v) for n, v in headers if n.lower() not in named]
        headers.extend(reply.headers)
        start_response(status, headers)
        if request.method == 'HEAD':
            return [b'']
        return [reply.body]

    def respond(self, request):
        user = auth.ANONYMOUS
        if self.users is not None:
            credentials = auth.basic_credentials(
                request.headers.get('Authorization'))
            user = (self.users.authenticate(*credentials)
                    if credentials else None)
            if user is None:
                return Reply('Sign in to see the jobs.\n', 401,
                             'text/plain; charset=utf-8',
                             [('WWW-Authenticate',
                               'Basic realm="%s", charset="UTF-8"'
                               % self.realm)])
        try:
            params = dict(request.params.items())
            # (webob decodes the path as UTF-8: other bytes are refused)
            path, base = request.path_info or '/', request.script_name
        except Exception:
            return Reply('bad request\n', 400, 'text/plain; charset=utf-8')
        call = Call(request.method, path, params, user,
                    may_manage=self.manage and user.may_manage, base=base)
        return self.dashboard.handle(call)


STATUS_TEXT = {200: 'OK', 303: 'See Other', 400: 'Bad Request',
               401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
               405: 'Method Not Allowed', 409: 'Conflict'}
