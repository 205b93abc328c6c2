"""Small shared tools: the clock, logging channels, transaction loops, keys.
"""
import contextlib
import datetime
import logging
import signal
import threading
import time
import types

import persistent
import transaction.interfaces
import zope.component
import ZODB.POSException
import ZODB.interfaces
import ZODB.utils
import zope.interface

from zasync import interfaces
from zasync.failure import Failure

__all__ = ['BACKOFF_INCREMENT', 'Base', 'check_begin_by', 'check_deadline',
           'connection', 'custom_repr', 'deadline_passed', 'dt_to_long',
           'events_log', 'EXPLOSIVE_ERRORS', 'get_clock', 'INITIAL_BACKOFF',
           'install_in_root', 'long_to_dt', 'MAX_BACKOFF', 'never_fail', 'now',
           'one_line', 'private_connection', 'root_cause', 'SignalHandlers',
           'sleep', 'system_clock', 'SYSTEM_ERRORS', 'SystemClock', 'to_utc',
           'trace_log', 'TRANSACTION_ERRORS', 'transaction_manager',
           'try_five_times', 'UTC', 'wait_for']

log = logging.getLogger('zasync')
events_log = logging.getLogger('zasync.events')   # what operators must see
trace_log = logging.getLogger('zasync.trace')     # what developers may want

UTC = datetime.timezone.utc

# --------------------------------------------------------------------------
# The clock


@zope.interface.implementer(interfaces.IClock)
class SystemClock:
    """The real clock."""

    def now(self):
        return datetime.datetime.now(UTC)

    def sleep(self, seconds):
        if seconds > 0:
            time.sleep(seconds)


system_clock = SystemClock()


def get_clock():
    """The registered ``IClock`` utility, else the system clock."""
    return zope.component.queryUtility(interfaces.IClock, default=system_clock)


def now():
    """The current time, an aware UTC datetime, from the injectable clock."""
    return get_clock().now()


def sleep(seconds):
    """Sleep through the injectable clock."""
    get_clock().sleep(seconds)


def to_utc(value, what='value'):
    """Return an aware datetime converted to UTC; refuse naive values."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (what, value))
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            'cannot use timezone-naive values (%s=%r): pass an aware '
            'datetime, e.g. with tzinfo=datetime.timezone.utc' % (what, value))
    return value.astimezone(UTC)


def check_begin_by(value):
    """Return ``value`` if it is a valid ``begin_by`` (None or a timedelta
    that is not negative); raise otherwise."""
    if value is not None:
        if not isinstance(value, datetime.timedelta):
            raise TypeError('begin_by must be a timedelta, not %r' % (value,))
        if value < datetime.timedelta(0):
            raise ValueError('begin_by must not be negative: %r' % (value,))
    return value


def check_deadline(begin_after, begin_by):
    """Refuse a ``begin_after + begin_by`` past the last representable
    time (year 9999): every claim would fail on it."""
    if begin_after is not None and begin_by is not None:
        try:
            begin_after + begin_by
        except OverflowError:
            raise ValueError(
                'begin_after + begin_by is past the year 9999 (begin_by %r): '
                'use begin_by=None for no deadline' % (begin_by,)) from None


def deadline_passed(begin_after, begin_by, now):
    """Whether a job with these settings should have started before
    ``now`` (never, without a ``begin_by``, or one past the year 9999)."""
    if begin_after is None or begin_by is None:
        return False
    try:
        return begin_after + begin_by < now
    except OverflowError:
        return False


# --------------------------------------------------------------------------
# Time-ordered integer keys: newer times get smaller keys, so a BTree
# iterates newest first.  The low 4 bits are free for de-duplication.

_EPOCH_MAX = datetime.datetime.max


def dt_to_long(dt):
    """Encode a datetime as an integer key; newer -> smaller."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    delta = _EPOCH_MAX - dt
    return ((delta.days << 41) | (delta.seconds << 24)
            | (delta.microseconds << 4))


def long_to_dt(value):
    """Decode a key of ``dt_to_long`` (de-duplication bits ignored) as an
    aware UTC datetime."""
    microseconds = (value >> 4) & 0xFFFFF
    seconds = (value >> 24) & 0x1FFFF
    days = value >> 41
    naive = _EPOCH_MAX - datetime.timedelta(days, seconds, microseconds)
    return naive.replace(tzinfo=UTC)


# --------------------------------------------------------------------------
# Parents

