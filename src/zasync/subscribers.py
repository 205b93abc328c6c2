"""Installers: event subscribers that set zasync up when a database opens.

* ``QueueInstaller`` puts the ``Queues`` mapping and its queues in the
  database (``IDatabaseOpenedEvent``).
* ``ThreadedDispatcherInstaller`` starts a dispatcher with its own Twisted
  reactor in a daemon thread (``IDatabaseOpenedEvent``).
* ``TwistedDispatcherInstaller`` starts a dispatcher on the process's
  global Twisted reactor, which the application runs
  (``IDatabaseOpenedEvent``).
* ``AgentInstaller`` gives an activated dispatcher an agent in each queue
  (``IDispatcherActivated``).

Each is idempotent; the database installers work in their own connection
with a private transaction manager.  ``zasync.manager.JobContainerInstaller``
is the fourth.  ZCML users get them through ``<zasync:jobs />`` and
``<zasync:dispatcher />`` (``docs/zope.rst``).
"""
import signal
import threading

import zope.component
import zope.event

from zasync import dispatcher as zdispatcher
from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.queue import install_queues

__all__ = ['agent_installer', 'AgentInstaller', 'multidb_queue_installer',
           'queue_installer', 'QueueInstaller', 'restore_signal_handlers',
           'shutdown_dispatcher', 'signal_handlers',
           'threaded_dispatcher_installer', 'ThreadedDispatcherInstaller',
           'twisted_dispatcher_installer', 'TwistedDispatcherInstaller']

log = utils.events_log


# --------------------------------------------------------------------------
# Queues


class QueueInstaller:
    """Make sure ``root[KEY]`` holds the queues named in ``queues``.

    ``factory(conn, name)`` makes a queue.  With ``db_name``, the ``Queues``
    live in the root of that member of a multi-database (same key) and the
    main root refers to them.
    """

    def __init__(self, queues=('',), factory=None, db_name=None):
        if isinstance(queues, str):
            raise TypeError('queues must be a sequence of names')
        self.queues = tuple(queues)
        self.factory = factory
        self.db_name = db_name
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)

    def __repr__(self):
        return '<%s queues=%r db_name=%r>' % (
            type(self).__name__, self.queues, self.db_name)

    def __call__(self, ev):
        install_queues(ev.database, self.queues, self.factory, self.db_name)


queue_installer = QueueInstaller()
"""Installs the default queue in the main database."""

multidb_queue_installer = QueueInstaller(db_name='async')
"""Installs the default queue in the database named ``async``."""


# --------------------------------------------------------------------------
# Threaded dispatcher

def _select_reactor():
    from twisted.internet.selectreactor import SelectReactor
    return SelectReactor()


#: What the threaded dispatcher installer installed, as zc.async's tests
#: read it: ``id(dispatcher)`` -> ``{signal number: (the handler before,
#: the handler installed)}``.  A record, not the live state: the dispatcher
#: itself puts the previous handlers back when it shuts down
#: (``dispatcher.signal_handlers`` is what it still has to restore); the
#: entry goes when ``restore_signal_handlers``,
#: ``zasync.testing.tear_down_dispatcher`` or ``zasync.ftesting.tearDown``
#: is called for that dispatcher.
signal_handlers = {}


def _install_signal_handlers(dispatcher):
    """SIGINT / SIGTERM stop the dispatcher's reactor first, then do what
    they did before.  Only possible in the main thread."""
    handlers = utils.SignalHandlers()

    def stop_then_chain(signum, frame):
        dispatcher.shutdown(timeout=3)
        handlers.chain(signum, frame)

    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers.install(signum, stop_then_chain)
    if handlers.installed:
        dispatcher.signal_handlers = handlers
        signal_handlers[id(dispatcher)] = dict(handlers.installed)


def restore_signal_handlers(dispatcher):
    """Put the previous SIGINT / SIGTERM handlers back, where ours are
    still installed (a newer foreign handler stays), and drop the
    dispatcher's entry of ``signal_handlers``.  Outside the main thread
    nothing can be restored; both are kept for a later call."""
    handlers = dispatcher.signal_handlers
    if handlers is not None:
        if not handlers.restore():
            return
        dispatcher.signal_handlers = None
    signal_handlers.pop(id(dispatcher), None)


