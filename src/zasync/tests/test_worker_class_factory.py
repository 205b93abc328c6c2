"""``zasync worker --zope-conf`` opens every database of the zope.conf with
``zasync.job.tolerant_class_factory``, as ``--zodb`` opens its one: a job
of a module that fails at import (not only one that is missing) loads as
a broken placeholder, to be held as unloadable, instead of making the
records that refer to it unreadable.

Real FileStorages (a main database and a member ``async`` holding the
queues, as with ``multidb.zcml``) and a real zope.conf in a temporary
directory, opened in this process; the worker's dispatcher itself is
replaced by a stand-in that reads the jobs through the databases it is
given.
"""
import importlib
import logging
import operator
import os
import shutil
import sys
import tempfile
import unittest
import unittest.mock
import uuid

import transaction
import ZODB
import ZODB.broken
import ZODB.FileStorage
import zope.component.testing

from zasync import instanceuuid
from zasync import interfaces
from zasync.cli import common
from zasync.cli import worker as cli_worker
from zasync.job import broken_global
from zasync.job import load_problem
from zasync.job import tolerant_class_factory
from zasync.queue import install_queues
from zasync.testing.fixtures import assigner_uuid

CODE = '''
import zasync.job


class ReportJob(zasync.job.Job):
    pass
'''

BROKEN = 'raise RuntimeError("the database driver is missing")\n'


def own_class_factory(connection, module, name):
    """A class factory a zope.conf names (``class-factory``)."""
    return ZODB.broken.find_global(module, name)


def filestorage_section(name, path, extra=''):
    return ('<zodb%s>\n%s  <filestorage>\n    path %s\n  </filestorage>\n'
            '</zodb>\n' % (' ' + name if name else '', extra, path))


