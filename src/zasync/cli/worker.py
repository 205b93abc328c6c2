"""``zasync worker``: the command line of a worker process
(``zasync.worker.Worker``, whose documentation tells how it works and
stops)."""
import argparse
import logging
import math
import os
import sys

from zasync import dispatcher as dispatcher_module
from zasync import instanceuuid
from zasync import worker as worker_module
from zasync.cli import web
from zasync.cli.common import CommandLineError
from zasync.cli.common import UsageError
from zasync.cli.common import add_database_arguments
from zasync.cli.common import check_member_databases
from zasync.cli.common import close_databases
from zasync.cli.common import configure_logging
from zasync.cli.common import open_uri
from zasync.cli.common import open_zope_conf
from zasync.cli.common import positive_seconds
from zasync.cli.common import seconds
from zasync.cli.common import uuid_from_file
from zasync.cli.output import Bar
from zasync.cli.purge import duration_argument
from zasync.queue import DispatcherAgents
from zasync.worker import DEFAULT_AGENT
from zasync.worker import DEFAULT_GRACE
from zasync.worker import DEFAULT_GROUP_COMMIT
from zasync.worker import DEFAULT_POLL_INTERVAL
from zasync.worker import Worker

__all__ = ['DEFAULT_DEATH_INTERVAL', 'DEFAULT_PING_INTERVAL', 'MAX_AGENT_SIZE',
           'MAX_POLL_INTERVAL', 'MIN_POLL_INTERVAL',
           'add_commands', 'agent_spec', 'check_options', 'configure_parser',
           'poll_interval', 'run']

log = logging.getLogger('zasync.worker')

#: the most threads an agent of ``--agent NAME:SIZE`` may have (as
#: ``<zasync:dispatcher size="...">``); size 0 is allowed: the agent is
#: in the queue's record but claims nothing until its size is raised (in
#: the database, or by a restart with another size)
MAX_AGENT_SIZE = 1000

#: the bounds of ``--poll-interval`` (as ``<zasync:dispatcher
#: poll_interval="...">``)
MIN_POLL_INTERVAL = 0.01
MAX_POLL_INTERVAL = 3600.0

#: what a queue's record of a dispatcher has unless told otherwise
DEFAULT_PING_INTERVAL = DispatcherAgents.ping_interval.total_seconds()
DEFAULT_DEATH_INTERVAL = DispatcherAgents.ping_death_interval.total_seconds()


def agent_spec(text):
    """``NAME:SIZE`` (or ``NAME``, size 3) -> ``(name, size)``; the size
    is a whole number from 0 to ``MAX_AGENT_SIZE``."""
    name, sep, size = text.rpartition(':')
    if not sep:
        name, size = text, str(DEFAULT_AGENT[1])
    if not name:
        raise argparse.ArgumentTypeError(
            'agent %r: expected NAME:SIZE, e.g. main:3' % (text,))
    try:
        size = int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'agent %r: the size must be a whole number' % (text,))
    if size < 0:
        raise argparse.ArgumentTypeError(
            'agent %r: the size must not be negative' % (text,))
    if size > MAX_AGENT_SIZE:
        raise argparse.ArgumentTypeError(
            'agent %r: at most %d threads' % (text, MAX_AGENT_SIZE))
    return name, size


def group_size(text):
    """A number of jobs, 1 or more (``--group-commit``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or value > 10000:
        raise argparse.ArgumentTypeError(
            '%r: give a whole number of jobs from 1 to 10000' % (text,))
    return value


def poll_interval(text):
    """Seconds between polls: from ``MIN_POLL_INTERVAL`` to
    ``MAX_POLL_INTERVAL``."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        return positive_seconds(text)   # (its error)
    if not MIN_POLL_INTERVAL <= value <= MAX_POLL_INTERVAL:
        raise argparse.ArgumentTypeError(
            '%r: the poll interval must be from %g to %g seconds'
            % (text, MIN_POLL_INTERVAL, MAX_POLL_INTERVAL))
    return value