class ThreadedDispatcherInstaller:
    """Start a dispatcher, with its own reactor running in a daemon thread,
    when the database opens.

    ``db_name`` names the member of a multi-database that holds the queues
    (default: the database that opened).  The dispatcher is returned and
    registered (``zasync.dispatcher.get()``); its thread is
    ``dispatcher.thread``.  ``shutdown_dispatcher`` stops it.
    """

    def __init__(self, poll_interval=5, reactor_factory=_select_reactor,
                 uuid=None, db_name=None):
        self.poll_interval = poll_interval
        self.reactor_factory = reactor_factory
        self.uuid = uuid
        self.db_name = db_name
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)

    def __repr__(self):
        return '<%s poll_interval=%r db_name=%r>' % (
            type(self).__name__, self.poll_interval, self.db_name)

    def __call__(self, ev):
        existing = zdispatcher.get(self.uuid)
        if existing is not None:
            log.info('dispatcher %s is already installed', existing.UUID)
            return existing
        db = ev.database
        if self.db_name is not None:
            db = db.databases[self.db_name]
        reactor = self.reactor_factory()
        dispatcher = zdispatcher.Dispatcher(
            db, reactor, poll_interval=self.poll_interval, uuid=self.uuid)

        def run():
            try:
                dispatcher.activate()
                reactor.run(installSignalHandlers=False)
            except BaseException:
                log.critical('dispatcher %s: reactor thread failed',
                             dispatcher.UUID, exc_info=True)
                raise

        thread = threading.Thread(
            target=run, daemon=True,
            name='zasync dispatcher %s' % (dispatcher.UUID,))
        dispatcher.thread = thread
        thread.start()
        _install_signal_handlers(dispatcher)
        return dispatcher


threaded_dispatcher_installer = ThreadedDispatcherInstaller()


def shutdown_dispatcher(dispatcher, timeout=10):
    """Stop a dispatcher started by ``ThreadedDispatcherInstaller``:
    ``dispatcher.shutdown(timeout)``, which returns a list of problems
    (empty when everything stopped)."""
    return dispatcher.shutdown(timeout)


class TwistedDispatcherInstaller:
    """Make a dispatcher on the global Twisted reactor
    (``twisted.internet.reactor``) when the database opens; it activates
    (polling in the reactor's thread pool) once the application runs that
    reactor, and deactivates when the reactor shuts down.

    The dispatcher is returned and registered; no thread and no signal
    handler is started (the reactor is the application's).
    """

    def __init__(self, poll_interval=5, uuid=None, db_name=None):
        self.poll_interval = poll_interval
        self.uuid = uuid
        self.db_name = db_name
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)

    def __repr__(self):
        return '<%s poll_interval=%r db_name=%r>' % (
            type(self).__name__, self.poll_interval, self.db_name)

    def __call__(self, ev):
        existing = zdispatcher.get(self.uuid)
        if existing is not None:
            log.info('dispatcher %s is already installed', existing.UUID)
            return existing
        db = ev.database
        if self.db_name is not None:
            db = db.databases[self.db_name]
        dispatcher = zdispatcher.Dispatcher(
            db, poll_interval=self.poll_interval, uuid=self.uuid)
        dispatcher.activate(threaded=True)
        return dispatcher


twisted_dispatcher_installer = TwistedDispatcherInstaller()


# --------------------------------------------------------------------------
# Agents


class AgentInstaller:
    """Give each activated dispatcher an agent named ``agent_name`` in the
    queues named in ``queue_names`` (None: every queue)."""

    def __init__(self, agent_name, chooser=None, size=3, queue_names=None,
                 filter=None):
        if chooser is not None and filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self.agent_name = agent_name
        self.chooser = chooser
        self.filter = filter
        self.size = size
        if queue_names is not None:
            if isinstance(queue_names, str):
                raise TypeError('queue_names must be a sequence of names')
            queue_names = frozenset(queue_names)
        self.queue_names = queue_names
        zope.component.adapter(interfaces.IDispatcherActivated)(self)

    def __repr__(self):
        return '<%s %r size=%r>' % (
            type(self).__name__, self.agent_name, self.size)

    def __call__(self, ev):
        da = ev.object
        queue = da.parent
        name = getattr(queue, 'name', None)
        if self.queue_names is not None and name not in self.queue_names:
            return
        if self.agent_name in da:
            log.info('agent %r already in queue %r', self.agent_name, name)
            return
        da[self.agent_name] = Agent(self.chooser, self.filter, self.size)
        log.info('agent %r added to queue %r', self.agent_name, name)


agent_installer = AgentInstaller('main')
