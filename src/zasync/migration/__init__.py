"""Converting zc.async databases so that zasync runs them.

``migrate(sources, ...)`` converts the FileStorage files of one database
(or of the members of one multi-database) written by zc.async 1.5 on
Python 2, in two steps, keeping every oid:

1. every current record is pickled again for Python 3 with zasync's
   names (``zasync.migration.records``, zodbupdate as a library, the
   table in ``zasync.migration.rules``);
2. zasync's structures are rebuilt from zc.async's
   (``zasync.migration.objects``): pending jobs, agents' jobs, completed
   jobs, ``root['zc.async']`` -> ``root['zasync']``.

The input is never written: the conversion reads a copy and writes new
files in a temporary directory beside the output, renamed into place only
when everything is done (``in_place``: over the input).  ``dry_run`` does
all of it in a temporary directory and keeps nothing.  The result is a
``Report``: counts per class, jobs per status, what could not be
converted.  ``migrate_storage`` converts an open storage in place (a
ZEO or RelStorage database that zodbupdate already turned into Python 3
pickles).  See ``docs/migration.rst``.
"""
import collections
import os
import shutil
import tempfile

import transaction
import zope.interface
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import ZODB.utils
from ZODB.Connection import TransactionMetaData

from zasync import interfaces
from zasync.migration import objects
from zasync.migration import rules
from zasync.migration.records import RecordConverter
from zasync.migration.records import class_of
from zasync.migration.records import referred_databases

__all__ = ['IMigrationReport', 'migrate', 'migrate_storage',
           'MigrationError', 'Report', 'RENAMES']

RENAMES = rules.RENAMES
#: records stored per transaction of step 1
RECORDS_PER_TRANSACTION = 5000
_MAGICS = (b'FS21', b'FS30')


class MigrationError(Exception):
    """The migration cannot be done; the message is one line, and nothing
    was written."""


class IMigrationReport(zope.interface.Interface):
    """What a migration did (or, in a dry run, would do)."""

    classes = zope.interface.Attribute(
        '``Counter`` of the records by class, as they were')
    renamed = zope.interface.Attribute(
        '``{old class: new class}`` for the classes that changed')
    statuses = zope.interface.Attribute(
        '``Counter`` of the jobs by status (the ids, ``pending-status``...)'
        ' after the migration')
    problems = zope.interface.Attribute(
        '``(oid, class, reason)`` for everything that could not be '
        'converted')
    missing = zope.interface.Attribute(
        'the globals that could not be imported while converting')

    def summary():
        """One line: records, jobs per status, problems."""


@zope.interface.implementer(IMigrationReport)
class Report:

    def __init__(self, dry_run=False):
        self.dry_run = dry_run
        self.classes = collections.Counter()
        self.renamed = {}
        self.statuses = collections.Counter()
        self.problems = []
        self.missing = set()
        self.notes = []
        self.records = 0
        self.rebuilt = 0

    def problem(self, oid, cls, reason):
        self.problems.append((oid, cls, reason))

    def note(self, text):
        self.notes.append(text)

    def count(self, old_class, new_class):
        self.records += 1
        self.classes[old_class] += 1
        if new_class != old_class and new_class != '?':
            self.renamed[old_class] = new_class

    def lines(self):
        """The report for people, one line each."""
        result = []
        for cls, count in sorted(self.classes.items()):
            new = self.renamed.get(cls)
            result.append('%6d  %s%s' % (count, cls,
                                         ' -> ' + new if new else ''))
        for status, count in sorted(self.statuses.items()):
            result.append('jobs %s: %d' % (status, count))
        for text in self.notes:
            result.append(text)
        for name in sorted(self.missing):
            result.append('could not import %s (kept as a reference to '
                          'its name; make its module importable and '
                          'migrate again to check it)' % name)
        for oid, cls, reason in self.problems:
            result.append('problem: oid %s (%s): %s' % (
                '-' if oid is None else '0x%x' % oid, cls, reason))
        return result

    def summary(self):
        jobs = sum(self.statuses.values())
        statuses = ', '.join('%d %s' % (count, status.replace('-status', ''))
                             for status, count in sorted(
                                 self.statuses.items()))
        return '%s %d records (%d classes renamed, %d objects rebuilt); ' \
            '%d jobs%s; %d problem(s)' % (
                'would convert' if self.dry_run else 'converted',
                self.records, len(self.renamed), self.rebuilt, jobs,
                ' (%s)' % statuses if statuses else '', len(self.problems))


