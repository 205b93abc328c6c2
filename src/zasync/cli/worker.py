"""``zasync worker``: the command line of a worker process
(``zasync.worker.Worker``, whose documentation tells how it works and
stops)."""
import argparse
import logging
import os
import sys

from zasync import dispatcher as dispatcher_module
from zasync import instanceuuid
from zasync import worker as worker_module
from zasync.cli.common import UsageError
from zasync.cli.common import add_database_arguments
from zasync.cli.common import configure_logging
from zasync.cli.common import open_uri
from zasync.cli.common import open_zope_conf
from zasync.cli.common import positive_seconds
from zasync.cli.common import seconds
from zasync.cli.common import uuid_from_file
from zasync.cli.output import Bar
from zasync.worker import DEFAULT_AGENT
from zasync.worker import DEFAULT_GRACE
from zasync.worker import DEFAULT_POLL_INTERVAL
from zasync.worker import Worker

__all__ = ['add_commands', 'agent_spec', 'configure_parser', 'run']

log = logging.getLogger('zasync.worker')


def agent_spec(text):
    """``NAME:SIZE`` (or ``NAME``, size 3) -> ``(name, size)``."""
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
    return name, size


def configure_parser(parser):
    """The options of ``zasync worker``."""
    add_database_arguments(parser)
    parser.add_argument(
        '--agent', metavar='NAME:SIZE', action='append', type=agent_spec,
        help='an agent of this worker with SIZE worker threads '
             '(repeatable; default main:3)')
    parser.add_argument(
        '--poll-interval', type=positive_seconds,
        default=DEFAULT_POLL_INTERVAL, metavar='SECONDS',
        help='seconds between polls (housekeeping, pings, scheduled jobs; '
             'new jobs wake the worker at once); default %(default)s')
    parser.add_argument(
        '--ping-interval', type=positive_seconds, metavar='SECONDS',
        help='how often this worker records that it is alive (default: the '
             'record\'s, 30)')
    parser.add_argument(
        '--death-interval', type=positive_seconds, metavar='SECONDS',
        help='after how long without a ping siblings consider this worker '
             'dead and requeue its jobs (default: the record\'s, 60); make '
             'it several poll intervals longer than the ping interval')
    parser.add_argument(
        '--uuid-file', metavar='FILE',
        help='the file holding this worker\'s instance UUID (created with a '
             'new UUID if missing); default: $ZASYNC_UUID, else ./uuid.txt')
    parser.add_argument(
        '--grace', type=seconds, default=DEFAULT_GRACE, metavar='SECONDS',
        help='on SIGTERM/SIGINT, how long running jobs may take to finish '
             'before they are requeued as interrupted; default %(default)s')
    parser.add_argument(
        '--log-level', default='INFO',
        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
        help='level of the log on stderr; default %(default)s')
    parser.add_argument(
        '--trace', action='store_true',
        help='also log every job start and completion (zasync.trace)')
    return parser


def run(args):
    """Run ``zasync worker`` with parsed ``args``; return the exit
    status."""
    if args.zodb is None and args.zope_conf is None:
        raise UsageError('give the database: --zodb URI or --zope-conf FILE')
    if args.uuid_file:
        uuid = uuid_from_file(args.uuid_file)
    else:
        uuid = instanceuuid.getUUID()
    # With a zope.conf, its eventlog says where the log goes.
    configure_logging(args.log_level, args.trace,
                      handler=not args.zope_conf)
    if args.zope_conf:
        db = open_zope_conf(args.zope_conf)
        if dispatcher_module.get(uuid) is not None:
            raise UsageError(
                '%s already starts a dispatcher for %s (zasync:dispatcher); '
                'a worker process needs a configuration without one'
                % (args.zope_conf, uuid))
    else:
        db = open_uri(args.zodb)
    agents = args.agent or [DEFAULT_AGENT]
    names = [name for name, size in agents]
    if len(set(names)) != len(names):
        db.close()
        raise UsageError('agent names must differ: %s' % ', '.join(names))
    worker = Worker(db, uuid, agents, poll_interval=args.poll_interval,
                    ping_interval=args.ping_interval,
                    death_interval=args.death_interval, grace=args.grace,
                    progress=Bar(sys.stderr))
    status = worker.run()
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
    db.close()
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
