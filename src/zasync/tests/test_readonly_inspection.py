"""``zasync status``, ``jobs``, ``job ID`` and ``stats`` never write,
never start a dispatcher and never run a job, whatever ``--zope-conf`` or
``--zodb`` they are given: beside a real ``zasync worker`` holding a
FileStorage, with a zope.conf whose site ZCML includes ``single.zcml``
(which starts a threaded dispatcher when a database opens), on ZEO, on a
multi-database.  Proven on the storage itself: its last transaction, and
the size and modification time of every file beside it, are the same
before and after.
"""
import json
import os
import shutil
import signal
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage

from zasync import interfaces
from zasync.job import Job
from zasync.queue import install_queues
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import WorkersTestCase
from zasync.testing.processes import run_command
from zasync.testing.waiters import wait
from zasync.tests import jobs
from zasync.testing.fixtures import assigner_uuid
from zasync.testing.fixtures import put_jobs

EVENTLOG = ('<eventlog>\n  <logfile>\n    path STDERR\n  </logfile>\n'
            '</eventlog>\n')

SINGLE = ('<configure xmlns="http://namespaces.zope.org/zope">\n'
          '  <include package="zasync" file="single.zcml"/>\n'
          '</configure>\n')

#: a worker that stays quiet once it runs (no poll, no ping for an hour)
QUIET = ['--poll-interval', '3600', '--ping-interval', '3600',
         '--death-interval', '7200']


def job_id(job):
    return str(int.from_bytes(job._p_oid, 'big'))


def read(path, func):
    """``func(root)`` on the FileStorage ``path`` opened read-only (beside
    a worker holding it, too)."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            return func(conn.root())
        finally:
            tm.abort()
            conn.close()
    finally:
        db.close()


def last_transaction(path):
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    try:
        return storage.lastTransaction()
    finally:
        storage.close()


def files(directory):
    """Every file in ``directory``: name -> (size, modification time)."""
    found = {}
    for name in sorted(os.listdir(directory)):
        info = os.stat(os.path.join(directory, name))
        found[name] = (info.st_size, info.st_mtime_ns)
    return found


class FileStorageTestCase(unittest.TestCase):
    """The database in ``db/`` of a temporary directory (the files beside
    it are compared); zope.conf, site ZCML, logs and UUID files beside
    ``db/``."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zasync-test-readonly-')
        self.db_directory = os.path.join(self.directory, 'db')
        os.mkdir(self.db_directory)
        self.path = os.path.join(self.db_directory, 'Data.fs')
        self.uri = 'file://' + self.path

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.directory, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def zope_conf(self, databases=None, site=SINGLE):
        """A zope.conf for the database, whose site ZCML includes
        ``single.zcml`` (a threaded dispatcher when a database opens)."""
        self.write('site.zcml', site)
        return self.write(
            'zope.conf', 'site-definition site.zcml\n' + EVENTLOG + (
                databases or '<zodb>\n  <filestorage>\n    path %s\n'
                '  </filestorage>\n</zodb>\n' % self.path))

    def put(self, *calls, path=None):
        """Put a job for each ``(callable, args...)`` in the default queue
        of the FileStorage (installing the queues); return their ids (as
        the command line takes them)."""
        return [str(i) for i in put_jobs(path or self.path, *calls)]

    def state(self):
        return last_transaction(self.path), files(self.db_directory)

    def inspect(self, *args):
        """Run ``zasync ARGS``: it must succeed; return its output."""
        result = run_command(*args, cwd=self.directory, ZASYNC_UUID=None)
        self.assertEqual((result.returncode, result.stderr), (0, ''),
                         result.stdout)
        return result.stdout

    def inspect_all(self, database_args, pending_id):
        """Every inspection command, each twice (table and JSON)."""
        outputs = {}
        for command in (['status'], ['jobs'], ['stats'],
                        ['job', pending_id]):
            for extra in [], ['--json']:
                outputs[' '.join(command + extra)] = self.inspect(
                    *(command + list(database_args) + extra))
        return outputs

    def status_of(self, id):
        def status(root):
            return root._p_jar.get(int(id).to_bytes(8, 'big')).status
        return read(self.path, status)

    def dispatchers(self):
        return read(self.path, lambda root: sorted(
            str(uuid) for uuid in root[interfaces.KEY][''].dispatchers))


