"""Main loops for small, long-running scripts that work on a Zope database.

A *runner* is a function called over and over ("once per tick") with the
component architecture configured, a site set and -- optionally -- an
interaction for a principal.  Each call runs in its own transaction::

    @zasync.runner.appmain(ticks=10, principal='zope.mgr')
    def cleanup():
        ...                       # committed when it returns

    cleanup('mysite', 'etc/zope.conf')

``appmain`` / ``once`` turn the function into ``worker(appname, configfile)``
which loads a zope.conf (databases, ``<product-config>``, ``<eventlog>``,
``site-definition``), finds the root folder, and hands it to ``main_loop``.

Stopping: the worker returns ``Exit`` (commit, then stop) or raises
``Exit`` / ``SystemExit`` / ``KeyboardInterrupt`` (abort, then stop); SIGTERM
and SIGHUP stop the loop after the current tick.  The pause between ticks is
a ``select`` on a self-pipe, so a signal (or ``MainLoop.stop()`` from another
thread) ends it at once.  A pipe rather than a ``threading.Event``: a signal
handler runs in the main thread between any two byte codes, possibly while
that thread holds the Event's internal lock inside ``Event.wait`` -- setting
the Event from the handler could then deadlock; writing a byte cannot.
"""
import contextlib
import functools
import logging
import os
import select
import signal
import sys
import weakref

import ZConfig
import ZConfig.components.logger.logger
import ZODB.POSException
import zope.app.appsetup.appsetup
import zope.app.appsetup.product
import zope.component
import zope.component.event  # dispatches zope.event events to subscribers
import zope.event
import zope.interface
import zope.processlifetime
import zope.security.interfaces
import zope.security.management
from zope.authentication.interfaces import IAuthentication
from zope.component.hooks import getSite
from zope.component.interfaces import ISite
from zope.component.hooks import setSite

from zasync import interfaces
from zasync import utils
from zasync.utils import transaction_manager

__all__ = ['AccessLogFactory', 'application', 'appmain', 'Exit', 'from_config',
           'get_principal', 'load_options', 'load_zcml', 'main_loop',
           'MainLoop', 'once', 'ROOT_NAME', 'RunnerParticipation', 'SCHEMA',
           'STOP_SIGNALS']

log = logging.getLogger('zasync.runner')

#: The key of the root folder in the database root (Zope's convention).
ROOT_NAME = 'Application'

#: Signals that stop a main loop after its current tick.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Exit(Exception):
    """Stop a main loop.

    A worker *returning* ``Exit`` (the class or an instance) has its
    transaction committed, then the loop stops.  A worker *raising* it has
    its transaction aborted, then the loop stops.
    """


