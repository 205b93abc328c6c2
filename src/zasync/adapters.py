"""Small adapters registered by ``configure.zcml``.

(The persistent object -> connection adapter, ``connectionOfPersistent``,
is left to the application, e.g. ``zope.keyreference``'s, to avoid
conflicting registrations; ``zasync.configure.base()`` registers it.)
"""
import persistent.interfaces
import transaction.interfaces
import zope.component
import zope.interface
import ZODB.interfaces

from zasync import interfaces
from zasync import utils
from zasync.queue import getDefaultQueue

__all__ = ['connectionDefaultQueue', 'connectionOfPersistent',
           'connectionTransactionManager', 'defaultQueueAdapter',
           'transactionManager']

#: zc.async's older name of ``zasync.queue.getDefaultQueue``
defaultQueueAdapter = getDefaultQueue


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(ZODB.interfaces.IConnection)
def connectionOfPersistent(obj):
    """The connection of a persistent object (or of its ``__parent__``);
    None if it is in none."""
    return utils.connection(obj)


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(transaction.interfaces.ITransactionManager)
def transactionManager(obj):
    """The transaction manager of a persistent object's connection."""
    conn = utils.connection(obj)
    if conn is None:
        return None
    return conn.transaction_manager


@zope.component.adapter(ZODB.interfaces.IConnection)
@zope.interface.implementer(transaction.interfaces.ITransactionManager)
def connectionTransactionManager(conn):
    """The transaction manager of a connection."""
    return conn.transaction_manager


@zope.component.adapter(ZODB.interfaces.IConnection)
@zope.interface.implementer(interfaces.IQueue)
def connectionDefaultQueue(conn):
    """The default queue (``''``) of the database of a connection."""
    return conn.root()[interfaces.KEY]['']
