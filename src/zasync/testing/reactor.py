"""A manual clock and a deterministic test reactor.

``ManualClock`` is an ``IClock`` that only moves when told to.  ``Reactor``
is a deterministic ``IReactor``: it drives a ``ManualClock`` (installed as
the ``IClock`` utility while the reactor runs), and its timed calls run only
when a test says that time passes -- ``time_flies(seconds)`` or
``time_passes()``.  The thread calling those methods plays the reactor
thread.
"""
import datetime
import heapq
import itertools
import threading
import time
import weakref

import transaction
import zope.component
import zope.interface

from zasync import interfaces
from zasync.utils import UTC
from zasync.utils import to_utc

__all__ = ['DelayedCall', 'ManualClock', 'Reactor', 'started_reactors']


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
    return to_utc(value, 'clock time')


# --------------------------------------------------------------------------
# The deterministic reactor

class DelayedCall:
    """What ``Reactor.callLater`` returns (like Twisted's ``IDelayedCall``)."""

    def __init__(self, reactor, when, seq, callable, args, kw):
        self.reactor = reactor
        self.time = when
        self.seq = seq
        self.callable = callable
        self.args = args
        self.kw = kw
        self.called = False
        self.cancelled = False

    def __lt__(self, other):
        return (self.time, self.seq) < (other.time, other.seq)

    def getTime(self):
        return self.time

    def active(self):
        return not (self.called or self.cancelled)

    def cancel(self):
        if not self.active():
            raise ValueError('call already %s' % (
                'called' if self.called else 'cancelled'))
        self.cancelled = True

    def __repr__(self):
        return '<DelayedCall %s at %s>' % (
            getattr(self.callable, '__qualname__', self.callable),
            self.time.isoformat())


_started_reactors = weakref.WeakSet()


