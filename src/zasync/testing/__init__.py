"""Helpers for tests and doctests (``zasync.testing``, as zc.async's).

- ``ManualClock`` and the deterministic test ``Reactor``
  (``zasync.testing.reactor``);
- the waiters ``get_poll``, ``wait_for_result``, ``wait_for_start``,
  ``wait_for_annotation``, ``wait_for_deactivation``, ``wait_for_death``
  and the loop under them, ``wait`` (``zasync.testing.waiters``);
- ``tear_down_dispatcher(s)`` (below);
- for suites ported from zc.async: ``setUpDatetime``, ``set_now``,
  ``tearDownDatetime`` (zasync's clock pinned, ``datetime.datetime``
  answering it), ``time_sleep``, ``print_logs``
  (``zasync.testing.compat``);
- ``zasync.testing.fixtures``: a FileStorage database for unit tests;
  ``zasync.testing.servers``: ZEO and PostgreSQL servers on 127.0.0.1 and
  their test layers; ``zasync.testing.processes``: ``zasync worker``
  processes.

Application tests use these too; none of it is imported by the engine.
"""
from zasync import dispatcher as dispatcher_module
from zasync import subscribers
from zasync.testing.compat import ClockDatetime
from zasync.testing.compat import print_logs
from zasync.testing.compat import set_now
from zasync.testing.compat import setUpDatetime
from zasync.testing.compat import tearDownDatetime
from zasync.testing.compat import time_sleep
from zasync.testing.reactor import DelayedCall
from zasync.testing.reactor import ManualClock
from zasync.testing.reactor import Reactor
from zasync.testing.reactor import started_reactors
from zasync.testing.waiters import get_poll
from zasync.testing.waiters import wait
from zasync.testing.waiters import wait_for_annotation
from zasync.testing.waiters import wait_for_deactivation
from zasync.testing.waiters import wait_for_death
from zasync.testing.waiters import wait_for_job_info
from zasync.testing.waiters import wait_for_result
from zasync.testing.waiters import wait_for_start

#: zc.async's name of its ``datetime`` stand-in, which its own tests used
_datetime = ClockDatetime

__all__ = ['DelayedCall', 'ManualClock', 'Reactor', 'TearDownDispatcherError',
           'get_poll', 'print_logs', 'set_now', 'setUpDatetime',
           'started_reactors', 'tear_down_dispatcher',
           'tear_down_dispatchers', 'tearDownDatetime', 'time_sleep',
           'wait', 'wait_for_annotation',
           'wait_for_deactivation', 'wait_for_death', 'wait_for_job_info',
           'wait_for_result',
           'wait_for_start']


# --------------------------------------------------------------------------
# Tearing down


class TearDownDispatcherError(RuntimeError):
    """A dispatcher (its reactor thread or a worker thread) did not stop."""


def tear_down_dispatcher(dispatcher, timeout=10):
    """Stop ``dispatcher`` for good: stop its test ``Reactor`` if one is
    running, then ``dispatcher.shutdown(timeout)`` (which stops a Twisted
    reactor running in ``dispatcher.thread``, deactivates the dispatcher,
    waits for its worker threads, unregisters it and puts back the signal
    handlers installed for it; its ``zasync.subscribers.signal_handlers``
    entry goes too).  Raise ``TearDownDispatcherError`` naming what did not
    stop."""
    reactor = dispatcher.reactor
    try:
        if isinstance(reactor, Reactor) and reactor.running:
            reactor.stop()
    finally:
        try:
            problems = dispatcher.shutdown(timeout)
        finally:
            # (the shutdown put the signal handlers back)
            subscribers.signal_handlers.pop(id(dispatcher), None)
    if problems:
        raise TearDownDispatcherError('\n'.join(problems))


def tear_down_dispatchers(timeout=10):
    """``tear_down_dispatcher`` for every registered dispatcher."""
    errors = []
    for dispatcher in dispatcher_module.registered():
        try:
            tear_down_dispatcher(dispatcher, timeout)
        except TearDownDispatcherError as e:
            errors.append(str(e))
    dispatcher_module.clear()
    if errors:
        raise TearDownDispatcherError('\n'.join(errors))
