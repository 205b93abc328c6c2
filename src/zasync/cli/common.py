"""What the sub-commands of ``zasync`` share: the one-line error, the
database options and the opening of a database, argument types, logging
and JSON output.

A ``UsageError`` is a problem to report as one line with exit status 1 (a
bad URI, a missing database, an unknown job id); ``zasync.cli.main``
prints it.
"""
import argparse
import json
import logging
import os
import sys

from zasync import instanceuuid
from zasync import interfaces
from zasync import utils
from zasync.worker import forget_prefetched_oids_on_reconnect

__all__ = ['DEFAULT_DB', 'LOG_FORMAT', 'ReadOnlyDatabase', 'UsageError',
           'add_database_arguments', 'configure_logging', 'open_uri',
           'open_zope_conf', 'positive_seconds', 'print_json',
           'seconds', 'uuid_from_file']

#: the database the inspection commands read by default (the demo's)
DEFAULT_DB = os.path.join('var', 'Data.fs')

LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s'


class UsageError(Exception):
    """A problem to report as one line with a non-zero exit status (a bad
    URI, a missing database, an unknown job id, ...)."""


# --------------------------------------------------------------------------
# Argument types


def seconds(text):
    """A number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number of seconds'
                                         % (text,))
    if value < 0:
        raise argparse.ArgumentTypeError('%r: seconds must not be negative'
                                         % (text,))
    return value


def positive_seconds(text):
    """A number of seconds, more than 0."""
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


def open_uri(uri, read_only=False, must_exist=False, connect_timeout=None):
    """Open the database of a zodburi URI; ``UsageError`` for a bad one."""
    import zodburi
    import ZODB
    if '://' not in uri:
        raise UsageError('%r is not a database URI (expected e.g. '
                         'file:///path/Data.fs or zeo://host:port)' % (uri,))
    given = uri
    scheme = uri.split('://', 1)[0]
    if scheme == 'file':
        path = uri.split('://', 1)[1].split('?', 1)[0]
        if must_exist and not os.path.exists(path):
            raise UsageError('no database at %s' % (path,))
        if read_only:
            # (A read-only FileStorage takes no lock: a worker may hold it.)
            uri = _with_query(uri, 'read_only', 1)
    elif scheme == 'zeo':
        if connect_timeout is not None:
            uri = _with_query(uri, 'wait_timeout',
                              max(1, int(round(connect_timeout))))
        if read_only:
            uri = _with_query(uri, 'read_only', 1)
    try:
        factory, dbkw = zodburi.resolve_uri(uri)
    except KeyError:
        raise UsageError('unknown database URI scheme %r in %r' % (
            scheme, given))
    except Exception as e:
        raise UsageError('bad database URI %r: %s' % (given,
                                                      utils.one_line(e)))
    try:
        storage = factory()
    except Exception as e:
        raise UsageError('cannot open %s: %s' % (given, utils.one_line(e)))
    forget_prefetched_oids_on_reconnect(storage)
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception as e:
        storage.close()
        raise UsageError('cannot open %s: %s' % (given, utils.one_line(e)))


def open_zope_conf(path):
    """Load a zope.conf the way a Zope server does (logging, product-config,
    path, site ZCML), open its databases and announce them
    (``IDatabaseOpened``).  Return the main database.  Needs the ``zope``
    extra."""
    if not os.path.exists(path):
        raise UsageError('no such configuration file: %s' % (path,))
    try:
        import zope.app.appsetup.appsetup
        import zope.app.appsetup.product
        import zope.event
        from zasync import runner
    except ImportError as e:
        raise UsageError('--zope-conf needs the Zope packages (pip install '
                         '"zasync[zope]"): %s' % (utils.one_line(e),))
    path = os.path.abspath(path)
    try:
        options = runner.load_options(path)
    except Exception as e:
        raise UsageError('%s: %s' % (path, utils.one_line(e)))
    for factory in [options.eventlog] + list(options.loggers or ()):
        if factory is not None:
            factory()
    zope.app.appsetup.product.setProductConfigurations(
        options.product_config)
    for entry in reversed(options.path or ()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    site_zcml = os.path.join(os.path.dirname(path), options.site_definition)
    if os.path.exists(site_zcml):
        runner.load_zcml(site_zcml, ('devmode',) if options.devmode else ())
    dbs, _ = zope.app.appsetup.appsetup.multi_database(options.databases)
    db = dbs[0]
    zope.event.notify(interfaces.DatabaseOpened(db))
    return db


def _quiet_libraries():
    """Without a logging configuration, Python prints the warnings of
    the storage libraries on stderr (RelStorage logs a failed connection
    before raising it): the commands report errors as one line instead."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


class ReadOnlyDatabase:
    """The database of the command line, opened for reading: a FileStorage
    read-only (no lock, so a running worker may hold it), ZEO read-only,
    and every transaction aborted.  A context manager."""

    def __init__(self, args):
        if args.zope_conf:
            self.db = open_zope_conf(args.zope_conf)
        else:
            _quiet_libraries()
            uri = args.zodb or 'file://' + os.path.abspath(DEFAULT_DB)
            self.db = open_uri(uri, read_only=True, must_exist=True,
                               connect_timeout=args.timeout)
        try:
            self.conn = self.db.open()
            self.tm = self.conn.transaction_manager
            self.tm.begin()
            self.root = self.conn.root()
        except Exception as e:
            self.db.close()
            raise UsageError('cannot read the database: %s'
                             % utils.one_line(e))

    def queues(self):
        queues = self.root.get(interfaces.KEY)
        if queues is None:
            raise UsageError('no zasync queues in this database (nothing '
                             'was ever queued or run here)')
        return queues

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()

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
