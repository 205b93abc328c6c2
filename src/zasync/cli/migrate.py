"""``zasync migrate``: convert a zc.async database so that zasync runs it.

::

    zasync migrate --file Data.fs [--output Migrated.fs] [--dry-run]
    zasync migrate --file Data.fs --in-place
    zasync migrate --file Data.fs --file async=async.fs --output-dir DIR
    zasync migrate --zope-conf etc/zope.conf --output-dir DIR
    zasync migrate --zodb zeo://host:port --in-place

``--file`` names a FileStorage written by zc.async on Python 2 (or already
converted by ``zodbupdate --convert-py3``); several ``--file NAME=PATH``
are the members of one multi-database (the first is the main database,
whose name may be left out: it is then the one the other members'
references give it; the names are the database names the cross-database
references use).  ``--zope-conf`` takes the FileStorages of a zope.conf's
``<zodb>`` sections, named as Zope names them (the unnamed one ``''``).
The input is never written unless ``--in-place`` says so: the default
output of ``Data.fs`` is ``Data.zasync.fs`` beside it.  ``--dry-run``
reports what would change and keeps nothing.  ``--zodb`` converts a
database zodbupdate already turned into Python 3 pickles (ZEO,
RelStorage), in place.  A progress bar shows on a terminal; the report
ends with a summary line; an error is one line and exit status 1.
"""
import os
import sys

from zasync.cli.common import CommandLineError
from zasync.cli.common import UsageError
from zasync.cli.common import load_zope_conf
from zasync.cli.common import open_uri
from zasync.cli.output import Bar

__all__ = ['add_commands', 'default_output', 'migrate', 'parse_file',
           'zope_conf_sources']


def parse_file(text):
    """``NAME=PATH`` or ``PATH`` -> ``(name or None, path)``."""
    name, sep, path = text.partition('=')
    if sep and name and os.sep not in name and not os.path.exists(text):
        return name, path
    return None, text


def default_output(path):
    """``Data.fs`` -> ``Data.zasync.fs`` (beside it)."""
    stem, ext = os.path.splitext(path)
    return stem + '.zasync' + (ext or '.fs')


def _storage_type(factory):
    try:
        return factory.config.getSectionType()
    except AttributeError:
        return type(factory).__name__


def zope_conf_sources(path):
    """``[(database name, FileStorage path)]`` of the ``<zodb>`` sections
    of the zope.conf ``path`` (read with the zope.conf schema the other
    commands use; nothing is opened), and the notes to print: a
    ``UsageError`` (one line) for a missing or broken file, no ``<zodb>``
    section, or a database that is not a plain ``<filestorage>``."""
    import ZODB.config
    options = load_zope_conf(path)
    factories = list(options.databases or ())
    if not factories:
        raise UsageError('%s has no <zodb> section' % (path,))
    sources, notes = [], []
    for factory in factories:
        name = factory.name or ''
        where = ('database %r' % name) if name else 'the main database'
        storage = factory.config.storage
        if not isinstance(storage, ZODB.config.FileStorage):
            raise UsageError(
                '%s of %s is a <%s> storage, not a <filestorage>: zasync '
                'migrate --zope-conf reads FileStorage files (convert other '
                'storages with zodbupdate --convert-py3, then zasync migrate '
                '--zodb URI --in-place)' % (where, path,
                                            _storage_type(storage)))
        file_path = os.path.abspath(storage.config.path)
        blob_dir = getattr(storage.config, 'blob_dir', None)
        if blob_dir:
            notes.append('%s has blobs in %s: blob files are not pickles '
                         'and are not converted; keep that directory for '
                         'the migrated %s' % (where, blob_dir,
                                              os.path.basename(file_path)))
        sources.append((name, file_path))
    return sources, notes


def _sources(args):
    if args.zope_conf:
        return zope_conf_sources(args.zope_conf)
    sources = []
    for index, text in enumerate(args.file):
        name, path = parse_file(text)
        if name is None:
            if index and len(args.file) > 1:
                raise CommandLineError(
                    'with several --file, name each member but the first '
                    '(--file async=async.fs)')
            # (the main one of several: named as the others refer to it)
            name = None if len(args.file) > 1 else 'unnamed'
        sources.append((name, path))
    return sources, []


def _outputs(args, sources):
    if args.dry_run:
        return None
    if args.in_place:
        return [path for name, path in sources]
    if args.output_dir:
        return [os.path.join(args.output_dir, os.path.basename(path))
                for name, path in sources]
    if args.output:
        return [args.output]
    return [default_output(path) for name, path in sources]


