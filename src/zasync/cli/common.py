"""What the sub-commands of ``zasync`` share: the one-line error, the
database options and the opening of a database, argument types, logging
and JSON output.

A ``UsageError`` is a problem to report as one line with exit status 1 (a
bad URI, a missing database, an unknown job id); a ``CommandLineError``
is one with exit status 2, as argparse's own errors (options that do not go
together); ``zasync.cli.main`` prints both.  ``ArgumentParser`` reports
argparse's errors on one line too (``zasync worker: error: ...``).

The inspection commands open databases with ``ReadOnlyDatabase``: every
storage read-only (a FileStorage without its lock, so beside a running
worker; ZEO and RelStorage as read-only clients), a database that does not
exist is an error (none is created), and a ``--zope-conf`` is only read for
its ``<zodb>`` sections -- no site ZCML, no ``DatabaseOpened``, so no
installer and no dispatcher runs in an inspection process.  The commands
that change jobs (``zasync.cli.manage``) open its ``<zodb>`` sections the
same way, writable (``open_database``).  The worker opens a zope.conf the
way a Zope server does (``open_zope_conf``).
"""
import argparse
import json
import logging
import math
import os
import re
import sys

from zasync import instanceuuid
from zasync import interfaces
from zasync import utils
from zasync.job import tolerant_class_factory
from zasync.worker import forget_prefetched_oids_on_reconnect

__all__ = ['ArgumentParser', 'CommandLineError', 'DEFAULT_DB', 'LOG_FORMAT',
           'MAX_SECONDS', 'ReadOnlyDatabase', 'UsageError',
           'add_database_arguments', 'check_member_databases',
           'close_databases', 'configure_logging', 'load_zope_conf',
           'member_hint', 'open_database', 'open_uri', 'open_zope_conf',
           'open_zope_conf_databases', 'open_zope_conf_read_only',
           'positive_seconds',
           'print_json', 'seconds', 'uuid_from_file', 'zcml_error']

#: the database the inspection commands read by default (the demo's)
DEFAULT_DB = os.path.join('var', 'Data.fs')

LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s'

#: the longest duration an option takes (``--grace``, ``--ping-interval``,
#: ``--death-interval``): one day
MAX_SECONDS = 86400.0


class UsageError(Exception):
    """A problem to report as one line with a non-zero exit status (a bad
    URI, a missing database, an unknown job id, ...)."""

    #: the exit status of the command
    status = 1


class CommandLineError(UsageError):
    """Options that make no sense together: reported like argparse's own
    errors, with exit status 2."""

    status = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad command line as one line
    (``zasync worker: error: argument --grace: ...``, exit status 2)
    instead of the usage followed by the error; ``--help`` shows the
    usage."""

    def error(self, message):
        self.exit(2, '%s: error: %s\n' % (self.prog, message))


# --------------------------------------------------------------------------
# Argument types


def seconds(text):
    """A finite number of seconds, from 0 to ``MAX_SECONDS``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number of seconds'
                                         % (text,))
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            '%r is not a finite number of seconds' % (text,))
    if value < 0:
        raise argparse.ArgumentTypeError('%r: seconds must not be negative'
                                         % (text,))
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            '%r: at most %g seconds (one day)' % (text, MAX_SECONDS))
    return value


def positive_seconds(text):
    """A finite number of seconds, more than 0 (and at most
    ``MAX_SECONDS``)."""
    value = seconds(text)
    if not value:
        raise argparse.ArgumentTypeError('%r: must be more than 0 seconds'
                                         % (text,))
    return value


# --------------------------------------------------------------------------
# Databases


