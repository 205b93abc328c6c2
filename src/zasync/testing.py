"""Helpers for tests and doctests: a manual clock, reactors, waiters."""
import datetime

import zope.component
import zope.interface

from zasync import interfaces
from zasync.utils import UTC


@zope.interface.implementer(interfaces.IClock)
class ManualClock:
    """A clock that only moves when told to (or when someone sleeps).

    ``sleep(seconds)`` does not wait: it records the pause in ``sleeps``
    and advances the clock, so retry backoffs can be shown exactly.
    """

    def __init__(self, start=datetime.datetime(2006, 8, 10, 15, 44, 22,
                                               211, tzinfo=UTC)):
        self.current = _to_utc(start)
        self.sleeps = []

    def now(self):
        return self.current

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds=0, **kw):
        """Move the clock forward by seconds (and/or timedelta keywords)."""
        self.current += datetime.timedelta(seconds=seconds, **kw)
        return self.current

    def set(self, value):
        self.current = _to_utc(value)
        return self.current

    def install(self):
        """Register as the ``IClock`` utility (undone by a registry
        clean-up, or by ``uninstall``)."""
        zope.component.provideUtility(self, interfaces.IClock)
        return self

    def uninstall(self):
        zope.component.getGlobalSiteManager().unregisterUtility(
            self, interfaces.IClock)


def _to_utc(value):
    from zasync.utils import to_utc
    return to_utc(value, 'clock time')
