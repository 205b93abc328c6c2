"""Bad command lines and bad surroundings are refused at the door, each
with one line on stderr and a non-zero exit status, and nothing is left
behind: ``zasync worker`` options that make no sense (exit status 2, as
argparse's own errors), a missing FileStorage without ``--create``, a
UUID file that cannot be one, a broken site definition, a member database
that is not configured, an empty database, a file that is no FileStorage
(its ``.lock`` / ``.tmp`` removed again).  Real processes
(``python -m zasync``) on real FileStorages in temporary directories.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
import uuid

import ZODB
import ZODB.FileStorage

from zasync.cli import common
from zasync.cli import worker as cli_worker
from zasync.queue import install_queues
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import run_command
from zasync.testing.servers import subprocess_env
from zasync.tests import jobs
from zasync.testing.fixtures import assigner_uuid
from zasync.testing.fixtures import put_jobs

EVENTLOG = ('<eventlog>\n  <logfile>\n    path STDERR\n  </logfile>\n'
            '</eventlog>\n')


def filestorage_section(name, path):
    return ('<zodb%s>\n  <filestorage>\n    path %s\n  </filestorage>\n'
            '</zodb>\n' % (' ' + name if name else '', path))


class CommandTestCase(unittest.TestCase):
    """A temporary directory (also the current directory of the commands,
    without ``$ZASYNC_UUID``: a ``uuid.txt`` created by mistake shows)."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zasync-test-cli-input-')

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def path(self, *names):
        return os.path.join(self.directory, *names)

    def zasync(self, *args, timeout=60, **env):
        env.setdefault('ZASYNC_UUID', None)
        result = run_command(*args, timeout=timeout, cwd=self.directory,
                             **env)
        return result.returncode, result.stdout, result.stderr

    def assertError(self, args, status, line, **env):
        """``zasync ARGS`` exits with ``status`` and prints only ``line``
        (on stderr)."""
        got, out, err = self.zasync(*args, **env)
        self.assertEqual((got, err), (status, line + '\n'), out)
        self.assertEqual(out, '')

    def files(self):
        return sorted(os.listdir(self.directory))

    def make_database(self, name='Data.fs', pending=1):
        """A FileStorage with the zasync queues and ``pending`` jobs."""
        path = self.path(name)
        put_jobs(path, *[(jobs.add, 40, i) for i in range(pending)])
        return path

    def write(self, name, text):
        with open(self.path(name), 'w') as f:
            f.write(text)
        return self.path(name)


