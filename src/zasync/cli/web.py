"""``zasync web``: the dashboard, JSON API and metrics of a database, served
by waitress; ``zasync web-user LOGIN``: a line for its users file.

``zasync web --zodb URI | --zope-conf FILE [--listen 127.0.0.1:8080]
[--manage] [--users FILE]``.  Without ``--manage`` the database is opened
read-only (as the inspection commands open it: a FileStorage without its
lock, beside a running worker) and nobody can change anything; with it,
it is opened for writing (a FileStorage then must not be in use by a
worker: use ZEO or RelStorage beside workers) and the managers of the
users file (everybody, without one) get the actions.  It listens on
127.0.0.1 unless told otherwise; on any other address ``--users`` is
required.  Needs the ``web`` extra.
"""
import argparse
import getpass
import ipaddress
import signal
import sys

from zasync import utils
from zasync.cli.common import CommandLineError
from zasync.cli.common import ReadOnlyDatabase
from zasync.cli.common import UsageError
from zasync.cli.common import add_database_arguments
from zasync.cli.common import check_member_databases
from zasync.cli.common import close_databases
from zasync.cli.common import member_hint
from zasync.cli.common import open_uri
from zasync.cli.common import open_zope_conf

__all__ = ['add_commands', 'listen_address', 'run', 'start_metrics',
           'web_user']

DEFAULT_LISTEN = '127.0.0.1:8080'


def listen_address(text):
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = text.rpartition(':')
    if not sep or not host:
        raise argparse.ArgumentTypeError(
            '%r: expected HOST:PORT, e.g. 127.0.0.1:8080' % (text,))
    host = host.strip('[]')
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(
            '%r: the port must be a number from 0 to 65535' % (text,))
    return host, number


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _import_web():
    try:
        import waitress  # noqa: F401
        import webob  # noqa: F401
        import prometheus_client  # noqa: F401
        from zasync.web import app
        from zasync.web import auth
    except ImportError as e:
        raise UsageError('zasync web needs the web extra (pip install '
                         '"zasync[web]"): %s' % (utils.one_line(e),))
    return app, auth


def _open(args):
    if not args.manage:
        opened = ReadOnlyDatabase(args)
        opened.tm.abort()
        opened.conn.close()
        return opened.db
    if args.zope_conf:
        db = open_zope_conf(args.zope_conf, worker=True)
    else:
        db = open_uri(args.zodb, must_exist=True,
                      missing_hint=' (zasync web does not create databases)')
    try:
        # (a member database the options do not configure: one line now,
        # not a traceback on every page)
        with utils.private_connection(db) as conn:
            check_member_databases(conn, member_hint(args))
    except BaseException:
        close_databases(db)
        raise
    return db


def run(args):
    app_module, auth = _import_web()
    host, port = args.listen
    if args.zodb is None and args.zope_conf is None:
        raise CommandLineError('give the database: --zodb URI or '
                               '--zope-conf FILE')
    users = None
    if args.users:
        try:
            users = auth.load_users(args.users)
        except ValueError as e:
            raise UsageError(str(e))
    elif not is_loopback(host):
        raise CommandLineError(
            '--users FILE is required when listening on %s (not loopback): '
            'without it, anybody who reaches the port sees the jobs' % host)
    import waitress
    db = _open(args)
    try:
        app = app_module.WebApp(db, users=users, manage=args.manage)
        try:
            server = waitress.create_server(app, host=host, port=port,
                                            threads=args.threads,
                                            ident='zasync')
        except OSError as e:
            raise UsageError('cannot listen on %s:%d: %s' % (
                host, port, e.strerror or e))
        address = server.effective_host, server.effective_port
        print('zasync web: serving %s on http://%s:%s/ (%s%s)' % (
            args.zodb or args.zope_conf,
            ('[%s]' % address[0]) if ':' in str(address[0]) else address[0],
            address[1], 'manage' if args.manage else 'read-only',
            ', %d users' % len(users) if users is not None else ''),
            flush=True)

        def stop(signum, frame):
            server.close()
            raise SystemExit(0)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.close()
    finally:
        close_databases(db)
    return 0


def start_metrics(db, dispatcher, address):
    """``zasync worker --metrics-listen HOST:PORT``: serve the metrics of
    ``db`` and of the worker's dispatcher (a function returning it) in
    threads of their own; a ``zasync.web.metrics.WorkerMetrics`` to
    ``stop()``."""
    try:
        from zasync.web import metrics
    except ImportError as e:
        raise UsageError('--metrics-listen needs the web extra (pip install '
                         '"zasync[web]"): %s' % (utils.one_line(e),))
    host, port = address
    try:
        return metrics.start_worker_metrics(db, dispatcher, host, port)
    except OSError as e:
        raise UsageError('cannot listen on %s:%d for metrics: %s' % (
            host, port, e.strerror or e))


def web_user(args):
    _, auth = _import_web()
    if ':' in args.login or not args.login.strip():
        raise UsageError('a login is a non-empty name without ":"')
    if args.password_stdin:
        password = sys.stdin.readline().rstrip('\r\n')
    else:
        password = getpass.getpass('Password for %s: ' % args.login)
        if getpass.getpass('Again: ') != password:
            raise UsageError('the passwords differ')
    if not password:
        raise UsageError('an empty password is not allowed')
    print('%s:%s:%s' % (args.login, args.role, auth.hash_password(password)))
    return 0


def add_commands(subparsers):
    """Register ``zasync web`` and ``zasync web-user``."""
    parser = subparsers.add_parser(
        'web', help='serve the dashboard, JSON API and metrics',
        description='Serve the dashboard, the JSON API (/api/...) and '
                    'Prometheus metrics (/metrics) of a database.')
    add_database_arguments(parser)
    parser.add_argument(
        '--listen', type=listen_address, default=listen_address(
            DEFAULT_LISTEN), metavar='HOST:PORT',
        help='where to listen (default %s; other than loopback needs '
             '--users)' % DEFAULT_LISTEN)
    parser.add_argument(
        '--manage', action='store_true',
        help='allow the actions (retry, cancel, fail, remove, requeue, '
             'pause/resume) for managers; opens the database for writing')
    parser.add_argument(
        '--users', metavar='FILE',
        help='HTTP authentication against this users file (LOGIN:ROLE:HASH '
             'lines; make them with "zasync web-user")')
    parser.add_argument('--threads', type=int, default=4,
                        help='worker threads of the server (default 4)')
    parser.add_argument('--timeout', type=float, default=10,
                        help='seconds to wait for a ZEO server (default 10)')
    parser.set_defaults(func=run)
    parser = subparsers.add_parser(
        'web-user', help='print a users-file line for zasync web',
        description='Prompt for a password and print LOGIN:ROLE:HASH (a '
                    'salted hash) for the users file of zasync web.')
    parser.add_argument('login')
    parser.add_argument('--role', choices=('view', 'manage'), default='view',
                        help='view (default) or manage')
    parser.add_argument('--password-stdin', action='store_true',
                        help='read the password from the first line of '
                             'standard input')
    parser.set_defaults(func=web_user)