def add_database_arguments(parser):
    """``--zodb URI`` or ``--zope-conf FILE`` (one of them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        '--zodb', metavar='URI',
        help='the database, as a zodburi URI: file:///path/Data.fs, '
             'zeo://host:port, postgres://user@host:port/db?driver=psycopg2 '
             '(RelStorage), ...')
    group.add_argument(
        '--zope-conf', metavar='FILE',
        help='a zope.conf: its databases, site definition (ZCML), '
             'product-config and logging')


def _with_query(uri, name, value):
    if (name + '=') in uri:
        return uri
    return '%s%s%s=%s' % (uri, '&' if '?' in uri else '?', name, value)


#: how a URI asks for a read-only storage, by scheme (``zconfig://`` has
#: its storage section set read-only instead)
READ_ONLY_QUERIES = {
    'file': ('read_only', '1'),
    'zeo': ('read_only', '1'),
    'postgres': ('read_only', 'true'),
    'mysql': ('read_only', 'true'),
    'oracle': ('read_only', 'true'),
    'sqlite': ('read_only', 'true'),
}


#: the files a FileStorage adds beside its data file
_FILESTORAGE_SUFFIXES = ('.lock', '.tmp', '.index', '.index_tmp')


class _Leftovers:
    """The files that opening FileStorages at ``paths`` may create (the
    data file, ``.lock``, ``.tmp``, ``.index``): ``remove()`` deletes those
    that did not exist before, after a failed open."""

    def __init__(self, paths):
        self.new = [name for path in paths
                    for name in [path] + [path + suffix for suffix
                                          in _FILESTORAGE_SUFFIXES]
                    if not os.path.exists(name)]

    def remove(self):
        for name in self.new:
            try:
                os.remove(name)
            except OSError:
                pass


def _writes_nothing(storage):
    """Whether ``storage`` cannot change what is stored: read-only, or in
    memory over read-only bases."""
    import ZODB.DemoStorage
    import ZODB.MappingStorage
    if isinstance(storage, ZODB.MappingStorage.MappingStorage):
        return True
    if isinstance(storage, ZODB.DemoStorage.DemoStorage):
        return (_writes_nothing(storage.base)
                and _writes_nothing(storage.changes))
    try:
        return bool(storage.isReadOnly())
    except Exception:
        return False


def _has_root(storage):
    import ZODB.POSException
    import ZODB.utils
    try:
        ZODB.utils.load_current(storage, ZODB.utils.z64)
    except ZODB.POSException.POSKeyError:
        return False
    return True


def _empty(where):
    return UsageError('%s is an empty database: it has no root object '
                      '(nothing was ever stored in it)' % (where,))


def open_uri(uri, read_only=False, must_exist=False, connect_timeout=None,
             missing_hint=''):
    """Open the database of a zodburi URI; ``UsageError`` for a bad one.

    ``read_only``: the storage is opened read-only (a URI whose storage
    cannot be is refused before it is opened) and an empty database is an
    error.  ``must_exist``: a ``file://`` URI must name an existing file
    (else ``no database at PATH`` and ``missing_hint``).  When a
    FileStorage cannot be opened, the files the attempt created
    (``.lock``, ``.tmp``, ...) are removed."""
    import zodburi
    import ZODB
    if '://' not in uri:
        raise UsageError('%r is not a database URI (expected e.g. '
                         'file:///path/Data.fs or zeo://host:port)' % (uri,))
    given = uri
    scheme = uri.split('://', 1)[0]
    leftovers = _Leftovers(())
    if scheme == 'file':
        path = uri.split('://', 1)[1].split('?', 1)[0]
        if (must_exist or read_only) and not os.path.exists(path):
            raise UsageError('no database at %s%s' % (path, missing_hint))
        if os.path.isdir(path):
            raise UsageError('%s is a directory, not a FileStorage'
                             % (path,))
        if not read_only:
            leftovers = _Leftovers([path])
    elif scheme == 'zeo':
        if connect_timeout is not None:
            uri = _with_query(uri, 'wait_timeout',
                              max(1, int(round(connect_timeout))))
    if read_only:
        if scheme in READ_ONLY_QUERIES:
            # (A read-only FileStorage takes no lock: a worker may hold it.)
            uri = _with_query(uri, *READ_ONLY_QUERIES[scheme])
        elif scheme != 'zconfig':
            raise UsageError(
                'cannot open %s read-only (the inspection commands read '
                'file://, zeo://, zconfig://, postgres://, mysql://, '
                'oracle:// and sqlite:// URIs, or --zope-conf)' % (given,))
    try:
        factory, dbkw = zodburi.resolve_uri(uri)
    except KeyError:
        raise UsageError('unknown database URI scheme %r in %r' % (
            scheme, given))
    except Exception as e:
        raise UsageError('bad database URI %r: %s' % (given,
                                                      utils.one_line(e)))
    if read_only and scheme == 'zconfig':
        section = getattr(factory, '__self__', None)
        if section is None:
            raise UsageError('cannot open %s read-only' % (given,))
        _make_read_only(section, given)
    try:
        storage = factory()
    except Exception as e:
        leftovers.remove()
        raise UsageError('cannot open %s: %s' % (given, utils.one_line(e)))
    if read_only:
        problem = None
        if not _writes_nothing(storage):
            problem = UsageError('cannot open %s read-only' % (given,))
        elif not _has_root(storage):
            problem = _empty(given)
        if problem is not None:
            storage.close()
            raise problem
    forget_prefetched_oids_on_reconnect(storage)
    # (a module failing at import gives broken placeholders, as a missing
    # one does: such jobs are held, and inspected, like any unloadable one)
    dbkw.setdefault('class_factory', tolerant_class_factory)
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception as e:
        storage.close()
        leftovers.remove()
        raise UsageError('cannot open %s: %s' % (given, utils.one_line(e)))


def _nested_storages(config):
    """The storage sections inside the storage section ``config`` (the
    base of a ``<demostorage>``, ``<zlibstorage>``, ...)."""
    found = []
    for name, value in sorted(vars(config).items()):
        if name.startswith('_'):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for value in values:
            if (callable(getattr(value, 'open', None))
                    and getattr(value, 'config', None) is not None):
                found.append(value)
    return found


def _section_type(factory):
    try:
        return factory.config.getSectionType()
    except AttributeError:
        return type(factory).__name__


def _file_storage_paths(factory):
    """The paths of the ``<filestorage>`` sections in the storage section
    ``factory``."""
    import ZODB.config
    paths = []
    if isinstance(factory, ZODB.config.FileStorage):
        paths.append(os.path.abspath(factory.config.path))
    for nested in _nested_storages(factory.config):
        paths.extend(_file_storage_paths(nested))
    return paths


def _make_read_only(factory, where):
    """Make the ZConfig storage section ``factory`` open its storage
    read-only: ``read-only`` on (FileStorage, ZEO, RelStorage, ...), on
    every storage a wrapper such as ``<demostorage>`` contains;
    ``UsageError`` for a missing FileStorage (none is created) and for a
    storage type that has no read-only mode."""
    _prepare_storage(factory, where, read_only=True)


def _prepare_storage(factory, where, read_only):
    """``_make_read_only``; without ``read_only``, only the FileStorages
    of the storage section ``factory`` must exist (none is created)."""
    import ZODB.config
    config = factory.config
    if isinstance(factory, ZODB.config.FileStorage):
        path = os.path.abspath(config.path)
        if not os.path.exists(path):
            raise UsageError('no database at %s (%s)' % (path, where))
        if os.path.isdir(path):
            raise UsageError('%s is a directory, not a FileStorage (%s)'
                             % (path, where))
        config.create = False
        blob_dir = getattr(config, 'blob_dir', None)
        if read_only and blob_dir and not os.path.isdir(blob_dir):
            config.blob_dir = None   # (no blobs to read; create no folder)
    nested = _nested_storages(config)
    for inner in nested:
        _prepare_storage(inner, where, read_only)
    if not read_only:
        return
    if hasattr(config, 'read_only'):
        config.read_only = True
    elif not nested and not isinstance(factory, ZODB.config.MappingStorage):
        raise UsageError('cannot open the <%s> storage of %s read-only'
                         % (_section_type(factory), where))


def load_zope_conf(path):
    """The options of the zope.conf ``path`` (``UsageError`` if there is
    none, or it is broken), with its ``path`` entries on ``sys.path``."""
    if not os.path.exists(path):
        raise UsageError('no such configuration file: %s' % (path,))
    try:
        from zasync import runner
    except ImportError as e:
        raise UsageError('--zope-conf needs the Zope packages (pip install '
                         '"zasync[zope]"): %s' % (utils.one_line(e),))
    try:
        options = runner.load_options(path)
    except Exception as e:
        raise UsageError('%s: %s' % (path, utils.one_line(e)))
    for entry in reversed(options.path or ()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return options


def _database_name(factory):
    return factory.name or ''


def _describe(name, path):
    return '%s of %s' % (('database %r' % name) if name
                         else 'the main database', path)


def close_databases(db):
    """Close ``db`` and the other members of its multi-database."""
    members = list(getattr(db, 'databases', {}).values())
    for member in [db] + [m for m in members if m is not db]:
        try:
            member.close()
        except Exception:
            pass


def open_zope_conf_read_only(path):
    """Open the databases of the ``<zodb>`` sections of the zope.conf
    ``path`` read-only, and nothing else: no logging set-up, no site ZCML,
    no ``DatabaseOpened``.  Return the main database (the others are its
    ``databases``).  A FileStorage that does not exist, a storage type
    without a read-only mode or an empty database is a ``UsageError``."""
    return open_zope_conf_databases(path, read_only=True)


def open_zope_conf_databases(path, read_only=False):
    """Open the databases of the ``<zodb>`` sections of the zope.conf
    ``path`` as one multi-database, and nothing else: no logging set-up,
    no site ZCML, no ``DatabaseOpened`` (so no installer or dispatcher
    runs).  Return the main database, the first section (the others are
    its ``databases``, registered in the order of the sections).  A
    FileStorage that does not exist is a ``UsageError`` (none is
    created); with ``read_only`` (``open_zope_conf_read_only``) so are a
    storage type without a read-only mode and an empty database.  Without
    it, the databases load with ``tolerant_class_factory``, as
    ``open_uri``'s do."""
    import ZODB.POSException
    path = os.path.abspath(path)
    options = load_zope_conf(path)
    factories = list(options.databases or ())
    if not factories:
        raise UsageError('%s has no <zodb> section' % (path,))
    for factory in factories:
        _prepare_storage(factory.config.storage,
                         _describe(_database_name(factory), path), read_only)
        if not read_only:
            _tolerant_by_default(factory)   # (as open_uri)
    databases = {}
    result = []
    try:
        for factory in factories:
            name = _database_name(factory)
            where = _describe(name, path)
            if name in databases:
                raise UsageError('%s names two databases %r' % (path, name))
            try:
                db = factory.open()
            except ZODB.POSException.ReadOnlyError:
                # The read-only storage has no root object to load, and
                # ZODB.DB could not create one.
                raise _empty(where)
            except UsageError:
                raise
            except Exception as e:
                raise UsageError('cannot open %s: %s'
                                 % (where, utils.one_line(e)))
            db.databases = databases
            db.database_name = name
            databases[name] = db
            result.append(db)
            if read_only and not _writes_nothing(db.storage):
                raise UsageError('cannot open %s read-only' % (where,))
    except BaseException:
        for db in result:
            db.close()
        raise
    return result[0]