class Base(persistent.Persistent):
    """A persistent object with a ``parent`` (and ``__parent__``) link.

    ``__parent__`` reads an explicitly set value, falling back on
    ``parent``; setting ``__parent__`` stores the value (zc.async's setter
    dropped it).
    """

    parent = None
    _z_parent__ = None

    @property
    def __parent__(self):
        if self._z_parent__ is not None:
            return self._z_parent__
        return self.parent

    @__parent__.setter
    def __parent__(self, value):
        self._z_parent__ = value


# --------------------------------------------------------------------------
# Representations


def address(obj):
    """``(integer oid, database name)`` of a stored persistent object: what
    names it in a multi-database, where oids are unique per database only
    (``zasync.dispatcher.getId``, ``zasync.inspection.job_address``)."""
    return ZODB.utils.u64(obj._p_oid), obj._p_jar.db().database_name


def custom_repr(obj):
    """A short, stable description of ``obj`` for logs and reprs.

    Persistent objects show class, oid and database; functions their dotted
    name; anything else its ``repr``.
    """
    try:
        if isinstance(obj, persistent.Persistent):
            oid = obj._p_oid
            oid = '?' if oid is None else ZODB.utils.u64(oid)
            jar = obj._p_jar
            db_name = '?'
            if jar is not None:
                db_name = repr(jar.db().database_name)
            return '%s.%s (oid %s, db %s)' % (
                type(obj).__module__, type(obj).__qualname__, oid, db_name)
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, '__module__', None) or 'builtins'
            return '%s.%s' % (module, obj.__qualname__)
        return repr(obj)
    except (TypeError, ValueError, AttributeError):
        return object.__repr__(obj)


def one_line(error):
    """An exception, or a ``Failure``, as one line: its type's name and the
    first line of its message (``'KeyError: 42'``)."""
    name = getattr(error, 'type_name', None)
    if name is not None:   # a Failure
        name = name.rpartition('.')[2]
        message = error.getErrorMessage()
    else:
        name = type(error).__name__
        message = str(error)
    lines = str(message).strip().splitlines()
    return '%s: %s' % (name, lines[0]) if lines else name


def root_cause(error):
    """The error ``error`` was raised from, when it says nothing itself
    (ZODB's ``StateLoadError`` wraps what unpickling raised)."""
    seen = set()
    while (not str(error) and id(error) not in seen
           and (error.__cause__ or error.__context__) is not None):
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return error


# --------------------------------------------------------------------------
# Transaction loops

try:
    from ZEO.Exceptions import ClientDisconnected
except ImportError:  # pragma: no cover - ZEO is a dependency
    class ClientDisconnected(Exception):
        pass

EXPLOSIVE_ERRORS = (SystemExit, KeyboardInterrupt, interfaces.ReassignedError)
SYSTEM_ERRORS = (ClientDisconnected, ZODB.POSException.POSKeyError)
TRANSACTION_ERRORS = (transaction.interfaces.TransientError,
                      ZODB.POSException.TransactionError)
INITIAL_BACKOFF = 5
BACKOFF_INCREMENT = 5
MAX_BACKOFF = 60


def _attempt(call, tm, commit=True):
    """Call ``call()`` and commit, once: ``(value, None)``, or ``(None,
    error)`` after an error (aborted).  Explosive errors abort and
    propagate."""
    try:
        result = call()
        if commit:
            tm.commit()
    except EXPLOSIVE_ERRORS:
        tm.abort()
        raise
    except Exception as e:
        tm.abort()
        return None, e
    return result, None


def never_fail(call, identifier, tm):
    """Call ``call()`` and commit, until both succeed; return the value.

    Transaction errors are retried at once; other errors (a lost ZEO
    connection among them) are logged and retried after a growing pause
    (5 s, +5 s, at most 60 s), because the
    caller cannot go on without this step.  Explosive errors (SystemExit,
    KeyboardInterrupt, ReassignedError) abort and propagate.
    """
    trans_count = 0
    other_count = 0
    backoff = INITIAL_BACKOFF
    while True:
        result, error = _attempt(call, tm)
        if error is None:
            return result
        # A lost ZEO connection is a transient error too, but retrying it
        # at once would spin until the server is back: it backs off.
        if (isinstance(error, TRANSACTION_ERRORS)
                and not isinstance(error, ClientDisconnected)):
            trans_count += 1
            if trans_count % 5 == 0:
                events_log.warning(
                    '%d consecutive transaction errors while %s',
                    trans_count, identifier, exc_info=error)
            continue
        other_count += 1
        if other_count == 1 or other_count % 10 == 0:
            level = (logging.ERROR if isinstance(error, SYSTEM_ERRORS)
                     else logging.CRITICAL)
            events_log.log(
                level, 'Error while %s (%d so far); retrying in %s s',
                identifier, other_count, backoff, exc_info=error)
        sleep(backoff)
        backoff = min(MAX_BACKOFF, backoff + BACKOFF_INCREMENT)


