"""``zasync migrate`` on the real zc.async 1.5.4 database (Python 2.7):
the edge cases, and the behaviour after migration compared job by job with
what zc.async itself did on a copy (``reference-run.json``).

The fixture folder is ``fixtures/zc.async-1.5.4-py27`` beside this module,
a copy of the project's ``shared/fixtures`` one (``$ZASYNC_ZCASYNC_FIXTURE``
overrides it); every test works on copies of its ``Data.fs`` in a
temporary directory.  Helpers here are
used by ``docs/migration.rst`` too.
"""
import datetime
import decimal
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils

from zasync import interfaces
from zasync.failure import Failure
from zasync.migration import MigrationError
from zasync.migration import migrate
from zasync.migration.rules import zcasync_class_name
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import run_command
from zasync.testing.processes import wait_until
from zasync.testing.servers import ZEOServer

UTC = datetime.timezone.utc
FIXTURE_NAME = 'zc.async-1.5.4-py27'
JOBS_MODULE = 'zcasync_fixture_jobs'


def fixture_dir():
    """The folder of the zc.async fixture."""
    given = os.environ.get('ZASYNC_ZCASYNC_FIXTURE')
    if given:
        return given
    # (a copy of ../shared/fixtures/zc.async-1.5.4-py27, kept with the
    # tests so that a checkout, an sdist and an installed package test it)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'fixtures', FIXTURE_NAME)


def load_json(name):
    with open(os.path.join(fixture_dir(), name), encoding='utf-8') as f:
        return json.load(f)


def copy_fixture(directory, name='Data.fs'):
    """A writable copy of the fixture's ``Data.fs`` in ``directory``."""
    path = os.path.join(directory, name)
    shutil.copyfile(os.path.join(fixture_dir(), 'Data.fs'), path)
    os.chmod(path, 0o644)
    return path


def importable_jobs():
    """Make the fixture's job module importable here, and in the children
    (workers, commands: ``subprocess_env`` passes ``sys.path`` on); return
    a function that undoes it."""
    directory = fixture_dir()
    if directory in sys.path:
        return lambda: None
    sys.path.append(directory)

    def undo():
        if directory in sys.path:
            sys.path.remove(directory)
        sys.modules.pop(JOBS_MODULE, None)
    return undo


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------
# Python 2 values, as the fixture's JSON describes them, in Python 3


class Persistent:
    """Stands for a persistent object of the description: same oid."""

    def __init__(self, description):
        self.oid = description['oid']
        self.cls = zcasync_class_name(description['class'])

    def __eq__(self, other):
        oid = getattr(other, '_p_oid', None)
        return oid is not None and ZODB.utils.u64(oid) == self.oid

    def __repr__(self):
        return '<persistent %s oid %d>' % (self.cls, self.oid)


class FailureOf:
    """Stands for a failure with this exception class and message."""

    def __init__(self, type_name, message):
        self.type_name = zcasync_class_name(type_name)
        self.message = message

    def __eq__(self, other):
        return (isinstance(other, Failure)
                and other.type_name == self.type_name
                and other.getErrorMessage() == self.message)

    def __repr__(self):
        return '<failure %s: %s>' % (self.type_name, self.message)


def text_or_bytes(hex_text):
    """A Python 2 ``str``: text where it is UTF-8, bytes where not (how
    the migration reads it)."""
    raw = bytes.fromhex(hex_text)
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError:
        return raw


def expected(value):
    """The Python 3 value a migrated database gives for the Python 2
    value ``value`` describes."""
    if not isinstance(value, (dict, list)):
        return value
    if isinstance(value, list):
        return [expected(v) for v in value]
    kind = value.get('type')
    if kind == 'str':
        return text_or_bytes(value['hex'])
    if kind == 'unicode':
        return value['value']
    if kind == 'long':
        return int(value['value'])
    if kind == 'float':
        return float(value['value'])
    if kind == 'Decimal':
        return decimal.Decimal(value['value'])
    if kind in ('list', 'tuple', 'set', 'frozenset'):
        items = [expected(v) for v in value['items']]
        return {'list': list, 'tuple': tuple, 'set': set,
                'frozenset': frozenset}[kind](items)
    if kind == 'dict':
        return {expected(k): expected(v) for k, v in value['items']}
    if kind == 'datetime':
        result = datetime.datetime.fromisoformat(value['iso'])
        return result if value.get('tzinfo') is None else result.astimezone(
            UTC)
    if kind == 'date':
        return datetime.date.fromisoformat(value['iso'])
    if kind == 'time':
        return datetime.time.fromisoformat(value['iso'])
    if kind == 'timedelta':
        return datetime.timedelta(value['days'], value['seconds'],
                                  value['microseconds'])
    if kind == 'persistent':
        return Persistent(value)
    if kind == 'Failure':
        return FailureOf(value['exc_type'], expected(value['message']))
    raise ValueError('no rule for %r' % (value,))