def zcml_error(error):
    """A ZCML error (zope.configuration's ``ConfigurationError`` spreads it
    over several lines) as one line: the innermost file and line, the
    message and its cause."""
    places, causes, message = [], [], []
    for arg in getattr(error, 'args', ()):
        if not isinstance(arg, str):
            continue
        if arg.strip().startswith('File "'):
            places.append(arg.strip().splitlines()[0])
        else:
            message.append(arg.strip())
    for detail in getattr(error, '_details', ()):
        detail = str(detail).strip()
        if detail.startswith('File "'):
            places.append(detail.splitlines()[0])
        elif detail:
            # 'zope.schema._bootstrapinterfaces.TooSmall: x' -> 'TooSmall: x'
            name, sep, rest = detail.partition(': ')
            if sep and ' ' not in name:
                detail = '%s: %s' % (name.rpartition('.')[2], rest)
            causes.append(detail.splitlines()[0])
    if not places and not message and not causes:
        return utils.one_line(error)
    parts = []
    if places:
        match = re.match(r'File "(.*)", line (\d+)', places[0])
        parts.append('%s, line %s' % match.groups() if match
                     else places[0])
    if message:
        parts.append(' '.join(message))
    parts.extend(causes)
    return ': '.join(parts)


def _missing_member(error, db):
    """The name of the member database that ``error`` (or the error that
    caused it: ZODB wraps it in a ``StateLoadError``) did not find among
    ``db.databases``, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyError) and len(error.args) == 1:
            name = error.args[0]
            if isinstance(name, str) and name not in db.databases:
                return name
        error = error.__cause__ or error.__context__
    return None


def check_member_databases(conn, hint=''):
    """Load the root of ``conn`` and the queues: a reference to a member
    database that is not configured becomes a ``UsageError`` (naming it,
    followed by ``hint``, in which ``{name}`` is its name) instead of a
    bare ``KeyError``."""
    try:
        with _quiet_missing_members(conn.db()):
            queues = conn.root().get(interfaces.KEY)
            if queues is not None:
                queues._p_activate()
    except Exception as e:
        name = _missing_member(e, conn.db())
        if name is None:
            raise
        raise UsageError(
            'the database refers to a member database named %r, which is '
            'not configured%s' % (name, hint.format(name=name))) from None


class _MissingMemberFilter(logging.Filter):
    """Drop ZODB's log record of a state that could not be loaded because
    it refers to a member database that is not configured: the command
    reports that as one line."""

    def __init__(self, db):
        super().__init__()
        self.db = db

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return error is None or _missing_member(error, self.db) is None


class _quiet_missing_members:
    """While in this context, ``_MissingMemberFilter`` on ZODB's
    ``ZODB.Connection`` log."""

    def __init__(self, db):
        self.filter = _MissingMemberFilter(db)
        self.logger = logging.getLogger('ZODB.Connection')

    def __enter__(self):
        self.logger.addFilter(self.filter)
        return self

    def __exit__(self, *exc):
        self.logger.removeFilter(self.filter)


def _starts_a_dispatcher():
    """Whether the loaded ZCML starts a threaded dispatcher when a
    database opens (``<zasync:dispatcher>``, as in ``single.zcml``)."""
    import zope.component
    from zasync.subscribers import ThreadedDispatcherInstaller
    gsm = zope.component.getGlobalSiteManager()
    return any(isinstance(registration.handler, ThreadedDispatcherInstaller)
               for registration in gsm.registeredHandlers())


def _tolerant_by_default(factory):
    """Make the ``<zodb>`` section ``factory`` open its database with
    ``tolerant_class_factory``, as ``open_uri`` does, unless it names a
    class factory of its own (``class-factory``, ZODB 6.3).  (Through the
    section, not ``db.classFactory`` afterwards: a connection keeps the
    factory of its database at its creation, and ``ZODB.DB`` pools the
    one it opened to look for the root.)"""
    if getattr(factory.config, 'class_factory', None) is None:
        factory.config.class_factory = tolerant_class_factory


def open_zope_conf(path, worker=False):
    """Load a zope.conf the way a Zope server does (logging, product-config,
    path, site ZCML), open its databases and announce them
    (``IDatabaseOpened``).  Return the main database.  Needs the ``zope``
    extra.  The worker uses it; the inspection commands use
    ``open_zope_conf_read_only``.  A missing or broken site definition, a
    storage that cannot be opened (files it created are removed again) and
    a ``DatabaseOpened`` subscriber that fails (such as one needing a
    member database that is not configured) are each a one-line
    ``UsageError``.
    Every database opens with ``zasync.job.tolerant_class_factory`` (unless
    its ``<zodb>`` section names a ``class-factory``), as with ``open_uri``:
    a job of a module failing at import is held as unloadable.
    With ``worker``, a site definition that starts a dispatcher of its own
    (``<zasync:dispatcher>``) is refused before any database opens.
    """
    path = os.path.abspath(path)
    options = load_zope_conf(path)
    import zope.app.appsetup.appsetup
    import zope.app.appsetup.product
    import zope.event
    from zasync import runner
    for factory in [options.eventlog] + list(options.loggers or ()):
        if factory is not None:
            factory()
    zope.app.appsetup.product.setProductConfigurations(
        options.product_config)
    site_zcml = os.path.join(os.path.dirname(path), options.site_definition)
    if not os.path.exists(site_zcml):
        raise UsageError('no site definition %s (site-definition of %s)'
                         % (site_zcml, path))
    try:
        runner.load_zcml(site_zcml, ('devmode',) if options.devmode else ())
    except Exception as e:
        raise UsageError('broken site definition %s: %s'
                         % (site_zcml, zcml_error(e)))
    if worker and _starts_a_dispatcher():
        raise UsageError(
            'the site definition %s starts a dispatcher of its own '
            '(<zasync:dispatcher>, as in single.zcml); a worker process needs '
            'one without it (e.g. configure.zcml and <zasync:jobs/>)'
            % (site_zcml,))
    factories = list(options.databases or ())
    if not factories:
        raise UsageError('%s has no <zodb> section' % (path,))
    for factory in factories:
        _tolerant_by_default(factory)
    leftovers = _Leftovers([p for factory in factories
                            for p in _file_storage_paths(
                                factory.config.storage)])
    try:
        dbs, _ = zope.app.appsetup.appsetup.multi_database(factories)
    except Exception as e:
        leftovers.remove()
        raise UsageError('cannot open the databases of %s: %s'
                         % (path, utils.one_line(e)))
    db = dbs[0]
    hint = ' (add a <zodb %s> section to %s)'
    try:
        with _quiet_missing_members(db):
            zope.event.notify(interfaces.DatabaseOpened(db))
    except Exception as e:
        close_databases(db)
        name = _missing_member(e, db)
        if name is not None:
            raise UsageError('the site definition %s needs a database named '
                             '%r, which %s does not configure%s'
                             % (site_zcml, name, path, hint % (name, path)))
        raise UsageError('opening the databases of %s failed: %s'
                         % (path, utils.one_line(e)))
    return db


def _quiet_libraries():
    """Without a logging configuration, Python prints the warnings of
    the storage libraries on stderr (RelStorage logs a failed connection
    before raising it): the commands report errors as one line instead."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def member_hint(args):
    """What to add to an error naming a member database ``{name}`` that
    the database options of ``args`` do not configure
    (``check_member_databases``)."""
    if getattr(args, 'zope_conf', None):
        return ' (add a <zodb {name}> section to %s)' % (
            os.path.abspath(args.zope_conf),)
    return (' (--zodb opens one database: use --zope-conf, with a <zodb '
            '{name}> section)')


