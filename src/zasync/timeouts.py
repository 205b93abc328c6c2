"""Stopping a job's callable that runs past its timeout.

A worker thread that runs a job under a time limit first calls
``assign(token)`` (a fresh object of its own); the job runs its callable
inside ``running()``.  ``stop(ident, token)`` -- called from another
thread, when the job's time is up -- raises
``zasync.interfaces.JobTimeoutError`` in the thread ``ident`` by an
asynchronous exception (``PyThreadState_SetAsyncExc``), but only while
that thread is still inside the callable of the job ``token``: never in
zasync's own bookkeeping before or after it, and never in the next job.
The job then fails like any job whose callable raised (its transaction is
aborted: nothing it wrote commits).

An asynchronous exception is delivered between two bytecodes: a thread
blocked in C code (``time.sleep``, a socket read) gets it only when that
call returns.
"""
import contextlib
import ctypes
import threading

from zasync import interfaces

__all__ = ['assign', 'running', 'stop']

_lock = threading.Lock()
_running = {}   # thread ident -> token of the callable it runs
_sent = set()   # thread idents an exception was sent to
_assigned = threading.local()


def assign(token):
    """The callable the current thread runs next (in ``running()``) may
    be stopped as ``token`` (None: it may not)."""
    _assigned.token = token


def _set_async_exc(ident, exc_type):
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type))


def _absorb():
    """Let an exception sent to this thread, if it is still on its way,
    arrive here.  (Withdrawing it with ``PyThreadState_SetAsyncExc(id,
    NULL)`` would leave the interpreter checking for it between every two
    bytecodes from then on.)"""
    try:
        count = 0
        for _ in range(1000):
            count += 1
    except interfaces.JobTimeoutError:
        pass


def _finish(ident, token):
    """The thread leaves the callable: return whether it was stopped."""
    with _lock:
        if _running.get(ident) == token:
            del _running[ident]
        sent = ident in _sent
        _sent.discard(ident)
    if sent:
        _absorb()
    return sent


@contextlib.contextmanager
def running():
    """The current thread runs a job's callable, which may be stopped as
    the token ``assign`` gave.  A callable stopped just as it returned
    raises ``JobTimeoutError`` all the same: its transaction was doomed."""
    token = getattr(_assigned, 'token', None)
    if token is None:
        yield
        return
    _assigned.token = None   # (for this callable only: not its callbacks)
    ident = threading.get_ident()
    with _lock:
        _running[ident] = token
    try:
        yield
    except BaseException:
        _finish(ident, token)
        raise
    if _finish(ident, token):
        raise interfaces.JobTimeoutError()


def stop(ident, token, before=None):
    """Raise ``JobTimeoutError`` in the thread ``ident`` if it still runs
    the callable of ``token``, after calling ``before()`` (the thread
    cannot leave the callable meanwhile: ``before`` may doom the
    callable's transaction); return whether it did."""
    with _lock:
        if _running.get(ident) != token:
            return False
        if before is not None:
            before()
        _sent.add(ident)
        return _set_async_exc(ident, interfaces.JobTimeoutError) == 1
