"""A database for unit tests: a FileStorage in a temporary directory.

``DatabaseFixture`` is a mixin for ``unittest.TestCase`` classes (put it
first among the bases).  Its ``setUp`` gives a clean component registry,
``self.dir`` (a temporary directory), ``self.db`` (a FileStorage database
in it), and ``self.conn`` / ``self.root`` opened with ``self.tm``: a
transaction manager of its own, or the thread's global one where the class
sets ``global_transaction = True``.  With ``queues = True`` the database
gets the ``Queues`` and the default queue, ``self.queue``, committed.
``tearDown`` aborts, closes and removes everything again.

``DispatcherFixture`` adds a dispatcher on a test ``Reactor`` with real
worker threads (``self.dispatcher``, ``self.reactor``, ``self.uuid``) and
an agent ``main`` of ``agent_size`` threads (``self.agent``), the queues
installed.

``put_jobs(path, *calls)`` stores jobs in the default queue of the
FileStorage at ``path`` (made if need be), for tests of commands that open
it themselves.  ``assigner_uuid()`` is a context manager registering a
fresh instance UUID (the ``IUUID`` utility) for the jobs a test puts, so
that no ``uuid.txt`` is written in the current directory.
"""
import os
import shutil
import tempfile
import uuid

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils
import zope.component
import zope.component.testing

from zasync import interfaces

__all__ = ['DatabaseFixture', 'DispatcherFixture', 'assigner_uuid',
           'put_jobs']


class DatabaseFixture:

    #: give the database the ``Queues`` and the default queue
    queues = False
    #: open ``self.conn`` with the thread's global transaction manager
    global_transaction = False
    #: the name of the FileStorage file in ``self.dir``
    file_name = 'Data.fs'
    #: the database's ``class_factory`` (None: ZODB's)
    class_factory = None

    def setUp(self):
        super().setUp()
        zope.component.testing.setUp(self)
        self.dir = tempfile.mkdtemp(prefix='zasync-test-')
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, self.file_name)),
            class_factory=self.class_factory)
        if self.global_transaction:
            self.tm = transaction.manager
        else:
            self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.root = self.conn.root()
        if self.queues:
            from zasync.queue import Queue
            from zasync.queue import Queues
            queues = self.root[interfaces.KEY] = Queues()
            self.queue = queues[''] = Queue()
            self.tm.commit()

    def committed_root(self):
        """The database's root as committed now (a dict), read in a
        connection of its own."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            return dict(conn.root())
        finally:
            tm.abort()
            conn.close()

    def tearDown(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        zope.component.testing.tearDown(self)
        super().tearDown()


class assigner_uuid:
    """Register a fresh instance UUID while the ``with`` block runs (its
    value is ``.uuid``)."""

    def __enter__(self):
        self.uuid = uuid.uuid1()
        zope.component.provideUtility(self.uuid, interfaces.IUUID)
        return self

    def __exit__(self, *exc):
        zope.component.getGlobalSiteManager().unregisterUtility(
            self.uuid, interfaces.IUUID)


def put_jobs(path, *calls):
    """Put a job for each ``(callable, args...)`` of ``calls`` in the
    default queue of the FileStorage at ``path`` (installing the queues),
    commit and close it; return the jobs' ids."""
    from zasync.job import Job
    from zasync.queue import install_queues
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with assigner_uuid():
            install_queues(db)
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            queue = conn.root()[interfaces.KEY]['']
            jobs = [queue.put(Job(*call)) for call in calls]
            tm.commit()
            ids = [ZODB.utils.u64(job._p_oid) for job in jobs]
            conn.close()
    finally:
        db.close()
    return ids


class DispatcherFixture(DatabaseFixture):

    queues = True
    #: the size of the dispatcher's agent ``main``
    agent_size = 1

    def setUp(self):
        super().setUp()
        from zasync import testing
        from zasync.agent import Agent
        from zasync.dispatcher import Dispatcher
        self.uuid = uuid.uuid4()
        zope.component.provideUtility(self.uuid, interfaces.IUUID)
        self.reactor = testing.Reactor()
        self.dispatcher = Dispatcher(self.db, self.reactor, poll_interval=1)
        self.dispatcher.activate()
        self.reactor.start()
        testing.get_poll(self.dispatcher, 0)
        self.tm.begin()
        self.agent = self.queue.dispatchers[self.uuid]['main'] = Agent(
            size=self.agent_size)
        self.tm.commit()

    def tearDown(self):
        from zasync import dispatcher
        from zasync import testing
        try:
            testing.tear_down_dispatchers()
        finally:
            dispatcher.clear()
            super().tearDown()
