"""A database for unit tests: a FileStorage in a temporary directory.

``DatabaseFixture`` is a mixin for ``unittest.TestCase`` classes (put it
first among the bases).  Its ``setUp`` gives a clean component registry,
``self.dir`` (a temporary directory), ``self.db`` (a FileStorage database
in it), and ``self.conn`` / ``self.root`` opened with ``self.tm``: a
transaction manager of its own, or the thread's global one where the class
sets ``global_transaction = True``.  With ``queues = True`` the database
gets the ``Queues`` and the default queue, ``self.queue``, committed.
``tearDown`` aborts, closes and removes everything again.
"""
import os
import shutil
import tempfile

import transaction
import ZODB
import ZODB.FileStorage
import zope.component.testing

from zasync import interfaces

__all__ = ['DatabaseFixture']


class DatabaseFixture:

    #: give the database the ``Queues`` and the default queue
    queues = False
    #: open ``self.conn`` with the thread's global transaction manager
    global_transaction = False
    #: the name of the FileStorage file in ``self.dir``
    file_name = 'Data.fs'

    def setUp(self):
        super().setUp()
        zope.component.testing.setUp(self)
        self.dir = tempfile.mkdtemp(prefix='zasync-test-')
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, self.file_name)))
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

    def tearDown(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        zope.component.testing.tearDown(self)
        super().tearDown()
