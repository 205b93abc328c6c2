"""``zasync migrate`` on a zc.async multi-database: the queues and jobs in
the member database ``async``, the application in the main one, references
across the two both ways.

The input: derived from the real single-database fixture
----------------------------------------------------------

There is no Python 2 multi-database fixture, and this Python 3 checkout
cannot run zc.async to write one.  The conversion reads Python 2 pickles,
so the input must be Python 2 pickle data; of the two honest ways (derive
a pair from the single-database fixture written by zc.async 1.5.4 on
CPython 2.7, or hand-build one with a Python 2 compatible pickler) this
module takes the first: ``derive_multidb`` splits a copy of the fixture's
``Data.fs`` into ``Data.fs`` and ``async.fs`` the way zc.async's
multi-database installer and ZODB 3 placed objects, and writes them as
ZODB 3 on Python 2 would have:

- the records are the fixture's own bytes -- the protocol 1 pickles
  cPickle wrote, ``str`` as ``SHORT_BINSTRING``, every class and every
  value as it was -- except that a reference to an object now in the other
  database becomes the cross-database reference ZODB 3 pickles,
  ``['m', (database name, oid, class)]``; it is spliced in opcode by
  opcode (``references``: the reference's ``(oid, class)`` tuple is kept
  as it is, memo entries included, inside the list), so nothing is pickled
  again on Python 3;
- every object keeps its oid: the application objects (everything
  reachable from ``root['fixture']`` without entering a ``zc.async`` object)
  stay in the main database, named ``''`` as Zope's ``<zodb>`` without a
  name is (``zope.app.appsetup.multi_database``), so the jobs' references to
  them read ``['m', ('', oid, class)]``; the ``Queues`` and everything else
  reachable from them (queues, agents, jobs, callbacks, persistent results,
  and 4 unreferenced zc.queue buckets zc.async left behind) move to
  ``async``;
- ``root['zc.async']`` of the main database refers across to the
  ``Queues``, which are ``root['zc.async']`` of ``async`` too (where the
  installer put them);
- the fixture's application never referred to a job, so one record is
  added in the main database, in the same protocol 1 form, for an
  application object that does: a ``PersistentMapping``
  (``root['fixture-jobs']``, the next free oid) holding three jobs by
  label, a pending one, a pending method of an application object, and
  a failed one (``APP_JOBS``); the two roots are the only other records
  whose bytes change;
- both files get FileStorage's Python 2 magic, ``FS21``, again; the
  current records are written in one transaction per file (the history
  of 186 transactions is not kept: the migration reads current records).

The tests then convert the pair with ``--file Data.fs --file
async=async.fs`` (the main database's name found in the references) and
with ``--zope-conf``, open the outputs as a ``ZODB.DB`` multi-database
and follow the references both ways, and run a real ``zasync worker``
process on them (``--zope-conf`` naming both databases, each served by
a ZEO server so that the test watches): it rescues the dead dispatcher's
job and runs the pending jobs to what zc.async's own reference run gives
(``compare_with_reference``, job by job).

``derive_multidb(..., class_free=oids)`` writes the references of some
records across databases the way ZODB 3 did for a class with
``__getnewargs__``, without the class (``['n', (name, oid)]``), which
zodbupdate 3.0 alone pickles again as an ``'m'`` reference ZODB cannot
load; ``MultiOidTests`` checks the repair on a Python 3 record.
"""
import io
import json
import os
import pickletools
import shutil
import sys
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils
from ZODB.Connection import TransactionMetaData

from zasync import interfaces
from zasync.failure import Failure
from zasync.tests.test_migrate import compare_with_reference
from zasync.tests.test_migrate import copy_fixture
from zasync.tests.test_migrate import expected
from zasync.tests.test_migrate import fixture_dir
from zasync.tests.test_migrate import importable_jobs
from zasync.tests.test_migrate import load_json
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import run_command
from zasync.testing.processes import wait_until
from zasync.testing.servers import ZEOServer