def _check(args):
    given = [option for option, value in (
        ('--output', args.output), ('--output-dir', args.output_dir),
        ('--in-place', args.in_place), ('--dry-run', args.dry_run))
        if value]
    if len(given) > 1:
        raise CommandLineError('%s do not go together' % ' and '.join(given))
    inputs = [option for option, value in (
        ('--file', args.file), ('--zope-conf', args.zope_conf),
        ('--zodb', args.zodb)) if value]
    if len(inputs) > 1:
        raise CommandLineError('%s do not go together' % ' and '.join(inputs))
    if not inputs:
        raise CommandLineError('say which database: --file PATH (or '
                               '--zope-conf FILE, --zodb URI)')
    if args.zodb and not (args.in_place or args.dry_run):
        raise CommandLineError('--zodb converts the database in place: say '
                               '--in-place (or --dry-run)')
    if args.zodb and (args.output or args.output_dir):
        raise CommandLineError('--zodb converts in place; --output and '
                               '--output-dir are for --file')
    if args.file and len(args.file) > 1 and args.output:
        raise CommandLineError('several --file need --output-dir DIR (or '
                               '--in-place)')
    if args.zope_conf and args.output:
        raise CommandLineError('--zope-conf needs --output-dir DIR (or '
                               '--in-place, --dry-run)')


def _print_report(report, args, out, notes=()):
    for note in notes:
        print(note, file=out)
    if args.verbose or args.dry_run:
        for line in report.lines():
            print(line, file=out)
    else:
        for oid, cls, reason in report.problems:
            print('problem: oid %s (%s): %s' % (
                '-' if oid is None else '0x%x' % oid, cls, reason), file=out)
        for name in sorted(report.missing):
            print('could not import %s' % name, file=out)
    print(report.summary(), file=out)


def migrate(args):
    """The ``migrate`` command."""
    from zasync import migration   # (zodbupdate: the migrate extra)
    _check(args)
    bar = Bar(sys.stderr)
    notes = ()
    made = None   # (an --output-dir made here: removed on failure)

    def progress(done, total, what):
        bar.show(done, total, '%s %d/%d' % (what, done, total))

    try:
        if args.zodb:
            db = open_uri(args.zodb, must_exist=True)
            try:
                report = migration.migrate_storage(
                    db, dry_run=args.dry_run, progress=progress)
            finally:
                db.close()
        else:
            sources, notes = _sources(args)
            outputs = _outputs(args, sources)
            if args.output_dir and not os.path.exists(args.output_dir):
                os.makedirs(args.output_dir)
                made = args.output_dir
            report = migration.migrate(sources, outputs,
                                       dry_run=args.dry_run,
                                       progress=progress)
    except migration.MigrationError as e:
        bar.end()
        if made is not None:
            os.rmdir(made)
        raise UsageError(str(e))
    bar.end()
    _print_report(report, args, sys.stdout, notes)
    if not args.dry_run and not args.zodb:
        for output in outputs:
            print('wrote %s' % output)
    return 1 if report.problems else 0


def add_commands(subparsers):
    parser = subparsers.add_parser(
        'migrate', help='convert a zc.async database (Python 2) for zasync',
        description=__doc__.split('::')[0].split('\n\n', 1)[1].strip())
    parser.add_argument(
        '--file', action='append', default=[], metavar='[NAME=]PATH',
        help='a FileStorage written by zc.async (repeat with NAME=PATH for '
             'the members of a multi-database; the first is the main one)')
    parser.add_argument(
        '--zope-conf', metavar='FILE',
        help='the FileStorages of the <zodb> sections of a zope.conf (a '
             'multi-database: converted together, named as in the file)')
    parser.add_argument(
        '--zodb', metavar='URI',
        help='a database zodbupdate --convert-py3 already converted (ZEO, '
             'RelStorage): converted in place (needs --in-place)')
    parser.add_argument('--output', metavar='PATH',
                        help='where to write the converted database '
                             '(default: NAME.zasync.fs beside the input)')
    parser.add_argument('--output-dir', metavar='DIR',
                        help='write each converted member here, under its '
                             'file name')
    parser.add_argument('--in-place', action='store_true',
                        help='replace the input by the converted database')
    parser.add_argument('--dry-run', action='store_true',
                        help='report what would change; write nothing')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='print the counts per class and status too')
    parser.set_defaults(func=migrate)
