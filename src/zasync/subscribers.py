"""Installers: event subscribers that set zasync up when a database opens.

* ``QueueInstaller`` puts the ``Queues`` mapping and its queues in the
  database (``IDatabaseOpenedEvent``).
* ``ThreadedDispatcherInstaller`` starts a dispatcher with its own Twisted
  reactor in a daemon thread (``IDatabaseOpenedEvent``).
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

from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.queue import Queue
from zasync.queue import Queues

log = utils.events_log


def _default_queue_factory(conn, name):
    return Queue()


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
        self.factory = factory or _default_queue_factory
        self.db_name = db_name
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)

    def __repr__(self):
        return '<%s queues=%r db_name=%r>' % (
            type(self).__name__, self.queues, self.db_name)

    def __call__(self, ev):
        with utils.private_connection(ev.database) as conn:
            tm = conn.transaction_manager
            queues, created = utils.install_in_root(
                conn, interfaces.KEY, Queues, self.db_name)
            if created:
                zope.event.notify(interfaces.ObjectAdded(
                    queues, conn.root(), interfaces.KEY))
            tm.commit()
            if created:
                log.info('queues collection added')
            for name in self.queues:
                if name not in queues:
                    queue = self.factory(conn, name)
                    queues[name] = queue
                    zope.event.notify(
                        interfaces.ObjectAdded(queue, queues, name))
                    tm.commit()
                    log.info('queue %r added', name)


queue_installer = QueueInstaller()
"""Installs the default queue in the main database."""

multidb_queue_installer = QueueInstaller(db_name='async')
"""Installs the default queue in the database named ``async``."""


# --------------------------------------------------------------------------
# Threaded dispatcher

signal_handlers = {}
"""``id(dispatcher) -> {signal number: (previous handler, ours)}``."""


def _select_reactor():
    from twisted.internet.selectreactor import SelectReactor
    return SelectReactor()


def _stop_reactor(dispatcher, timeout=3):
    reactor = dispatcher.reactor
    try:
        reactor.callFromThread(reactor.stop)
    except Exception:  # already stopped
        log.debug('stopping the reactor failed', exc_info=True)
    thread = dispatcher.thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def _install_signal_handlers(dispatcher):
    """SIGINT / SIGTERM stop the dispatcher's reactor first, then do what
    they did before.  Only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    installed = {}

    def on_sigint(signum, frame):
        _stop_reactor(dispatcher)
        previous = installed[signal.SIGINT][0]
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt()

    def on_sigterm(signum, frame):
        _stop_reactor(dispatcher)
        previous = installed[signal.SIGTERM][0]
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise SystemExit()

    for signum, handler in ((signal.SIGINT, on_sigint),
                            (signal.SIGTERM, on_sigterm)):
        previous = signal.getsignal(signum)
        if previous is None:   # set outside Python: we cannot chain to it
            continue
        installed[signum] = (previous, handler)
        signal.signal(signum, handler)
    signal_handlers[id(dispatcher)] = installed


def restore_signal_handlers(dispatcher):
    """Put the previous SIGINT / SIGTERM handlers back, where ours are
    still installed (a newer foreign handler stays)."""
    installed = signal_handlers.pop(id(dispatcher), None)
    if not installed:
        return
    if threading.current_thread() is not threading.main_thread():
        signal_handlers[id(dispatcher)] = installed   # try again later
        return
    for signum, (previous, ours) in installed.items():
        if signal.getsignal(signum) is ours:
            signal.signal(signum, previous)


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
        from zasync import dispatcher as zdispatcher
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
    """Stop a dispatcher started by ``ThreadedDispatcherInstaller``.

    Stops its reactor (which deactivates it: its jobs go back to the
    queues), waits for its threads, restores the signal handlers, releases
    the reactor's file descriptors and unregisters it.  Returns a list of
    problems (empty when everything stopped).
    """
    from zasync import dispatcher as zdispatcher
    problems = []
    reactor = dispatcher.reactor
    _stop_reactor(dispatcher, timeout)
    thread = dispatcher.thread
    if thread is not None and thread.is_alive():
        problems.append('Dispatcher (%s, %s) failed to stop.'
                        % (thread.name, dispatcher.UUID))
    else:
        for pool_thread in dispatcher.join(timeout):
            problems.append('Job in thread %r failed to stop.'
                            % (pool_thread.name,))
        _release_reactor(reactor)
    restore_signal_handlers(dispatcher)
    if zdispatcher.get(dispatcher.UUID) is dispatcher:
        zdispatcher.pop(dispatcher.UUID)
    return problems


def _release_reactor(reactor):
    """Close the descriptors a stopped Twisted reactor keeps (its waker)."""
    waker = getattr(reactor, 'waker', None)
    if waker is None:
        return
    try:
        reactor.removeReader(waker)
    except Exception:
        pass
    try:
        waker.connectionLost(None)
    except Exception:
        log.debug('closing the reactor waker failed', exc_info=True)
    reactor.waker = None


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
