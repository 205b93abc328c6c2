"""Learn, as soon as it commits, that a transaction changed given objects.

A dispatcher polls its queues every ``poll_interval`` seconds, but it should
not wait that long for new work: ``InvalidationWatcher`` calls back as soon
as a committed transaction -- in this process or, for storages that push
invalidations (ZEO), in any other -- changed one of the watched objects.

How it works: a ZODB ``DB`` serves every connection through its MVCC
adapter, and the adapter tells each of its storage instances, right after a
commit, which oids the commit changed (``_invalidate``).  The watcher asks
the adapter for one more instance (``new_instance()``) that never loads or
stores anything, and listens to what it is told.  This works for every
storage the DB wraps in an ``MVCCAdapter`` (FileStorage, MappingStorage,
DemoStorage, ZEO's ClientStorage, ...).  Storages that implement MVCC
themselves (RelStorage) push nothing; for them, the watcher polls a storage
instance for invalidations every ``pull_interval`` seconds instead, which is
still much faster than the dispatcher's poll.

The callback runs in the committing thread, while the storage finishes the
commit: it must be quick and must not touch the database (the dispatcher's
only schedules a call in its reactor).

RelStorage on PostgreSQL: LISTEN/NOTIFY
---------------------------------------

On RelStorage with PostgreSQL the pull thread does not only poll: it also
keeps a connection of its own (psycopg2, opened with the DSN of the
storage's adapter) that listens (``LISTEN``) on the channel
``zasync_commit``, and waits on that connection's socket with
``pull_interval`` as the timeout.  A notification makes it poll for
invalidations at once; without one it polls every ``pull_interval``
exactly as before.

Who notifies: a trigger, not zasync.  ``zasync_notify_commit`` is a
statement-level ``AFTER INSERT OR UPDATE`` trigger on RelStorage's table
``object_state``, calling ``pg_notify('zasync_commit', '')``.  Every commit
that stores objects writes that table, in both schemas: the history-free
one (an ``INSERT ... ON CONFLICT DO UPDATE``, which fires both statement
triggers) and the history-preserving one (an ``INSERT``, next to rows in
``transaction`` and ``current_object``).  PostgreSQL delivers the
notification when -- and only if -- the transaction commits, and folds
identical notifications of one transaction into one.  So every writer
wakes the dispatchers: zasync's queues, and application code that puts
jobs through any other path, without any change to how it commits (zasync
cannot add a ``NOTIFY`` to RelStorage's own store connection).  The cost is
a notification per commit (see ``benchmarks/README.rst``).

The watcher installs the trigger when it starts if it is not there yet
(``CREATE OR REPLACE FUNCTION`` plus ``CREATE TRIGGER``, under an advisory
lock, after a check in ``pg_trigger``), which needs the rights of the
table's owner.  Where workers lack them, an operator installs it once with
``install_notify_trigger(db_or_dsn)`` or the SQL of
``NOTIFY_TRIGGER_SQL``; ``uninstall_notify_trigger`` removes it.

Nothing of this is required: when the storage is not RelStorage on
PostgreSQL, psycopg2 is missing, the connection or the ``LISTEN`` fails,
or the trigger is missing and cannot be installed, the watcher logs it
once (on ``zasync.events``, INFO or WARNING) and polls every
``pull_interval`` as before.  A listening connection that breaks is
replaced every ``relisten_interval`` seconds until it works again.  The
environment variable ``ZASYNC_LISTEN`` sets the default: ``on`` (listen,
install the trigger if missing), ``listen`` (listen, never install) or
``off`` (only poll) -- e.g. behind PgBouncer in transaction pooling mode,
which does not keep a ``LISTEN``.
"""
import asyncio
import logging
import os
import select
import threading
import time

from ZODB.mvccadapter import MVCCAdapter

__all__ = ['InvalidationWatcher', 'quiet', 'NOTIFY_CHANNEL',
           'NOTIFY_TRIGGER_SQL', 'postgresql_dsn', 'install_notify_trigger',
           'uninstall_notify_trigger']

