"""What a running job can learn about where it runs (thread-local).

``getJob()`` is set while a job (or callback) runs, in any thread;
the dispatcher-related values are set in a dispatcher's worker threads.
"""
import threading


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
