"""An operator's actions on jobs that have no home in the queue: retrying a
failed job and cancelling one.

``retry_job(job)`` puts a fresh copy of a failed job's call in the job's
queue and returns the new job (its ``retried_from`` is the failed job):
the same callable, arguments and keyword arguments, quota names,
priority, unique key, timeout, failure log level and retry policy
factory, and -- for jobs made in a Zope interaction (``zasync.z3.Job``) --
the same site and principals.  The failed job stays as it is (its result
is its record); if it was kept in a ``JobManager``'s container, so is the
new job.  ``cancel_job(job, reason)`` cancels a job with ``Job.cancel``.

Both change the database in the caller's transaction and commit nothing:
the caller commits (``zasync web``'s actions and the commands do).
"""
from zasync import interfaces
from zasync.failure import Failure

__all__ = ['can_cancel', 'can_retry', 'cancel_job', 'retry_job']


def can_retry(job):
    """Whether ``job`` completed with a failure (and so can be retried)."""
    try:
        return (job.status == interfaces.COMPLETED
                and isinstance(job.result, Failure))
    except Exception:
        return False


def _copy(job):
    """A new job of ``job``'s class (or a plain ``Job`` if that class
    cannot be made that way) making the same call."""
    from zasync.job import Job
    args = list(job.args)
    kwargs = dict(job.kwargs)
    try:
        new = type(job)(job.callable, *args, **kwargs)
    except TypeError:
        new = Job(job.callable, *args, **kwargs)
    for name in ('quota_names', 'timeout', 'failure_log_level',
                 'retry_policy_factory', 'begin_by', 'priority'):
        value = getattr(job, name, None)
        if value is not None and value != ():
            setattr(new, name, value)
    # A job made in an interaction (zasync.z3.Job) runs with its site and
    # principals: so does its copy, whoever retries it.
    for name in ('site', 'participants'):
        if name in getattr(job, '__dict__', {}) or hasattr(
                type(job), name):
            try:
                setattr(new, name, getattr(job, name))
            except AttributeError:
                pass
    return new


def retry_job(job, queue=None):
    """Put a copy of the failed ``job``'s call in its queue (or ``queue``)
    and return the new job; ``ValueError`` if ``job`` did not fail or no
    queue is known.  Nothing is committed."""
    if not can_retry(job):
        raise ValueError('job %s has not failed: only failed jobs are '
                         'retried' % (_id(job),))
    if queue is None:
        queue = job.queue
    if queue is None:
        raise ValueError('job %s is in no queue: give one' % (_id(job),))
    copy = _copy(job)
    new = queue.put(copy, unique_key=getattr(job, 'unique_key', None))
    if new is copy:   # (else a job holding the same unique key)
        new.retried_from = job
        _index_like(job, new)
    return new


def _index_like(job, new):
    """Keep ``new`` in the job container if ``job`` is kept there."""
    conn = getattr(job, '_p_jar', None)
    if conn is None:
        return
    container = conn.root().get(interfaces.JOBS_KEY)
    if container is None or not hasattr(container, 'get'):
        return
    key = str(_id(job))
    if container.get(key) is not job:
        return
    conn.add(new)
    container[str(_id(new))] = new


def _id(job):
    import ZODB.utils
    oid = getattr(job, '_p_oid', None)
    return ZODB.utils.u64(oid) if oid is not None else '(unsaved)'


def can_cancel(job):
    """Whether ``job`` can be cancelled here: ``Job.cancel`` exists and
    the job has not completed (nor is running its callbacks)."""
    if not hasattr(job, 'cancel'):
        return False
    try:
        return job.status not in (interfaces.CALLBACKS,
                                  interfaces.COMPLETED)
    except Exception:
        return False


def cancel_job(job, reason=None):
    """Cancel ``job`` (``Job.cancel``); ``ValueError`` when it cannot be
    (the engine has no cancellation, or the job is done)."""
    cancel = getattr(job, 'cancel', None)
    if cancel is None:
        raise ValueError('this zasync cannot cancel jobs (no Job.cancel)')
    try:
        return cancel(reason=reason)
    except interfaces.BadStatusError as e:
        raise ValueError('job %s cannot be cancelled: %s' % (_id(job), e))
