"""Retention: how long completed jobs are kept, and removing older ones.

Completed jobs are kept in two places:

* each agent's ``completed`` collection, which drops jobs older than its
  ``period`` whenever its dispatcher archives it (``Agent(
  completed_period=...)``, ``zasync worker --keep-completed 2d``; a week
  unless told otherwise);
* the job container of a ``JobManager`` (``root[JOBS_KEY]``), which keeps
  every job put through it, by id, until it is removed.

``purge`` (``zasync purge --completed-before 2d``) removes the completed
jobs older than a time from both, in bounded transactions (``batch_size``
jobs each, a conflict with a running worker retried), failed ones only
when asked.  Removing a job only drops the references to it: the space
comes back when the operator packs the database (``zodbpack``, ZEO's
``pack``, RelStorage's ``zodbpack``) -- zasync never packs.
"""
import transaction
import transaction.interfaces

from zasync import interfaces
from zasync import utils
from zasync.failure import Failure
from zasync.unloadable import job_id

__all__ = ['DEFAULT_BATCH_SIZE', 'PurgeResult', 'completed_at', 'purge']

#: jobs removed (or looked at) per transaction
DEFAULT_BATCH_SIZE = 500


class PurgeResult(dict):
    """What ``purge`` did: ``removed`` (jobs removed from the agents'
    completed collections), ``container`` (further job-container entries
    removed: jobs the collections had dropped already), ``kept_failed``
    (old failed jobs left, without ``failed_too``), ``transactions``
    (commits) and ``conflicts`` (retried batches)."""

    def __init__(self):
        super().__init__(removed=0, container=0, kept_failed=0,
                         transactions=0, conflicts=0)

    @property
    def total(self):
        return self['removed'] + self['container']


def completed_at(job):
    """When ``job`` completed (an aware UTC datetime), or None if it has
    not, or that cannot be told."""
    try:
        if job.status != interfaces.COMPLETED:
            return None
        return job.initial_callbacks_end or job.active_end
    except Exception:
        return None


def _failed(job):
    try:
        return isinstance(job.result, Failure)
    except Exception:
        return False


def _agent_paths(root):
    queues = root.get(interfaces.KEY)
    paths = []
    if queues is None:
        return paths
    for queue_name, queue in queues.items():
        for uuid, da in queue.dispatchers.items():
            for agent_name in list(da.keys()):
                paths.append((queue_name, uuid, agent_name))
    return paths


def _agent(root, path):
    queue_name, uuid, agent_name = path
    try:
        return root[interfaces.KEY][queue_name].dispatchers[uuid][agent_name]
    except KeyError:
        return None   # gone meanwhile


def _container(root):
    return root.get(interfaces.JOBS_KEY)


def _forget_in_container(container, job):
    if container is None or job._p_oid is None:
        return
    key = str(job_id(job))
    if container.get(key) is job:
        del container[key]


def _run_batch(tm, batch, result, attempts):
    """``batch()`` and commit, retrying conflicts ``attempts`` times;
    return what ``batch`` returned."""
    for attempt in range(attempts):
        tm.begin()
        try:
            value = batch()
            tm.commit()
        except transaction.interfaces.TransientError:
            tm.abort()
            result['conflicts'] += 1
            if attempt == attempts - 1:
                raise
            utils.sleep(0.05 * (attempt + 1))
            continue
        except BaseException:
            tm.abort()
            raise
        result['transactions'] += 1
        return value
    return None   # pragma: no cover - attempts < 1


def purge(db, before, failed_too=False, batch_size=DEFAULT_BATCH_SIZE,
          progress=None, attempts=5):
    """Remove the jobs completed before ``before`` (an aware datetime) --
    only successful ones unless ``failed_too`` -- from every agent's
    completed collection and from the job container.  ``progress(done,
    total, text)`` is told how it goes.  Return a ``PurgeResult``."""
    before = utils.to_utc(before, 'before')
    if batch_size < 1:
        raise ValueError('batch_size must be at least 1')
    result = PurgeResult()
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        root = conn.root()
        paths = _agent_paths(root)
        total = 0
        for path in paths:
            agent = _agent(root, path)
            total += len(agent.completed) if agent is not None else 0
        container = _container(root)
        total += len(container) if container is not None else 0
        tm.abort()
        done = [0]
        kept = set()   # (old failed jobs counted once, wherever found)

        def tell(text):
            if progress is not None:
                progress(min(done[0], total), max(total, 1), text)

        for path in paths:
            _purge_agent(conn, tm, path, before, failed_too, batch_size,
                         result, attempts, done, tell, kept)
        _purge_container(conn, tm, before, failed_too, batch_size, result,
                         attempts, done, tell, kept)
        result['kept_failed'] = len(kept)
        if progress is not None:
            progress(total, max(total, 1), None)
    finally:
        tm.abort()
        conn.close()
    return result


def _purge_agent(conn, tm, path, before, failed_too, batch_size, result,
                 attempts, done, tell, kept_oids):
    cursor = [None]

    def archive():
        agent = _agent(conn.root(), path)
        if agent is not None and agent.completed.waiting:
            agent.completed.archive()

    _run_batch(tm, archive, result, attempts)

    def batch():
        root = conn.root()
        agent = _agent(root, path)
        if agent is None:
            return None
        container = _container(root)
        found = agent.completed.older(before, after_key=cursor[0],
                                      limit=batch_size)
        removed, kept = 0, []
        last = cursor[0]
        for key, job in found:
            last = key
            if not failed_too and _failed(job):
                kept.append(job._p_oid)
                continue
            agent.completed.discard(key)
            _forget_in_container(container, job)
            removed += 1
        return len(found), removed, kept, last

    _run_batches(conn, tm, batch, cursor, 'removed', batch_size, result,
                 attempts, done, tell, kept_oids)


def _purge_container(conn, tm, before, failed_too, batch_size, result,
                     attempts, done, tell, kept_oids):
    cursor = [None]

    def batch():
        container = _container(conn.root())
        if container is None:
            return None
        looked = removed = 0
        kept = []
        last = cursor[0]
        doomed = []
        for key, job in container.items(last):
            if key == cursor[0]:
                continue
            if looked >= batch_size:
                break
            looked += 1
            last = key
            when = completed_at(job)
            if when is None or when >= before:
                continue
            if not failed_too and _failed(job):
                kept.append(job._p_oid)
                continue
            doomed.append(key)
        for key in doomed:
            del container[key]
            removed += 1
        return looked, removed, kept, last

    _run_batches(conn, tm, batch, cursor, 'container', batch_size, result,
                 attempts, done, tell, kept_oids)


def _run_batches(conn, tm, batch, cursor, counter, batch_size, result,
                 attempts, done, tell, kept_oids):
    """Run ``batch()`` (it returns ``(looked, removed, kept, last)``, or
    None: nothing left) in transactions of its own until it looks at
    fewer than ``batch_size`` jobs; count what it removed in
    ``result[counter]``."""
    while True:
        outcome = _run_batch(tm, batch, result, attempts)
        if outcome is None:
            return
        looked, removed, kept, last = outcome
        cursor[0] = last
        result[counter] += removed
        kept_oids.update(kept)
        done[0] += looked
        tell('%d completed job(s) removed' % (result.total,))
        conn.cacheGC()
        if looked < batch_size:
            return
