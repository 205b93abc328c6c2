"""The zasync dashboard: a WSGI application over one database, its JSON
API and Prometheus metrics (``zasync web``; ``browser.zcml`` in a Zope
application).  See ``docs/web.rst`` and ``docs/metrics.rst``.

Needs the ``web`` extra (waitress, prometheus_client, WebOb,
zope.password).  Modules: ``data`` (what the pages show, as plain data,
built on ``zasync.inspection``), ``app`` (the pages, API and actions, and
the standalone ``WebApp``), ``auth`` (users files, CSRF tokens),
``metrics`` (collectors), ``zope`` (the views of ``browser.zcml``).
"""

__all__ = ['make_app']


def make_app(db, users=None, manage=False, metrics=True):
    """The standalone dashboard of ``db`` (``zasync.web.app.WebApp``)."""
    from zasync.web.app import WebApp
    return WebApp(db, users=users, manage=manage, metrics=metrics)
