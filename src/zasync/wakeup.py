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
"""
import logging
import threading
import time

from ZODB.mvccadapter import MVCCAdapter

__all__ = ['InvalidationWatcher', 'quiet']

log = logging.getLogger('zasync.trace')

# Threads committing while this is set do not wake anyone (a dispatcher's
# own claims would otherwise wake the dispatcher up again).
quiet = threading.local()


class InvalidationWatcher:
    """Call ``callback(oids)`` when a commit changes watched oids (``oids``:
    the changed watched ones, or None when unknown).

    ``watch(oids)`` sets the oids (a set of 8-byte oids; ``None`` watches
    everything).  ``start()`` / ``stop()`` attach to and detach from the
    database.  ``mode`` is ``'push'`` or ``'pull'`` once started.
    """

    pull_interval = 0.05

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
            self._thread = threading.Thread(
                target=self._pull, daemon=True,
                name='zasync invalidation watcher')
            self.mode = 'pull'
            self._thread.start()

    def stop(self):
        if self.mode is None:
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
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
            self._fire(None if watched is None
                       else watched.intersection(oids))

    def _invalidated_all(self):
        if not getattr(quiet, 'active', False):
            self._fire(None)

    def _fire(self, oids):
        self.wakeups += 1
        try:
            self.callback(oids)
        except Exception:  # never break a commit of somebody else
            log.exception('invalidation callback failed')

    def await_last_commit(self, timeout=1.0):
        """Wait until the database's storage has caught up with the latest
        commit that woke us, so that a new transaction sees it.

        A ZEO client tells about a commit of another process (invalidates)
        just *before* it moves its own "last transaction" on: a transaction
        begun in that moment would not see the commit yet.
        """
        tid = self.last_tid
        if tid is None:
            return True
        storage = self.db.storage
        deadline = time.monotonic() + timeout
        while storage.lastTransaction() < tid:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)
        return True

    def _pull(self):
        while not self._stopped.wait(self.pull_interval):
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