class BesideARunningWorkerTests(FileStorageTestCase):

    def test_status_jobs_job_stats_change_nothing(self):
        [done] = self.put((jobs.add, 40, 2))
        # A real worker runs the first job ...
        worker = WorkerProcess(self.uri, 'worker', self.directory,
                               QUIET + ['--agent', 'main:1'])
        worker.start()
        try:
            wait(lambda: self.status_of(done) == interfaces.COMPLETED or None,
                 30, lambda: 'the worker did not run the job; its log ends '
                 'with:\n%s' % worker.log_tail())
            worker.terminate()
            self.assertEqual(worker.wait(), 0)
            # ... then holds the database with an agent that claims
            # nothing: a pending job any other dispatcher would run.
            [pending] = self.put((jobs.add, 1, 2))
            worker.options = QUIET + ['--agent', 'main:0']
            worker.start()
            worker.wait_for_log('worker %s running' % worker.uuid, count=2)
            # Frozen, so that its own pings cannot change the file between
            # the two looks; it still holds the FileStorage's lock.
            worker.signal(signal.SIGSTOP)
            before = self.state()
            conf = self.zope_conf()
            out = self.inspect_all(['--zope-conf', conf], pending)
            out.update(self.inspect_all(['--zodb', self.uri], pending))
            self.assertEqual(self.state(), before)
            worker.signal(signal.SIGCONT)
        finally:
            worker.stop()
        self.assertEqual(worker.process.returncode, 0, worker.log_tail())
        self.assertEqual(self.status_of(pending), interfaces.PENDING)
        self.assertEqual(self.status_of(done), interfaces.COMPLETED)
        self.assertEqual(self.dispatchers(), [str(worker.uuid)])
        # What they showed: the worker alive, the two jobs.
        [queue] = json.loads(out['status --json'])['queues']
        self.assertEqual([(record['uuid'], record['state'])
                          for record in queue['dispatchers']],
                         [(str(worker.uuid), 'alive')])
        listed = {str(row['id']): row['status']
                  for row in json.loads(out['jobs --json'])}
        self.assertEqual(listed, {done: 'completed', pending: 'pending'})
        self.assertEqual(json.loads(out['job %s --json' % pending])['status'],
                         'pending')
        self.assertEqual(json.loads(out['stats --json'])['jobs']['pending'],
                         1)