class WorkerOptionTests(CommandTestCase):
    """Options refused by ``zasync worker`` before it creates or opens
    anything: exit status 2 and one line."""

    def refused(self, options, line):
        database = self.path('Data.fs')
        self.assertError(
            ['worker', '--zodb', 'file://' + database, '--create',
             '--uuid-file', self.path('w.uuid')] + options, 2,
            'zasync worker: error: ' + line)
        self.assertEqual(self.files(), [])   # no database, no UUID file

    def test_grace(self):
        self.refused(['--grace', 'nan'],
                     "argument --grace: 'nan' is not a finite number of "
                     "seconds")
        self.refused(['--grace', 'inf'],
                     "argument --grace: 'inf' is not a finite number of "
                     "seconds")
        self.refused(['--grace', '-1'],
                     "argument --grace: '-1': seconds must not be negative")
        self.refused(['--grace', '1e9'],
                     "argument --grace: '1e9': at most 86400 seconds (one "
                     "day)")

    def test_poll_interval(self):
        for value in 'inf', 'nan':
            self.refused(['--poll-interval', value],
                         "argument --poll-interval: %r is not a finite "
                         "number of seconds" % value)
        for value in '0', '0.001', '7200':
            self.refused(['--poll-interval', value],
                         "argument --poll-interval: %r: the poll interval "
                         "must be from 0.01 to 3600 seconds" % value)

    def test_ping_and_death_intervals(self):
        for option in '--ping-interval', '--death-interval':
            for value in 'nan', 'inf':
                self.refused([option, value],
                             "argument %s: %r is not a finite number of "
                             "seconds" % (option, value))
            self.refused([option, '0'],
                         "argument %s: '0': must be more than 0 seconds"
                         % option)

    def test_death_interval_longer_than_the_ping_interval(self):
        tail = ': siblings would take this worker for dead between two pings'
        self.refused(['--ping-interval', '5', '--death-interval', '5'],
                     'the death interval (5 s) must be longer than the ping '
                     'interval (5 s)' + tail)
        self.refused(['--ping-interval', '5', '--death-interval', '2'],
                     'the death interval (2 s) must be longer than the ping '
                     'interval (5 s)' + tail)
        # Against the default of the one not given (30 s ping, 60 s death).
        self.refused(['--death-interval', '20'],
                     'the death interval (20 s) must be longer than the ping '
                     'interval (30 s, the default)' + tail)
        self.refused(['--ping-interval', '90'],
                     'the death interval (60 s, the default) must be longer '
                     'than the ping interval (90 s)' + tail)

    def test_agents(self):
        self.refused(['--agent', 'main:1000000'],
                     "argument --agent: agent 'main:1000000': at most 1000 "
                     "threads")
        self.refused(['--agent', 'main:-1'],
                     "argument --agent: agent 'main:-1': the size must not "
                     "be negative")
        self.refused(['--agent', 'a:1', '--agent', 'a:2'],
                     'agent names must differ: a, a')

    def test_create_only_for_a_file(self):
        self.assertError(['worker', '--zodb', 'zeo://127.0.0.1:1', '--create'],
                         2, 'zasync worker: error: --create only goes with '
                            '--zodb file://PATH')

    def test_the_limits_that_are_allowed(self):
        self.assertEqual(cli_worker.agent_spec('main:0'), ('main', 0))
        self.assertEqual(cli_worker.agent_spec('main:1000'), ('main', 1000))
        self.assertEqual(cli_worker.agent_spec('main'), ('main', 3))
        self.assertEqual(cli_worker.poll_interval('0.01'), 0.01)
        self.assertEqual(cli_worker.poll_interval('3600'), 3600)
        self.assertEqual(common.seconds('0'), 0)
        self.assertEqual(common.seconds('86400'), 86400)
        self.assertEqual(common.positive_seconds('0.2'), 0.2)

    def test_other_usage_errors_are_one_line_too(self):
        self.assertError(['jobs', '--nosuch'], 2,
                         'zasync: error: unrecognized arguments: --nosuch')
        self.assertError(['worker', '--agent'], 2,
                         'zasync worker: error: argument --agent: expected '
                         'one argument')

    def test_negative_limit(self):
        # (The type of --limit is cli/inspect.py's; the line is ours.)
        database = self.make_database()
        status, out, err = self.zasync('jobs', '--zodb', 'file://' + database,
                                       '--limit', '-1')
        self.assertEqual((status, out, len(err.splitlines())), (2, '', 1),
                         err)
        self.assertTrue(err.startswith(
            "zasync jobs: error: argument --limit: '-1': "), err)


class MissingDatabaseTests(CommandTestCase):

    def test_worker_needs_create_for_a_new_filestorage(self):
        missing = self.path('typo', 'Data.fs')
        self.assertError(['worker', '--zodb', 'file://' + missing], 1,
                         'zasync worker: error: no database at %s (give '
                         '--create to make a new one)' % missing)
        self.assertEqual(self.files(), [])   # not even ./uuid.txt

    def test_create(self):
        path = self.path('new.fs')
        worker = WorkerProcess('file://' + path, 'w', self.directory,
                               ['--create', '--poll-interval', '0.1'])
        worker.start()
        try:
            worker.wait_for_log('%s running' % worker.uuid)
            worker.terminate()
            self.assertEqual(worker.wait(), 0, worker.log_tail())
        finally:
            worker.stop()
        self.assertTrue(os.path.exists(path))


class UUIDFileTests(CommandTestCase):

    def setUp(self):
        super().setUp()
        self.database = self.make_database()
        self.before = self.files()

    def test_a_directory(self):
        os.mkdir(self.path('ids'))
        line = ('zasync worker: error: the UUID file %s is a directory'
                % self.path('ids'))
        self.assertError(['worker', '--zodb', 'file://' + self.database,
                          '--uuid-file', self.path('ids')], 1, line)
        # The same from the environment.
        self.assertError(['worker', '--zodb', 'file://' + self.database], 1,
                         line, ZASYNC_UUID=self.path('ids'))

    def test_below_a_file_or_not_a_uuid(self):
        self.write('plain', 'not a directory\n')
        self.assertError(
            ['worker', '--zodb', 'file://' + self.database, '--uuid-file',
             self.path('plain', 'w.uuid')], 1,
            'zasync worker: error: cannot create the UUID file %s: %s is not '
            'a directory' % (self.path('plain', 'w.uuid'),
                             self.path('plain')))
        self.write('w.uuid', 'hello\n')
        self.assertError(
            ['worker', '--zodb', 'file://' + self.database, '--uuid-file',
             self.path('w.uuid')], 1,
            "zasync worker: error: %s does not start with a UUID: 'hello'"
            % self.path('w.uuid'))


