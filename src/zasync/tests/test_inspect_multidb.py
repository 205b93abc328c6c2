"""Job ids in a multi-database: the queues live in the member ``async`` (as
with ``multidb.zcml``) and so do the jobs put there, while the main
database holds other objects -- other jobs among them -- under the same
oids.  A job of the main database is named by its oid (``19``), a job of
another database by its oid and that database's name (``19@async``):
``zasync jobs`` prints those ids, ``zasync job`` and the commands that act
on a job (``cancel``, ``retry``, ``fail``, ``remove``, ``requeue``) take
them back, and a bad one is a one-line error.  The inspection commands
write nothing to either database.

The functions of ``zasync.inspection`` on ``MappingStorage`` members; the
real command functions (``zasync.cli.main``, in this process) on
FileStorages in a temporary directory, opened by a zope.conf.
"""
import logging
import operator
import os
import shutil
import tempfile
import unittest

import persistent.list
import persistent.mapping
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage
import ZODB.utils

from zasync import inspection
from zasync import interfaces
from zasync.agent import Agent
from zasync.job import Job
from zasync.queue import install_queues
from zasync.retry import NeverRetry
from zasync.testing.fixtures import assigner_uuid
from zasync.testing.processes import run_main
from zasync.tests.test_readonly_inspection import last_transaction

EVENTLOG = ('<eventlog>\n  <logfile>\n    path STDERR\n  </logfile>\n'
            '</eventlog>\n')


def number(obj):
    return ZODB.utils.u64(obj._p_oid)


def multi_database(main_storage, async_storage):
    """The main database ``''`` and its member ``async``; return the
    main one."""
    databases = {}
    main = ZODB.DB(main_storage, databases=databases, database_name='')
    ZODB.DB(async_storage, databases=databases, database_name='async')
    return main


def close_all(db):
    for member in list(db.databases.values()):
        member.close()


class quiet_job_failures:
    """Keep the log record of the job that fails on purpose off stderr."""

    def __enter__(self):
        self.logger = logging.getLogger('zasync')
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def populate(main):
    """In the multi-database of ``main``: the queues in ``async``; there,
    ``ok`` (succeeded) and ``bad`` (failed) completed in agent ``main`` of
    a stopped dispatcher, ``p1``, ``p2`` (with a callback) and ``p3``
    pending.  In the main database, under the oid of ``p1``, ``stray``: a
    job of the main database put in the same queue (pending too); under
    the oids of the others, jobs that are in no queue (decoys, calling
    ``operator.neg()``), all in the list ``root['kept']``.  Return
    ``{name: oid}`` (and the oids of p2's callback and of the list)."""
    with assigner_uuid() as assigner, quiet_job_failures():
        install_queues(main, db_name='async')
        tm = transaction.TransactionManager()
        conn = main.open(transaction_manager=tm)
        try:
            queue = conn.root()[interfaces.KEY]['']
            record = queue.dispatchers.register(assigner.uuid)
            record.activate()
            agent = record['main'] = Agent(size=1)
            ok = queue.put(Job(operator.mul, 6, 7))
            bad = queue.put(Job(operator.truediv, 1, 0),
                            retry_policy_factory=NeverRetry)
            tm.commit()
            for i in range(2):
                job = agent.claimJob()
                tm.commit()
                job()
            tm.begin()
            record.deactivate()
            p1 = queue.put(Job(operator.add, 1, 2))
            p2 = queue.put(Job(operator.add, 3, 4))
            p2.addCallback(Job(operator.pos))
            p3 = queue.put(Job(operator.add, 5, 6))
            tm.commit()
            jobs = {'ok': ok, 'bad': bad, 'p1': p1, 'p2': p2, 'p3': p3}
            assert {job._p_jar.db().database_name
                    for job in jobs.values()} == {'async'}
            # The main database: a job under each oid up to theirs.
            kept = persistent.list.PersistentList()
            conn.root()['kept'] = kept
            tm.commit()
            targets = {number(job): name for name, job in jobs.items()}
            decoys = {}
            for i in range(10000):
                if len(decoys) == len(targets):
                    break
                decoy = Job(operator.neg)
                conn.add(decoy)
                kept.append(decoy)
                name = targets.get(number(decoy))
                if name is not None:
                    decoys[name] = decoy
            tm.commit()
            stray = queue.put(decoys['p1'])
            tm.commit()
            assert stray._p_jar is conn and number(stray) == number(p1)
            oids = {name: number(job) for name, job in jobs.items()}
            oids['callback'] = number(p2.callbacks[0])
            oids['kept'] = number(kept)
            return oids
        finally:
            tm.abort()
            conn.close()


