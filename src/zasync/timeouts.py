"""Stopping a job's callable from outside: at its timeout, or when it is
cancelled.

A worker thread that runs a job first calls ``assign(token)`` (a fresh
object for this run of the job); the job runs its callable inside
``running()``.  ``stop(ident, token, error)`` -- called from another
thread -- raises ``error`` (``zasync.interfaces.JobTimeoutError`` or
``CancelledError``, a class) in the thread ``ident`` by an asynchronous
exception (``PyThreadState_SetAsyncExc``), but only while that thread is
still inside the callable of the run ``token``: never in zasync's own
bookkeeping before or after it, and never in the next job.  The job then
fails like any job whose callable raised (its transaction is aborted:
nothing it wrote commits).

An asynchronous exception is delivered between two bytecodes: a thread
blocked in C code (``time.sleep``, a socket read, a lock) gets it only
when that call returns.  So an exception is never left pending: the
sender waits a moment (``DELIVERY_WINDOW``) for the thread to leave the
callable, and else takes it back; ``resend`` tries again.  (A pending
asynchronous exception sets a flag of the whole interpreter; in CPython
3.11, under a tracing function -- coverage, a debugger -- every other
thread that enters a Python function then loops on that flag until it
clears.  So the sender calls no Python function until it has taken the
exception back.)  A thread that never comes out is given up on:
``abandon(ident, token)`` marks the run; whenever the callable returns or
raises, its thread gets ``Abandoned``, which no job code catches (a
``BaseException``) and which ends the worker thread without writing
anything: meanwhile another thread has failed the job.
"""
import contextlib
import ctypes
import threading
import time

from zasync import interfaces

__all__ = ['Abandoned', 'abandon', 'assign', 'requested', 'resend',
           'running', 'stop', 'stopping']


class Abandoned(BaseException):
    """The run of a job's callable was given up on (its thread was stuck
    in C code when it was stopped): the thread must end, writing
    nothing."""


_lock = threading.Lock()
_running = {}     # thread ident -> token of the callable it runs
_sent = {}        # thread ident -> the error class sent to it
_abandoned = {}   # thread ident -> token of the run given up on
_assigned = threading.local()

#: seconds a sender waits for the thread to leave the callable before it
#: takes the exception back
DELIVERY_WINDOW = 0.05


def assign(token):
    """The callable the current thread runs next (in ``running()``) may
    be stopped as ``token`` (None: it may not)."""
    _assigned.token = token


class _Clear(BaseException):
    """Sent by a thread to itself, to clear the interpreter's signal."""


def _spin():
    """Run a few bytecodes: a pending asynchronous exception arrives."""
    count = 0
    for _ in range(1000):
        count += 1
    return count


def _deliver(ident, token, error, window=None):
    """Raise ``error`` in the thread ``ident``, and wait up to ``window``
    seconds for it to leave the callable of ``token``; if it has not,
    take the exception back (and clear the interpreter's signal that one
    is pending).  Return whether the thread left the callable.

    Between sending and taking back, this frame calls no Python function
    (see the module): only C functions, whose names are looked up
    before."""
    if window is None:
        window = DELIVERY_WINDOW
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    target = ctypes.c_ulong(ident)
    exception = ctypes.py_object(error)
    me = ctypes.c_ulong(threading.get_ident())
    clear = ctypes.py_object(_Clear)
    running = _running
    sleep = time.sleep
    clock = time.monotonic
    deadline = clock() + window
    set_exc(target, exception)
    while clock() < deadline:
        if running.get(ident) is not token:
            return True
        sleep(0.0005)
    # Not out: take it back.  (Withdrawing leaves the interpreter's flag
    # set; only a thread that receives an exception clears it: this one
    # sends one to itself, and lets it arrive.)
    set_exc(target, None)
    try:
        set_exc(me, clear)
        for _ in range(1000):
            pass
    except _Clear:
        pass
    return running.get(ident) is not token


def _finish(ident, token):
    """The thread leaves the callable: forget the run; return the error
    class sent to it, ``Abandoned``, or None."""
    with _lock:
        if _running.get(ident) == token:
            del _running[ident]
        sent = _sent.pop(ident, None)
        if _abandoned.get(ident) is token:
            del _abandoned[ident]
            return Abandoned
        return sent


def _leave(ident, token):
    """``_finish``, and let an exception sent, if it is still on its way,
    arrive here (it may arrive at any bytecode, ``_finish``'s too)."""
    outcome = None
    try:
        outcome = _finish(ident, token)
        if outcome is not None and outcome is not Abandoned:
            _spin()
    except interfaces.JobStoppedError as e:
        if outcome is None:
            # (it arrived before, or inside, _finish)
            outcome = _finish(ident, token) or type(e)
    return outcome


@contextlib.contextmanager
def running():
    """The current thread runs a job's callable, which may be stopped as
    the token ``assign`` gave.  A callable stopped just as it returned
    raises the error sent all the same: its transaction was doomed.  A
    callable given up on raises ``Abandoned``, however it ends."""
    token = getattr(_assigned, 'token', None)
    if token is None:
        yield
        return
    _assigned.token = None   # (for this callable only: not its callbacks)
    ident = threading.get_ident()
    with _lock:
        _running[ident] = token
        _sent.pop(ident, None)
        _abandoned.pop(ident, None)
    try:
        yield
    except BaseException as e:
        if _leave(ident, token) is Abandoned:
            raise Abandoned() from e
        raise
    outcome = _leave(ident, token)
    if outcome is not None:
        raise outcome()


def requested():
    """The error class sent to the current thread's callable (a stop was
    requested, and the exception may not have arrived: the thread was in
    C code), or None."""
    with _lock:
        return _sent.get(threading.get_ident())


def stop(ident, token, error, before=None):
    """Raise ``error`` (a class) in the thread ``ident`` if it still runs
    the callable of ``token``, after calling ``before()`` (the thread
    cannot leave the callable meanwhile: ``before`` may doom the
    callable's transaction); return whether it did (the exception may
    not have arrived: see ``stopping`` and ``resend``).  A second stop of
    the same run sends nothing more (the first error stays)."""
    with _lock:
        if _running.get(ident) != token or ident in _sent:
            return False
        if before is not None:
            before()
        _sent[ident] = error
    _deliver(ident, token, error)
    return True


def abandon(ident, token):
    """Give up on the run ``token`` if the thread ``ident`` is still in its
    callable after a stop (it must be stuck in C code): make the callable
    raise ``Abandoned`` whenever it ends.  Return whether the run was
    abandoned."""
    with _lock:
        if _running.get(ident) != token or ident not in _sent:
            return False
        del _running[ident]
        _abandoned[ident] = token
        return True


def resend(ident, token):
    """Deliver the exception sent to the run ``token`` of the thread
    ``ident`` again, if it has not left its callable (it was in C code
    when it was sent, and was taken back); return whether the thread left
    the callable now."""
    with _lock:
        if _running.get(ident) != token or ident not in _sent:
            return False
        error = _sent[ident]
    return _deliver(ident, token, error)


def stopping(ident, token):
    """Whether a stop was sent to the run ``token`` of thread ``ident``
    that has not ended."""
    with _lock:
        return _running.get(ident) == token and ident in _sent
