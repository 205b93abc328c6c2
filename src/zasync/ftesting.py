"""A real threaded dispatcher for functional tests.

In a functional test layer (a real database, an application configured
*without* ``<zasync:dispatcher />``)::

    dispatcher = zasync.ftesting.setUp(db=db)
    ...   # put jobs, wait with zasync.testing.wait_for_result
    zasync.ftesting.tearDown()

``setUp`` installs the queues and the job container, registers the agent
installer, starts a ``ThreadedDispatcherInstaller(poll_interval=0.1)``
dispatcher and waits until it polled the default queue.  ``tearDown`` stops
it and everything it started (reactor thread, worker threads, signal
handlers, the reactor's descriptors), and raises
``zasync.testing.TearDownDispatcherError`` naming what did not stop.

Use a FileStorage (not a DemoStorage wrapper the dispatcher cannot see).
"""
import logging
import sys

import zope.component

from zasync import dispatcher as zdispatcher
from zasync import interfaces
from zasync import manager
from zasync import subscribers
from zasync import testing

__all__ = ['setUp', 'tearDown']

_state = {}


def _caller_db(depth):
    frame = sys._getframe(depth + 1)
    get_root_folder = frame.f_globals.get('getRootFolder')
    if get_root_folder is None:
        raise ValueError('pass db or connection (no getRootFolder in the '
                         'caller\'s globals)')
    return get_root_folder()._p_jar.db()


def setUp(connection=None, db=None,
          queue_installer=subscribers.queue_installer,
          job_container_installer=manager.job_container_installer,
          dispatcher_installer=None,
          agent_installer=subscribers.agent_installer,
          log_file=sys.stdout, log_level=logging.CRITICAL, seconds=10):
    """Start a real dispatcher on ``db`` (or ``connection``'s database, or
    the database of ``getRootFolder()`` in the caller's globals); return
    it."""
    if _state:
        raise RuntimeError('ftesting.setUp called twice without tearDown')
    if db is None:
        db = connection.db() if connection is not None else _caller_db(1)
    if dispatcher_installer is None:
        dispatcher_installer = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.1)
    gsm = zope.component.getGlobalSiteManager()
    registered = any(r.handler is agent_installer
                     for r in gsm.registeredHandlers())
    if agent_installer is not None and not registered:
        gsm.registerHandler(agent_installer,
                            (interfaces.IDispatcherActivated,))
        _state['agent_installer'] = agent_installer
    event = interfaces.DatabaseOpened(db)
    if queue_installer is not None:
        queue_installer(event)
    if job_container_installer is not None:
        job_container_installer(event)
    dispatcher = dispatcher_installer(event)
    _state['dispatcher'] = dispatcher
    try:
        poll = testing.get_poll(dispatcher, 0, seconds=seconds)
        while '' not in poll:
            poll = testing.get_poll(dispatcher, seconds=seconds)
        assert dispatcher.activated, 'the dispatcher is not activated'
    except BaseException:
        tearDown()
        raise
    if log_file is not None:
        handler = logging.StreamHandler(log_file)
        handler.setLevel(log_level)
        logging.getLogger('zasync').addHandler(handler)
        _state['log_handler'] = handler
    return dispatcher


def tearDown(timeout=10):
    """Stop what ``setUp`` started -- without a ``setUp``, the registered
    dispatcher (``zasync.dispatcher.get()``, e.g. one that
    ``<zasync:dispatcher />`` or ``zasync.configure.start`` made), as
    zc.async's did -- and put back the signal handlers installed for it;
    drop the ``zasync.subscribers.signal_handlers`` entries of dispatchers
    that no longer run; raise ``TearDownDispatcherError`` if something did
    not stop."""
    dispatcher = _state.pop('dispatcher', None)
    if dispatcher is None:
        dispatcher = zdispatcher.get()
    agent_installer = _state.pop('agent_installer', None)
    handler = _state.pop('log_handler', None)
    _state.clear()
    if handler is not None:
        logging.getLogger('zasync').removeHandler(handler)
    if agent_installer is not None:
        zope.component.getGlobalSiteManager().unregisterHandler(
            agent_installer, (interfaces.IDispatcherActivated,))
    try:
        if dispatcher is not None:
            testing.tear_down_dispatcher(dispatcher, timeout)
    finally:
        # The signal-handler records of dispatchers that are gone (a
        # dispatcher that a signal stopped put its handlers back itself).
        running = {id(d) for d in zdispatcher.registered()}
        for key in list(subscribers.signal_handlers):
            if key not in running:
                del subscribers.signal_handlers[key]
