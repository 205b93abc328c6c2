"""Stopping a job's callable that runs past its timeout.

A job runs its callable inside ``running(token)``; ``stop(ident, token)``
-- called from another thread, when the job's time is up -- raises
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

__all__ = ['running', 'stop']

_lock = threading.Lock()
_running = {}   # thread ident -> token of the callable it runs


def _set_async_exc(ident, exc_type):
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident),
        ctypes.py_object(exc_type) if exc_type is not None else None)


@contextlib.contextmanager
def running(token):
    """The current thread runs the callable of ``token`` (a job's id)."""
    ident = threading.get_ident()
    with _lock:
        _running[ident] = token
    try:
        yield
    finally:
        with _lock:
            if _running.get(ident) == token:
                del _running[ident]
            # An exception sent but not yet raised must not hit what
            # follows the callable.
            _set_async_exc(ident, None)


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
        return _set_async_exc(ident, interfaces.JobTimeoutError) == 1