# --------------------------------------------------------------------------
# Files


def check_source(path):
    """Refuse what is not a readable FileStorage file (one line)."""
    if not os.path.exists(path):
        raise MigrationError('%s does not exist' % path)
    if not os.path.isfile(path):
        raise MigrationError('%s is not a file' % path)
    try:
        with open(path, 'rb') as f:
            magic = f.read(4)
    except OSError as e:
        raise MigrationError('cannot read %s: %s' % (path, e.strerror))
    if magic not in _MAGICS:
        raise MigrationError(
            '%s is not a ZODB FileStorage file (it starts with %r, not '
            'FS21 or FS30)' % (path, magic))


def _working_copy(path, directory):
    """A copy of ``path`` in ``directory`` that ZODB 6 opens (magic FS30:
    the record format is the same as FS21's)."""
    copy = os.path.join(directory, 'source.fs')
    shutil.copyfile(path, copy)
    os.chmod(copy, 0o600)
    with open(copy, 'r+b') as f:
        f.write(b'FS30')
    try:
        storage = ZODB.FileStorage.FileStorage(copy, read_only=True)
    except Exception as e:
        raise MigrationError('%s is not a valid FileStorage file: %s' % (
            path, _one_line(e)))
    size = os.path.getsize(copy)
    if storage.getSize() < size:
        storage.close()
        raise MigrationError(
            '%s is damaged: its last %d bytes are not a complete transaction'
            ' (check it with fstest, repair it with fsrecover)'
            % (path, size - storage.getSize()))
    return storage


def _one_line(error):
    text = str(error).strip().splitlines()
    return '%s%s' % (type(error).__name__, ': ' + text[0] if text else '')


def _oids(storage):
    """The oids of the current records, in order, read one at a time."""
    if not hasattr(storage, 'record_iternext') and hasattr(storage,
                                                           'changes'):
        # a DemoStorage (a dry run in place): its base's, then its own
        base = storage.base
        yield from _oids(base)
        for oid in _oids(storage.changes):
            try:
                base.load(oid)
            except ZODB.POSException.POSKeyError:
                yield oid
        return
    next_oid = None
    while True:
        try:
            oid, tid, data, next_oid = storage.record_iternext(next_oid)
        except (ValueError, KeyError, IndexError):
            return   # (an empty storage)
        yield oid
        if next_oid is None:
            return


def _convert_records(source, target, report, progress, in_place=False,
                     referred=None):
    """Step 1: every current record of ``source`` stored in ``target``
    (``in_place``: the same storage) pickled again; the names of the
    other databases its records refer to are added to ``referred``."""
    total = len(source)
    done = 0
    with RecordConverter() as converter:
        txn = None
        stored = 0
        for oid in _oids(source):
            try:
                data, tid = source.load(oid)
            except ZODB.POSException.POSKeyError:
                continue   # (its creation undone)
            old_class = class_of(data)
            if referred is not None:
                referred |= referred_databases(data)
            new, problem = converter.convert(oid, data)
            report.count(old_class, class_of(new) if not problem else '?')
            if problem:
                report.problem(ZODB.utils.u64(oid), old_class, problem)
            if target is not None and (new != data or not in_place):
                if txn is None:
                    txn = TransactionMetaData()
                    txn.note('zasync migrate: records for Python 3')
                    target.tpc_begin(txn)
                target.store(oid, tid if in_place else ZODB.utils.z64, new,
                             '', txn)
                stored += 1
                if stored >= RECORDS_PER_TRANSACTION:
                    target.tpc_vote(txn)
                    target.tpc_finish(txn)
                    txn, stored = None, 0
            done += 1
            if progress is not None:
                progress(done, total, 'records')
        if txn is not None:
            target.tpc_vote(txn)
            target.tpc_finish(txn)
        report.missing |= converter.missing.names