log = logging.getLogger('zasync.trace')
events_log = logging.getLogger('zasync.events')

#: the channel the trigger notifies and the watchers listen on
NOTIFY_CHANNEL = 'zasync_commit'

#: what ``install_notify_trigger`` runs (an operator may run it by hand)
NOTIFY_TRIGGER_SQL = """\
CREATE OR REPLACE FUNCTION zasync_notify_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('%s', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER zasync_notify_commit
    AFTER INSERT OR UPDATE ON object_state
    FOR EACH STATEMENT EXECUTE PROCEDURE zasync_notify_commit();
""" % NOTIFY_CHANNEL

_UNINSTALL_SQL = """\
DROP TRIGGER IF EXISTS zasync_notify_commit ON object_state;
DROP FUNCTION IF EXISTS zasync_notify_commit();
"""

_TRIGGER_STATE_SQL = """\
SELECT to_regclass('object_state') IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgname = 'zasync_notify_commit'
                 AND tgrelid = to_regclass('object_state'))
"""

# Serialises installers (two workers starting at once).
_INSTALL_LOCK = 0x7a6173796e6301

_APPLICATION_NAME = 'zasync invalidation watcher'


def _listen_setting():
    value = os.environ.get('ZASYNC_LISTEN', 'on').strip().lower()
    if value in ('0', 'off', 'no', 'false'):
        return 'off'
    if value == 'listen':
        return 'listen'
    return 'on'


def postgresql_dsn(target):
    """The libpq DSN of a RelStorage on PostgreSQL (``target``: a ``DB``,
    a storage, or a DSN string), or None for any other storage."""
    if isinstance(target, str):
        return target
    storage = getattr(target, 'storage', target)   # a DB, or a storage
    adapter = getattr(storage, '_adapter', None)
    if adapter is None or not type(adapter).__module__.startswith(
            'relstorage.adapters.postgresql'):
        return None
    dsn = getattr(getattr(adapter, 'connmanager', None), '_dsn', None)
    return dsn if isinstance(dsn, str) else None


def _import_psycopg2():
    import psycopg2   # lazily: zasync runs without it
    return psycopg2


def _connect(dsn):
    return _import_psycopg2().connect(
        dsn, application_name=_APPLICATION_NAME)


def _trigger_state(cursor):
    """(is there an object_state table, is the trigger on it)"""
    cursor.execute(_TRIGGER_STATE_SQL)
    table, trigger = cursor.fetchone()
    return bool(table), bool(trigger)


def _ensure_trigger(conn, install=True, lock_timeout='5s'):
    """Make sure the trigger is there, in a transaction of ``conn`` (not in
    autocommit mode); return 'present', 'installed', or raise."""
    try:
        with conn.cursor() as cursor:
            table, trigger = _trigger_state(cursor)
            if trigger:
                return 'present'
            if not table:
                raise LookupError(
                    'no table object_state: not a RelStorage database')
            if not install:
                raise LookupError('the trigger zasync_notify_commit is not '
                                  'installed')
            cursor.execute("SET LOCAL lock_timeout = %s", (lock_timeout,))
            cursor.execute('SELECT pg_advisory_xact_lock(%s)',
                           (_INSTALL_LOCK,))
            if _trigger_state(cursor)[1]:
                return 'present'
            cursor.execute(NOTIFY_TRIGGER_SQL)
        conn.commit()
        return 'installed'
    finally:
        conn.rollback()   # (nothing left to roll back after a commit)


def install_notify_trigger(target):
    """Install the trigger that makes every commit of a RelStorage on
    PostgreSQL notify ``NOTIFY_CHANNEL`` (``target``: a ``DB``, its storage,
    or a DSN), as a role that may create triggers on ``object_state``.
    Return True if it installed it, False if it was there already."""
    dsn = postgresql_dsn(target)
    if dsn is None:
        raise ValueError('not a RelStorage on PostgreSQL: %r' % (target,))
    conn = _connect(dsn)
    try:
        return _ensure_trigger(conn, lock_timeout='60s') == 'installed'
    finally:
        conn.close()