class ZopeConfClassFactoryTests(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp(self)
        self.directory = tempfile.mkdtemp(prefix='zasync-test-wcf-')
        self.module_name = 'zasync_wcf_%s' % uuid.uuid4().hex[:12]
        self.module_path = self.path(self.module_name + '.py')
        sys.path.insert(0, self.directory)
        self.write(self.module_path, CODE)
        importlib.invalidate_caches()
        self.module = importlib.import_module(self.module_name)
        self.main, self.other = self.path('main.fs'), self.path('async.fs')
        self.make_databases()
        self.write(self.path('site.zcml'), '<configure/>\n')
        self.conf = self.zope_conf()
        self.opened = []
        root = logging.getLogger()
        self.logging = (list(root.handlers), root.level,
                        logging.getLogger('zasync.trace').level)

    def tearDown(self):
        for db in self.opened:
            common.close_databases(db)
        instanceuuid.reset()
        # (the zope.conf's eventlog configured the root logger)
        root = logging.getLogger()
        handlers, level, trace_level = self.logging
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger('zasync.trace').setLevel(trace_level)
        sys.modules.pop(self.module_name, None)
        sys.path.remove(self.directory)
        for key in list(ZODB.broken.broken_cache):
            if key[0] == self.module_name:
                del ZODB.broken.broken_cache[key]
        shutil.rmtree(self.directory, ignore_errors=True)
        zope.component.testing.tearDown(self)

    # -- set-up -------------------------------------------------------------

    def path(self, *names):
        return os.path.join(self.directory, *names)

    def write(self, path, text):
        with open(path, 'w') as f:
            f.write(text)
        return path

    def zope_conf(self, extra=''):
        """A zope.conf of both databases, logging to a file."""
        return self.write(self.path('zope.conf'),
                          'site-definition site.zcml\n'
                          '<eventlog>\n  <logfile>\n    path %s\n'
                          '  </logfile>\n</eventlog>\n'
                          % self.path('event.log')
                          + filestorage_section('', self.main, extra)
                          + filestorage_section('async', self.other, extra))

    def open_plain(self):
        """Both databases with ZODB's own class factory."""
        databases = {}
        main = ZODB.DB(ZODB.FileStorage.FileStorage(self.main),
                       databases=databases, database_name='')
        ZODB.DB(ZODB.FileStorage.FileStorage(self.other),
                databases=databases, database_name='async')
        return main

    def make_databases(self):
        """A ``ReportJob`` in the root of each database, and one in the
        default queue (in ``async``)."""
        main = self.open_plain()
        try:
            with assigner_uuid():
                install_queues(main, db_name='async')
                tm = transaction.TransactionManager()
                conn = main.open(transaction_manager=tm)
                conn.root()['job'] = self.module.ReportJob(operator.add, 1, 2)
                conn.get_connection('async').root()['job'] = (
                    self.module.ReportJob(operator.add, 3, 4))
                conn.root()[interfaces.KEY][''].put(
                    self.module.ReportJob(operator.add, 5, 6))
                tm.commit()
                conn.close()
        finally:
            common.close_databases(main)

    def break_module(self):
        """The module now fails at import (a missing dependency)."""
        self.write(self.module_path, BROKEN)
        sys.modules.pop(self.module_name, None)
        importlib.invalidate_caches()

    def read_jobs(self, db):
        """The jobs in the roots of both databases and in the queue, read
        in a connection of ``db`` (a placeholder class stands for a class
        that cannot be imported)."""
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            main_job = conn.root()['job']
            async_job = conn.get_connection('async').root()['job']
            queued = list(conn.root()[interfaces.KEY][''])
            for job in [main_job, async_job] + queued:
                job._p_activate()
            problems = [str(load_problem(job)) for job in queued]
            return [main_job, async_job] + queued, problems
        finally:
            tm.abort()
            conn.close()

    # -- the tests ----------------------------------------------------------

    def test_zodb_s_own_class_factory_cannot_read_them(self):
        # (what the tests below are about: without the tolerant factory)
        self.break_module()
        db = self.open_plain()
        self.opened.append(db)
        with self.assertRaises(Exception) as caught:
            self.read_jobs(db)
        error, messages = caught.exception, []
        while error is not None:
            messages.append('%s: %s' % (type(error).__name__, error))
            error = error.__cause__ or error.__context__
        self.assertIn('RuntimeError: the database driver is missing',
                      messages)

    def test_every_database_has_the_tolerant_class_factory(self):
        db = common.open_zope_conf(self.conf, worker=True)
        self.opened.append(db)
        self.assertEqual(sorted(db.databases), ['', 'async'])
        for name, member in sorted(db.databases.items()):
            self.assertIs(member.classFactory, tolerant_class_factory, name)

    def test_a_job_of_a_module_failing_at_import_is_a_placeholder(self):
        self.break_module()
        db = common.open_zope_conf(self.conf, worker=True)
        self.opened.append(db)
        jobs, problems = self.read_jobs(db)
        self.assertEqual(len(jobs), 3)
        for job in jobs:
            self.assertIsInstance(job, ZODB.broken.Broken)
            self.assertEqual(broken_global(job),
                             (self.module_name, 'ReportJob'))
        [problem] = problems
        self.assertIn('its class %s.ReportJob cannot be imported: '
                      'RuntimeError: the database driver is missing'
                      % self.module_name, problem)

    def test_the_worker_command_uses_them(self):
        seen = {}

        class StandIn:
            """In place of ``zasync.worker.Worker``: reads the jobs
            through the databases ``zasync worker`` opened."""

            def __init__(self, db, uuid, agents, **kw):
                self.db = db
                self.dispatcher = self

            def run(stand_in):
                seen['factories'] = {
                    name: member.classFactory
                    for name, member in stand_in.db.databases.items()}
                seen['jobs'], _ = self.read_jobs(stand_in.db)
                return 0

            def join(self, timeout):
                return []

        self.break_module()
        parser = common.ArgumentParser(prog='zasync worker')
        cli_worker.configure_parser(parser)
        args = parser.parse_args(['--zope-conf', self.conf, '--uuid-file',
                                  self.path('w.uuid')])
        with unittest.mock.patch.object(cli_worker, 'Worker', StandIn):
            self.assertEqual(cli_worker.run(args), 0)
        self.assertEqual(seen['factories'],
                         {'': tolerant_class_factory,
                          'async': tolerant_class_factory})
        self.assertEqual([broken_global(job) for job in seen['jobs']],
                         [(self.module_name, 'ReportJob')] * 3)

    def test_a_class_factory_of_the_zope_conf_is_kept(self):
        conf = self.zope_conf(
            '  class-factory %s.own_class_factory\n' % __name__)
        db = common.open_zope_conf(conf, worker=True)
        self.opened.append(db)
        for name, member in sorted(db.databases.items()):
            self.assertIs(member.classFactory, own_class_factory, name)