def try_five_times(call, identifier, tm, commit=True):
    """Call ``call()`` (and commit), retrying transaction errors 5 times.

    Returns the value, or a ``Failure`` when it gave up (logged CRITICAL).
    Explosive errors propagate.
    """
    tries = 0
    while True:
        result, error = _attempt(call, tm, commit)
        if error is None:
            return result
        if isinstance(error, TRANSACTION_ERRORS):
            tries += 1
            if tries < 5:
                continue
            events_log.critical(
                'Five consecutive transaction errors while %s',
                identifier, exc_info=error)
        else:
            events_log.critical('Error while %s', identifier, exc_info=error)
        return Failure(error)


@contextlib.contextmanager
def private_connection(db):
    """A connection of ``db`` with a transaction manager of its own, in a
    new transaction; aborted on error, closed in any case."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        yield conn
    except BaseException:
        tm.abort()
        raise
    finally:
        conn.close()


def install_in_root(conn, key, factory, db_name=None):
    """Make sure ``conn.root()[key]`` exists; return ``(object, created)``.

    With ``db_name``, the object lives in the root of that member of a
    multi-database (under the same key), and the main root refers to it.
    ``factory()`` makes a new object.  Nothing is committed.
    """
    root = conn.root()
    obj = root.get(key)
    if obj is not None:
        return obj, False
    other = None
    if db_name is not None:
        other = conn.get_connection(db_name)
        obj = other.root().get(key)
    created = obj is None
    if created:
        obj = factory()
        if other is not None:
            other.root()[key] = obj
            other.add(obj)
    root[key] = obj
    return obj, created


def transaction_manager(obj):
    """The transaction manager of a persistent object (or a connection)."""
    jar = getattr(obj, '_p_jar', None)
    if jar is None and hasattr(obj, 'transaction_manager'):
        jar = obj
    if jar is None:
        return transaction.manager
    return jar.transaction_manager


def connection(obj):
    """The connection of a persistent object, walking ``__parent__`` (a
    connection is its own)."""
    if ZODB.interfaces.IConnection.providedBy(obj):
        return obj
    seen = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        jar = getattr(obj, '_p_jar', None)
        if jar is not None:
            return jar
        obj = getattr(obj, '__parent__', None)
    return None


# --------------------------------------------------------------------------
# Waiting and signals


def wait_for(check, seconds, pause=None):
    """Call ``check()`` until it returns something other than None and
    return that; return None once ``seconds`` have passed.

    Between checks ``pause(at_most)`` waits (default: ``time.sleep``), for
    10 ms at first, doubling up to 100 ms, never past the deadline.
    """
    deadline = time.monotonic() + seconds
    interval = 0.01
    pause = pause or time.sleep
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        pause(min(interval, remaining))
        interval = min(interval * 2, 0.1)


class SignalHandlers:
    """Signal handlers installed by one component, and those they replaced.

    ``install(signum, handler)`` works in the main thread only (elsewhere,
    and for a handler set outside Python, it installs nothing and returns
    False).  ``restore()`` puts the previous handlers back where ours are
    still installed: a handler installed after ours by someone else stays.
    """

    def __init__(self):
        self.installed = {}   # signal number -> (previous, ours)
        self.replaced = {}    # signal number -> previous (kept by restore)

    def install(self, signum, handler):
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signum)
        if previous is None:
            return False
        signal.signal(signum, handler)
        self.installed[signum] = (previous, handler)
        self.replaced[signum] = previous
        return True

    def previous(self, signum):
        """The handler ``signum`` had before ours."""
        return self.replaced[signum]

    def chain(self, signum, frame):
        """Do what the previous handler of ``signum`` did: call it, or for
        the defaults raise ``KeyboardInterrupt`` (SIGINT) / ``SystemExit``."""
        previous = self.previous(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt()
            raise SystemExit()

    def restore(self):
        """Put the previous handlers back (where ours are still installed);
        False, keeping them for a later call, outside the main thread."""
        if not self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum, (previous, ours) in self.installed.items():
            if signal.getsignal(signum) == ours:
                signal.signal(signum, previous)
        self.installed.clear()
        return True