class BadFileTests(CommandTestCase):
    """A file that is no FileStorage: one line, and the ``.lock`` and
    ``.tmp`` files the attempt made are removed again."""

    def setUp(self):
        super().setUp()
        self.bad = self.write('bad.fs', 'garbage\n')
        self.write('w.uuid', str(uuid.uuid1()) + '\n')

    def test_worker_with_a_uri(self):
        self.assertError(
            ['worker', '--zodb', 'file://' + self.bad, '--uuid-file',
             self.path('w.uuid')], 1,
            'zasync worker: error: cannot open file://%s: '
            'FileStorageFormatError: %s' % (self.bad, self.bad))
        self.assertEqual(self.files(), ['bad.fs', 'w.uuid'])

    def test_worker_with_a_zope_conf(self):
        self.write('site.zcml', '<configure/>\n')
        conf = self.write('zope.conf', 'site-definition site.zcml\n'
                          + EVENTLOG + filestorage_section('', self.bad))
        self.assertError(
            ['worker', '--zope-conf', conf, '--uuid-file',
             self.path('w.uuid')], 1,
            'zasync worker: error: cannot open the databases of %s: '
            'FileStorageFormatError: %s' % (conf, self.bad))
        self.assertEqual(self.files(),
                         ['bad.fs', 'site.zcml', 'w.uuid', 'zope.conf'])

    def test_inspection(self):
        self.assertError(
            ['jobs', '--zodb', 'file://' + self.bad], 1,
            'zasync jobs: error: cannot open file://%s: '
            'FileStorageFormatError: %s' % (self.bad, self.bad))
        self.assertEqual(self.files(), ['bad.fs', 'w.uuid'])

    def test_a_directory(self):
        os.mkdir(self.path('db'))
        self.assertError(
            ['worker', '--zodb', 'file://' + self.path('db'), '--uuid-file',
             self.path('w.uuid')], 1,
            'zasync worker: error: %s is a directory, not a FileStorage'
            % self.path('db'))


class EmptyDatabaseTests(CommandTestCase):
    """A FileStorage in which nothing was ever stored (no root object):
    read-only, ZODB cannot create the root and raised ``ReadOnlyError``
    with no message."""

    def check(self, path):
        line = ('is an empty database: it has no root object (nothing was '
                'ever stored in it)')
        size = os.path.getsize(path)
        self.assertError(['jobs', '--zodb', 'file://' + path], 1,
                         'zasync jobs: error: file://%s %s' % (path, line))
        self.write('site.zcml', '<configure/>\n')
        conf = self.write('zope.conf', 'site-definition site.zcml\n'
                          + EVENTLOG + filestorage_section('', path))
        self.assertError(['stats', '--zope-conf', conf], 1,
                         'zasync stats: error: the main database of %s %s'
                         % (conf, line))
        self.assertEqual(os.path.getsize(path), size)

    def test_an_empty_file(self):
        self.check(self.write('empty.fs', ''))

    def test_a_filestorage_without_transactions(self):
        path = self.path('new.fs')
        ZODB.FileStorage.FileStorage(path).close()
        self.check(path)


class SiteDefinitionTests(CommandTestCase):
    """``zasync worker --zope-conf``: the site ZCML."""

    def setUp(self):
        super().setUp()
        self.database = self.path('Data.fs')
        self.write('w.uuid', str(uuid.uuid1()) + '\n')

    def conf(self, site='site.zcml', databases=None):
        return self.write('zope.conf', 'site-definition %s\n' % site
                          + EVENTLOG + (databases or filestorage_section(
                              '', self.database)))

    def worker(self, conf, status, line):
        self.assertError(['worker', '--zope-conf', conf, '--uuid-file',
                          self.path('w.uuid')], status,
                         'zasync worker: error: ' + line)

    def test_not_well_formed(self):
        site = self.write('site.zcml', '<configure\n')
        self.worker(self.conf(), 1, 'broken site definition %s: '
                    'SAXParseException: %s:1:0: unclosed token'
                    % (site, site))
        self.assertFalse(os.path.exists(self.database))

    def test_a_bad_directive(self):
        site = self.write(
            'site.zcml',
            '<configure xmlns="http://namespaces.zope.org/zope">\n'
            '  <include package="zope.component" file="meta.zcml"/>\n'
            '  <include file="inner.zcml"/>\n'
            '</configure>\n')
        inner = self.write(
            'inner.zcml',
            '<configure xmlns="http://namespaces.zope.org/zope">\n'
            '  <utility nosuch="x"/>\n'
            '</configure>\n')
        self.worker(self.conf(), 1, 'broken site definition %s: %s, line 2: '
                    'Unrecognized parameters: nosuch' % (site, inner))
        self.write(
            'inner.zcml',
            '<configure xmlns="http://namespaces.zope.org/zope"\n'
            '           xmlns:zasync="http://namespaces.zope.org/zasync">\n'
            '  <include package="zasync" file="meta.zcml"/>\n'
            '  <zasync:dispatcher poll_interval="-3"/>\n'
            '</configure>\n')
        self.worker(self.conf(), 1, "broken site definition %s: %s, line 4: "
                    "Invalid value for 'poll_interval': TooSmall: "
                    "(-3.0, 0.01)" % (site, inner))
        self.assertFalse(os.path.exists(self.database))

    def test_missing(self):
        conf = self.conf('nosuch.zcml')
        self.worker(conf, 1, 'no site definition %s (site-definition of %s)'
                    % (self.path('nosuch.zcml'), conf))

    def test_a_dispatcher_of_its_own(self):
        site = self.write(
            'site.zcml',
            '<configure xmlns="http://namespaces.zope.org/zope">\n'
            '  <include package="zasync" file="single.zcml"/>\n'
            '</configure>\n')
        self.worker(self.conf(), 1, 'the site definition %s starts a '
                    'dispatcher of its own (<zasync:dispatcher>, as in '
                    'single.zcml); a worker process needs one without it '
                    '(e.g. configure.zcml and <zasync:jobs/>)' % site)
        # Refused before the database opened (and a dispatcher started).
        self.assertFalse(os.path.exists(self.database))
        self.assertFalse(os.path.exists(self.path('uuid.txt')))