#: Python 2 type names and the Python 3 ones (``str``: see text_or_bytes)
PY3_TYPE_NAMES = {'unicode': 'str', 'long': 'int'}


def expected_type_names(names, args):
    """``type_names(*args)`` on Python 3, from the Python 2 names: a
    Python 2 ``str`` argument is ``bytes`` when it is not text."""
    result = []
    for name, arg in zip(names, args):
        if name == 'str' and isinstance(expected(arg), bytes):
            result.append('bytes')
        else:
            result.append(PY3_TYPE_NAMES.get(name, name))
    return result


def labelled(manifest):
    return {job['label']: job for job in manifest['labelled_jobs']}


def compare_with_reference(conn, worker_uuid):
    """Differences between the migrated database after a zasync worker
    (``worker_uuid``) ran it and zc.async's reference run, job by job:
    status, result, who ran it, the retry policy's data; then the
    application data and the dispatchers.  ``[]``: none."""
    reference = load_json('reference-run.json')
    manifest = labelled(load_json('manifest.json'))
    differences = []
    for entry in reference['jobs']:
        label, oid = entry['label'], entry['oid']
        job = conn.get(ZODB.utils.p64(oid))
        where = '%s (oid %d)' % (label, oid)
        if str(job.status) != entry['status']:
            differences.append('%s: status %s, zc.async %s' % (
                where, job.status, entry['status']))
            continue
        if label == 'pending-type-names':
            names = [v['repr'].strip("'")
                     for v in entry['result']['items'][0]['items']]
            want = (expected_type_names(
                names, manifest[label]['job']['args']), [])
            got = (list(job.result[0]), list(job.result[1]))
        else:
            want, got = expected(entry['result']), job.result
        if want != got:
            differences.append('%s: result %r, zc.async %r' % (
                where, got, want))
        agent = entry.get('agent')
        if agent is not None:
            ran_by = job.agent
            record = getattr(ran_by, 'parent', None)
            if record is None or str(record.UUID) != str(worker_uuid):
                differences.append('%s: not run by the zasync worker (%r)'
                                   % (where, ran_by))
            elif (job.queue is not None and job.queue.name == ''
                  and ran_by.name != agent['name']):
                differences.append('%s: agent %r, zc.async %r' % (
                    where, ran_by.name, agent['name']))
        data = entry.get('retry_policy_data')
        if data is not None:
            policy = job.retry_policy
            got_data = dict(policy.data) if policy is not None else None
            if got_data is None or sorted(got_data) != sorted(data):
                differences.append('%s: retry data %r, zc.async %r' % (
                    where, got_data, data))
            else:
                for key, value in data.items():
                    if isinstance(value, int) and got_data[key] != value:
                        differences.append('%s: retry data %s = %r, '
                                           'zc.async %r' % (
                                               where, key, got_data[key],
                                               value))
                if label == 'active-in-dead-dispatcher' and got_data[
                        'first_active'] != expected(data['first_active']):
                    differences.append('%s: first_active %r, zc.async %r'
                                       % (where, got_data['first_active'],
                                          data['first_active']))
    app = conn.root()['fixture']
    for key, value in reference['app_after'].items():
        if app[key].value != value:
            differences.append('root[fixture][%r].value %r, zc.async %r'
                               % (key, app[key].value, value))
    queues = conn.root()[interfaces.KEY]
    for uuid, by_queue in reference['dispatchers_after'].items():
        if not by_queue["''"]['dead']:
            continue   # zc.async's own new dispatcher
        for queue_name, after in by_queue.items():
            name = '' if queue_name == "''" else queue_name
            record = queues[name].dispatchers[_uuid(uuid)]
            if record.activated is not None:
                differences.append('dispatcher %s in %r still activated'
                                   % (uuid, name))
            for agent_name, counts in after['agents'].items():
                agent = record[agent_name]
                if len(agent) != counts['active']:
                    differences.append('agent %s@%s holds %d jobs' % (
                        agent_name, uuid, len(agent)))
                if len(agent.completed) != counts['completed']:
                    differences.append(
                        'agent %s@%s: %d completed, zc.async %d' % (
                            agent_name, uuid, len(agent.completed),
                            counts['completed']))
    return differences


