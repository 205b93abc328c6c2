"""Background threads that work on a site of a ZODB.

``BackgroundWorkerThread`` runs units of work until ``scheduleNextWork()``
returns False.  Each unit gets a fresh connection, the site loaded from it
and set as the component site, and an interaction (for ``user_name`` when
the site's ``IAuthentication`` knows that id).  ``doWork()`` runs in one
transaction, ``doCleanup()`` in a second one -- also when ``doWork()``
failed.  Both transactions carry the user and a note naming the thread.
Errors are logged and the thread goes on with the next unit.

The thread holds no persistent object between units of work: only the
database, the site's oid and names, so it can outlive the request that
started it.
"""
import logging
import threading

import transaction
import zope.component
import zope.interface
import zope.security.interfaces
import zope.security.management
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.component.hooks import getSite
from zope.component.hooks import setSite

from zasync import interfaces
from zasync.runner import RunnerParticipation

__all__ = ['BackgroundWorkerThread']

log = logging.getLogger('zasync.background')


@zope.interface.implementer(interfaces.IBackgroundWorkerThread)
class BackgroundWorkerThread(threading.Thread):
    """A thread with ZODB access and a local site, in units of work.

    Override ``scheduleNextWork`` (wait for work; return False to stop),
    ``doWork`` and, if needed, ``doCleanup``.  The class attributes below
    are ``%``-templates with ``thread_name``, ``class_name``, ``site_name``
    and ``user_name``; subclasses may change them.
    """

    description = ('background worker thread (%(class_name)s) for site '
                   '%(site_name)s, user %(user_name)s')
    work_transaction_note = '%(thread_name)s'
    cleanup_transaction_note = '%(thread_name)s: cleanup'

    log = log  # subclasses may use their own logger

    def __init__(self, site_db, site_oid, site_name, user_name, daemon=True):
        self.site_db = site_db
        self.site_oid = site_oid
        self.site_name = site_name
        self.user_name = user_name
        super().__init__(name=self._format(self.description))
        self.daemon = daemon

    @classmethod
    def forSite(cls, site, user_name, daemon=True, **kw):
        """A thread for the persistent ``site`` (which must be committed).

        Extra keyword arguments go to the constructor of the subclass.
        """
        jar = getattr(site, '_p_jar', None)
        if jar is None or site._p_oid is None:
            raise ValueError(
                '%r is not stored in a database yet: add it and commit '
                'before starting a background thread for it' % (site,))
        return cls(jar.db(), site._p_oid, getattr(site, '__name__', None),
                   user_name, daemon=daemon, **kw)

    def _format(self, template, **extra):
        values = dict(class_name=type(self).__name__,
                      site_name=self.site_name, user_name=self.user_name)
        values.update(extra)
        return template % values

    def getTransactionNote(self):
        """The note of the work transactions (shown by ZODB browsers)."""
        return self._format(self.work_transaction_note,
                            thread_name=self.name)

    def getCleanupNote(self):
        """The note of the cleanup transactions."""
        return self._format(self.cleanup_transaction_note,
                            thread_name=self.name)

    def getSite(self, connection):
        """The site, loaded from ``connection``."""
        return connection.get(self.site_oid)

    def getParticipations(self):
        """The participations of a unit of work's interaction: the
        principal ``user_name`` when the current site can look it up,
        otherwise none."""
        auth = zope.component.queryUtility(IAuthentication)
        if auth is None or self.user_name is None:
            return ()
        try:
            principal = auth.getPrincipal(self.user_name)
        except PrincipalLookupError:
            self.log.debug('%s: no principal %r; working without one',
                           self.name, self.user_name)
            return ()
        return (RunnerParticipation(principal),)

    # -- the thread -------------------------------------------------------

    def run(self):
        try:
            while self.scheduleNextWork():
                self.runUnitOfWork()
        except Exception:
            self.log.exception('Error in %s; thread terminated', self.name)

    def runUnitOfWork(self):
        """Do one unit of work: connection, site, interaction, ``doWork``
        and ``doCleanup`` in their own transactions.  Errors are logged."""
        tm = transaction.manager     # this thread's own manager
        tm.abort()
        conn = self.site_db.open()
        try:
            old_site = getSite()
            try:
                setSite(self.getSite(conn))
                zope.security.management.newInteraction(
                    *self.getParticipations())
                try:
                    try:
                        self._in_transaction(self.doWork,
                                             self.getTransactionNote())
                    except Exception:
                        # Logged while the connection is open: reprs in the
                        # traceback may need it.
                        self.log.exception('Error in %s', self.name)
                    finally:
                        try:
                            self._in_transaction(self.doCleanup,
                                                 self.getCleanupNote())
                        except Exception:
                            self.log.exception('Error in the cleanup of %s',
                                               self.name)
                finally:
                    zope.security.management.endInteraction()
            except Exception:
                self.log.exception('Error setting up the work of %s',
                                   self.name)
            finally:
                setSite(old_site)
        finally:
            tm.abort()
            conn.close()

    def _in_transaction(self, call, note):
        tm = transaction.manager
        txn = tm.begin()
        if self.user_name:
            txn.setUser(self.user_name)
        txn.note(note)
        try:
            call()
            tm.commit()
        except BaseException:
            tm.abort()
            raise

    # -- to override ------------------------------------------------------

    def scheduleNextWork(self):
        """Wait until there is work; True to go on, False to end the thread.

        The default ends the thread at once: override it.
        """
        return False

    def doWork(self):
        """Do the work (with a connection, the site and an interaction)."""

    def doCleanup(self):
        """Clean up after ``doWork``, also after it failed, in a separate
        transaction and with the site still set."""