@zope.interface.implementer(zope.security.interfaces.IParticipation)
class RunnerParticipation:
    """The participation of a principal in a runner's interaction."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


def _is_exit(value):
    return value is Exit or isinstance(value, Exit)


def _is_seconds(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def get_principal(principal):
    """Resolve ``principal`` to a principal object (or None).

    ``principal`` is None, a callable (called without arguments, e.g. a
    ``from_config`` value), a principal id looked up through the
    ``IAuthentication`` utility of the current site, or a principal object.
    """
    if principal is None:
        return None
    if callable(principal):
        value = principal()
        if value is None:
            raise LookupError(
                'the principal callable %r returned None' % (principal,))
        principal = value
    if isinstance(principal, str):
        auth = zope.component.getUtility(IAuthentication)
        return auth.getPrincipal(principal)
    return principal


class _Waker:
    """Interruptible pauses: ``wait(seconds)`` returns early on ``wake()``.

    ``wake()`` only writes a byte to a non-blocking pipe, so it is safe in a
    signal handler and from any thread.
    """

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Closed when the waker is garbage (or closed): never while someone
        # could still call wake(), so a byte never goes to a reused fd.
        self._finalizer = weakref.finalize(
            self, _close_fds, self._read, self._write)

    def wake(self):
        try:
            os.write(self._write, b'!')
        except (BlockingIOError, OSError):
            pass    # full (a wake-up is pending anyway) or closed

    def wait(self, seconds):
        """Wait up to ``seconds``; return True when woken up."""
        ready, _, _ = select.select([self._read], [], [], max(seconds, 0))
        woken = False
        while True:
            try:
                data = os.read(self._read, 512)
            except BlockingIOError:
                break
            if not data:
                break
            woken = True
        return woken or bool(ready)

    def close(self):
        self._finalizer()


def _close_fds(*fds):
    for fd in fds:
        os.close(fd)


@zope.interface.implementer(interfaces.IMainLoop)
class MainLoop:
    """Call ``worker`` once per tick, one transaction per call.

    See ``main_loop`` for the rules.  ``stop()`` may be called from any
    thread (or a signal handler): the loop ends after the current tick, or
    at once if it is waiting.  A loop runs once: stopped is stopped.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False):
        self.app = app
        self.ticks = ticks
        self.worker = worker
        self.principal = principal
        self.once = once
        self.running = False
        self.result = None
        self._stop_requested = False
        self._waker = _Waker()

    def __repr__(self):
        return '<%s %s every %ss>' % (
            type(self).__name__,
            getattr(self.worker, '__qualname__', self.worker), self.ticks)

    def stop(self):
        self._stop_requested = True
        self._waker.wake()

    def handle_signal(self, signum, frame):
        log.info('Received signal %s, terminating.', signum)
        self.stop()

    def __call__(self):
        self.running = True
        handlers = self._install_signal_handlers()
        old_site = getSite()
        setSite(self.app)
        try:
            while not self._stop_requested:
                pause = self.tick()
                if self.once or self._stop_requested:
                    break
                log.debug('Waiting %s seconds', pause)
                try:
                    self._waker.wait(pause)
                except KeyboardInterrupt:
                    log.info('Interrupted, terminating.')
                    break
        finally:
            setSite(old_site)
            handlers.restore()
            self.running = False
        return self.result if self.once else None

    run = __call__

    # -- one tick ---------------------------------------------------------

    def tick(self):
        """Call the worker in a transaction; return the pause to the next
        tick.  Errors other than SystemExit/KeyboardInterrupt are logged (and
        re-raised in ``once`` mode)."""
        tm = transaction_manager(self.app)
        interaction = False
        try:
            try:
                tm.begin()   # also syncs the connection: may fail (ZEO)
                principal = get_principal(self.principal)
                if principal is not None:
                    zope.security.management.newInteraction(
                        RunnerParticipation(principal))
                    interaction = True
                result = self.worker()
            except (SystemExit, KeyboardInterrupt, Exit) as e:
                tm.abort()
                log.info('%s stopped the main loop (%s)',
                         self._worker_name(), type(e).__name__)
                self._stop_requested = True
                return 0
            except Exception:
                tm.abort()
                log.exception('Error in %s', self._worker_name())
                if self.once:
                    raise
                return self.ticks
            try:
                tm.commit()
            except ZODB.POSException.ConflictError:
                tm.abort()
                log.warning('Conflict while committing %s; it will run again'
                            ' next tick', self._worker_name(), exc_info=True)
                if self.once:
                    raise
                return self.ticks
            except Exception:
                tm.abort()
                log.exception('Error committing %s', self._worker_name())
                if self.once:
                    raise
                return self.ticks
        finally:
            if interaction:
                zope.security.management.endInteraction()
        self.result = result
        if _is_exit(result):
            self._stop_requested = True
            return 0
        if _is_seconds(result):
            return result
        return self.ticks

    def _worker_name(self):
        name = getattr(self.worker, '__qualname__', None)
        if name is None:
            return repr(self.worker)
        module = getattr(self.worker, '__module__', None)
        return '%s.%s' % (module, name) if module else name

    # -- signals ----------------------------------------------------------

    def _install_signal_handlers(self):
        handlers = utils.SignalHandlers()
        for signum in STOP_SIGNALS:
            if not handlers.install(signum, self.handle_signal):
                log.debug('%r runs outside the main thread: no signal '
                          'handlers', self)
                break
        return handlers


