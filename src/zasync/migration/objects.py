"""Step 2 of a migration: zasync's structures rebuilt from zc.async's.

After step 1 every record names zasync's classes, but the containers
zc.async took from zc.queue, zc.dict and zope.bforest are still the
placeholders of ``zasync.migration.legacy``.  Here, object by object (a
transaction every ``BATCH`` objects, the cache emptied in between):

- ``root['zc.async']`` becomes ``root[zasync.interfaces.KEY]``;
- a queue's pending jobs (put back first, then zc.async's order of due
  jobs and jobs held until later) go into zasync's pending store, with
  their ``begin_after``, ``begin_by`` and ``assignerUUID`` unchanged;
- an agent keeps the jobs it holds (a dead dispatcher's ACTIVE job stays
  there for a zasync worker to find and rescue) and its completed jobs,
  oldest first, go into zasync's completed collection;
- a dispatcher's last ping becomes zasync's conflict-safe maximum;
- a job's or callback proxy's callbacks become a ``PersistentList``.

Every object keeps its oid; what cannot be rebuilt is reported.
"""
import persistent.list

from zasync import interfaces
from zasync.agent import Agent
from zasync.migration import legacy
from zasync.queue import DispatcherAgents
from zasync.queue import Maximum
from zasync.queue import Queue

__all__ = ['BATCH', 'commit', 'OLD_KEY', 'Rebuilder']

BATCH = 500
_KEEP = 'zasync.migration: kept'
OLD_KEY = 'zc.async'
_LEGACY = (legacy.BucketQueue, legacy.CompositeQueue, legacy.Periodic,
           legacy.Forest)


def _state(obj):
    obj._p_activate()
    return obj.__dict__


def _oid(obj):
    oid = getattr(obj, '_p_oid', None)
    return int.from_bytes(oid, 'big') if oid else None


class Rebuilder:
    """Rebuilds the objects of one connection (of a multi-database:
    one per member); ``report`` collects what happened."""

    def __init__(self, report):
        self.report = report

    # -- the root ----------------------------------------------------------

    def move_root(self, conn):
        root = conn.root()
        if OLD_KEY in root:
            if interfaces.KEY in root:
                self.report.problem(0, 'root', 'both %r and %r are in the '
                                    'root: %r left as it is'
                                    % (OLD_KEY, interfaces.KEY, OLD_KEY))
                return False
            root[interfaces.KEY] = root[OLD_KEY]
            del root[OLD_KEY]
            self.report.note('root[%r] -> root[%r]'
                             % (OLD_KEY, interfaces.KEY))
            return True
        return False

    # -- object by object -------------------------------------------------

    def rebuild(self, obj):
        """Rebuild ``obj`` if it still holds zc.async's structures."""
        if isinstance(obj, _LEGACY):
            return False
        if isinstance(obj, Queue):
            return self.queue(obj)
        if isinstance(obj, Agent):
            return self.agent(obj)
        if isinstance(obj, DispatcherAgents):
            return self.dispatcher(obj)
        if (interfaces.IJob.providedBy(obj)
                or interfaces.ICallbackProxy.providedBy(obj)):
            return self.callbacks(obj)
        return False

    def callbacks(self, obj):
        state = _state(obj)
        old = state.get('callbacks', state.get('_callbacks'))
        if isinstance(old, (legacy.BucketQueue, legacy.CompositeQueue)):
            obj.callbacks = persistent.list.PersistentList(old.items())
            return True
        return False

    def dispatcher(self, agents):
        state = _state(agents)
        ping = state.get('last_ping')
        if ping is not None and not isinstance(ping, Maximum):
            agents.last_ping = Maximum(getattr(ping, 'value', None))
            return True
        return False

    def agent(self, agent):
        state = _state(agent)
        held = state.get('_data')
        completed = state.get('completed')
        if not isinstance(held, _LEGACY) and not isinstance(
                completed, _LEGACY):
            return False
        jobs = held.items() if isinstance(held, _LEGACY) else []
        done = completed.items() if isinstance(completed, _LEGACY) else []
        chooser, filter = state.get('_chooser'), state.get('_filter')
        if chooser is not None and filter is not None:
            filter = None
            self.report.problem(_oid(agent), 'zasync.agent.Agent',
                                'had both a chooser and a filter: the '
                                'filter is dropped')
        size = state.get('size', 3)
        Agent.__init__(agent, chooser=chooser, filter=filter, size=size)
        for job in jobs:
            # The jobs it holds stay its own (ASSIGNED, or ACTIVE in a
            # dead dispatcher: a zasync worker finds it and rescues them).
            agent._append(job)
        for key, job in done:
            agent.completed.add(job)
        agent.completed.archive()
        return True

    def queue(self, queue):
        state = _state(queue)
        regular = state.get('_queue')
        if not isinstance(regular, _LEGACY):
            return False
        put_back = state.get('_putback_queue')
        held = state.get('_held')
        quotas, dispatchers = queue.quotas, queue.dispatchers
        for name in ('_queue', '_held', '_putback_queue', '_length'):
            state.pop(name, None)
        Queue.__init__(queue)
        queue.quotas, queue.dispatchers = quotas, dispatchers
        quotas.parent = dispatchers.parent = queue
        if isinstance(put_back, _LEGACY):
            for job in put_back.items():
                self._put(queue, job, back=True)
        due = list(regular.items())
        later = list(held.values()) if held is not None else []
        for job in _merged(due, later):
            self._put(queue, job)
        return True

    def _put(self, queue, job, back=False):
        uuid = job.assignerUUID
        job.parent = None
        # (a placeholder, so that put() does not stamp this process's
        # instance UUID -- nor create a UUID file for it)
        job.assignerUUID = _KEEP
        try:
            if back:
                queue.putBack(job)
            else:
                queue.put(job)
        except Exception as e:
            self.report.problem(
                _oid(job), '%s.%s' % (type(job).__module__,
                                      type(job).__name__),
                'could not be put in queue %r again (%s: %s); it is out '
                'of the queue' % (queue.name, type(e).__name__, e))
            job.assignerUUID = uuid
            return
        job.assignerUUID = uuid


def _begin_after(job):
    return job.begin_after


def _merged(due, later):
    """zc.async's claim order: the queue's jobs and the jobs held until
    later, merged by ``begin_after`` (held ones first on a tie)."""
    result = []
    i = j = 0
    while i < len(due) and j < len(later):
        if _begin_after(later[j]) <= _begin_after(due[i]):
            result.append(later[j])
            j += 1
        else:
            result.append(due[i])
            i += 1
    result.extend(due[i:])
    result.extend(later[j:])
    return result


def commit(tm, conn):
    """Commit, then empty the caches (bounded memory)."""
    tm.commit()
    for member in conn.connections.values():
        member.cacheMinimize()
