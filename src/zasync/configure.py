"""Set zasync up from Python, without ZCML (zc.async's ``configure``).

``minimal()`` and ``base()`` register the adapters and the utility that
``configure.zcml`` registers (use one or the other, not both: the
component registry would complain); ``start(db)`` installs the default
queue, a dispatcher and its ``'main'`` agent on ``db`` -- the set-up of
quick starts and tests.  See ``docs/porting.rst``.
"""
import types

import zope.component
import zope.event
import ZODB.interfaces

from zasync import adapters
from zasync import instanceuuid
from zasync import interfaces
from zasync import subscribers
from zasync.job import Job
from zasync.queue import getDefaultQueue

__all__ = ['base', 'minimal', 'start']

#: the callables that ``IJob(callable)`` turns into a job
CALLABLE_TYPES = (types.FunctionType, types.MethodType,
                  types.MethodWrapperType, types.BuiltinFunctionType)


def minimal():
    """Register the transaction-manager adapters (persistent object,
    connection), ``IJob`` adapters for functions, methods and builtins, and
    this process's ``IUUID`` utility.

    Enough when the registry already has a persistent object ->
    connection adapter (e.g. ``zope.keyreference``'s); else use ``base``.
    """
    zope.component.provideAdapter(adapters.transactionManager)
    zope.component.provideAdapter(adapters.connectionTransactionManager)
    for callable_type in CALLABLE_TYPES:
        zope.component.provideAdapter(
            Job, adapts=(callable_type,), provides=interfaces.IJob)
    zope.component.provideUtility(instanceuuid.getUUID(), interfaces.IUUID)


def base():
    """``minimal()`` and the persistent object -> connection adapter."""
    minimal()
    zope.component.provideAdapter(adapters.connectionOfPersistent)


def start(db, poll_interval=5, db_name=None, agent_chooser=None,
          agent_size=3, twisted=False):
    """Install a default queue (``''``) in ``db`` (or in its member
    ``db_name``), a dispatcher polling every ``poll_interval`` seconds and
    an agent ``'main'`` of ``agent_size`` threads (with ``agent_chooser``),
    as zc.async's ``start`` did; also register the ``IQueue`` adapters of
    persistent objects and connections.

    The dispatcher runs its own Twisted reactor in a daemon thread, or,
    with ``twisted=True``, uses the global reactor that the application
    runs.  It is ``zasync.dispatcher.get()``; stop it with
    ``zasync.testing.tear_down_dispatcher`` (tests) or its ``shutdown``.
    Returns None, as zc.async's did.
    """
    zope.component.provideAdapter(getDefaultQueue)
    zope.component.provideAdapter(
        getDefaultQueue, adapts=(ZODB.interfaces.IConnection,))
    zope.component.provideHandler(
        subscribers.QueueInstaller(db_name=db_name))
    if twisted:
        installer = subscribers.TwistedDispatcherInstaller(
            poll_interval=poll_interval)
    else:
        installer = subscribers.ThreadedDispatcherInstaller(
            poll_interval=poll_interval)
    zope.component.provideHandler(installer)
    zope.component.provideHandler(
        subscribers.AgentInstaller('main', chooser=agent_chooser,
                                   size=agent_size))
    zope.event.notify(interfaces.DatabaseOpened(db))