def main_loop(app, ticks, worker, principal=None, once=False):
    """Call ``worker()`` every ``ticks`` seconds with ``app`` as the site.

    - One transaction per call: committed when the worker returns normally,
      aborted when it raises.  Other errors are logged and the loop goes on
      (after the default pause); a commit conflict is logged as a warning.
    - A number returned by the worker is the pause before the next call.
    - Returning ``Exit`` commits and stops; raising ``Exit``, ``SystemExit``
      or ``KeyboardInterrupt`` aborts and stops.
    - SIGTERM and SIGHUP (when run in the main thread) log
      ``Received signal N, terminating.`` and stop after the current call.
    - With a ``principal`` (an id, a principal, or a callable returning
      either), each call runs in an interaction for it.
    - With ``once=True`` the worker is called once; an error is logged,
      aborted and re-raised, and the worker's return value is returned.

    Afterwards the previous site is set again and no interaction remains.
    """
    return MainLoop(app, ticks, worker, principal=principal, once=once)()


# --------------------------------------------------------------------------
# zope.conf


class AccessLogFactory(ZConfig.components.logger.logger.LoggerFactoryBase):
    """The optional ``<accesslog>`` of a Zope server's zope.conf.

    A runner serves no requests; the section is accepted so that a server's
    zope.conf can be used as is, and configures the ``accesslog`` logger.
    """

    name = 'accesslog'

    def create(self):
        logger = super().create()
        logger.propagate = False
        return logger


SCHEMA = """\
<schema extends="package:zope.app.appsetup:schema/schema.xml">
  <description>
    zope.conf of a zasync runner: the Zope application server schema
    (databases, eventlog, loggers, product-config, site-definition, path,
    devmode) plus the optional accesslog of a Zope server's zope.conf.
  </description>
  <sectiontype name="accesslog" datatype="zasync.runner.AccessLogFactory"
               extends="ZConfig.logger.base-logger"/>
  <section type="accesslog" attribute="accesslog" name="*" required="no"/>
</schema>
"""

_schema = None


def load_options(configfile):
    """Parse ``configfile`` (a zope.conf) and return the options."""
    global _schema
    if _schema is None:
        import io
        _schema = ZConfig.loadSchemaFile(io.StringIO(SCHEMA))
    options, _ = ZConfig.loadConfig(_schema, configfile)
    return options


@contextlib.contextmanager
def _logging_configured(options):
    """Configure logging from ``options``; restore the previous set-up
    afterwards (so that a runner called in-process leaves no handlers)."""
    factories = [options.eventlog] + list(options.loggers or ())
    if options.accesslog is not None:
        factories.append(options.accesslog)
    saved = {}
    for factory in factories:
        name = getattr(factory, 'name', None)
        logger = logging.getLogger(name)
        saved[name] = (logger, list(logger.handlers), logger.level,
                       logger.propagate)
    try:
        for factory in factories:
            factory()
        yield
    finally:
        for name, (logger, handlers, level, propagate) in saved.items():
            for handler in logger.handlers:
                if handler not in handlers:
                    logger.removeHandler(handler)
                    handler.flush()
                    if not getattr(handler, 'stream', None) in (
                            sys.stdout, sys.stderr):
                        handler.close()
            logger.setLevel(level)
            logger.propagate = propagate


def load_zcml(site_zcml, features):
    """Load the site definition (once per process, as Zope does)."""
    had_interaction = (
        zope.security.management.queryInteraction() is not None)
    try:
        zope.app.appsetup.appsetup.config(site_zcml, features=features)
    except BaseException:
        # appsetup.config() leaves its configuration interaction behind
        # when the ZCML fails.
        if not had_interaction:
            zope.security.management.endInteraction()
        raise