@zope.interface.implementer(interfaces.IReactor)
class Reactor:
    """A reactor whose time only passes when a test says so.

    ``start()`` installs the clock as the ``IClock`` utility (so
    ``zasync.utils.now()`` is the reactor's time) and runs the
    ``callWhenRunning`` calls; ``stop()`` runs the ``('before',
    'shutdown')`` triggers, waits for the threads started with
    ``callInThread`` and uninstalls the clock.

    ``callFromThread`` may be called from any thread; the call runs at the
    reactor's current time, the next time the test lets time pass (or a
    waiter runs the due calls).  ``callInThread`` starts a real thread.
    So does ``callWhenRunning`` on a running reactor (as zc.async's test
    reactor did; Twisted's would call at once): a dispatcher activated on
    it polls when the test lets time pass.

    The test's thread plays the reactor thread, so after ``time_flies``
    and ``time_passes`` ran calls, that thread sees what they committed:
    if its current transaction (``transaction.manager``) holds no changes,
    a new one begins (``sync_transactions``; False turns it off).  A
    transaction with changes is never touched.
    """

    #: after time passes, begin a new transaction in the calling thread if
    #: its current one holds no changes (see the class docstring)
    sync_transactions = True

    #: how long ``time_flies`` waits (real time) for worker threads to hand
    #: it calls before it moves the clock on; the wait ends early as soon as
    #: a call arrives.
    settle = 0.05

    def __init__(self, clock=None):
        self.clock = clock if clock is not None else ManualClock()
        self._calls = []            # heap of DelayedCall
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._when_running = []
        self._triggers = {}         # id -> (callable, args, kw)
        self._trigger_ids = itertools.count(1)
        self._threads = []
        self._installed = False
        self.running = False
        self.stopped = False

    # -- IReactor ---------------------------------------------------------

    def callFromThread(self, callable, *args, **kw):
        with self._cond:
            call = DelayedCall(self, self.clock.now(), next(self._seq),
                               callable, args, kw)
            heapq.heappush(self._calls, call)
            self._cond.notify_all()
        return call

    def callLater(self, seconds, callable, *args, **kw):
        if not self.running:
            raise ValueError('reactor not started')
        when = self.clock.now() + datetime.timedelta(seconds=seconds)
        with self._cond:
            call = DelayedCall(self, when, next(self._seq),
                               callable, args, kw)
            heapq.heappush(self._calls, call)
            self._cond.notify_all()
        return call

    def callInThread(self, callable, *args, **kw):
        thread = threading.Thread(
            target=callable, args=args, kwargs=kw, daemon=True,
            name='zasync.testing.Reactor worker')
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()
        return thread

    def callWhenRunning(self, callable, *args, **kw):
        if self.running:
            return self.callFromThread(callable, *args, **kw)
        self._when_running.append((callable, args, kw))

    def addSystemEventTrigger(self, phase, eventType, callable, *args, **kw):
        if (phase, eventType) != ('before', 'shutdown'):
            raise ValueError(
                "the test reactor only supports ('before', 'shutdown') "
                "triggers, not %r" % ((phase, eventType),))
        trigger_id = next(self._trigger_ids)
        self._triggers[trigger_id] = (callable, args, kw)
        return trigger_id

    def removeSystemEventTrigger(self, trigger_id):
        del self._triggers[trigger_id]

    # -- life cycle -------------------------------------------------------

    def start(self):
        if self.running:
            raise ValueError('reactor already started')
        registered = zope.component.queryUtility(interfaces.IClock)
        if registered is not self.clock:
            self.clock.install()
            self._installed = True
        self.running = True
        self.stopped = False
        _started_reactors.add(self)
        when_running, self._when_running = self._when_running, []
        for callable, args, kw in when_running:
            callable(*args, **kw)

    def stop(self, timeout=10):
        """Run the shutdown triggers, then wait for ``callInThread``
        threads (AssertionError naming the ones that did not end)."""
        if not self.running:
            raise ValueError('reactor not running')
        triggers, self._triggers = self._triggers, {}
        try:
            for callable, args, kw in triggers.values():
                callable(*args, **kw)
            self.run_due()
        finally:
            self.running = False
            self.stopped = True
            _started_reactors.discard(self)
            if self._installed:
                self.clock.uninstall()
                self._installed = False
        deadline = time.monotonic() + timeout
        alive = []
        for thread in self._threads:
            thread.join(max(0, deadline - time.monotonic()))
            if thread.is_alive():
                alive.append(thread)
        self._threads = alive
        if alive:
            raise AssertionError(
                'threads started by the test reactor did not stop: %r'
                % (alive,))

    # -- driving time -----------------------------------------------------

    def _pop_due(self, until):
        with self._cond:
            while self._calls:
                call = self._calls[0]
                if not call.active():
                    heapq.heappop(self._calls)
                    continue
                if call.time <= until:
                    heapq.heappop(self._calls)
                    call.called = True
                    return call
                return None
        return None

    def _run(self, call):
        call.callable(*call.args, **call.kw)

    def run_due(self):
        """Run every call due at the current time, without moving the
        clock; return how many ran."""
        count = 0
        while True:
            call = self._pop_due(self.clock.now())
            if call is None:
                return count
            self._run(call)
            count += 1

    def time_passes(self):
        """Run the next call due now, if any; return True if one ran."""
        call = self._pop_due(self.clock.now())
        if call is None:
            return False
        self._run(call)
        self._sync_caller()
        return True

    def _sync_caller(self):
        """Begin a new transaction in the calling thread if its current one
        holds no changes, so the test sees what the calls committed."""
        if not self.sync_transactions or transaction.manager.explicit:
            return
        # The transaction package has no public "has changes" question;
        # a data manager joins the transaction when it has changes.
        if not getattr(transaction.get(), '_resources', True):
            transaction.begin()

    def next_call_time(self):
        with self._cond:
            active = [c.time for c in self._calls if c.active()]
        return min(active) if active else None

    def time_flies(self, seconds):
        """Let ``seconds`` pass: run the calls in time order, moving the
        clock to each call's time, then to the end.  Return how many ran.

        Before the clock moves on, worker threads get a short moment
        (``settle``, real time) to hand over calls for the current time.
        """
        if not self.running:
            raise ValueError('reactor not started')
        end = self.clock.now() + datetime.timedelta(seconds=seconds)
        count = 0
        while True:
            count += self.run_due()
            self._settle()
            count += self.run_due()
            nxt = self.next_call_time()
            if nxt is None or nxt > end:
                break
            if nxt > self.clock.now():
                self.clock.set(nxt)
        if self.clock.now() < end:
            self.clock.set(end)
        count += self.run_due()
        if count:
            self._sync_caller()
        return count

    def _settle(self):
        now = self.clock.now()
        with self._cond:
            if any(c.active() and c.time <= now for c in self._calls):
                return
            self._cond.wait(self.settle)

    def wait_for(self, *jobs, poll_interval=5, attempts=10, pause=0.1):
        """Let a poll happen (``time_flies(poll_interval)``), then, up to
        ``attempts`` times, run the due calls and look (in a new
        transaction) whether every job completed, waiting up to ``pause``
        seconds (real time) for worker threads to hand over calls in
        between.  Print ``TIME OUT`` if they did not (zc.async's helper,
        which returned nothing)."""
        self.time_flies(poll_interval)
        for attempt in range(attempts):
            self.run_due()
            transaction.begin()
            if all(job.status == interfaces.COMPLETED for job in jobs):
                return
            self.wait_for_calls(pause)
        print('TIME OUT')

    def wait_for_calls(self, timeout):
        """Wait (real time) up to ``timeout`` for a call due now to arrive;
        run the due calls; return how many ran."""
        now = self.clock.now()
        with self._cond:
            if not any(c.active() and c.time <= now for c in self._calls):
                self._cond.wait(timeout)
        return self.run_due()


def started_reactors():
    """The test reactors that are running now."""
    return list(_started_reactors)