def configure_parser(parser):
    """The options of ``zasync worker``."""
    add_database_arguments(parser)
    parser.add_argument(
        '--create', action='store_true',
        help='with --zodb file://PATH: create the FileStorage if PATH does '
             'not exist (without it, a missing file is an error)')
    parser.add_argument(
        '--agent', metavar='NAME:SIZE', action='append', type=agent_spec,
        help='an agent of this worker with SIZE worker threads, 0 to %d '
             '(repeatable; default main:3)' % MAX_AGENT_SIZE)
    parser.add_argument(
        '--poll-interval', type=poll_interval,
        default=DEFAULT_POLL_INTERVAL, metavar='SECONDS',
        help='seconds between polls (housekeeping, pings, scheduled jobs; '
             'new jobs wake the worker at once), %g to %g; default '
             '%%(default)s' % (MIN_POLL_INTERVAL, MAX_POLL_INTERVAL))
    parser.add_argument(
        '--ping-interval', type=positive_seconds, metavar='SECONDS',
        help='how often this worker records that it is alive (default: the '
             'record\'s, %g)' % DEFAULT_PING_INTERVAL)
    parser.add_argument(
        '--death-interval', type=positive_seconds, metavar='SECONDS',
        help='after how long without a ping siblings consider this worker '
             'dead and requeue its jobs (default: the record\'s, %g); '
             'longer than the ping interval -- make it several poll '
             'intervals longer' % DEFAULT_DEATH_INTERVAL)
    parser.add_argument(
        '--uuid-file', metavar='FILE',
        help='the file holding this worker\'s instance UUID (created with a '
             'new UUID if missing); default: $ZASYNC_UUID, else ./uuid.txt')
    parser.add_argument(
        '--grace', type=seconds, default=DEFAULT_GRACE, metavar='SECONDS',
        help='on SIGTERM/SIGINT, how long running jobs may take to finish '
             'before they are requeued as interrupted, 0 to 86400; default '
             '%(default)s')
    parser.add_argument(
        '--job-timeout', type=positive_seconds, metavar='SECONDS',
        help='stop a job that runs longer than this and fail it with '
             'JobTimeoutError, nothing it wrote committed (the default of '
             'jobs without a timeout of their own; default: no limit)')
    parser.add_argument(
        '--group-commit', type=group_size, default=DEFAULT_GROUP_COMMIT,
        metavar='JOBS',
        help='how many short jobs a worker thread may commit in one '
             'transaction (group commits; a conflict splits the group and '
             'its jobs run again, one per transaction); 1: every job '
             'commits alone; default %(default)s')
    parser.add_argument(
        '--keep-completed', type=duration_argument, metavar='DURATION',
        help='how long this worker\'s agents keep completed jobs: seconds, '
             'or with s, m, h or d (90, 15m, 12h, 2d); default: as their '
             'records say (a week for new agents); older ones go at the '
             'next archiving (zasync purge removes them at once)')
    parser.add_argument(
        '--metrics-listen', type=web.listen_address, metavar='HOST:PORT',
        help='serve Prometheus metrics at http://HOST:PORT/metrics (e.g. '
             '127.0.0.1:9100; needs the web extra)')
    parser.add_argument(
        '--log-level', default='INFO',
        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
        help='level of the log on stderr; default %(default)s')
    parser.add_argument(
        '--trace', action='store_true',
        help='also log every job start and completion (zasync.trace)')
    return parser


