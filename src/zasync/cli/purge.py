"""``zasync purge --zodb URI --completed-before 2d [--failed-too]``:
remove old completed jobs.

The jobs completed before the given age -- from every agent's completed
collection and from the ``JobManager``'s job container -- are removed in
transactions of ``--batch-size`` jobs, each retried when it conflicts
with a running worker (``zasync.retention.purge``).  Failed jobs stay
unless ``--failed-too`` is given: they are what an operator looks at.  A
progress bar shows on a terminal; the command ends with one line saying
how much it removed (or JSON with ``--json``).

Removing jobs does not make the database smaller: packing it does, and
that is the operator's business (``zodbpack``, ZEO's ``pack``, RelStorage's
``zodbpack``), done when it suits the deployment.  How long agents keep
completed jobs by themselves is ``zasync worker --keep-completed``.
"""
import argparse
import sys

import transaction.interfaces

from zasync import retention
from zasync import utils
from zasync.cli.common import UsageError
from zasync.cli.common import open_uri
from zasync.cli.common import print_json
from zasync.cli.output import Bar
from zasync.durations import parse_duration

__all__ = ['add_commands', 'batch_size', 'duration_argument', 'run']


def duration_argument(text, allow_zero=False):
    """An argparse type: seconds, or a number with s, m, h or d (``90``,
    ``15m``, ``12h``, ``2d``), as a ``timedelta``."""
    try:
        return parse_duration(text, allow_zero=allow_zero)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _age(text):
    return duration_argument(text, allow_zero=True)


def batch_size(text):
    """``--batch-size``: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            '%r: give a whole number of jobs, at least 1' % (text,))
    return value


def configure_parser(parser):
    parser.add_argument('--zodb', metavar='URI', required=True,
                        help='the database, as a zodburi URI '
                             '(file:///path/Data.fs, zeo://host:port, ...)')
    parser.add_argument(
        '--completed-before', metavar='AGE', type=_age, required=True,
        help='remove jobs completed longer ago than this: seconds, or with '
             's, m, h or d (90, 15m, 12h, 2d); 0: every completed job')
    parser.add_argument(
        '--failed-too', action='store_true',
        help='remove failed jobs too (by default they stay)')
    parser.add_argument(
        '--batch-size', type=batch_size,
        default=retention.DEFAULT_BATCH_SIZE, metavar='N',
        help='jobs per transaction (default %(default)s)')
    parser.add_argument('--json', action='store_true',
                        help='print what was removed as JSON')
    return parser


def run(args):
    db = open_uri(args.zodb, must_exist=True)
    bar = Bar(sys.stderr)
    before = utils.now() - args.completed_before
    try:
        result = retention.purge(db, before, failed_too=args.failed_too,
                                 batch_size=args.batch_size, progress=bar)
    except transaction.interfaces.TransientError:
        bar.end()
        raise UsageError('the database kept changing (conflicts with '
                         'running workers); try again, perhaps with a '
                         'smaller --batch-size')
    finally:
        db.close()
    if args.json:
        print_json(dict(result, before=before.isoformat(),
                        total=result.total))
        return 0
    line = 'removed %d job(s) completed before %s' % (
        result.total, before.strftime('%Y-%m-%d %H:%M:%S UTC'))
    if result.total:
        line += (' (%d from the agents\' completed collections, %d more '
                 'from the job container; %d transaction(s))'
                 % (result['removed'], result['container'],
                    result['transactions']))
    if result['kept_failed']:
        line += '; kept %d failed job(s) (--failed-too removes them)' % (
            result['kept_failed'],)
    print(line)
    if result.total:
        print('(the space comes back when the database is packed)')
    return 0


def add_commands(subparsers):
    """Register ``zasync purge``."""
    help = 'remove old completed jobs (in bounded transactions)'
    parser = subparsers.add_parser('purge', help=help, description=help)
    configure_parser(parser)
    parser.set_defaults(func=run)