def _uuid(text):
    import uuid
    return uuid.UUID(text)


def run_worker_until_settled(path, directory, seconds=120):
    """Serve the migrated ``path`` with ZEO, run a ``zasync worker`` on it
    until every due job ran (the 2038 job stays pending), stop both.
    Return ``(uuid, seconds it took)``; the database is left in ``path``.
    """
    import time
    server = ZEOServer(directory=directory)
    server.path = path
    server.start()
    # One job per transaction, as zc.async committed them: in a group, a
    # job that has to abort makes the group's jobs run again one per
    # transaction, and the fixture's flaky job -- which fails only on its
    # first attempt in a process -- would then not record the retry that
    # zc.async's run recorded.
    worker = WorkerProcess(server.uri, directory=directory, options=[
        '--poll-interval', '0.5', '--agent', 'main:3',
        '--group-commit', '1'])
    db = conn = None
    try:
        worker.start()
        db = server.db()
        conn = db.open(transaction.TransactionManager())
        started = time.monotonic()

        def settled():
            queues = conn.root()[interfaces.KEY]
            if len(queues['']) != 1 or len(queues['reports']):
                return False
            for queue in queues.values():
                for record in queue.dispatchers.values():
                    if any(len(agent) for agent in record.values()):
                        return False
            return all(
                conn.get(ZODB.utils.p64(entry['oid'])).status == entry[
                    'status'] for entry in load_json(
                        'reference-run.json')['jobs'])
        wait_until(conn, settled, seconds,
                   lambda: 'the worker did not settle; its log ends with:'
                   '\n%s' % worker.log_tail())
        took = time.monotonic() - started
        return worker.uuid, took
    finally:
        if conn is not None:
            conn.close()
        if db is not None:
            db.close()
        worker.stop()
        server.stop()


# --------------------------------------------------------------------------


class FixtureCase(unittest.TestCase):

    def setUp(self):
        if not os.path.exists(os.path.join(fixture_dir(), 'Data.fs')):
            self.skipTest('no zc.async fixture at %s' % fixture_dir())
        self.addCleanup(importable_jobs())
        self.dir = tempfile.mkdtemp(prefix='zasync-migrate-')
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def command(self, *args):
        return run_command('migrate', *args, cwd=self.dir)

    def open(self, path):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
        self.addCleanup(db.close)
        conn = db.open()
        self.addCleanup(conn.close)
        return conn