#: the jobs ``root['fixture-jobs']`` refers to: label -> oid
APP_JOBS = {'pending-add': 370, 'pending-method-callable': 376,
            'done-failed': 83}
ASYNC = 'async'
MAIN = ''
QUEUES_CLASS = 'zc.async.queue Queues'

# --------------------------------------------------------------------------
# The test-only tool: a zc.async multi-database from the fixture

_PUTS = ('BINPUT', 'LONG_BINPUT', 'PUT')
_GETS = ('BINGET', 'LONG_BINGET', 'GET')
_STRINGS = ('SHORT_BINSTRING', 'BINSTRING')


def _ops(data):
    """The opcodes of a record's two pickles: ``(opcode, arg, position)``
    (positions in ``data``)."""
    result = []
    start = 0
    while start < len(data):
        ops = list(pickletools.genops(io.BytesIO(data[start:])))
        result.extend((op, arg, pos + start) for op, arg, pos in ops)
        start += ops[-1][2] + 1
    return result


class Reference:
    """A reference ``(oid, class)`` in a record: ``mark`` and ``end`` are
    the positions of its tuple's MARK and TUPLE opcodes."""

    def __init__(self, oid, klass, mark, end):
        self.oid, self.klass, self.mark, self.end = oid, klass, mark, end


def _value(op, arg, memo):
    if op.name in _STRINGS:
        return arg.encode('latin-1')
    if op.name == 'GLOBAL':
        return ('global', arg)
    if op.name in _GETS:
        return memo[arg]
    return None


def references(data):
    """The references of a ZODB 3 record (cPickle protocol 1: one memo for
    both pickles).  Anything but the ``(oid, class)`` tuples ZODB 3 writes
    for same-database references is refused."""
    ops = _ops(data)
    memo, marks, refs = {}, [], []
    previous = last_mark = None
    for index, (op, arg, pos) in enumerate(ops):
        if op.name == 'MARK':
            marks.append(pos)
        elif pickletools.markobject in op.stack_before:
            last_mark = marks.pop()
        if op.name in _PUTS:
            memo[arg] = previous
            continue
        if op.name == 'BINPERSID':
            end = ops[index - 1]
            if end[0].name != 'TUPLE':
                raise ValueError('not an (oid, class) reference at %d' % pos)
            values = [_value(o, a, memo) for o, a, p in ops
                      if last_mark < p < end[2] and o.name not in _PUTS]
            oid, klass = values
            if not (isinstance(oid, bytes) and len(oid) == 8
                    and klass[0] == 'global'):
                raise ValueError('not an (oid, class) reference: %r'
                                 % (values,))
            refs.append(Reference(ZODB.utils.u64(oid), klass[1], last_mark,
                                  end[2]))
        previous = _value(op, arg, memo) if op.name not in _GETS else (
            memo.get(arg))
    return refs


def _short(text):
    data = text.encode('utf-8') if isinstance(text, str) else text
    assert len(data) < 256
    return b'U' + bytes([len(data)]) + data


def cross_reference(data, ref, database):
    """``data`` with the reference ``ref`` made a cross-database reference
    to ``database``: ``(oid, class)`` -> ``['m', (database, oid, class)]``
    (EMPTY_LIST MARK 'm' MARK database ... TUPLE APPENDS), the tuple's own
    opcodes kept."""
    return (data[:ref.mark] + b'](' + _short('m') + b'(' + _short(database)
            + data[ref.mark + 1:ref.end + 1] + b'e' + data[ref.end + 1:])


def class_free_cross_reference(data, ref, database):
    """``data`` with ``ref`` made the cross-database reference ZODB 3
    wrote when the class has ``__getnewargs__``: ``['n', (database,
    oid)]`` (the class's opcodes kept for the memo, then POPped)."""
    return (data[:ref.mark] + b'](' + _short('n') + b'(' + _short(database)
            + data[ref.mark + 1:ref.end] + b'0te' + data[ref.end + 1:])