def uninstall_notify_trigger(target):
    """Remove the trigger and its function; return True if it was there.
    Watchers then only poll (they do not reinstall it until they restart).
    """
    dsn = postgresql_dsn(target)
    if dsn is None:
        raise ValueError('not a RelStorage on PostgreSQL: %r' % (target,))
    conn = _connect(dsn)
    try:
        with conn.cursor() as cursor:
            present = _trigger_state(cursor)[1]
            cursor.execute(_UNINSTALL_SQL)
        conn.commit()
        return present
    finally:
        conn.close()


class _Listener:
    """A connection LISTENing on ``NOTIFY_CHANNEL``."""

    def __init__(self, dsn, install):
        self.conn = conn = _connect(dsn)
        try:
            try:
                self.trigger = _ensure_trigger(conn, install)
                self.trigger_error = None
            except Exception as e:
                self.trigger = None
                self.trigger_error = e
                conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute('LISTEN %s' % NOTIFY_CHANNEL)
        except BaseException:
            conn.close()
            raise
        self.checked = time.monotonic()

    def wait(self, timeout, wake_fd, health_interval):
        """Wait up to ``timeout`` seconds for notifications (or a byte on
        ``wake_fd``); return how many arrived.  Errors of the connection
        propagate."""
        conn = self.conn
        if not conn.notifies:
            readable = select.select([conn, wake_fd], [], [], timeout)[0]
            if wake_fd in readable:
                try:
                    os.read(wake_fd, 512)
                except BlockingIOError:  # pragma: no cover - raced
                    pass
            now = time.monotonic()
            if conn in readable:
                conn.poll()
                self.checked = now
            elif not readable and now - self.checked > health_interval:
                # A connection that died silently (a firewall dropping
                # idle connections) would never become readable.
                with conn.cursor() as cursor:
                    cursor.execute('SELECT 1')
                self.checked = now
        count = len(conn.notifies)
        del conn.notifies[:]
        return count

    def close(self):
        try:
            self.conn.close()
        except Exception:  # pragma: no cover - already broken
            log.debug('closing the LISTEN connection failed', exc_info=True)


def _first_line(error):
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]


# Threads committing while this is set do not wake anyone (a dispatcher's
# own claims would otherwise wake the dispatcher up again).
quiet = threading.local()