class CommandTests(FixtureCase):

    def test_dry_run_changes_nothing(self):
        source = copy_fixture(self.dir)
        before = sha256(source)
        result = self.command('--file', source, '--dry-run')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sha256(source), before)
        self.assertEqual(sorted(os.listdir(self.dir)), ['Data.fs'])
        self.assertIn('zc.async.job.Job -> zasync.job.Job', result.stdout)
        self.assertIn('jobs active-status: 1', result.stdout)
        last = result.stdout.splitlines()[-1]
        self.assertTrue(last.startswith('would convert 564 records'), last)
        self.assertIn('0 problem(s)', last)

    def test_default_output_beside_the_input(self):
        source = copy_fixture(self.dir)
        before = sha256(source)
        result = self.command('--file', source)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sha256(source), before)
        output = self.path('Data.zasync.fs')
        self.assertTrue(os.path.exists(output))
        self.assertEqual(result.stdout.splitlines()[-1],
                         'wrote %s' % output)
        # nothing left behind but the output and its index
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ['Data.fs', 'Data.zasync.fs',
                          'Data.zasync.fs.index'])

    def test_jobs_lists_every_job_of_the_manifest(self):
        source = copy_fixture(self.dir)
        output = self.path('M.fs')
        self.assertEqual(self.command('--file', source, '--output',
                                      output).returncode, 0)
        result = run_command('jobs', '--zodb', 'file://' + output,
                             '--limit', '0', '--json')
        self.assertEqual(result.returncode, 0, result.stderr)
        listed = {row['id']: row for row in json.loads(result.stdout)}
        manifest = load_json('manifest.json')
        missing = []
        for entry in manifest['labelled_jobs']:
            if 'job' not in entry:
                continue   # a callback proxy: not a job
            if entry['job']['parent'] and entry['job']['parent'][
                    'class'].startswith('zc.async.job.'):
                # a callback: ``zasync jobs`` lists the jobs of queues and
                # agents; ``zasync job ID`` shows a callback
                shown = run_command('job', str(entry['oid']), '--zodb',
                                    'file://' + output)
                self.assertEqual(shown.returncode, 0, shown.stderr)
                continue
            row = listed.get(entry['oid'])
            if row is None:
                missing.append(entry['label'])
                continue
            self.assertEqual(row['status'] + '-status'
                             if not row['status'].endswith('-status')
                             else row['status'],
                             entry['expected_status'], entry['label'])
        self.assertEqual(missing, [])

    def test_in_place_must_be_said(self):
        source = copy_fixture(self.dir)
        before = sha256(source)
        output = self.path('M.fs')
        shutil.copyfile(source, output)
        result = self.command('--file', source, '--output', output)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(),
                         'zasync migrate: error: %s exists already: remove '
                         'it or choose another output' % output)
        self.assertEqual(sha256(source), before)
        result = self.command('--file', source, '--in-place')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotEqual(sha256(source), before)
        with open(source, 'rb') as f:
            self.assertEqual(f.read(4), b'FS30')
        conn = self.open(source)
        self.assertIn(interfaces.KEY, conn.root())
        self.assertNotIn('zc.async', conn.root())

    def test_bad_inputs_give_one_line_and_leave_the_input(self):
        text = self.path('notes.txt')
        with open(text, 'w') as f:
            f.write('not a database\n')
        corrupt = copy_fixture(self.dir, 'corrupt.fs')
        with open(corrupt, 'r+b') as f:
            f.seek(5000)
            f.write(b'\xff' * 64)
        empty = self.path('empty.fs')
        open(empty, 'wb').close()
        truncated = self.path('truncated.fs')
        with open(os.path.join(fixture_dir(), 'Data.fs'), 'rb') as f:
            data = f.read(100000)
        with open(truncated, 'wb') as f:
            f.write(data)
        for path, message in [
                (text, "is not a ZODB FileStorage file (it starts with "
                       "b'not '"),
                (empty, "is not a ZODB FileStorage file (it starts with "
                        "b''"),
                (corrupt, 'its root object cannot be read'),
                (truncated, 'is damaged: its last 967 bytes are not a '
                            'complete transaction'),
                (self.path('missing.fs'), 'does not exist'),
                (self.dir, 'is not a file')]:
            before = sha256(path) if os.path.isfile(path) else None
            listing = sorted(os.listdir(self.dir))
            result = self.command('--file', path, '--output',
                                  self.path('out.fs'))
            self.assertEqual(result.returncode, 1, path)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertIn(message, lines[0])
            self.assertTrue(lines[0].startswith('zasync migrate: error: '))
            if before is not None:
                self.assertEqual(sha256(path), before)
            self.assertEqual(sorted(os.listdir(self.dir)), listing)

    def test_options_that_do_not_go_together(self):
        for args, message in [
                (['--file', 'a.fs', '--dry-run', '--in-place'],
                 '--in-place and --dry-run do not go together'),
                (['--zodb', 'file:///x.fs'], 'say --in-place'),
                ([], 'say which database'),
                (['--file', 'a.fs', '--file', 'b.fs'],
                 'name each member but the first'),
                (['--file', 'a.fs', '--file', 'x=b.fs', '--output', 'o.fs'],
                 'several --file need --output-dir')]:
            result = self.command(*args)
            self.assertEqual(result.returncode, 2, args)
            self.assertIn(message, result.stderr)