def open_database(args):
    """The database of ``--zodb URI`` or ``--zope-conf FILE`` (its
    ``<zodb>`` sections only: see ``open_zope_conf_databases``) for a
    command that writes; it must exist.  Return the main database."""
    _quiet_libraries()
    if getattr(args, 'zope_conf', None):
        return open_zope_conf_databases(args.zope_conf)
    return open_uri(args.zodb, must_exist=True)


class ReadOnlyDatabase:
    """The database of the command line, opened for reading and a context
    manager: every storage read-only (a FileStorage without its lock, so
    a running worker may hold it; ZEO and RelStorage as read-only
    clients), a ``--zope-conf`` read only for its ``<zodb>`` sections (no
    site ZCML, no ``DatabaseOpened``: no installer or dispatcher runs),
    a missing or empty database an error, and every transaction
    aborted."""

    def __init__(self, args):
        _quiet_libraries()
        if args.zope_conf:
            self.db = open_zope_conf_read_only(args.zope_conf)
        else:
            uri = args.zodb or 'file://' + os.path.abspath(DEFAULT_DB)
            self.db = open_uri(uri, read_only=True, must_exist=True,
                               connect_timeout=args.timeout)
        hint = member_hint(args)
        try:
            self.conn = self.db.open()
            self.tm = self.conn.transaction_manager
            self.tm.begin()
            self.root = self.conn.root()
            check_member_databases(self.conn, hint)
        except UsageError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise UsageError('cannot read the database: %s'
                             % utils.one_line(e))

    def queues(self):
        queues = self.root.get(interfaces.KEY)
        if queues is None:
            raise UsageError('no zasync queues in this database (nothing '
                             'was ever queued or run here)')
        return queues

    def close(self):
        tm = getattr(self, 'tm', None)
        if tm is not None:
            tm.abort()
        conn = getattr(self, 'conn', None)
        if conn is not None:
            conn.close()
        close_databases(self.db)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def uuid_from_file(path):
    """The instance UUID kept in ``path`` (created if missing)."""
    try:
        return instanceuuid.read_file(path)
    except (ValueError, OSError) as e:
        raise UsageError(str(e))


# --------------------------------------------------------------------------
# Logging and output


def configure_logging(level='INFO', trace=False, stream=None,
                      handler=True):
    """Log to stderr at ``level`` (``handler=False``: only set the
    levels, e.g. when a zope.conf's eventlog has the handlers)."""
    root = logging.getLogger()
    if handler:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(getattr(logging, level))
    if not trace:
        logging.getLogger('zasync.trace').setLevel(
            max(logging.WARNING, getattr(logging, level)))
    return handler


def print_json(value):
    print(json.dumps(value, indent=2, sort_keys=True, default=str))
