"""Jobs that cannot be loaded, held out of a queue's pending jobs.

A dispatcher that claims a job whose class, callable or arguments cannot
be imported in its process (``zasync.job.load_problem``) does not run it
and does not let it block the jobs behind it: the job moves from the
queue's pending jobs to ``queue.unloadable``, an ``UnloadableJobs``
collection, with an ``UnloadableJob`` record saying why, since when and
how often.  ``zasync.queue.Queue`` decides what happens next (retries
with backoff, then a ``JobLoadError`` failure; see ``docs/poison.rst``);
this module only keeps the records.
"""
import datetime

import BTrees.Length
import BTrees.LOBTree
import persistent
import ZODB.utils

__all__ = ['UnloadableJob', 'UnloadableJobs', 'job_id']


def job_id(job):
    """A stored job's id: its oid as an integer."""
    return ZODB.utils.u64(job._p_oid)


class UnloadableJob(persistent.Persistent):
    """A held job (``job``) and why it is held (``reason``, the text of a
    ``JobLoadError``): since when (``since``), how often a dispatcher
    tried to load it (``tries``), when one tries next (``next_try``), and
    whether no dispatcher can do anything more for it (``given_up``: its
    own class is gone, so it cannot be failed; only an operator can
    remove or requeue it)."""

    given_up = False

    def __init__(self, job, reason, now, retry):
        self.job = job
        self.reason = reason
        self.since = now
        self.last_try = now
        self.tries = 1
        self.next_try = now + retry

    def __repr__(self):
        return '<UnloadableJob %d since %s, %d tries: %s>' % (
            job_id(self.job), self.since.isoformat(), self.tries,
            self.reason)


class UnloadableJobs(persistent.Persistent):
    """The held jobs of a queue, by job id (oldest id first)."""

    __parent__ = None

    def __init__(self):
        self._data = BTrees.LOBTree.LOBTree()
        self._length = BTrees.Length.Length()

    def hold(self, job, reason, now, retry=datetime.timedelta(seconds=2)):
        """Hold ``job`` (again: one more try); return its record."""
        key = job_id(job)
        record = self._data.get(key)
        if record is None:
            record = UnloadableJob(job, reason, now, retry)
            self._data[key] = record
            self._length.change(1)
        else:
            record.tries += 1
            record.last_try = now
            record.reason = reason
            record.next_try = now + retry
        return record

    def get(self, key, default=None):
        return self._data.get(key, default)

    def pop(self, key):
        """Remove and return the record of job ``key`` (``KeyError``)."""
        record = self._data.pop(key)
        self._length.change(-1)
        return record

    def __contains__(self, key):
        return key in self._data

    def __iter__(self):
        return iter(list(self._data.values()))

    def __len__(self):
        return self._length()

    def due(self, now):
        """The records whose next try has come."""
        return [record for record in self._data.values()
                if not record.given_up and record.next_try <= now]