class LibraryTests(FixtureCase):

    def test_counts_and_statuses(self):
        source = copy_fixture(self.dir)
        report = migrate([('unnamed', source)], [self.path('M.fs')])
        self.assertEqual(report.records, 564)
        self.assertEqual(report.problems, [])
        manifest = load_json('manifest.json')
        self.assertEqual(dict(report.classes), manifest['classes'])
        self.assertEqual(report.statuses['active-status'], 1)
        self.assertEqual(report.renamed['zc.twist.Failure']
                         if 'zc.twist.Failure' in report.renamed else None,
                         None)   # (not a record: inside the jobs)

    def test_oids_and_application_data_are_kept(self):
        source = copy_fixture(self.dir)
        output = self.path('M.fs')
        migrate([('unnamed', source)], [output])
        conn = self.open(output)
        root = conn.root()
        self.assertEqual(sorted(root), ['fixture', interfaces.KEY])
        self.assertEqual(ZODB.utils.u64(root[interfaces.KEY]._p_oid), 1)
        fixture = root['fixture']
        self.assertEqual(fixture['counter'].value, 15)
        self.assertEqual(fixture['pending-counter'].value, 100)
        manifest = labelled(load_json('manifest.json'))
        for label, entry in manifest.items():
            obj = conn.get(ZODB.utils.p64(entry['oid']))
            self.assertEqual(str(obj.status), entry['expected_status'],
                             label)

    def test_failures_keep_class_message_and_traceback(self):
        source = copy_fixture(self.dir)
        output = self.path('M.fs')
        migrate([('unnamed', source)], [output])
        conn = self.open(output)
        failed = conn.get(ZODB.utils.p64(83)).result
        self.assertIsInstance(failed, Failure)
        self.assertEqual(failed.type_name, 'zcasync_fixture_jobs.FixtureError')
        self.assertEqual(failed.getErrorMessage(), 'boom \u2603')
        self.assertEqual(failed.getTraceback().splitlines(), [
            'Traceback (most recent call last):',
            '  File "/opt/py27/lib/python2.7/site-packages/zc/async/job.py",'
            ' line 597, in __call__',
            '  File "app/zcasync_fixture_jobs.py", line 77, in fail',
            'zcasync_fixture_jobs.FixtureError: boom \u2603'])
        import zcasync_fixture_jobs
        self.assertTrue(failed.check(zcasync_fixture_jobs.FixtureError))
        value_error = conn.get(ZODB.utils.p64(84)).result
        self.assertTrue(value_error.check(ValueError))
        self.assertEqual(value_error.type_name, 'builtins.ValueError')
        timed_out = conn.get(ZODB.utils.p64(98)).result
        self.assertTrue(timed_out.check(interfaces.TimeoutError))

    def test_binary_text_and_times(self):
        source = copy_fixture(self.dir)
        output = self.path('M.fs')
        migrate([('unnamed', source)], [output])
        conn = self.open(output)
        args = list(conn.get(ZODB.utils.p64(78)).args)
        self.assertEqual(args[:4], ['plain ascii str', 'caf\xe9 \u2603',
                                    b'\x00\x01\xfe\xff binary',
                                    'caf\xe9 \u2603 \U0001f600'])
        self.assertEqual(args[6].tzinfo, UTC)
        later = conn.get(ZODB.utils.p64(378))
        self.assertEqual(later.begin_after,
                         datetime.datetime(2038, 1, 1, tzinfo=UTC))
        self.assertEqual(later.status, interfaces.PENDING)
        active = conn.get(ZODB.utils.p64(320))
        self.assertEqual(active.status, interfaces.ACTIVE)
        self.assertEqual(active.active_start.tzinfo, UTC)
        self.assertEqual(active.agent.name, 'main')

    def test_migrating_the_output_again_changes_nothing_more(self):
        source = copy_fixture(self.dir)
        first = self.path('M.fs')
        migrate([('unnamed', source)], [first])
        second = self.path('M2.fs')
        report = migrate([('unnamed', first)], [second])
        self.assertEqual(report.problems, [])
        self.assertEqual(report.rebuilt, 0)
        self.assertEqual(report.renamed, {})

    def test_refuses_before_writing(self):
        source = copy_fixture(self.dir)
        with self.assertRaises(MigrationError):
            migrate([('a', source), ('a', source)],
                    [self.path('1.fs'), self.path('2.fs')])
        with self.assertRaises(MigrationError):
            migrate([('unnamed', source)],
                    [self.path('no', 'such', 'dir.fs')])
        self.assertEqual(os.listdir(self.dir), ['Data.fs'])