def _global(dotted):
    return b'c' + dotted.replace(' ', '\n').encode('ascii') + b'\n'


def _reference_bytes(oid, klass, database=None):
    inner = b'(' + _short(ZODB.utils.p64(oid)) + _global(klass) + b't'
    if database is None:
        return inner + b'Q'
    return b'](' + _short('m') + b'(' + _short(database) + inner[1:] + b'eQ'


def _mapping_record(items):
    """A ``PersistentMapping`` record as ZODB 3 wrote one (protocol 1):
    ``items`` are ``(key, reference bytes)``."""
    body = b''.join(_short(key) + ref for key, ref in items)
    data = b'}q\x04' + (b'(' + body + b'u' if len(items) > 1 else body
                        + b's')
    return (_global('persistent.mapping PersistentMapping') + b'q\x01.'
            + b'}q\x02' + _short('data') + b'q\x03' + data + b's.')


def _records(path):
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    try:
        result = {}
        next_oid = None
        while True:
            oid, tid, data, next_oid = storage.record_iternext(next_oid)
            result[ZODB.utils.u64(oid)] = storage.load(oid)[0]
            if next_oid is None:
                return result
    finally:
        storage.close()


def _reachable(start, graph, stop):
    seen, todo = set(), [start]
    while todo:
        oid = todo.pop()
        if oid not in seen:
            seen.add(oid)
            todo.extend(ref.oid for ref in graph[oid]
                        if ref.oid not in seen and not stop(ref))
    return seen


def _write(path, records, note):
    storage = ZODB.FileStorage.FileStorage(path, create=True)
    try:
        txn = TransactionMetaData(description=note)
        storage.tpc_begin(txn)
        for oid, data in sorted(records.items()):
            storage.store(ZODB.utils.p64(oid), ZODB.utils.z64, data, '', txn)
        storage.tpc_vote(txn)
        storage.tpc_finish(txn)
    finally:
        storage.close()
    for suffix in ('.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    with open(path, 'r+b') as f:
        f.write(b'FS21')


def derive_multidb(directory, class_free=()):
    """Write ``Data.fs`` (main, ``''``) and ``async.fs`` (``async``) in
    ``directory`` from the fixture (see the module's documentation); the
    records of the oids ``class_free`` get class-free cross-database
    references (``['n', ...]``).  Return ``{'main': oids, 'async': oids,
    'fixture-jobs': oid}``."""
    work = tempfile.mkdtemp(prefix='derive-', dir=directory)
    try:
        source = copy_fixture(work)
        with open(source, 'r+b') as f:
            f.write(b'FS30')   # (only to read it: the records are FS21's)
        records = _records(source)
    finally:
        shutil.rmtree(work)
    graph = {oid: references(data) for oid, data in records.items()}
    queues = [ref for ref in graph[0] if ref.klass == QUEUES_CLASS]
    [fixture] = [ref for ref in graph[0] if ref.klass != QUEUES_CLASS]
    app = _reachable(fixture.oid, graph,
                     lambda ref: ref.klass.startswith('zc.async.'))
    main = {0} | app
    in_async = set(records) - main
    databases = {oid: MAIN if oid in main else ASYNC for oid in records}
    jobs_oid = max(records) + 1
    result = {}
    for oid, data in records.items():
        here = databases[oid]
        for ref in reversed(graph[oid]):
            if databases[ref.oid] != here:
                splice = (class_free_cross_reference if oid in class_free
                          else cross_reference)
                data = splice(data, ref, databases[ref.oid])
        result[oid] = data
    # the main root also holds the application's jobs, 'fixture-jobs'
    root = result[0]
    close = root.rindex(b'us.')
    result[0] = (root[:close] + _short('fixture-jobs')
                 + _reference_bytes(jobs_oid,
                                    'persistent.mapping PersistentMapping')
                 + root[close:])
    result[jobs_oid] = _mapping_record([
        (label, _reference_bytes(oid, 'zc.async.job Job', ASYNC))
        for label, oid in sorted(APP_JOBS.items())])
    main_records = {oid: result[oid] for oid in main | {jobs_oid}}
    async_records = {oid: result[oid] for oid in in_async}
    async_records[0] = _mapping_record([
        ('zc.async', _reference_bytes(queues[0].oid, QUEUES_CLASS))])
    note = 'derived from the zc.async 1.5.4 fixture (test_migrate_multidb)'
    _write(os.path.join(directory, 'Data.fs'), main_records, note)
    _write(os.path.join(directory, 'async.fs'), async_records, note)
    return {'main': sorted(main_records), 'async': sorted(async_records),
            'fixture-jobs': jobs_oid}


# --------------------------------------------------------------------------
# Opening, serving and running a multi-database


def open_multidb(paths, read_only=True):
    """``{name: FileStorage path}`` opened as one multi-database; return
    the main database (the first)."""
    databases = {}
    for name, path in paths:
        ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=read_only),
                database_name=name, databases=databases)
    return databases[paths[0][0]]