class ZopeConfTests(FileStorageTestCase):
    """No worker: the inspection process could write, and a dispatcher
    started by ``single.zcml`` in it would run the pending jobs."""

    def test_single_zcml_starts_nothing(self):
        ids = self.put(*[(jobs.add, 40, i) for i in range(5)])
        before = self.state()
        conf = self.zope_conf()
        out = self.inspect_all(['--zope-conf', conf], ids[0])
        self.assertEqual(self.state(), before)
        self.assertEqual([self.status_of(id) for id in ids],
                         [interfaces.PENDING] * 5)
        self.assertEqual(self.dispatchers(), [])
        self.assertEqual(out['status'], "queue '': 5 pending\n"
                         "no dispatcher has served this queue yet\n")
        # Nothing beside the zope.conf either (no uuid.txt, no log).
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ['db', 'site.zcml', 'zope.conf'])

    def test_a_missing_filestorage_is_not_created(self):
        conf = self.zope_conf()
        for command in 'status', 'jobs', 'stats':
            for args, where in [(['--zope-conf', conf],
                                 ' (the main database of %s)' % conf),
                                (['--zodb', self.uri], '')]:
                result = run_command(command, *args, cwd=self.directory,
                                     ZASYNC_UUID=None)
                self.assertEqual(
                    (result.returncode, result.stdout, result.stderr),
                    (1, '', 'zasync %s: error: no database at %s%s\n'
                     % (command, self.path, where)))
        self.assertEqual(os.listdir(self.db_directory), [])

    def test_a_site_definition_that_does_not_load_is_not_read(self):
        # Inspection reads the <zodb> sections only.
        [pending] = self.put((jobs.add, 1, 2))
        conf = self.zope_conf(site='<configure\n')
        before = self.state()
        out = self.inspect('jobs', '--zope-conf', conf, '--json')
        self.assertEqual([row['status'] for row in json.loads(out)],
                         ['pending'])
        self.assertEqual(self.state(), before)

    def test_multi_database(self):
        other = os.path.join(self.db_directory, 'async.fs')
        databases = {}
        main = ZODB.DB(ZODB.FileStorage.FileStorage(self.path),
                       databases=databases, database_name='')
        ZODB.DB(ZODB.FileStorage.FileStorage(other), databases=databases,
                database_name='async')
        try:
            with assigner_uuid():
                install_queues(main, db_name='async')
                tm = transaction.TransactionManager()
                conn = main.open(transaction_manager=tm)
                job = conn.root()[interfaces.KEY][''].put(
                    Job(jobs.add, 1, 2))
                tm.commit()
                pending = job_id(job)
                conn.close()
        finally:
            for db in databases.values():
                db.close()
        conf = self.zope_conf(
            '<zodb>\n  <filestorage>\n    path %s\n  </filestorage>\n'
            '</zodb>\n<zodb async>\n  <filestorage>\n    path %s\n'
            '  </filestorage>\n</zodb>\n' % (self.path, other))
        before = self.state(), last_transaction(other)
        out = {command: self.inspect(command, '--zope-conf', conf)
               for command in ('status', 'jobs', 'stats')}
        self.assertEqual((self.state(), last_transaction(other)), before)
        self.assertEqual(out['status'], "queue '': 1 pending\n"
                         "no dispatcher has served this queue yet\n")
        # (a job of the member database: its oid @ the database's name)
        self.assertEqual(out['jobs'].splitlines()[1].split()[:3],
                         [pending + '@async', 'pending', 'pending'])

    def test_zconfig_uri(self):
        # zodburi's zconfig:// names a ZODB configuration file: its storage
        # is opened read-only too -- here beside a process holding it.
        [pending] = self.put((jobs.add, 1, 2))
        conf = self.write('db.conf', '<zodb main>\n  <filestorage>\n'
                          '    path %s\n  </filestorage>\n</zodb>\n'
                          % self.path)
        before = self.state()
        holder = ZODB.FileStorage.FileStorage(self.path)   # (the lock)
        try:
            out = self.inspect('jobs', '--zodb', 'zconfig://' + conf,
                               '--json')
        finally:
            holder.close()
        self.assertEqual([row['status'] for row in json.loads(out)],
                         ['pending'])
        self.assertEqual(last_transaction(self.path), before[0])


class ZEOTests(WorkersTestCase):
    """A ``<zeoclient>`` in the zope.conf is a read-only client."""

    def test_single_zcml_on_zeo_starts_nothing(self):
        install_queues(self.db)
        self.tm.begin()
        queue = self.conn.root()[interfaces.KEY]['']
        with assigner_uuid():
            pending = [queue.put(Job(jobs.add, 40, i)) for i in range(3)]
        self.tm.commit()
        with open(os.path.join(self.directory, 'site.zcml'), 'w') as f:
            f.write(SINGLE)
        conf = os.path.join(self.directory, 'zope.conf')
        with open(conf, 'w') as f:
            f.write('site-definition site.zcml\n' + EVENTLOG +
                    '<zodb>\n  <zeoclient>\n    server %s:%s\n'
                    '  </zeoclient>\n</zodb>\n' % self.server.address)

        def last():
            db = self.server.db()
            try:
                return db.storage.lastTransaction()
            finally:
                db.close()

        before = last(), os.path.getsize(self.server.path)
        for command in (['status'], ['jobs'], ['stats'],
                        ['job', job_id(pending[0])]):
            result = run_command(*command, '--zope-conf', conf,
                                 cwd=self.directory, ZASYNC_UUID=None)
            self.assertEqual((result.returncode, result.stderr), (0, ''),
                             result.stdout)
        self.assertEqual((last(), os.path.getsize(self.server.path)),
                         before)
        self.tm.begin()
        self.assertEqual([job.status for job in pending],
                         [interfaces.PENDING] * 3)
        self.assertEqual(list(queue.dispatchers), [])
