"""The scale-out sub-commands of ``zasync``: ``worker`` (``zasync.worker``)
and ``status``, ``jobs``, ``job``, ``stats`` (``zasync.inspection``).

Registered in ``zasync.cli.COMMANDS``.  Errors worth one line (a bad URI,
a missing database, an unknown job id) are ``UsageError``: exit status 1.
"""
import importlib


class UsageError(Exception):
    """A problem to report as one line with a non-zero exit status (a bad
    URI, a missing database, an unknown job id, ...)."""


def _runner(module_name, function_name):
    # (``zasync.cli.main`` reports a ``UsageError`` as one line.)
    def func(args):
        module = importlib.import_module(module_name)
        return getattr(module, function_name)(args) or 0
    return func


def add_worker(subparsers):
    from zasync import worker
    parser = subparsers.add_parser(
        'worker', help='run a dispatcher process for a database',
        description=worker.__doc__.split('\n\n')[1].replace('\n', ' '))
    worker.configure_parser(parser)
    parser.set_defaults(func=_runner('zasync.worker', 'run'))


def add_inspection(subparsers):
    from zasync import inspection
    for name, configure, help in inspection.COMMANDS:
        parser = subparsers.add_parser(name, help=help, description=help)
        configure(parser)
        parser.set_defaults(func=_runner('zasync.inspection', name))