def _running_loop():
    """The asyncio loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class InvalidationWatcher:
    """Call ``callback(oids)`` when a commit changes watched oids (``oids``:
    the changed watched ones, or None when unknown).

    ``watch(oids)`` sets the oids (a set of 8-byte oids; ``None`` watches
    everything).  ``start()`` / ``stop()`` attach to and detach from the
    database.  ``mode`` is ``'push'`` or ``'pull'`` once started;
    ``listening`` says whether a pull-mode watcher is woken by PostgreSQL
    notifications (see the module's docstring).
    """

    pull_interval = 0.05
    #: LISTEN on RelStorage/PostgreSQL: 'on' (and install the trigger if
    #: missing), 'listen' (never install it), 'off'; None: $ZASYNC_LISTEN
    listen = None
    #: the DSN to LISTEN with; None: the storage adapter's
    listen_dsn = None
    #: seconds between attempts to replace a broken LISTEN connection
    relisten_interval = 10.0
    #: seconds without traffic after which the LISTEN connection is checked
    health_interval = 60.0

    def __init__(self, db, callback):
        self.db = db
        self.callback = callback
        self._watched = frozenset()
        self._instance = None
        self._thread = None
        self._stopped = threading.Event()
        self.mode = None
        self.wakeups = 0
        self.last_tid = None   # of the latest commit that woke us up
        #: the oids that commit changed (all of them), or None
        self.last_oids = None
        # Told in an asyncio loop's thread (a ZEO client's): the storage's
        # "last transaction" moves on just after that (see _invalidated).
        self.deferred = False
        self._caught_up = threading.Condition()
        self.notifications = 0   # PostgreSQL notifications received
        self._listener = None
        self._dsn = None         # what we LISTEN with, once we could
        self._relisten_at = None
        self._install = False
        self._wake_fds = None    # (read, write) of a pipe, in pull mode

    def watch(self, oids):
        self._watched = None if oids is None else frozenset(oids)

    @property
    def watched(self):
        return self._watched

    def start(self):
        if self.mode is not None:
            raise ValueError('watcher already started')
        self._stopped.clear()
        adapter = getattr(self.db, '_mvcc_storage', None)
        if isinstance(adapter, MVCCAdapter):
            instance = adapter.new_instance()
            # Shadow the instance's notification methods: we are told what
            # changed, and keep nothing (the instance never polls).
            instance._invalidate = self._invalidated
            instance._invalidateCache = self._invalidated_all
            self._instance = instance
            self.mode = 'push'
        else:
            self._instance = self.db.storage.new_instance()
            self._instance.poll_invalidations()
            try:
                self._start_listening()
            except Exception:   # never keep a dispatcher from starting
                events_log.warning(
                    'invalidation watcher: setting up LISTEN failed; '
                    'polling for commits every %s s', self.pull_interval,
                    exc_info=True)
            self._thread = threading.Thread(
                target=self._pull, daemon=True,
                name='zasync invalidation watcher')
            self.mode = 'pull'
            self._thread.start()

    def stop(self):
        if self.mode is None:
            return
        self._stopped.set()
        if self._wake_fds is not None:
            try:
                os.write(self._wake_fds[1], b'\0')
            except BlockingIOError:  # pragma: no cover - pipe full
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._wake_fds is not None:
            for fd in self._wake_fds:
                os.close(fd)
            self._wake_fds = None
        self._dsn = self._relisten_at = None
        instance, self._instance = self._instance, None
        try:
            instance.release()
        except Exception:  # pragma: no cover - storage already closed
            log.debug('releasing the watcher instance failed', exc_info=True)
        self.mode = None

    # -- notifications ----------------------------------------------------

    def _invalidated(self, tid, oids):
        if getattr(quiet, 'active', False):
            return
        watched = self._watched
        if watched is None or not watched.isdisjoint(oids):
            if self.last_tid is None or tid > self.last_tid:
                self.last_tid = tid
                self.last_oids = oids
            hits = None if watched is None else watched.intersection(oids)
            loop = _running_loop()
            if loop is None:
                self._fire(hits)
                return
            # A ZEO client tells about a commit from its IO thread, just
            # *before* it moves its "last transaction" on: a transaction
            # begun at once would not see the commit yet.  Wake the
            # dispatcher once the IO thread has moved on -- the loop's next
            # turn -- and nothing has to wait (``await_last_commit``).
            self.deferred = True
            loop.call_soon(self._fire_caught_up, hits)

    def _invalidated_all(self):
        if not getattr(quiet, 'active', False):
            self._fire(None)

    def _fire_caught_up(self, oids):
        with self._caught_up:
            self._caught_up.notify_all()
        self._fire(oids)

    def _fire(self, oids):
        self.wakeups += 1
        try:
            self.callback(oids)
        except Exception:  # never break a commit of somebody else
            log.exception('invalidation callback failed')

    def await_last_commit(self, timeout=1.0):
        """Make sure that a new transaction sees the latest commit that
        woke us: return at once where the storage had moved on when it told
        us (FileStorage, RelStorage, ...: nothing is even asked); with a
        ZEO client, wait, if need be, until its IO thread moved its "last
        transaction" on (``_invalidated``: woken by the IO thread, a
        dispatcher never needs to; a poll might).  Return False if that
        took longer than ``timeout`` seconds."""
        tid = self.last_tid
        if tid is None or not self.deferred:
            return True
        storage = self.db.storage
        with self._caught_up:
            return self._caught_up.wait_for(
                lambda: storage.lastTransaction() >= tid, timeout)

    # -- LISTEN/NOTIFY (pull mode, RelStorage on PostgreSQL) ---------------

    @property
    def listening(self):
        return self._listener is not None

    def _start_listening(self):
        """Set up the LISTEN connection if we can; log once if not."""
        setting = self.listen
        if setting is None:
            setting = _listen_setting()
        elif setting in (True, False):
            setting = 'on' if setting else 'off'
        if setting == 'off':
            events_log.info(
                'invalidation watcher: LISTEN turned off; polling for '
                'commits every %s s', self.pull_interval)
            return
        dsn = self.listen_dsn or postgresql_dsn(self.db.storage)
        if dsn is None:
            events_log.info(
                'invalidation watcher: %s is not RelStorage on PostgreSQL '
                '(no LISTEN/NOTIFY); polling for commits every %s s',
                type(self.db.storage).__name__, self.pull_interval)
            return
        try:
            _import_psycopg2()
        except ImportError:
            events_log.info(
                'invalidation watcher: psycopg2 is not installed (needed '
                'for LISTEN/NOTIFY); polling for commits every %s s',
                self.pull_interval)
            return
        self._wake_fds = os.pipe()
        os.set_blocking(self._wake_fds[0], False)
        os.set_blocking(self._wake_fds[1], False)
        self._dsn = dsn
        self._install = setting == 'on'
        self._listener = self._open_listener(first=True)

    def _open_listener(self, first):
        try:
            listener = _Listener(self._dsn, self._install)
        except Exception as e:
            self._relisten_at = time.monotonic() + self.relisten_interval
            if first:
                events_log.warning(
                    'invalidation watcher: cannot LISTEN on PostgreSQL '
                    '(%s); polling for commits every %s s, trying again '
                    'every %s s', _first_line(e), self.pull_interval,
                    self.relisten_interval)
            else:
                log.debug('LISTEN again failed', exc_info=True)
            return None
        self._relisten_at = None
        if listener.trigger is None:
            if first:
                events_log.warning(
                    'invalidation watcher: no NOTIFY trigger (%s); commits '
                    'wake nobody until an owner of object_state installs it '
                    '(zasync.wakeup.install_notify_trigger); polling every '
                    '%s s', _first_line(listener.trigger_error),
                    self.pull_interval)
        else:
            events_log.info(
                'invalidation watcher: LISTENing on %s (trigger %s)%s',
                NOTIFY_CHANNEL, listener.trigger, '' if first else ' again')
        return listener

    def _lost_listener(self, error):
        listener, self._listener = self._listener, None
        listener.close()
        self._relisten_at = time.monotonic() + self.relisten_interval
        events_log.warning(
            'invalidation watcher: lost the LISTEN connection (%s); polling '
            'for commits every %s s, trying again every %s s',
            _first_line(error), self.pull_interval, self.relisten_interval)

    def _pull_wait(self):
        """Wait for a notification or ``pull_interval``; False once we are
        stopped."""
        listener = self._listener
        if listener is None:
            timeout = self.pull_interval
            if self._relisten_at is not None:
                timeout = max(0, min(
                    timeout, self._relisten_at - time.monotonic()))
            if self._stopped.wait(timeout):
                return False
            if (self._relisten_at is not None and
                    time.monotonic() >= self._relisten_at):
                self._listener = self._open_listener(first=False)
                # (and poll, for what committed in between)
            return True
        try:
            count = listener.wait(self.pull_interval, self._wake_fds[0],
                                  self.health_interval)
        except Exception as e:
            if self._stopped.is_set():
                return False
            self._lost_listener(e)
            return True
        self.notifications += count
        return not self._stopped.is_set()

    def _pull(self):
        while self._pull_wait():
            try:
                oids = self._instance.poll_invalidations()
            except Exception:
                log.debug('polling invalidations failed', exc_info=True)
                continue
            if oids is None:
                self._fire(None)
            elif oids:
                watched = self._watched
                if watched is None:
                    self._fire(None)
                elif not watched.isdisjoint(oids):
                    self._fire(watched.intersection(oids))