def close_all(db):
    for member in list(db.databases.values()):
        member.close()


class Members:
    """The jobs of ``async`` and the root of the main database, for
    ``compare_with_reference`` (which reads both through one
    connection)."""

    def __init__(self, conn):
        self.main = conn
        self.jobs = conn.get_connection(ASYNC)

    def root(self):
        return self.main.root()

    def get(self, oid):
        return self.jobs.get(oid)


def write_zope_conf(path, sections, site=None):
    """A zope.conf with ``sections`` (``[(name, storage section)]``) and a
    site definition that starts no dispatcher."""
    directory = os.path.dirname(path)
    with open(os.path.join(directory, 'site.zcml'), 'w') as f:
        f.write(site or '<configure xmlns="http://namespaces.zope.org/zope">'
                '\n  <include package="zope.component" file="meta.zcml"/>\n'
                '</configure>\n')
    with open(path, 'w') as f:
        f.write('site-definition site.zcml\n<eventlog>\n  <logfile>\n'
                '    path STDERR\n  </logfile>\n</eventlog>\n')
        for name, storage in sections:
            f.write('<zodb%s>\n%s</zodb>\n' % (' ' + name if name else '',
                                               storage))
    return path


def file_storage(path):
    return '  <filestorage>\n    path %s\n  </filestorage>\n' % path


def zeo_client(address):
    return '  <zeoclient>\n    server %s:%s\n  </zeoclient>\n' % address


class ZopeConfWorker(WorkerProcess):
    """A ``zasync worker --zope-conf FILE`` process."""

    def __init__(self, zope_conf, **kw):
        super().__init__(None, **kw)
        self.zope_conf = zope_conf

    def argv(self):
        return [sys.executable, '-m', 'zasync', 'worker', '--zope-conf',
                self.zope_conf, '--uuid-file', self.uuid_file] + self.options


def zeo_multidb(servers):
    """``[(name, ZEOServer)]`` as one multi-database of ZEO clients."""
    import ZEO
    databases = {}
    for name, server in servers:
        ZODB.DB(ZEO.client(server.address, wait_timeout=30,
                           server_sync=True),
                database_name=name, databases=databases)
    return databases[servers[0][0]]