class MemberDatabaseTests(CommandTestCase):
    """The queues live in the member ``async`` of a multi-database (as
    with ``multidb.zcml``), and the command is not told about it."""

    def setUp(self):
        super().setUp()
        self.main, self.other = self.path('main.fs'), self.path('async.fs')
        databases = {}
        main = ZODB.DB(ZODB.FileStorage.FileStorage(self.main),
                       databases=databases, database_name='')
        ZODB.DB(ZODB.FileStorage.FileStorage(self.other),
                databases=databases, database_name='async')
        try:
            with assigner_uuid():
                install_queues(main, db_name='async')
        finally:
            for db in databases.values():
                db.close()
        self.write('site.zcml', '<configure/>\n')
        self.conf = self.write('zope.conf', 'site-definition site.zcml\n'
                               + EVENTLOG + filestorage_section('', self.main))
        self.write('w.uuid', str(uuid.uuid1()) + '\n')

    def test_inspection(self):
        for args in [('--zodb', 'file://' + self.main),
                     ('--zope-conf', self.conf)]:
            hint = ('--zodb opens one database: use --zope-conf, with a <zodb '
                    'async> section' if args[0] == '--zodb' else
                    'add a <zodb async> section to %s' % self.conf)
            self.assertError(
                ('jobs',) + args, 1,
                "zasync jobs: error: the database refers to a member "
                "database named 'async', which is not configured (%s)"
                % hint)
        # Told about it:
        with open(self.conf, 'a') as f:
            f.write(filestorage_section('async', self.other))
        status, out, err = self.zasync('status', '--zope-conf', self.conf)
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, "queue '': 0 pending\n"
                              "no dispatcher has served this queue yet\n")

    def test_worker(self):
        self.assertError(
            ['worker', '--zodb', 'file://' + self.main, '--uuid-file',
             self.path('w.uuid')], 1,
            "zasync worker: error: the database refers to a member database "
            "named 'async', which is not configured (--zodb opens one "
            "database: use --zope-conf, with a <zodb async> section)")

    def test_worker_whose_site_needs_a_member(self):
        site = self.write(
            'site.zcml',
            '<configure xmlns="http://namespaces.zope.org/zope"\n'
            '           xmlns:zasync="http://namespaces.zope.org/zasync">\n'
            '  <include package="zasync"/>\n'
            '  <include package="zasync" file="meta.zcml"/>\n'
            '  <zasync:jobs database="async"/>\n'
            '</configure>\n')
        conf = self.write('other.conf', 'site-definition site.zcml\n'
                          + EVENTLOG + filestorage_section(
                              '', self.path('new.fs')))
        self.assertError(
            ['worker', '--zope-conf', conf, '--uuid-file',
             self.path('w.uuid')], 1,
            "zasync worker: error: the site definition %s needs a database "
            "named 'async', which %s does not configure (add a <zodb async> "
            "section to %s)" % (site, conf, conf))


class BrokenPipeTests(CommandTestCase):

    def test_reader_gone(self):
        path = self.make_database(pending=3)
        process = subprocess.Popen(
            [sys.executable, '-m', 'zasync', 'jobs', '--zodb',
             'file://' + path], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=subprocess_env())
        process.stdout.close()   # before the command writes anything
        try:
            err = process.stderr.read()
            status = process.wait(60)
        finally:
            process.stderr.close()
        self.assertEqual((status, err), (128 + signal.SIGPIPE, b''))