def _rebuild(db, report, progress, savepoints=False):
    """Step 2 on every member of ``db``; then the jobs are counted."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        rebuilder = objects.Rebuilder(report)
        members = sorted(db.databases.items())
        for name, member_db in members:
            rebuilder.move_root(conn.get_connection(name))
        tm.commit() if not savepoints else tm.savepoint(True)
        total = sum(len(member_db.storage) for _, member_db in members)
        done = 0
        for name, member_db in members:
            member = conn.get_connection(name)
            for oid in list_oids(member_db.storage):
                done += 1
                try:
                    obj = member.get(oid)
                    if rebuilder.rebuild(obj):
                        report.rebuilt += 1
                except Exception as e:
                    report.problem(ZODB.utils.u64(oid), '?',
                                   'not rebuilt: %s' % _one_line(e))
                if done % objects.BATCH == 0:
                    _flush(tm, conn, savepoints)
                if progress is not None:
                    progress(done, total, 'objects')
        _flush(tm, conn, savepoints)
        for name, member_db in members:
            member = conn.get_connection(name)
            for oid in list_oids(member_db.storage):
                try:
                    obj = member.get(oid)
                    if interfaces.IJob.providedBy(obj):
                        report.statuses[str(obj.status)] += 1
                except Exception:
                    pass
            member.cacheMinimize()
        if savepoints:
            tm.abort()
    finally:
        tm.abort()
        conn.close()


def _flush(tm, conn, savepoints):
    if savepoints:
        tm.savepoint(True)
    else:
        objects.commit(tm, conn)


def list_oids(storage):
    """The oids of a storage's current records (read lazily)."""
    return _oids(storage)


def _close(*things):
    for thing in things:
        if thing is not None:
            try:
                thing.close()
            except Exception:
                pass


def _remove(path):
    for suffix in ('', '.index', '.lock', '.tmp'):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def migrate(sources, outputs=None, dry_run=False, progress=None):
    """Convert the FileStorage files ``sources`` -- ``[(name, path)]``:
    the database names of a multi-database (the first one is the main
    one; a single database is ``[('unnamed', path)]``; the main one's
    name may be ``None``: then it is the name the other members' references
    give it, or ``''``, as Zope names the unnamed ``<zodb>``; a reference
    to a database that is not given is an error) -- into ``outputs``
    (paths, one per source; the same path as the source converts in
    place, after everything else succeeded).  ``dry_run``: nothing is
    kept.  ``progress(done, total, what)`` is called as it goes.  Return
    a ``Report``; ``MigrationError`` (nothing written) if it cannot be
    done."""
    if not sources:
        raise MigrationError('no database to migrate')
    names = [name for name, path in sources if name is not None]
    if any(name is None for name, path in sources[1:]):
        raise MigrationError('name every member database but the main one')
    if len(set(names)) != len(names):
        raise MigrationError('database names must differ: %s'
                             % ', '.join(names))
    if not dry_run:
        if outputs is None or len(outputs) != len(sources):
            raise MigrationError('one output per database is needed')
    for name, path in sources:
        check_source(path)
    inputs = {os.path.realpath(path) for name, path in sources}
    if not dry_run:
        seen = set()
        for output in outputs:
            real = os.path.realpath(output)
            if real in seen:
                raise MigrationError('two databases cannot both be written '
                                     'to %s' % output)
            seen.add(real)
            if os.path.exists(output) and real not in inputs:
                raise MigrationError('%s exists already: remove it or '
                                     'choose another output' % output)
            directory = os.path.dirname(os.path.abspath(output))
            if not os.path.isdir(directory):
                raise MigrationError('%s: no directory %s' % (output,
                                                              directory))
    report = Report(dry_run=dry_run)
    workdirs = []
    temps = []
    try:
        return _migrate_files(sources, outputs, dry_run, progress, report,
                              workdirs, temps)
    except MigrationError:
        raise
    except Exception as e:
        first = ('; first problem: oid 0x%x: %s' % (
            report.problems[0][0], report.problems[0][2])
            if report.problems and report.problems[0][0] is not None
            else '')
        raise MigrationError('cannot migrate %s: %s%s' % (
            ', '.join(path for name, path in sources), _one_line(e), first))
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def _migrate_files(sources, outputs, dry_run, progress, report, workdirs,
                   temps):
    db = None
    referred = []
    try:
        for index, (name, path) in enumerate(sources):
            where = (os.path.dirname(os.path.abspath(outputs[index]))
                     if not dry_run else None)
            workdir = tempfile.mkdtemp(prefix='.zasync-migrate-', dir=where)
            workdirs.append(workdir)
            source = _working_copy(path, workdir)
            temp = os.path.join(workdir, 'migrated.fs')
            target = ZODB.FileStorage.FileStorage(temp, create=True)
            referred.append(set())
            try:
                _convert_records(source, target, report, progress,
                                 referred=referred[-1])
            finally:
                _close(source, target)
            _remove(os.path.join(workdir, 'source.fs'))
            temps.append(temp)
        sources = _named(sources, referred, report)
        databases = {}
        for (name, path), temp in zip(sources, temps):
            storage = ZODB.FileStorage.FileStorage(temp)
            try:
                db = ZODB.DB(storage, database_name=name,
                             databases=databases)
            except Exception as e:
                storage.close()
                raise MigrationError(
                    'cannot migrate %s: its root object cannot be read (%s)'
                    % (path, _one_line(e)))
        db = databases[sources[0][0]]
        _rebuild(db, report, progress)
        for member in list(databases.values()):
            member.close()
        db = None
        if not dry_run:
            for temp, output in zip(temps, outputs):
                _remove(output + '.index')
                os.replace(temp, output)
                if os.path.exists(temp + '.index'):
                    os.replace(temp + '.index', output + '.index')
                _remove(temp)
        return report
    finally:
        if db is not None:
            for member in list(db.databases.values()):
                _close(member)


