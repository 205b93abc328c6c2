"""Shared fixtures of the Zope-integration tests (not a test module)."""
import os
import shutil
import tempfile
import threading
import unittest
import uuid

import persistent
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
import zope.component.hooks
import zope.component.testing
import zope.configuration.xmlconfig
import zope.interface
import zope.security.management

import zasync
import zasync.dispatcher
from zasync import interfaces
from zasync import subscribers
from zasync import testing


class StubSite(persistent.Persistent):
    """A persistent component site using the global registry."""

    __name__ = 'stub-site'
    __parent__ = None

    def __init__(self, name='stub-site'):
        self.__name__ = name

    def getSiteManager(self):
        return zope.component.getGlobalSiteManager()

    def __repr__(self):
        return '<StubSite %s>' % self.__name__


zope.interface.classImplements(
    StubSite, zope.component.interfaces.ISite)


class ZopeTestCase(unittest.TestCase):
    """A clean registry, a temp dir as cwd, FileStorage databases."""

    def setUp(self):
        zope.component.testing.setUp()
        self.dir = tempfile.mkdtemp(prefix='zasync-test-zope-')
        self._old_cwd = os.getcwd()
        os.chdir(self.dir)
        self._threads = set(threading.enumerate())
        self.dbs = []
        self.conns = []
        self.dispatchers = []

    def tearDown(self):
        try:
            for dispatcher in self.dispatchers:
                problems = subscribers.shutdown_dispatcher(dispatcher)
                self.assertEqual(problems, [])
            testing.tear_down_dispatchers()
        finally:
            zope.security.management.endInteraction()
            zope.component.hooks.setSite(None)
            for conn in self.conns:
                conn.transaction_manager.abort()
                conn.close()
            transaction.abort()
            for db in self.dbs:
                db.close()
            os.chdir(self._old_cwd)
            shutil.rmtree(self.dir, ignore_errors=True)
            zasync.dispatcher.clear()
            zope.component.testing.tearDown()
        leaked = [t for t in threading.enumerate()
                  if t not in self._threads and t.is_alive()]
        self.assertEqual(leaked, [], 'threads left running')

    def load_zcml(self, name='configure.zcml'):
        zope.configuration.xmlconfig.file(name, zasync)
        # a fresh identity for each test's dispatcher
        zope.component.provideUtility(uuid.uuid4(), interfaces.IUUID)

    def open_db(self, name='main.fs', databases=None, database_name=None):
        kw = {}
        if databases is not None:
            kw = dict(databases=databases, database_name=database_name)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, name)), **kw)
        self.dbs.append(db)
        return db

    def open_multidb(self):
        databases = {}
        main = self.open_db('main.fs', databases, '')
        self.open_db('async.fs', databases, 'async')
        return main

    def connect(self, db):
        conn = db.open(transaction_manager=transaction.TransactionManager())
        self.conns.append(conn)
        return conn