def run_multidb_worker_until_settled(paths, directory, seconds=120):
    """Serve each member of ``paths`` (``[(name, path)]``, the main one
    first) with a ZEO server, run a ``zasync worker --zope-conf`` on
    them until every due job ran, stop everything; return the worker's
    UUID."""
    servers = []
    worker = db = conn = None
    try:
        for name, path in paths:
            server = ZEOServer(directory=tempfile.mkdtemp(
                prefix='zeo-', dir=directory))
            server.path = path
            servers.append((name, server.start()))
        conf = write_zope_conf(
            os.path.join(directory, 'worker.conf'),
            [(name, zeo_client(server.address)) for name, server in servers])
        # one job per transaction, as zc.async (see run_worker_until_settled)
        worker = ZopeConfWorker(conf, directory=directory, options=[
            '--poll-interval', '0.5', '--agent', 'main:3',
            '--group-commit', '1'])
        worker.start()
        db = zeo_multidb(servers)
        conn = db.open(transaction.TransactionManager())
        jobs = conn.get_connection(ASYNC)
        reference = load_json('reference-run.json')['jobs']

        def settled():
            queues = conn.root()[interfaces.KEY]
            if len(queues['']) != 1 or len(queues['reports']):
                return False
            for queue in queues.values():
                for record in queue.dispatchers.values():
                    if any(len(agent) for agent in record.values()):
                        return False
            return all(jobs.get(ZODB.utils.p64(entry['oid'])).status
                       == entry['status'] for entry in reference)
        wait_until(conn, settled, seconds,
                   lambda: 'the worker did not settle; its log ends with:'
                   '\n%s' % worker.log_tail())
        return worker.uuid
    finally:
        if conn is not None:
            conn.close()
        if db is not None:
            close_all(db)
        if worker is not None:
            worker.stop()
        for name, server in servers:
            server.stop()


# --------------------------------------------------------------------------


