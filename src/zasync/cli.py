"""The ``zasync`` command.

Each sub-command is registered by a function taking the sub-parsers
object; it sets ``func`` (called with the parsed arguments, returning the
exit status) on its parser.  Add new sub-commands to ``COMMANDS``.
"""
import argparse
import sys

from zasync.cli_commands import UsageError


def add_demo(subparsers):
    parser = subparsers.add_parser(
        'demo', help='run a batch of sample jobs in an embedded database',
        description='Run sample jobs (fast ones, a long one with progress, '
        'one failing then retried, one failing for good, one with a '
        'callback, one scheduled a few seconds ahead) with an in-process '
        'dispatcher, on a FileStorage in VAR; then report.')
    parser.add_argument('--var', default='var',
                        help='directory for the database and the instance '
                        'UUID (default: var)')
    parser.add_argument('--workers', type=int, default=4,
                        help='worker threads of the agent (default: 4)')
    parser.add_argument('--poll-interval', type=float, default=0.5,
                        help='seconds between housekeeping polls '
                        '(default: 0.5)')
    parser.add_argument('--timeout', type=float, default=60,
                        help='give up after this many seconds (default: 60)')

    def demo(args):
        from zasync import demo as demo_module
        return demo_module.run(args)
    parser.set_defaults(func=demo)


from zasync.cli_commands import add_inspection  # noqa: E402
from zasync.cli_commands import add_worker  # noqa: E402

COMMANDS = [add_demo, add_worker, add_inspection]


def build_parser():
    parser = argparse.ArgumentParser(
        prog='zasync', description='Durable background jobs for ZODB.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, 'func', None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args) or 0
    except UsageError as e:
        print('zasync %s: error: %s' % (args.command, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('zasync %s: interrupted' % args.command, file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
