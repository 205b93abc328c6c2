"""``serial()`` and ``parallel()``: run jobs one after the other, or all at
once, then a postprocess job receiving them.  Re-exported by ``zasync.job``.

The returned job must be put in a queue: its callable (a scheduler below)
queues the components from within the running job.  Every function here is
module-level, so the jobs referring to them can be stored.
"""
from zasync import local as zlocal
from zasync.interfaces import CALLBACKS
from zasync.interfaces import COMPLETED
from zasync.interfaces import NEW


def _as_job(obj):
    from zasync.job import as_job
    return as_job(obj)


def _new_job(*args, **kwargs):
    from zasync.job import Job
    return Job(*args, **kwargs)


def _jobs_tuple(*jobs):
    """The default postprocess: the component jobs themselves."""
    return jobs


def _prepare(jobs, kwargs, scheduler):
    postprocess = kwargs.pop('postprocess', _jobs_tuple)
    if kwargs:
        raise TypeError('only accepts one keyword argument, '
                        '``postprocess``; got %s' % ', '.join(sorted(kwargs)))
    jobs = [_as_job(job) for job in jobs]
    return _new_job(scheduler, *jobs, postprocess=_as_job(postprocess))


def serial(*jobs, **kwargs):
    """A job running ``jobs`` one after the other (whatever their outcome),
    then ``postprocess(*jobs)``; its result is the postprocess's."""
    return _prepare(jobs, kwargs, _schedule_serial)


def parallel(*jobs, **kwargs):
    """A job running ``jobs`` at the same time, then ``postprocess(*jobs)``
    once all are done; its result is the postprocess's."""
    return _prepare(jobs, kwargs, _schedule_parallel)


def _queue_postprocess(main_job, queue):
    postprocess = main_job.kwargs['postprocess']
    if postprocess.status == NEW:
        postprocess.args.extend(main_job.args)
        queue.put(postprocess)


# -- serial ------------------------------------------------------------------

def _schedule_serial(*jobs, **kwargs):
    main_job = zlocal.getJob()
    _queue_next(main_job, 0)
    return kwargs['postprocess']


def _queue_next(main_job, index, ignored_result=None):
    """Queue the first component from ``index`` on that has not run, with a
    callback that queues the next one; after the last, queue the
    postprocess.

    Also how a scheduler run again (after an interrupt) resumes: finished
    components are skipped, but one that is still pending or running is
    waited for -- its callback goes on -- rather than overtaken (zc.async
    queued the next one beside it).
    """
    queue = main_job.queue
    jobs = main_job.args
    while index < len(jobs) and jobs[index].status in (CALLBACKS, COMPLETED):
        index += 1
    if index == len(jobs):   # with no components at all, straight on
        _queue_postprocess(main_job, queue)
        return
    job = jobs[index]
    if job.status == NEW:
        queue.put(job)
    elif _continues(job, main_job):
        return
    job.addCallback(_new_job(_queue_next, main_job, index + 1))


def _continues(job, main_job):
    """Whether ``job`` has the callback that continues ``main_job``."""
    for callback in job.callbacks:
        if (getattr(callback, 'callable', None) is _queue_next
                and callback.args[0] is main_job):
            return True
    return False


# -- parallel ----------------------------------------------------------------

def _schedule_parallel(*jobs, **kwargs):
    main_job = zlocal.getJob()
    queue = main_job.queue
    for job in jobs:
        if job.status == NEW:
            queue.put(job)
            job.addCallback(_new_job(_check_parallel, main_job))
    _check_parallel(main_job)
    return kwargs['postprocess']


def _check_parallel(main_job, ignored_result=None):
    """Queue the postprocess once every component is done."""
    if all(job.status in (CALLBACKS, COMPLETED) for job in main_job.args):
        _queue_postprocess(main_job, main_job.queue)