def _named(sources, referred, report):
    """``sources`` with the main database's name found (if it is
    ``None``); ``MigrationError`` if a member refers to a database that
    is not given."""
    given = {name for name, path in sources if name is not None}
    unknown = set().union(*referred) - given
    if sources[0][0] is None:
        if len(unknown) > 1:
            raise MigrationError(
                'the databases refer to databases %s, which are not given: '
                'name the main one (--file NAME=PATH) and give the others'
                % ', '.join(repr(name) for name in sorted(unknown)))
        name = unknown.pop() if unknown else ''
        sources = [(name, sources[0][1])] + list(sources[1:])
    names = {name for name, path in sources}
    for (name, path), names_referred in zip(sources, referred):
        missing = sorted(names_referred - names - {name})
        if missing:
            raise MigrationError(
                '%s refers to objects in a database named %r, which is not '
                'given: migrate the members of a multi-database together '
                '(--file %s=PATH)' % (path, missing[0], missing[0] or 'NAME'))
    if len(sources) > 1:
        report.note('databases: %s' % ', '.join(
            '%r (%s)' % (name, os.path.basename(path))
            for name, path in sources))
    return sources


def migrate_storage(db, dry_run=False, progress=None):
    """Convert the open database ``db`` (and its other members) in place:
    for a ZEO or RelStorage database whose records zodbupdate already
    pickled for Python 3.  ``dry_run``: the changes go to temporary files
    (a ``DemoStorage`` over each member) and are thrown away.  Return a
    ``Report``."""
    report = Report(dry_run=dry_run)
    if not dry_run:
        for name, member in sorted(db.databases.items()):
            storage = member.storage
            _convert_records(storage, storage, report, progress,
                             in_place=True)
        _rebuild(db, report, progress)
        return report
    import ZODB.DemoStorage
    workdir = tempfile.mkdtemp(prefix='zasync-migrate-')
    databases = {}
    try:
        for index, (name, member) in enumerate(sorted(db.databases.items())):
            changes = ZODB.FileStorage.FileStorage(
                os.path.join(workdir, '%d.fs' % index), create=True)
            demo = ZODB.DemoStorage.DemoStorage(
                base=member.storage, changes=changes,
                close_base_on_close=False, close_changes_on_close=True)
            _convert_records(member.storage, demo, report, progress,
                             in_place=True)
            ZODB.DB(demo, database_name=name, databases=databases)
        _rebuild(databases[db.database_name], report, progress)
        return report
    finally:
        for member in list(databases.values()):
            _close(member)
        shutil.rmtree(workdir, ignore_errors=True)