def _traverse(root_folder, appname):
    app = root_folder
    for name in (appname or '').strip('/').split('/'):
        if not name:
            continue
        try:
            app = app[name]
        except KeyError:
            raise LookupError(
                'no object %r in the root folder (looking up %r)'
                % (name, appname)) from None
    return app


@contextlib.contextmanager
def application(appname, configfile):
    """Set up the environment described by ``configfile`` and yield the
    application object: the root folder, or ``appname`` inside it (a name
    or a ``/``-separated path).

    Loads logging, ``<product-config>``, the ``site-definition`` ZCML
    (relative paths are relative to the configuration file) and the
    databases, and notifies ``IDatabaseOpened`` as a Zope server does.  On
    exit, the connection and databases are closed and logging restored.
    """
    configfile = os.path.abspath(configfile)
    options = load_options(configfile)
    with _logging_configured(options):
        zope.app.appsetup.product.setProductConfigurations(
            options.product_config)
        added_paths = [p for p in (options.path or ()) if p not in sys.path]
        sys.path[0:0] = added_paths
        try:
            site_zcml = os.path.join(os.path.dirname(configfile),
                                     options.site_definition)
            features = ('devmode',) if options.devmode else ()
            load_zcml(site_zcml, features)
            dbs, _ = zope.app.appsetup.appsetup.multi_database(
                options.databases)
            try:
                db = dbs[0]
                zope.event.notify(zope.processlifetime.DatabaseOpened(db))
                conn = db.open()
                try:
                    root_folder = conn.root().get(ROOT_NAME)
                    if root_folder is None:
                        raise LookupError(
                            'the database has no root folder %r: open it '
                            'once with a Zope server, or register '
                            'zope.app.appsetup.bootstrap.bootStrapSubscriber'
                            ' in %s' % (ROOT_NAME, site_zcml))
                    app = _traverse(root_folder, appname)
                    if not ISite.providedBy(app):
                        raise TypeError('%r is not a site (it has no site '
                                        'manager)' % (appname,))
                    yield app
                finally:
                    conn.transaction_manager.abort()
                    conn.close()
            finally:
                for db in dbs:
                    db.close()
        finally:
            for path in added_paths:
                if path in sys.path:
                    sys.path.remove(path)


def _decorate(ticks, principal, once):
    def decorator(worker):
        @functools.wraps(worker)
        def run(appname, configfile):
            with application(appname, configfile) as app:
                return main_loop(app, ticks, worker, principal=principal,
                                 once=once)
        return run
    return decorator


def appmain(ticks=1, principal=None):
    """Decorator: turn ``worker()`` into ``worker(appname, configfile)``,
    which sets up the application from ``configfile`` and runs ``worker``
    in a main loop every ``ticks`` seconds (see ``main_loop``)."""
    return _decorate(ticks, principal, once=False)


def once(principal=None):
    """Decorator like ``appmain``, but the worker runs exactly once; its
    return value is returned, and an error is re-raised after the abort."""
    return _decorate(0, principal, once=True)


@zope.interface.implementer(interfaces.IConfigValue)
class from_config:
    """A value read from ``<product-config section>`` when called.

    Pass it where a value is only known once the zope.conf is loaded, e.g.
    ``appmain(principal=from_config('myapp', 'principal'))``.
    """

    def __init__(self, section, variable):
        self.section = section
        self.variable = variable

    def __call__(self):
        config = zope.app.appsetup.product.getProductConfiguration(
            self.section)
        if config is None:
            raise LookupError(
                'no <product-config %s> in the configuration' % self.section)
        try:
            return config[self.variable]
        except KeyError:
            raise LookupError(
                'no %r in <product-config %s>'
                % (self.variable, self.section)) from None

    def __repr__(self):
        return 'from_config(%r, %r)' % (self.section, self.variable)
