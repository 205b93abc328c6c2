"""The ``zasync`` command: ``zasync COMMAND [OPTIONS]``.

Each module of this package registers its sub-commands with an
``add_commands(subparsers)`` function, which sets ``func`` (called with the
parsed arguments, returning the exit status) on each parser; ``COMMANDS``
lists those functions.  ``main`` reports a ``UsageError`` as one line with
exit status 1 (a ``CommandLineError``, options that do not go together:
status 2); a command line argparse refuses is one line with status 2 too;
output to a pipe whose reader went away (``zasync jobs | head``) ends
the command with status 141 and no traceback.  ``python -m zasync`` and
``python -m zasync.cli`` run it too.
"""
import os
import sys

from zasync.cli import demo
from zasync.cli import inspect
from zasync.cli import manage
from zasync.cli import migrate
from zasync.cli import purge
from zasync.cli import web
from zasync.cli import worker
from zasync.cli.common import ArgumentParser
from zasync.cli.common import UsageError

__all__ = ['COMMANDS', 'UsageError', 'build_parser', 'main']

COMMANDS = [demo.add_commands, worker.add_commands, inspect.add_commands,
            manage.add_commands, web.add_commands, migrate.add_commands,
            purge.add_commands]


def build_parser():
    parser = ArgumentParser(
        prog='zasync', description='Durable background jobs for ZODB.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return
    the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, 'func', None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = func(args) or 0
        sys.stdout.flush()   # (a reader gone away shows here)
        return status
    except UsageError as e:
        print('zasync %s: error: %s' % (args.command, e), file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print('zasync %s: interrupted' % args.command, file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output went away (``zasync jobs | head``): no
        # traceback, and nothing more to write at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141   # 128 + SIGPIPE, what a shell shows for it
