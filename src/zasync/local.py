"""What a running job can learn about where it runs (thread-local).

``getJob()`` is set while a job (or callback) runs, in any thread;
the dispatcher-related values are set in a dispatcher's worker threads.
"""
import threading
import time

import transaction

from zasync import timeouts

__all__ = ['getAgentName', 'getDispatcher', 'getJob', 'getLiveAnnotation',
           'getQueue', 'getReactor', 'Local', 'local', 'PROGRESS',
           'raise_if_cancelled', 'REACTOR_GRACE', 'setLiveAnnotation',
           'setProgress']


class Local(threading.local):
    job = None
    dispatcher = None
    name = None   # the agent name of a dispatcher worker thread


local = Local()


def getJob():
    """The job running in this thread, or None."""
    return local.job


def getQueue():
    """The queue of the running job (AttributeError outside a job)."""
    return local.job.queue


def getDispatcher():
    """The dispatcher of this worker thread, or None."""
    return local.dispatcher


def getAgentName():
    """The agent name of this dispatcher worker thread, or None."""
    return local.name


def getReactor():
    """The reactor of this worker thread's dispatcher (AttributeError
    outside a dispatcher thread)."""
    return local.dispatcher.reactor


def raise_if_cancelled():
    """Raise, in a job's callable, the ``CancelledError`` (or
    ``JobTimeoutError``) its dispatcher sent when it was cancelled (or
    timed out), if it has not arrived yet; else do nothing.

    The dispatcher's exception arrives between two bytecodes, so a job
    running Python code stops without help; a job that spends its time in
    C code (``time.sleep``, sockets, an extension) stops at once where it
    calls this (``setProgress`` and ``setLiveAnnotation`` call it too),
    instead of when the dispatcher gives up on its thread.
    """
    error = timeouts.requested()
    if error is not None:
        raise error()


# --------------------------------------------------------------------------
# Live annotations: job annotations read and written *now*, in another
# connection, through the dispatcher's reactor thread, while the job's own
# connection keeps its view of the database.

def _context(job):
    if job is None:
        job = local.job
    dispatcher = local.dispatcher
    if job is None or dispatcher is None:
        raise ValueError('not initialized: live annotations are only '
                         'available to jobs run by a dispatcher')
    jar = job._p_jar
    if jar is None or job._p_oid is None:
        raise ValueError('the job must be stored in the database')
    return dispatcher, job._p_oid, jar.db().database_name


def _open_job(db, oid, database_name):
    conn = db.open(transaction_manager=transaction.TransactionManager())
    jar = conn
    if database_name != conn.db().database_name:
        jar = conn.get_connection(database_name)
    return conn, jar.get(oid)


def _set_annotation(db, oid, database_name, name, value):
    from zasync import utils
    conn, job = _open_job(db, oid, database_name)
    tm = conn.transaction_manager
    try:
        def set_it():
            tm.begin()
            job.annotations[name] = value
        utils.try_five_times(
            set_it, 'setting live annotation %r' % (name,), tm)
    finally:
        tm.abort()
        conn.close()


def setLiveAnnotation(name, value, job=None):
    """Set ``job.annotations[name] = value`` now, in a separate connection
    and transaction (committed by the reactor thread; the caller does not
    wait).  ``job`` defaults to the running job.  Use only immutable,
    non-persistent values.  (In a job that was cancelled or timed out:
    ``raise_if_cancelled``.)"""
    raise_if_cancelled()
    dispatcher, oid, database_name = _context(job)
    dispatcher.reactor.callFromThread(
        _set_annotation, dispatcher.db, oid, database_name, name, value)


_MISSING = object()

#: seconds a worker waits for the reactor beyond ``timeout``
REACTOR_GRACE = 2


def getLiveAnnotation(name, default=None, timeout=0, poll=1, job=None):
    """The annotation ``name`` of ``job`` as committed now (read in a
    separate connection by the reactor thread).

    If it is missing, wait up to ``timeout`` seconds for it, looking again
    every ``poll`` seconds; then return ``default``.  ``default`` is also
    what you get when the reactor does not answer in time (zc.async
    returned None then).  ``timeout`` is real time, as in zc.async (the
    looks are the reactor's timed calls: a test reactor's virtual time
    does not use the timeout up).
    """
    from zasync import utils
    dispatcher, oid, database_name = _context(job)
    reactor = dispatcher.reactor
    answered = threading.Event()
    answer = []
    deadline = time.monotonic() + timeout

    def look():
        try:
            conn, found = _open_job(dispatcher.db, oid, database_name)
            try:
                value = found.annotations.get(name, _MISSING)
            finally:
                conn.transaction_manager.abort()
                conn.close()
        except Exception:
            utils.events_log.error('reading live annotation %r failed',
                                   name, exc_info=True)
            value = _MISSING
        if value is _MISSING:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                reactor.callLater(min(poll, remaining), look)
                return
            value = default
        answer.append(value)
        answered.set()

    reactor.callFromThread(look)
    if answered.wait(timeout + REACTOR_GRACE):
        return answer[0]
    return default


# --------------------------------------------------------------------------
# Progress (zasync.manager.ProgressableJob.percent reads it)

PROGRESS = 'zasync.progress'
"""Annotation holding a job's progress: ``(percent, message)``."""


def setProgress(percent, message=None, job=None):
    """Report how far ``job`` (default: the running job) got, 0 to 100.

    Other connections see it at once, while the job runs: in a dispatcher's
    worker through a live annotation, elsewhere in a short transaction of
    its own.  A job that is not stored yet just records it.  (In a job
    that was cancelled or timed out: ``raise_if_cancelled``.)
    """
    raise_if_cancelled()
    if job is None:
        job = local.job
    if job is None:
        raise ValueError('setProgress needs a job: none is running')
    if (isinstance(percent, bool) or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100):
        raise ValueError('percent must be a number from 0 to 100, not %r'
                         % (percent,))
    if message is not None and not isinstance(message, str):
        raise ValueError('message must be a string or None')
    value = (percent, message)
    jar = job._p_jar
    if jar is None or job._p_oid is None:
        job.annotations[PROGRESS] = value
    elif local.dispatcher is not None:
        setLiveAnnotation(PROGRESS, value, job)
    else:
        db = jar.db()
        _set_annotation(db, job._p_oid, db.database_name, PROGRESS, value)