class ReferenceRunTests(FixtureCase):
    """A real worker on the migrated copy does what zc.async did."""

    def test_a_worker_reproduces_the_reference_run(self):
        source = copy_fixture(self.dir)
        output = self.path('Migrated.fs')
        result = self.command('--file', source, '--output', output)
        self.assertEqual(result.returncode, 0, result.stderr)
        uuid, took = run_worker_until_settled(output, self.dir)
        conn = self.open(output)
        self.assertEqual(compare_with_reference(conn, uuid), [])
        # the failed jobs show their original traceback
        shown = run_command('job', '83', '--zodb', 'file://' + output)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn('File "app/zcasync_fixture_jobs.py", line 77, in fail',
                      shown.stdout)
        self.assertIn('zcasync_fixture_jobs.FixtureError: boom \u2603',
                      shown.stdout)


def run_zodbupdate(path, *options):
    """``zodbupdate --convert-py3 --file PATH OPTIONS`` in a child process
    that has zasync installed (its entry points) and the job module."""
    import subprocess
    from zasync.testing.servers import subprocess_env
    argv = ['zodbupdate', '--convert-py3', '--quiet', '--file', path]
    argv += list(options)
    return subprocess.run(
        [sys.executable, '-c', 'import sys; sys.argv = %r; '
         'from zodbupdate.main import main; main()' % (argv,)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300)


class ZodbupdateTests(FixtureCase):
    """An application's own ``zodbupdate --convert-py3`` run over its whole
    database, zasync installed: the entry points rename zasync's part;
    ``zasync migrate`` does the rest."""

    def test_entry_points_then_migrate(self):
        from zasync.migration.records import class_of
        source = copy_fixture(self.dir)
        # zodbupdate's default decoding (ASCII) stops at binary strings
        # such as the oids in zc.async's queue keys
        before = sha256(source)
        result = run_zodbupdate(source)
        self.assertNotEqual(result.returncode, 0)
        shutil.copyfile(os.path.join(fixture_dir(), 'Data.fs'), source)
        result = run_zodbupdate(source, '--encoding', 'utf-8')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotEqual(sha256(source), before)
        storage = ZODB.FileStorage.FileStorage(source, read_only=True)
        try:
            data, tid = storage.load(ZODB.utils.p64(83))
            self.assertEqual(class_of(data), 'zasync.job.Job')
            data, tid = storage.load(ZODB.utils.p64(5))
            self.assertEqual(class_of(data),
                             'zasync.migration.legacy.CompositeQueue')
        finally:
            storage.close()
        output = self.path('Migrated.fs')
        result = self.command('--file', source, '--output', output)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('(0 classes renamed, 99 objects rebuilt)',
                      result.stdout)
        uuid, took = run_worker_until_settled(output, self.dir)
        self.assertEqual(compare_with_reference(self.open(output), uuid),
                         [])

    def test_zodb_uri_in_place(self):
        source = copy_fixture(self.dir)
        result = run_zodbupdate(source, '--encoding', 'utf-8')
        self.assertEqual(result.returncode, 0, result.stderr)
        uri = 'file://' + source
        result = self.command('--zodb', uri, '--dry-run')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('would convert 564 records', result.stdout)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(source, read_only=True))
        try:
            self.assertIn('zc.async', db.open().root())
        finally:
            db.close()
        result = self.command('--zodb', uri, '--in-place')
        self.assertEqual(result.returncode, 0, result.stderr)
        conn = self.open(source)
        self.assertNotIn('zc.async', conn.root())
        queue = conn.root()[interfaces.KEY]['']
        self.assertEqual(len(queue), 23)
        self.assertEqual([ZODB.utils.u64(job._p_oid) for job in queue][-1],
                         378)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)


__all__ = ['compare_with_reference', 'copy_fixture', 'expected',
           'fixture_dir', 'importable_jobs', 'run_worker_until_settled',
           'struct']