def check_options(args):
    """What the options' types cannot check alone: a ``CommandLineError``
    (exit status 2) for options that do not go together."""
    if args.zodb is None and args.zope_conf is None:
        raise UsageError('give the database: --zodb URI or --zope-conf FILE')
    if args.create and not (args.zodb or '').startswith('file://'):
        raise CommandLineError('--create only goes with --zodb file://PATH')
    if (args.zodb or '').startswith('file://') and not args.create:
        path = args.zodb.split('://', 1)[1].split('?', 1)[0]
        if not os.path.exists(path):
            # (before anything is created: the UUID file, ...)
            raise UsageError('no database at %s (give --create to make a '
                             'new one)' % (path,))
    ping, death = args.ping_interval, args.death_interval
    if ping is not None or death is not None:
        given_ping, given_death = ping is not None, death is not None
        if ping is None:
            ping = DEFAULT_PING_INTERVAL
        if death is None:
            death = DEFAULT_DEATH_INTERVAL
        if death <= ping:
            raise CommandLineError(
                'the death interval (%g s%s) must be longer than the ping '
                'interval (%g s%s): siblings would take this worker for '
                'dead between two pings' % (
                    death, '' if given_death else ', the default', ping,
                    '' if given_ping else ', the default'))
    names = [name for name, size in args.agent or ()]
    if len(set(names)) != len(names):
        raise CommandLineError('agent names must differ: %s'
                               % ', '.join(names))


def _uuid(args):
    """The worker's UUID, which becomes the process's (``getUUID()``, the
    ``IUUID`` utility of a site's ZCML)."""
    if args.uuid_file:
        uuid = uuid_from_file(args.uuid_file)
        instanceuuid.use(uuid)
        return uuid
    try:
        return instanceuuid.getUUID()
    except (ValueError, OSError) as e:
        raise UsageError(str(e))


def run(args):
    """Run ``zasync worker`` with parsed ``args``; return the exit
    status."""
    check_options(args)
    uuid = _uuid(args)
    # With a zope.conf, its eventlog says where the log goes.
    configure_logging(args.log_level, args.trace,
                      handler=not args.zope_conf)
    if args.zope_conf:
        db = open_zope_conf(args.zope_conf, worker=True)
        if dispatcher_module.registered():
            close_databases(db)
            raise UsageError(
                '%s already starts a dispatcher (zasync:dispatcher); '
                'a worker process needs a configuration without one'
                % (args.zope_conf,))
        hint = ' (add a <zodb {name}> section to %s)' % (
            os.path.abspath(args.zope_conf),)
    else:
        db = open_uri(args.zodb, must_exist=not args.create,
                      missing_hint=' (give --create to make a new one)')
        hint = (' (--zodb opens one database: use --zope-conf, with a '
                '<zodb {name}> section)')
    try:
        conn = db.open()
        try:
            check_member_databases(conn, hint)
        finally:
            conn.transaction_manager.abort()
            conn.close()
    except BaseException:
        close_databases(db)
        raise
    agents = args.agent or [DEFAULT_AGENT]
    worker = Worker(db, uuid, agents, poll_interval=args.poll_interval,
                    ping_interval=args.ping_interval,
                    death_interval=args.death_interval, grace=args.grace,
                    job_timeout=args.job_timeout,
                    keep_completed=args.keep_completed,
                    group_commit=args.group_commit,
                    progress=Bar(sys.stderr))
    metrics = None
    if args.metrics_listen:
        metrics = web.start_metrics(db, lambda: worker.dispatcher,
                                    args.metrics_listen)
    try:
        status = worker.run()
    finally:
        if metrics is not None:
            metrics.stop()
    alive = worker.dispatcher.join(1)
    if alive:
        # Jobs beyond the grace period: their records went back to the
        # queue; do not wait for (or tear the database out from under)
        # their threads.
        log.info('worker %s stopped, leaving %d job thread(s) behind',
                 uuid, len(alive))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    close_databases(db)
    log.info('worker %s stopped', uuid)
    return status


def add_commands(subparsers):
    """Register ``zasync worker``."""
    parser = subparsers.add_parser(
        'worker', help='run a dispatcher process for a database',
        description=worker_module.__doc__.split('\n\n')[1].replace(
            '\n', ' '))
    configure_parser(parser)
    parser.set_defaults(func=run)
