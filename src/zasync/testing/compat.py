"""Helpers for test suites ported from zc.async (opt-in).

zc.async's tests pinned time with ``zc.async.testing.setUpDatetime()`` and
``set_now(dt)``, which replaced ``datetime.datetime`` by a class whose
``now()`` answered the pinned time.  zasync has one injectable clock
(``zasync.utils.now()``, an ``IClock`` utility) and its own tests never
patch ``datetime``.  For a *ported* suite:

* ``set_now(dt)`` sets zasync's clock: the registered ``ManualClock`` (a
  running test ``Reactor``'s, say), else a ``PinnedClock`` it installs (a
  ``ManualClock`` whose ``sleep`` is ``time.sleep``, as it is looked up at
  the time: a suite's stub sees the pauses, and time stays pinned, as in
  zc.async);
* ``setUpDatetime()`` installs that clock at zc.async's pinned time
  (2006-08-10 15:44:22.000211 UTC) and, unless ``patch_datetime=False``,
  replaces ``datetime.datetime`` by ``ClockDatetime``, whose ``now()``,
  ``utcnow()`` and ``today()`` read zasync's clock -- so the suite's own
  ``datetime.datetime.now(pytz.UTC)`` sees what the engine sees;
* ``tearDownDatetime()`` undoes both.

``ClockDatetime`` only changes those class methods: constructing one gives
a plain ``datetime.datetime``, and ``isinstance(value, ClockDatetime)``
holds for every datetime.  While it is installed, datetimes pickle through
``restore_datetime`` (the pickler cannot find the class under its name);
they load as plain datetimes.
"""
import copyreg
import datetime
import logging
import sys
import time

import zope.component

from zasync import interfaces
from zasync import utils
from zasync.testing.reactor import ManualClock

__all__ = ['ClockDatetime', 'PINNED', 'PinnedClock', 'print_logs',
           'restore_datetime',
           'set_now', 'setUpDatetime', 'tearDownDatetime', 'time_sleep']

#: ``time.sleep`` as it was on import (zc.async's name): a suite that
#: replaces ``time.sleep`` still has the real one here
time_sleep = time.sleep

#: the time zc.async's ``setUpDatetime`` pinned
PINNED = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, tzinfo=utils.UTC)

_real_datetime = datetime.datetime
_state = {'clock': None, 'patched': False}


class _AnyDatetime(type):
    """Every datetime counts as a ``ClockDatetime`` (and its class as a
    subclass), so code checking ``isinstance(v, datetime.datetime)`` while
    the class is installed accepts plain datetimes."""

    def __instancecheck__(cls, value):
        return isinstance(value, _real_datetime)

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, _real_datetime)


class ClockDatetime(_real_datetime, metaclass=_AnyDatetime):
    """``datetime.datetime`` whose ``now``, ``utcnow`` and ``today`` read
    ``zasync.utils.now()``."""

    def __new__(cls, *args, **kwargs):
        return _real_datetime(*args, **kwargs)

    @classmethod
    def now(cls, tz=None):
        current = utils.now()
        if tz is None:
            return current.replace(tzinfo=None)   # naive UTC, as zc.async
        return current.astimezone(tz)

    @classmethod
    def utcnow(cls):
        return utils.now().replace(tzinfo=None)

    @classmethod
    def today(cls):
        return cls.now()


class PinnedClock(ManualClock):
    """A ``ManualClock`` that sleeps with ``time.sleep`` (whatever it is
    when called), without moving."""

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        time.sleep(seconds)


def restore_datetime(*args):
    """Unpickle a datetime pickled while ``ClockDatetime`` was installed."""
    return _real_datetime(*args)


def _reduce_datetime(value):
    return restore_datetime, value.__reduce__()[1]


def _manual_clock():
    clock = utils.get_clock()
    return clock if isinstance(clock, ManualClock) else None


def set_now(dt):
    """Set zasync's clock to ``dt`` (naive values are taken as UTC, as
    zc.async's pinned clock did)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=utils.UTC)
    clock = _manual_clock()
    if clock is None:
        _state['clock'] = PinnedClock(dt).install()
    else:
        clock.set(dt)


def setUpDatetime(patch_datetime=True):
    """Pin zasync's clock at ``PINNED``; with ``patch_datetime`` (the
    default) install ``ClockDatetime`` as ``datetime.datetime``."""
    set_now(PINNED)
    if patch_datetime and not _state['patched']:
        datetime.datetime = ClockDatetime
        copyreg.pickle(_real_datetime, _reduce_datetime)
        _state['patched'] = True


def tearDownDatetime():
    """Put ``datetime.datetime`` back and uninstall the clock that
    ``set_now``/``setUpDatetime`` installed (idempotent)."""
    if _state['patched']:
        datetime.datetime = _real_datetime
        copyreg.dispatch_table.pop(_real_datetime, None)
        _state['patched'] = False
    clock, _state['clock'] = _state['clock'], None
    if clock is not None:
        registry = zope.component.getGlobalSiteManager()
        if registry.queryUtility(interfaces.IClock) is clock:
            clock.uninstall()


def print_logs(log_file=None, log_level=logging.CRITICAL):
    """Show zasync's log records of ``log_level`` and above on
    ``log_file`` (default: the current ``sys.stdout``); return the handler
    (``logging.getLogger('zasync').removeHandler(handler)`` to stop)."""
    handler = logging.StreamHandler(log_file or sys.stdout)
    handler.setLevel(log_level)
    logging.getLogger('zasync').addHandler(handler)
    return handler