class MultiDatabaseCase(unittest.TestCase):

    def setUp(self):
        if not os.path.exists(os.path.join(fixture_dir(), 'Data.fs')):
            self.skipTest('no zc.async fixture at %s' % fixture_dir())
        self.addCleanup(importable_jobs())
        self.dir = tempfile.mkdtemp(prefix='zasync-migrate-multidb-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.input = os.path.join(self.dir, 'in')
        self.out = os.path.join(self.dir, 'out')
        os.mkdir(self.input)
        os.mkdir(self.out)
        self.derived = derive_multidb(self.input)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def command(self, *args):
        return run_command('migrate', *args, cwd=self.dir)

    def open_outputs(self):
        db = open_multidb([(MAIN, os.path.join(self.out, 'Data.fs')),
                           (ASYNC, os.path.join(self.out, 'async.fs'))])
        self.addCleanup(close_all, db)
        conn = db.open()
        self.addCleanup(conn.close)
        return conn

    def check_references(self, conn):
        """The references across the two databases, both ways."""
        root = conn.root()
        jobs = conn.get_connection(ASYNC)
        self.assertEqual(sorted(root), ['fixture', 'fixture-jobs',
                                        interfaces.KEY])
        queues = root[interfaces.KEY]
        self.assertIs(queues._p_jar, jobs)
        self.assertIs(jobs.root()[interfaces.KEY], queues)
        self.assertEqual(sorted(queues), ['', 'reports'])
        self.assertEqual(queues[''].quotas['serialized'].size, 1)
        # an application object (main) refers to jobs (async) ...
        app_jobs = root['fixture-jobs']
        self.assertIs(app_jobs._p_jar, conn)
        for label, oid in APP_JOBS.items():
            job = app_jobs[label]
            self.assertIs(job._p_jar, jobs, label)
            self.assertIs(job, jobs.get(ZODB.utils.p64(oid)), label)
            self.assertTrue(interfaces.IJob.providedBy(job), label)
        self.assertIsInstance(app_jobs['done-failed'].result, Failure)
        # ... and jobs refer to application objects
        counter = root['fixture']['pending-counter']
        self.assertIs(counter._p_jar, conn)
        method_job = app_jobs['pending-method-callable']
        self.assertIs(method_job.callable.__self__, counter)
        echo = jobs.get(ZODB.utils.p64(375))   # pending-persistent-args-mixed
        self.assertTrue(any(getattr(arg, '_p_jar', None) is conn
                            for arg in echo.args), echo.args)
        return app_jobs


class DerivedInputTests(MultiDatabaseCase):
    """The derived pair is Python 2 data, split as zc.async's installer
    split it."""

    def test_python2_records_and_cross_database_references(self):
        for name in ('Data.fs', 'async.fs'):
            with open(os.path.join(self.input, name), 'rb') as f:
                self.assertEqual(f.read(4), b'FS21')
        self.assertEqual(len(self.derived['main']), 8)   # root, app, jobs
        self.assertEqual(len(self.derived['async']), 564 - 7 + 1)
        work = self.path('read')
        os.mkdir(work)
        records = {}
        for name in ('Data.fs', 'async.fs'):
            copy = os.path.join(work, name)
            shutil.copyfile(os.path.join(self.input, name), copy)
            with open(copy, 'r+b') as f:
                f.write(b'FS30')
            records[name] = _records(copy)
        from zasync.migration.records import referred_databases
        main, other = records['Data.fs'], records['async.fs']
        self.assertEqual(referred_databases(main[0]), {ASYNC})
        self.assertEqual(referred_databases(other[0]), set())
        jobs = main[self.derived['fixture-jobs']]
        self.assertIn(b"](U\x01m(U\x05asyncU\x08", jobs)
        self.assertIn(b'czc.async.job\nJob\nteQ', jobs)
        # a job's reference to the application's counter names ''
        self.assertEqual(referred_databases(other[376]), {MAIN})
        # the records that did not move across are the fixture's bytes
        fixture_copy = copy_fixture(work, 'fixture.fs')
        with open(fixture_copy, 'r+b') as f:
            f.write(b'FS30')
        original = _records(fixture_copy)
        same = [oid for oid in original
                if oid in other and other[oid] == original[oid]]
        self.assertGreater(len(same), 500)
        for data in list(main.values()) + list(other.values()):
            for op, arg, pos in _ops(data):
                self.assertNotIn(op.name, ('BINBYTES', 'SHORT_BINBYTES',
                                           'BINUNICODE8', 'FRAME'))

    def test_a_member_alone_is_refused(self):
        for name, message in [
                ('Data.fs', "refers to objects in a database named "
                            "'async', which is not given"),
                ('async.fs', "refers to objects in a database named '', "
                             "which is not given")]:
            result = self.command('--file', os.path.join(self.input, name),
                                  '--output', self.path('alone.fs'))
            self.assertEqual(result.returncode, 1, result.stdout)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertIn(message, lines[0])
            self.assertFalse(os.path.exists(self.path('alone.fs')))


class ConversionTests(MultiDatabaseCase):

    def test_files_converted_together(self):
        main = os.path.join(self.input, 'Data.fs')
        other = os.path.join(self.input, 'async.fs')
        result = self.command('--file', main, '--file', 'async=' + other,
                              '--output-dir', self.out, '--verbose')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("databases: '' (Data.fs), 'async' (async.fs)",
                      result.stdout)
        self.assertIn("converted 566 records", result.stdout)
        self.assertIn('0 problem(s)', result.stdout)
        self.assertEqual(sorted(os.listdir(self.out)),
                         ['Data.fs', 'Data.fs.index', 'async.fs',
                          'async.fs.index'])
        conn = self.open_outputs()
        app_jobs = self.check_references(conn)
        self.assertEqual(app_jobs['pending-add'].status, interfaces.PENDING)
        self.assertEqual(conn.get_connection(ASYNC).get(
            ZODB.utils.p64(320)).status, interfaces.ACTIVE)
        # zasync's inspection commands read the pair through a zope.conf
        conf = write_zope_conf(self.path('migrated.conf'), [
            (MAIN, file_storage(os.path.join(self.out, 'Data.fs'))),
            (ASYNC, file_storage(os.path.join(self.out, 'async.fs')))])
        listed = run_command('jobs', '--zope-conf', conf, '--limit', '0',
                             '--json')
        self.assertEqual(listed.returncode, 0, listed.stderr)
        rows = {row['id']: row['status'] for row in json.loads(
            listed.stdout)}
        # (the jobs live in the member database: OID@NAME)
        self.assertEqual((rows['370@async'], rows['320@async'],
                          rows['378@async']),
                         ('pending', 'active', 'pending'))
        # the same jobs, statuses and places as the single database's
        single = self.path('single.fs')
        self.assertEqual(self.command('--file', copy_fixture(self.dir),
                                      '--output', single).returncode, 0)
        alone = run_command('jobs', '--zodb', 'file://' + single,
                            '--limit', '0', '--json')

        def summary(output):   # (a persistent argument's repr names its db)
            return [(str(row['id']).partition('@')[0], row['status'],
                     row['callable'], row['agent'])
                    for row in json.loads(output)]
        self.assertEqual(summary(listed.stdout), summary(alone.stdout))
        self.assertEqual(len(summary(listed.stdout)), len(rows))

    def test_main_database_named_explicitly(self):
        # the references name the main database '': so must the command
        result = self.command(
            '--file', 'main=' + os.path.join(self.input, 'Data.fs'),
            '--file', 'async=' + os.path.join(self.input, 'async.fs'),
            '--output-dir', self.out)
        self.assertEqual(result.returncode, 1)
        self.assertIn("async.fs refers to objects in a database named '', "
                      "which is not given", result.stderr)
        self.assertEqual(os.listdir(self.out), [])

    def test_cross_database_references_without_class(self):
        # ZODB 3 wrote ['n', (name, oid)] for an object whose class has
        # __getnewargs__; zodbupdate alone would make it an 'm' reference
        # without the class, which ZODB cannot load
        shutil.rmtree(self.input)
        os.mkdir(self.input)
        derive_multidb(self.input, class_free={376})
        from zasync.migration.records import fix_multi_oid_references
        work = self.path('read')
        os.mkdir(work)
        copy = os.path.join(work, 'async.fs')
        shutil.copyfile(os.path.join(self.input, 'async.fs'), copy)
        with open(copy, 'r+b') as f:
            f.write(b'FS30')
        record = _records(copy)[376]
        self.assertIn(b"](U\x01n(U\x00U\x08", record)
        self.assertEqual(fix_multi_oid_references(b'N.'), b'N.')
        result = self.command(
            '--file', os.path.join(self.input, 'Data.fs'),
            '--file', 'async=' + os.path.join(self.input, 'async.fs'),
            '--output-dir', self.out)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.check_references(self.open_outputs())


class MultiOidTests(unittest.TestCase):
    """``['m', (name, oid)]`` (how zodbupdate 3.0 pickles ZODB 3's
    ``['n', (name, oid)]`` again) made ``['n', ...]``, in a record pickled
    for Python 3, where the ``'m'`` is memoized and used again by a proper
    ``['m', (name, oid, class)]``."""

    def record(self, *refs):
        import zodbpickle.pickle
        output = io.BytesIO()
        pickler = zodbpickle.pickle.Pickler(output, 3)
        pickler.persistent_id = lambda obj: (
            obj if isinstance(obj, list) else None)
        import persistent.mapping
        pickler.dump(persistent.mapping.PersistentMapping)
        pickler.dump({'data': {str(i): ref for i, ref in enumerate(refs)}})
        return output.getvalue()

    def test_fixed_and_converted(self):
        import zodbpickle.pickle
        from zasync.migration.records import RecordConverter

        def references(data):
            found = []
            unpickler = zodbpickle.pickle.Unpickler(io.BytesIO(data))
            unpickler.persistent_load = found.append
            unpickler.noload()
            unpickler.noload()
            return found
        oid = b'\0' * 7 + b'\x05'
        mode = 'm'
        data = self.record(['m', ('', oid)],
                           ['m', ('async', oid, ('zc.async.job', 'Job'))],
                           [mode, ('other', oid)])
        self.assertIn(b'h', data)   # (BINGET: the memoized 'm')
        with RecordConverter() as converter:
            new, problem = converter.convert(oid, data)
        self.assertIsNone(problem)
        self.assertEqual(sorted(map(repr, references(new))), sorted([
            repr(['n', ('', oid)]),
            repr(['m', ('async', oid, ('zasync.job', 'Job'))]),
            repr(['n', ('other', oid)])]))


class ZopeConfTests(MultiDatabaseCase):

    def conf(self, sections, name='zope.conf'):
        return write_zope_conf(self.path(name), sections)

    def test_zope_conf_errors_are_one_line(self):
        main = os.path.join(self.input, 'Data.fs')
        for sections, message in [
                ([('', file_storage(main)),
                  ('async', zeo_client(('127.0.0.1', 1)))],
                 "database 'async' of %s is a <zeoclient> storage, not a "
                 "<filestorage>" % self.path('zope.conf')),
                ([('', '  <mappingstorage>\n  </mappingstorage>\n')],
                 'the main database of %s is a <mappingstorage> storage'
                 % self.path('zope.conf')),
                ([], "%s: ConfigurationError: not enough values for section "
                     "type 'zodb.database'" % self.path('zope.conf')),
                ([('', file_storage(main))],
                 "refers to objects in a database named 'async', which is "
                 "not given")]:
            conf = self.conf(sections)
            result = self.command('--zope-conf', conf, '--output-dir',
                                  self.out)
            self.assertEqual(result.returncode, 1, result.stdout)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertTrue(lines[0].startswith('zasync migrate: error: '),
                            lines[0])
            self.assertIn(message, lines[0])
            self.assertEqual(os.listdir(self.out), [])
        result = self.command('--zope-conf', self.path('nothing.conf'),
                              '--output-dir', self.out)
        self.assertEqual(result.stderr.strip(),
                         'zasync migrate: error: no such configuration '
                         'file: %s' % self.path('nothing.conf'))
        result = self.command('--zope-conf', conf, '--file', main)
        self.assertEqual(result.returncode, 2)
        self.assertIn('--file and --zope-conf do not go together',
                      result.stderr)
        result = self.command('--zope-conf', conf, '--output', 'x.fs')
        self.assertEqual(result.returncode, 2)
        self.assertIn('--zope-conf needs --output-dir', result.stderr)

    def test_zope_conf_then_a_worker_reproduces_the_reference_run(self):
        paths = [(MAIN, os.path.join(self.input, 'Data.fs')),
                 (ASYNC, os.path.join(self.input, 'async.fs'))]
        conf = self.conf([(name, file_storage(path))
                          for name, path in paths])
        result = self.command('--zope-conf', conf, '--dry-run')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('would convert 566 records', result.stdout)
        self.assertEqual(os.listdir(self.out), [])
        result = self.command('--zope-conf', conf, '--output-dir', self.out)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-2:], [
            'wrote %s' % os.path.join(self.out, 'Data.fs'),
            'wrote %s' % os.path.join(self.out, 'async.fs')])
        outputs = [(MAIN, os.path.join(self.out, 'Data.fs')),
                   (ASYNC, os.path.join(self.out, 'async.fs'))]
        uuid = run_multidb_worker_until_settled(outputs, self.dir)
        conn = self.open_outputs()
        app_jobs = self.check_references(conn)
        self.assertEqual(compare_with_reference(Members(conn), uuid), [])
        # the application's references now show what the worker did
        self.assertEqual(app_jobs['pending-add'].status,
                         interfaces.COMPLETED)
        ran = {entry['oid']: entry for entry in
               load_json('reference-run.json')['jobs']}
        self.assertEqual(app_jobs['pending-add'].result,
                         expected(ran[370]['result']))
        self.assertEqual(app_jobs['pending-method-callable'].status,
                         interfaces.COMPLETED)
        self.assertEqual(conn.root()['fixture']['pending-counter'].value,
                         load_json('reference-run.json')['app_after'][
                             'pending-counter'])
        rescued = conn.get_connection(ASYNC).get(ZODB.utils.p64(320))
        self.assertEqual((rescued.status, rescued.result),
                         (interfaces.COMPLETED, 'released crash'))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)


__all__ = ['derive_multidb', 'open_multidb', 'references',
           'run_multidb_worker_until_settled', 'write_zope_conf']
