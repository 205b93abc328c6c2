"""The dashboard as views of the ``JobManager`` in a Zope or Grok
application (``browser.zcml``).

``<include package="zasync" file="browser.zcml" />`` registers the view
``dashboard`` of the job manager: ``/++jobs++/dashboard`` from any object
of the site (``/++jobs++/dashboard/jobs``, ``.../jobs/ID``,
``.../api/overview``, ``.../metrics``...: the same pages and API as
``zasync web``).  Seeing it needs ``zasync.ViewJobs``; the actions need
``zasync.ManageJobs`` too, checked on every action.  It reads in the
request's transaction, and an action changes the database in it (the
publication commits it, and retries it on a conflict).
"""
import contextlib
import os

import zope.interface
import zope.security
from zope.publisher.interfaces.browser import IBrowserPublisher
from zope.security.proxy import removeSecurityProxy

from zasync import utils
from zasync.web import app
from zasync.web import auth

__all__ = ['DashboardView', 'RequestStore']

#: one CSRF secret for the views of this process
_CSRF = auth.CSRF(os.urandom(32))


class RequestStore:
    """Reads and writes in the request's connection and transaction."""

    def __init__(self, conn):
        self.conn = conn

    @contextlib.contextmanager
    def read(self):
        yield self.conn.root()

    def write(self, action, note=''):
        if note:
            self.conn.transaction_manager.get().note(note)
        return action(self.conn.root())


def _connection(context):
    """The connection of the job manager's site (the object ``++jobs++``
    was traversed from)."""
    obj = removeSecurityProxy(context)
    while obj is not None:
        conn = utils.connection(obj)
        if conn is not None:
            return conn
        obj = removeSecurityProxy(getattr(obj, '__parent__', None))
    raise LookupError('the job manager is not reached from a stored object '
                      '(use /++jobs++/dashboard)')


@zope.interface.implementer(IBrowserPublisher)
class DashboardView:
    """``<manager>/dashboard/<path>``: one view for every page."""

    def __init__(self, context, request):
        self.context = context
        self.request = request
        self.subpath = []

    def publishTraverse(self, request, name):
        self.subpath.append(name)
        return self

    def browserDefault(self, request):
        return self, ()

    def _base(self):
        url = self.request.getURL()
        for _ in self.subpath:
            url = url.rsplit('/', 1)[0]
        from urllib.parse import urlsplit
        return urlsplit(url).path

    def __call__(self):
        request = self.request
        principal = getattr(request, 'principal', None)
        login = getattr(principal, 'id', None)
        may_manage = zope.security.checkPermission('zasync.ManageJobs',
                                                   self.context)
        user = auth.User(login, auth.MANAGE if may_manage else auth.VIEW)
        params = {str(key): value if isinstance(value, str) else str(value)
                  for key, value in dict(request.form).items()}
        dashboard = app.Dashboard(RequestStore(_connection(self.context)),
                                  csrf=_CSRF, metrics=None, manage=True)
        call = app.Call(request.method, '/' + '/'.join(self.subpath),
                        params, user, may_manage=may_manage,
                        base=self._base())
        reply = dashboard.handle(call)
        response = request.response
        response.setStatus(reply.status)
        response.setHeader('Content-Type', reply.content_type)
        for name, value in app.SECURITY_HEADERS + reply.headers:
            response.setHeader(name, value)
        return reply.body