# --------------------------------------------------------------------------
# zasync.inspection


class InspectionTests(unittest.TestCase):

    def setUp(self):
        self.main = multi_database(ZODB.MappingStorage.MappingStorage(),
                                   ZODB.MappingStorage.MappingStorage())
        self.oids = populate(self.main)
        self.tm = transaction.TransactionManager()
        self.conn = self.main.open(transaction_manager=self.tm)
        self.root = self.conn.root()
        self.other = self.conn.get_connection('async')

    def tearDown(self):
        self.tm.abort()
        self.conn.close()
        close_all(self.main)

    def member(self, name):
        return self.other.get(ZODB.utils.p64(self.oids[name]))

    def test_a_job_is_named_by_its_oid_and_database(self):
        p1 = self.member('p1')
        stray = self.conn.get(p1._p_oid)
        self.assertEqual(inspection.job_address(p1),
                         (self.oids['p1'], 'async'))
        self.assertEqual(inspection.job_address(stray),
                         (self.oids['p1'], ''))
        # A job of the main database: its oid; of another one: oid@name.
        self.assertEqual(inspection.job_name(stray, ''), self.oids['p1'])
        self.assertEqual(inspection.job_name(p1, ''),
                         '%d@async' % self.oids['p1'])
        # The main database is the one given, ...
        self.assertEqual(inspection.job_name(p1, 'async'), self.oids['p1'])
        self.assertEqual(inspection.job_name(stray, 'async'),
                         '%d@' % self.oids['p1'])
        # ... else the first member of the multi-database.
        self.assertEqual(inspection.job_name(p1),
                         '%d@async' % self.oids['p1'])
        self.assertEqual(inspection.job_name(stray), self.oids['p1'])

    def test_load_job_reads_the_database_the_id_names(self):
        p1 = self.oids['p1']
        self.assertIs(inspection.load_job(self.conn, '%d@async' % p1),
                      self.member('p1'))
        stray = inspection.load_job(self.conn, str(p1))
        self.assertEqual(stray._p_jar.db().database_name, '')
        self.assertEqual(inspection.call_text(stray), '_operator.neg()')
        # '@' with no name: the database named '' (here the main one).
        self.assertIs(inspection.load_job(self.conn, '%d@' % p1), stray)
        self.assertIs(inspection.load_job(self.conn, ' %d@async ' % p1),
                      self.member('p1'))
        # From a connection to the member, a plain id is the member's.
        self.assertIs(inspection.load_job(self.other, str(p1)),
                      self.member('p1'))

    def test_bad_ids(self):
        p2, kept = self.oids['p2'], self.oids['kept']
        for text, error, message in [
                ('x', ValueError, "job ids are whole numbers, not 'x'"),
                ('-1', ValueError, "job ids are whole numbers, not '-1'"),
                ('x@async', ValueError,
                 "job ids are whole numbers, or NUMBER@DATABASE for a job "
                 "of another database than the main one, not 'x@async'"),
                ('@async', ValueError,
                 "job ids are whole numbers, or NUMBER@DATABASE for a job "
                 "of another database than the main one, not '@async'"),
                ('-4@async', ValueError,
                 "job ids are whole numbers, or NUMBER@DATABASE for a job "
                 "of another database than the main one, not '-4@async'"),
                ('%d@nope' % p2, LookupError,
                 "no database named 'nope' (there are: '', 'async')"),
                ('999999@async', LookupError, 'no job with id 999999@async'),
                ('0@async', LookupError, 'object 0@async is not a job (it '
                 'is a persistent.mapping.PersistentMapping)'),
                # Not a job in the main database: say how ids name the
                # jobs of the others.
                (str(kept), LookupError,
                 'object %d is not a job (it is a persistent.list.'
                 'PersistentList; a job of another database has its name '
                 'after the number: %d@async)' % (kept, kept)),
                ('999999', LookupError,
                 'no job with id 999999 in the main database (a job of '
                 'another database has its name after the number: '
                 '999999@async)'),
        ]:
            with self.assertRaises(error, msg=text) as caught:
                inspection.load_job(self.conn, text)
            self.assertEqual(str(caught.exception), message)

    def test_listing_and_details_use_the_ids_load_job_takes(self):
        found = list(inspection.iter_jobs(self.root))
        ids = [f.summary()['id'] for f in found]
        oids = self.oids
        # Pending in claim order (the stray job of the main database too:
        # same oid as p1, another job), then completed, newest first.
        self.assertEqual(ids, ['%d@async' % oids['p1'], '%d@async'
                               % oids['p2'], '%d@async' % oids['p3'],
                               oids['p1'], '%d@async' % oids['bad'],
                               '%d@async' % oids['ok']])
        for f, id in zip(found, ids):
            job = inspection.load_job(self.conn, str(id))
            self.assertIs(job, f.job)
            info = inspection.job_details(job, self.root)
            self.assertEqual(info['id'], id)
            self.assertEqual(info['call'], f.summary()['call'])
        details = inspection.job_details(self.member('p2'), self.root)
        self.assertEqual([cb['id'] for cb in details['callbacks']],
                         ['%d@async' % oids['callback']])
        self.assertEqual(
            inspection.locate(self.member('ok'), self.root).summary()['id'],
            '%d@async' % oids['ok'])

    def test_status_names_the_jobs_agents_hold(self):
        queue = self.root[interfaces.KEY]['']
        record, = queue.dispatchers.values()
        record.activate()
        held = record['main'].claimJob()
        self.assertIs(held, self.member('p1'))
        agent, = inspection.status_info(self.root, None)[0]['dispatchers'][
            0]['agents']
        self.assertEqual(agent['jobs'], ['%d@async' % self.oids['p1']])


