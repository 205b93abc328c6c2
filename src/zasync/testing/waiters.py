"""Waiters: wait for a condition with a timeout, never blindly.

``wait(check, seconds, message)`` is the one loop; ``get_poll``,
``wait_for_result``, ``wait_for_start``, ``wait_for_annotation``,
``wait_for_deactivation`` and ``wait_for_death`` are built on it.  They
re-synchronise the object's connection between checks, wait on conditions
rather than sleeping blindly, and raise ``AssertionError`` with a clear
message when their time is up.  While they wait, they also run the calls
that worker threads handed to a started test ``Reactor`` (without moving
its clock), just as a real reactor would have done meanwhile.
"""
import time

from zasync import interfaces
from zasync import utils
from zasync.testing.reactor import Reactor
from zasync.testing.reactor import started_reactors

__all__ = ['get_poll', 'wait', 'wait_for_annotation', 'wait_for_deactivation',
           'wait_for_death', 'wait_for_job_info', 'wait_for_result',
           'wait_for_start']


def wait(check, seconds, message, conditions=()):
    """Call ``check()`` until it returns something other than None; return
    that.  Raise ``AssertionError(message)`` after ``seconds`` (``message``
    may be a callable making it then).

    Between checks, run calls handed to started test reactors, and wait
    (a short while, real time) for a test reactor call or a notification on
    one of ``conditions``.
    """
    def pause(at_most):
        ran = 0
        for reactor in started_reactors():
            ran += reactor.run_due()
        if ran:
            return
        if conditions:
            with conditions[0]:
                conditions[0].wait(at_most)
            return
        reactors = started_reactors()
        if reactors:
            reactors[0].wait_for_calls(at_most)
        else:
            time.sleep(at_most)

    result = utils.wait_for(check, seconds, pause)
    if result is None:
        if callable(message):
            message = message()
        raise AssertionError('%s (waited %s seconds)' % (message, seconds))
    return result


def _sync(obj):
    """Begin a new transaction in ``obj``'s connection (sees new commits)."""
    jar = getattr(obj, '_p_jar', None)
    if jar is not None:
        jar.transaction_manager.begin()


class _Found:
    """Wraps values a check returns that may be None."""

    def __init__(self, value):
        self.value = value


def get_poll(dispatcher, count=None, seconds=6):
    """Return the dispatcher's newest poll once it has made more than
    ``count`` polls (default: the ones made so far).

    With a test reactor, time flies one poll interval between checks.
    """
    if count is None:
        count = len(dispatcher.polls)
    reactor = dispatcher.reactor
    testing_reactor = isinstance(reactor, Reactor) and reactor.running

    def check():
        if len(dispatcher.polls) > count:
            return dispatcher.polls.first()
        if testing_reactor:
            reactor.time_flies(dispatcher.poll_interval)
            if len(dispatcher.polls) > count:
                return dispatcher.polls.first()
        return None

    cond = getattr(dispatcher, 'poll_condition', None)
    return wait(check, seconds, 'no poll! (dispatcher %s made %d polls)' % (
        dispatcher.UUID, len(dispatcher.polls)),
        (cond,) if cond is not None else ())


def wait_for_result(job, seconds=6):
    """Wait until ``job`` is COMPLETED and return its result."""
    def check():
        _sync(job)
        if job.status == interfaces.COMPLETED:
            return _Found(job.result)
        return None
    return wait(check, seconds, 'job never completed: %r (status %s)'
                % (job, _status(job))).value


def wait_for_start(job, seconds=6):
    """Wait until ``job`` is ACTIVE or later."""
    def check():
        _sync(job)
        if job.status in (interfaces.ACTIVE, interfaces.CALLBACKS,
                          interfaces.COMPLETED):
            return True
        return None
    wait(check, seconds, 'job never started: %r (status %s)'
         % (job, _status(job)))


def wait_for_annotation(job, name, seconds=6):
    """Wait until ``job.annotations`` has ``name``; return the value."""
    def check():
        _sync(job)
        if name in job.annotations:
            return _Found(job.annotations[name])
        return None
    return wait(check, seconds, 'annotation %r never appeared on %r'
                % (name, job)).value


def wait_for_job_info(dispatcher, job, seconds=6):
    """Wait until ``dispatcher`` has finished with ``job`` (its worker
    thread recorded the outcome -- after the job's own commit and log);
    return the job's information (``getJobInfo``)."""
    def check():
        try:
            info = dispatcher.getJobInfo(job._p_oid)
        except KeyError:
            return None
        return info if info['completed'] is not None else None
    return wait(check, seconds, 'dispatcher %s never finished with %r'
                % (dispatcher.UUID, job))


def wait_for_deactivation(dispatcher, seconds=6):
    """Wait until the dispatcher is completely deactivated (``activated``
    is False)."""
    def check():
        return True if dispatcher.activated is False else None
    wait(check, seconds, 'dispatcher %s never deactivated (activated=%r)'
         % (dispatcher.UUID, dispatcher.activated))


def wait_for_death(da, seconds=6):
    """Wait until the dispatcher record ``da`` (a queue's
    ``DispatcherAgents``) is dead."""
    def check():
        _sync(da)
        return True if da.dead else None
    wait(check, seconds, 'dispatcher record %s never died' % (
        getattr(da, 'UUID', da),))


def _status(job):
    try:
        return job.status
    except Exception as e:  # pragma: no cover - diagnostics only
        return '<%s>' % e