# --------------------------------------------------------------------------
# The commands


class CommandTests(unittest.TestCase):
    """``main.fs`` and ``async.fs`` in a temporary directory, and a
    zope.conf naming them (the main database first, as ``''``)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='zasync-test-inspect-multidb-')
        self.main_fs = self.path('main.fs')
        self.async_fs = self.path('async.fs')
        main = multi_database(ZODB.FileStorage.FileStorage(self.main_fs),
                              ZODB.FileStorage.FileStorage(self.async_fs))
        try:
            self.oids = populate(main)
        finally:
            close_all(main)
        with open(self.path('site.zcml'), 'w') as f:
            f.write('<configure/>\n')
        self.conf = self.path('zope.conf')
        with open(self.conf, 'w') as f:
            f.write('site-definition site.zcml\n' + EVENTLOG + ''.join(
                '<zodb%s>\n  <filestorage>\n    path %s\n  </filestorage>\n'
                '</zodb>\n' % (name, path)
                for name, path in [('', self.main_fs),
                                   (' async', self.async_fs)]))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def id(self, name, database='async'):
        return '%d@%s' % (self.oids[name], database)

    def zasync(self, *args):
        return run_main(*args)

    def ok(self, *args):
        status, out, err = self.zasync(*args)
        self.assertEqual((status, err), (0, ''), (args, out))
        return out

    def test_web_to_manage_names_a_member_it_is_not_given(self):
        # (read only it did already; to manage, it served pages that broke)
        before = self.state()
        self.assertEqual(
            self.error('web', '--manage', '--zodb', 'file://' + self.main_fs,
                       '--listen', '127.0.0.1:0'),
            "zasync web: error: the database refers to a member database "
            "named 'async', which is not configured (--zodb opens one "
            "database: use --zope-conf, with a <zodb async> section)")
        self.assertEqual(self.state()[:2], before[:2])

    def error(self, *args):
        """The error line of a command that fails with exit status 1."""
        status, out, err = self.zasync(*args)
        self.assertEqual((status, out), (1, ''), (args, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        return err.rstrip('\n')

    def state(self):
        """The last transaction and the files of both databases."""
        files = {}
        for name in sorted(os.listdir(self.dir)):
            if name.endswith('.fs') or '.fs.' in name:
                info = os.stat(self.path(name))
                files[name] = (info.st_size, info.st_mtime_ns)
        return (last_transaction(self.main_fs),
                last_transaction(self.async_fs), files)

    def read(self, func):
        """``func(main connection)`` on the multi-database, read-only."""
        main = multi_database(
            ZODB.FileStorage.FileStorage(self.main_fs, read_only=True),
            ZODB.FileStorage.FileStorage(self.async_fs, read_only=True))
        try:
            tm = transaction.TransactionManager()
            conn = main.open(transaction_manager=tm)
            try:
                return func(conn)
            finally:
                tm.abort()
                conn.close()
        finally:
            close_all(main)

    def queued(self):
        """What the queue holds: ``(id, call)`` in claim order."""
        def queued(conn):
            queue = conn.root()[interfaces.KEY]['']
            return [(inspection.job_name(job, ''),
                     inspection.call_text(job)) for job in queue]
        return self.read(queued)

    def test_every_id_jobs_prints_is_the_job_job_shows(self):
        before = self.state()
        table = self.ok('jobs', '--zope-conf', self.conf).splitlines()
        listed = [line.split()[0] for line in table[1:]]
        self.assertEqual(listed, [
            self.id('p1'), self.id('p2'), self.id('p3'),
            str(self.oids['p1']), self.id('bad'), self.id('ok')])
        import json
        rows = json.loads(self.ok('jobs', '--zope-conf', self.conf,
                                  '--json'))
        self.assertEqual([str(row['id']) for row in rows], listed)
        for row in rows:
            info = json.loads(self.ok('job', '--zope-conf', self.conf,
                                      str(row['id']), '--json'))
            self.assertEqual((info['id'], info['call'], info['status']),
                             (row['id'], row['call'], row['status']))
            text = self.ok('job', '--zope-conf', self.conf, str(row['id']))
            self.assertEqual(text.splitlines()[0],
                             'job:          %s' % (row['id'],))
        p2 = json.loads(self.ok('job', '--zope-conf', self.conf,
                                self.id('p2'), '--json'))
        self.assertEqual([cb['id'] for cb in p2['callbacks']],
                         [self.id('callback')])
        self.assertEqual(self.state(), before)   # nothing written

    def test_a_plain_id_is_the_main_databases(self):
        out = self.ok('job', '--zope-conf', self.conf, str(self.oids['p3']))
        self.assertIn('call:         _operator.neg()', out)
        self.assertIn('where:        callback or inner job', out)
        out = self.ok('job', '--zope-conf', self.conf, self.id('p3'))
        self.assertIn('call:         _operator.add(5, 6)', out)
        self.assertIn("queue:        ''", out)
        self.assertEqual(self.ok('job', '--zope-conf', self.conf,
                                 self.id('p3', '')),
                         self.ok('job', '--zope-conf', self.conf,
                                 str(self.oids['p3'])))

    def test_bad_ids_are_one_line_errors(self):
        before = self.state()
        p2 = self.oids['p2']
        for id, message in [
                ('x', "job ids are whole numbers, not 'x'"),
                ('x@async', "job ids are whole numbers, or NUMBER@DATABASE "
                 "for a job of another database than the main one, not "
                 "'x@async'"),
                ('%d@nope' % p2,
                 "no database named 'nope' (there are: '', 'async')"),
                ('999999@async', 'no job with id 999999@async'),
                ('0@async', 'object 0@async is not a job (it is a '
                 'persistent.mapping.PersistentMapping)'),
                ('999999', 'no job with id 999999 in the main database (a '
                 'job of another database has its name after the number: '
                 '999999@async)'),
        ]:
            self.assertEqual(self.error('job', '--zope-conf', self.conf, id),
                             'zasync job: error: ' + message)
        self.assertEqual(self.state(), before)

    def test_zodb_opens_one_database(self):
        before = self.state()
        p3 = self.oids['p3']
        # The main database alone refers to a member it does not have.
        self.assertEqual(
            self.error('job', '--zodb', 'file://' + self.main_fs,
                       self.id('p3')),
            "zasync job: error: the database refers to a member database "
            "named 'async', which is not configured (--zodb opens one "
            "database: use --zope-conf, with a <zodb async> section)")
        # The member alone is a database of its own: its name is the URI's
        # (zodburi's default: 'unnamed'), and a plain id is its own.
        uri = 'file://' + self.async_fs
        self.assertIn('_operator.add(5, 6)',
                      self.ok('job', '--zodb', uri, str(p3)))
        self.assertEqual(
            self.error('job', '--zodb', uri, self.id('p3')),
            "zasync job: error: no database named 'async' (there are: "
            "'unnamed')")
        named = uri + '?database_name=async'
        self.assertIn('_operator.add(5, 6)',
                      self.ok('job', '--zodb', named, self.id('p3')))
        # (Alone, it cannot read the job of the main database in its
        # queue; its own jobs are named by their oids.)
        listed = [line.split()[0] for line in self.ok(
            'jobs', '--zodb', named, '--callable', '*.truediv').splitlines()]
        self.assertEqual(listed, ['ID', str(self.oids['bad'])])
        self.assertEqual(self.state(), before)

    # -- the commands that act on a job --------------------------------

    def test_remove_fail_and_cancel_take_the_ids_jobs_prints(self):
        oids = self.oids
        self.assertEqual(
            self.ok('remove', '--zope-conf', self.conf, self.id('p1')),
            "job %s: removed from queue ''\n" % self.id('p1'))
        # A plain id: the job of the main database, with the same oid.
        self.assertEqual(
            self.ok('remove', '--zope-conf', self.conf, str(oids['p1'])),
            "job %d: removed from queue ''\n" % oids['p1'])
        self.assertEqual(self.queued(), [
            (self.id('p2'), '_operator.add(3, 4)'),
            (self.id('p3'), '_operator.add(5, 6)')])
        out = self.ok('fail', '--zope-conf', self.conf, self.id('p2'),
                      '--reason', 'not wanted')
        self.assertRegex(out, r"^job %s: out of queue ''; job \d+@async "
                         r"fails it with AbortedError\('not wanted'\)\n$"
                         % self.id('p2'))
        wrapper = out.split('; job ')[1].split()[0]
        self.assertIn('call:         zasync.job.Job', self.ok(
            'job', '--zope-conf', self.conf, wrapper))
        self.assertEqual(
            self.ok('cancel', '--zope-conf', self.conf, self.id('p3')),
            'job %s: cancelled; it does not run, and fails with '
            'CancelledError\n' % self.id('p3'))

        def decoys(conn):
            return [inspection.call_text(conn.get(ZODB.utils.p64(oids[n])))
                    for n in ('p2', 'p3')]
        # The main database's jobs with the same oids are untouched.
        self.assertEqual(self.read(decoys), ['_operator.neg()'] * 2)

    def test_retry_prints_an_id_that_job_takes(self):
        out = self.ok('retry', '--zope-conf', self.conf, self.id('bad'))
        self.assertRegex(out, r"^job %s: retried as job \d+@async in queue "
                         r"''\n$" % self.id('bad'))
        new = out.split(' as job ')[1].split()[0]
        details = self.ok('job', '--zope-conf', self.conf, new)
        self.assertIn('call:         _operator.truediv(1, 0)', details)
        self.assertIn('status:       pending', details)
        self.assertIn((new, '_operator.truediv(1, 0)'), self.queued())

    def test_errors_of_the_commands_that_act_are_one_line(self):
        before = self.state()
        p2 = self.oids['p2']
        for args, message in [
                (('remove', '%d@nope' % p2),
                 "no database named 'nope' (there are: '', 'async')"),
                (('cancel', 'x@async'),
                 "job ids are whole numbers, or NUMBER@DATABASE for a job "
                 "of another database than the main one, not 'x@async'"),
                (('requeue', '999999@async'), 'no job with id 999999@async'),
                (('fail', '0@async', '--reason', 'r'),
                 'object 0@async is not a job (it is a '
                 'persistent.mapping.PersistentMapping)'),
                (('retry', self.id('p2')), 'job %s has not failed: only '
                 'failed jobs are retried' % self.id('p2')),
                (('remove', str(p2)), 'job %d is new, not pending or held: '
                 'nothing to do' % p2),
                (('requeue', self.id('p2')), 'job %s is pending, not held: '
                 'nothing to requeue' % self.id('p2')),
        ]:
            command = args[0]
            self.assertEqual(
                self.error(command, '--zope-conf', self.conf, *args[1:]),
                'zasync %s: error: %s' % (command, message))
        self.assertEqual(
            self.error('remove', '--zodb', 'file://' + self.main_fs,
                       self.id('p2')),
            "zasync remove: error: the database refers to a member database "
            "named 'async', which is not configured (--zodb opens one "
            "database: use --zope-conf, with a <zodb async> section)")
        self.assertEqual(self.state()[:2], before[:2])   # nothing committed
