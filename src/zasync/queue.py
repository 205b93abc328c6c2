"""Queues of pending jobs, quotas, and the registry of dispatchers.

``root[zasync.interfaces.KEY]`` is a ``Queues`` mapping; the main queue is
stored under ``''``.  See ``docs/queue.rst`` and ``docs/quotas.rst``.
"""
import datetime
import importlib
import itertools
import logging

import BTrees.Length
import BTrees.OOBTree
import persistent.interfaces
import transaction.interfaces
import zope.component
import zope.event
import zope.interface
import zope.minmax

from zasync import instanceuuid
from zasync import interfaces
from zasync import utils
from zasync._dict import Dict
from zasync._pending import Levels
from zasync._pending import PendingJobs
from zasync._pending import check_priority
from zasync.interfaces import CALLBACKS
from zasync.interfaces import COMPLETED
from zasync.interfaces import NEW
from zasync.interfaces import PENDING
from zasync.job import Job
from zasync.job import RetryCommonForever
from zasync.job import broken_global
from zasync.job import as_job
from zasync.job import check_callback_settings
from zasync.job import check_failure_log_level
from zasync.job import check_retry_policy_factory
from zasync.job import check_timeout
from zasync.job import load_problem
from zasync.schedule import Schedules
from zasync.unloadable import UnloadableJobs
from zasync.unloadable import job_id
from zasync.utils import events_log

__all__ = ['check_unique_key', 'DispatcherAgents', 'Dispatchers',
           'getDefaultQueue', 'install_queues', 'Maximum', 'Queue', 'Queues',
           'Quota', 'Quotas']


# --------------------------------------------------------------------------
# Queues


def check_unique_key(value):
    """A unique key: a non-empty ``str``."""
    if not isinstance(value, str) or not value:
        raise ValueError('a unique key must be a non-empty string, not %r'
                         % (value,))
    return value


def _priority_of(job):
    """The priority of a job, 0 for one that cannot be loaded."""
    try:
        return job.priority
    except Exception:
        return 0


@zope.interface.implementer(interfaces.IQueues)
class Queues(Dict):
    """The queues of a database, by name (``''`` is the default queue)."""

    def _check(self, key, value):
        if not interfaces.IQueue.providedBy(value):
            raise ValueError('value must be IQueue')


# --------------------------------------------------------------------------
# The queue


@zope.interface.implementer(interfaces.IQueue)
class Queue(utils.Base):
    """Pending jobs in claim order.

    Jobs put back (interrupted or retried "now") come first, in the order
    they were put back; then the others by the second at which they become
    due (``begin_after``, or the put time), and in put order within a
    second.  Jobs due later are held until then.
    """

    name = None

    def __init__(self):
        self._pending = PendingJobs()
        self.quotas = Quotas()
        self.quotas.parent = self
        self.dispatchers = Dispatchers()
        self.dispatchers.parent = self
        self.cancellations = BTrees.Length.Length()
        self._levels = BTrees.OOBTree.OOBTree()
        self._level_puts = BTrees.Length.Length()
        self._unique = BTrees.OOBTree.OOBTree()

    def __repr__(self):
        return '<%s %r (%d pending)>' % (
            utils.custom_repr(self), self.name, len(self))

    # -- adding ------------------------------------------------------------

    def put(self, item, begin_after=None, begin_by=None,
            failure_log_level=None, retry_policy_factory=None, timeout=None,
            priority=None, unique_key=None):
        """Queue ``item`` (a job, or a callable made into one); return the
        job.  ``priority``: an ``int`` from -100 to 100, higher first
        among the due jobs (default: the job's, 0).  ``unique_key``: a
        non-empty ``str``; while a job put here with that key has not
        completed, ``put`` returns that job and queues nothing."""
        if unique_key is not None:
            check_unique_key(unique_key)
            existing = self._unique_job(unique_key)
            if existing is not None:
                return existing
        job = as_job(item)
        # Check everything before changing anything: a refused job is left
        # as it was.
        if job.status != NEW:
            raise ValueError('cannot add already-assigned job')
        if priority is not None:
            check_priority(priority)
        for name in job.quota_names:
            if name not in self.quotas:
                raise ValueError('unknown quota name', name)
        begin_after = utils.to_utc(begin_after, 'begin_after')
        utils.check_begin_by(begin_by)
        now = utils.now()
        utils.check_deadline(
            begin_after or job.begin_after or now,
            begin_by if begin_by is not None else job.begin_by)
        check_failure_log_level(
            failure_log_level if failure_log_level is not None
            else job.failure_log_level)
        check_retry_policy_factory(
            retry_policy_factory if retry_policy_factory is not None
            else job.retry_policy_factory, job)
        for callback in job.callbacks:
            check_callback_settings(callback)
        timeout = check_timeout(timeout)
        if failure_log_level is not None:
            job.failure_log_level = failure_log_level
        if retry_policy_factory is not None:
            job.retry_policy_factory = retry_policy_factory
        if begin_after is not None:
            job.begin_after = begin_after
        elif job.begin_after is None:
            job.begin_after = now
        if begin_by is not None:
            job.begin_by = begin_by
        if timeout is not None:
            job.timeout = timeout
        if priority is not None:
            job.priority = priority
        if unique_key is not None:
            job.unique_key = unique_key
            self._unique_index()[unique_key] = job
        if job.assignerUUID is None:
            # zc.async had this test inverted: fresh jobs went unstamped.
            # Rescheduled jobs keep the UUID of whoever put them first.
            job.assignerUUID = instanceuuid.current()
        self._adopt(job)
        self._level(job.priority).add(job, max(job.begin_after, now))
        job.parent = self
        return job

    def putBack(self, item):
        """Put a rescheduled or interrupted job first in line."""
        job = interfaces.IJob(item, None)
        if job is None:
            raise TypeError('can only put back jobs, not %r' % (item,))
        if job.status != NEW:
            raise ValueError('can only put back NEW jobs, not %s ones'
                             % job.status)
        if job.begin_after is None:
            raise ValueError('a job put back must have a begin_after')
        if job._p_jar is None:
            raise ValueError('a job put back must already be stored')
        self._level(job.priority).add(job, put_back=True)
        job.parent = self
        return job

    # -- priorities ----------------------------------------------------------

    _levels = None   # OOBTree: priority -> PendingJobs, for priorities != 0
    #: counts the puts into ``_levels`` (a ``BTrees.Length``: puts do not
    #: conflict on it): the dispatchers watch it, as they watch the store of
    #: priority 0, so that a put into a level made after their last poll
    #: wakes them too
    _level_puts = None

    def _stores(self):
        return Levels(self._pending, self._levels)

    def pendingStores(self):
        """The ``PendingJobs`` of every priority (what a dispatcher watches
        for new jobs)."""
        return [store for priority, store in self._stores().stores()]

    def _level(self, priority):
        """The ``PendingJobs`` of ``priority`` (made on first use)."""
        if not priority:
            return self._pending
        if self._levels is None:
            self._levels = BTrees.OOBTree.OOBTree()
        if self._level_puts is None:
            self._level_puts = BTrees.Length.Length()
        store = self._levels.get(priority)
        if store is None:
            store = self._levels[priority] = PendingJobs()
            if self._p_jar is not None:
                self._p_jar.add(store)
        self._level_puts.change(1)
        return store

    # -- unique keys ---------------------------------------------------------

    _unique = None   # OOBTree: unique key -> the job put with it

    def _unique_index(self):
        if self._unique is None:
            self._unique = BTrees.OOBTree.OOBTree()
        return self._unique

    def _unique_job(self, key):
        """The job put with ``key`` that has not completed, or None."""
        if self._unique is None:
            return None
        job = self._unique.get(key)
        if job is None:
            return None
        try:
            if job.status != COMPLETED:
                return job
        except Exception:   # a job that cannot be loaded keeps its key
            return job
        return None

    def uniqueJob(self, key):
        """The job put here with the unique ``key`` that has not completed
        yet, or None."""
        check_unique_key(key)
        return self._unique_job(key)

    def releaseUniqueKey(self, job):
        """``job`` completed: its unique key is free again."""
        key = getattr(job, 'unique_key', None)
        if key is not None and self._unique is not None and (
                self._unique.get(key) is job):
            del self._unique[key]

    # -- pausing -------------------------------------------------------------

    _paused = False

    @property
    def paused(self):
        """Whether the queue is paused: it accepts jobs, but no dispatcher
        claims any (the running ones finish)."""
        return self._paused

    def pause(self):
        """Stop every dispatcher claiming jobs from this queue (once the
        caller commits); jobs can still be put."""
        if not self._paused:
            self._paused = True

    def resume(self):
        """Let the dispatchers claim jobs again (they wake up as soon as the
        caller commits)."""
        if self._paused:
            self._paused = False

    def _adopt(self, job):
        if job._p_jar is None and self._p_jar is not None:
            # the job's oid then comes from (and it lives in) our database
            self._p_jar.add(job)

    # -- removing ----------------------------------------------------------

    def _discard(self, location, job, now=None):
        location.store.discard(location, now)
        job.parent = None

    def pull(self, index=0):
        """Remove and return the pending job at ``index`` (cancel it)."""
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(index)
        for i, (location, job) in enumerate(self._stores().entries()):
            if i == index:
                self._discard(location, job, utils.now())
                job.assignerUUID = None
                return job
        raise IndexError(index)   # pragma: no cover - length out of sync

    def remove(self, item):
        """Remove a pending job (``LookupError`` if it is not here)."""
        location = self._stores().find(item, getattr(item, 'priority', None))
        if location is None:
            raise LookupError('item not in queue', item)
        self._discard(location, item, utils.now())
        item.assignerUUID = None

    def claim(self, filter=None, default=None, skip=0, exclude=None):
        """Remove and return the first due job that ``filter`` accepts.

        A job past its ``begin_by`` deadline is not returned itself: a new
        job failing it with ``TimeoutError`` is (quotas do not apply).

        ``skip`` passes over that many entries first, without looking at
        them (not even loading them): dispatchers of several processes
        claiming from a deep queue at once take from different places
        instead of conflicting over the same first jobs (see
        ``Dispatcher.claimJobs``).  With fewer entries than that, nothing
        is claimed.

        ``exclude(job)``, asked of each entry before it is loaded (only its
        ``_p_oid`` may be read), passes over the entries it is true for:
        the jobs its dispatcher runs in claims that have not committed
        (``Dispatcher.in_flight``).
        """
        if self._paused or len(self) <= skip:
            return default
        now = utils.now()
        cleaned = set()
        for location, job in self._due_entries(now, skip):
            if exclude is not None and exclude(job):
                continue
            problem = load_problem(job)
            if problem is not None:
                self._hold(location, job, problem, now)
                continue
            begin_after = job.begin_after
            if begin_after is not None and begin_after > now:
                continue    # due later within this second
            if utils.deadline_passed(begin_after, job.begin_by, now):
                candidate = self._timeout_wrapper(job, now)
                quotas = ()
            else:
                candidate = job
                quotas = self._quotas_of(job, cleaned)
                if quotas is None:
                    continue
            if filter is not None and not filter(candidate):
                continue
            self._discard(location, job, now)
            for quota in quotas:
                quota.add(job)
            if candidate is not job:
                self._adopt(candidate)
                job.parent = candidate
                candidate.parent = None
            return candidate
        return default

    def upcoming(self, count, skip=0):
        """The first ``count`` due entries after ``skip`` -- what a claim
        looks at first -- in claim order, without loading them (their jobs
        may be ghosts: for prefetching).  A paused queue has none."""
        if self._paused or count <= 0:
            return []
        return [job for location, job in itertools.islice(
            self._due_entries(utils.now(), skip), count)]

    def _due_entries(self, now, skip=0):
        """``(location, job)`` in claim order up to ``now``'s second, the
        first ``skip`` passed over."""
        entries = self._stores().entries(until=now)
        return itertools.islice(entries, skip, None) if skip else entries

    # -- jobs that cannot be loaded ---------------------------------------

    #: how long after a job could first not be loaded it is failed with a
    #: ``JobLoadError`` if no dispatcher could load it meanwhile
    load_grace = datetime.timedelta(minutes=5)
    #: the first pause before a held job is tried again; it doubles up to
    #: ``load_retry_max``
    load_retry = datetime.timedelta(seconds=2)
    load_retry_max = datetime.timedelta(minutes=1)

    _unloadable = None

    @property
    def unloadable(self):
        """The jobs held because they cannot be loaded
        (``zasync.unloadable.UnloadableJobs``)."""
        if self._unloadable is None:
            self._unloadable = UnloadableJobs()
            self._unloadable.__parent__ = self
            self._adopt(self._unloadable)
        return self._unloadable

    def unloadableJobs(self):
        """The records of the held jobs (``UnloadableJob``), oldest job
        first; reading them writes nothing."""
        if self._unloadable is None:
            return []
        return list(self._unloadable)

    def _hold(self, location, job, problem, now):
        """Take a job that cannot be loaded out of the pending jobs
        (without writing the job: its placeholders cannot be stored)."""
        location.store.discard(location, now)
        record = self.unloadable.hold(job, problem.reason, now,
                                      self.load_retry)
        events_log.error(
            'held in queue %r: %s (try %d; it is retried, and failed if no '
            'dispatcher can load it by %s)', self.name, problem,
            record.tries, (record.since + self.load_grace).isoformat())
        return record

    def _retry_pause(self, tries):
        pause = self.load_retry * (2 ** min(max(tries - 1, 0), 16))
        return min(pause, self.load_retry_max)

    def retryUnloadable(self, now=None):
        """Try again to load the held jobs that are due (dispatchers call
        this when they poll).  A job that loads now goes back to the front
        of the queue; one that no dispatcher could load within
        ``load_grace`` is failed with a ``JobLoadError`` (a job whose own
        class is gone cannot be: it stays held for an operator).  Return
        ``(requeued, failed)`` counts."""
        if self._unloadable is None or not len(self._unloadable):
            return 0, 0
        now = now or utils.now()
        due = self._unloadable.due(now)
        if not due:
            return 0, 0
        importlib.invalidate_caches()   # (a module deployed meanwhile)
        requeued = failed = 0
        for record in due:
            job = record.job
            if not job._p_changed:
                job._p_invalidate()   # load it anew: its modules may be back
            problem = load_problem(job)
            if problem is None:
                self._unloadable.pop(job_id(job))
                self._level(_priority_of(job)).add(job, put_back=True)
                events_log.info('job %d can be loaded now: back in queue %r',
                                job_id(job), self.name)
                requeued += 1
                continue
            record.tries += 1
            record.last_try = now
            record.reason = problem.reason
            record.next_try = now + self._retry_pause(record.tries)
            if now - record.since < self.load_grace:
                continue
            if broken_global(job) is not None:
                record.given_up = True
                events_log.critical(
                    'job %d cannot be loaded and cannot be failed (its class '
                    'is gone); it stays held in queue %r for an operator '
                    '(zasync remove / requeue): %s', job_id(job), self.name,
                    problem)
                continue
            job.markUnloadable()
            self._unloadable.pop(job_id(job))
            self._fail_later(job, problem, now)
            events_log.error('failing job %d: no dispatcher could load it '
                             'since %s: %s', job_id(job),
                             record.since.isoformat(), problem)
            failed += 1
        return requeued, failed

    def _fail_later(self, job, error, now):
        """Queue, first in line, a job that fails ``job`` with ``error``
        (its callbacks then run in a worker, as for any failure)."""
        wrapper = Job(job.fail, error)
        wrapper.begin_after = now
        wrapper.assignerUUID = instanceuuid.current()
        self._adopt(wrapper)
        job.parent = wrapper
        wrapper.parent = self
        self._pending.add(wrapper, put_back=True)
        return wrapper

    # -- operators' actions -----------------------------------------------

    def _held_or_pending(self, job):
        """``('held', record)`` or ``('pending', location)``;
        ``LookupError`` if ``job`` is neither here."""
        if self._unloadable is not None:
            record = self._unloadable.get(job_id(job))
            if record is not None:
                return 'held', record
        location = self._stores().find(job, _priority_of(job))
        if location is None:
            raise LookupError('job %d is neither pending nor held in queue '
                              '%r' % (job_id(job), self.name))
        return 'pending', location

    def failJob(self, job, reason=None, error=None):
        """An operator fails a pending or held job: it leaves the pending
        jobs, and a job queued first in line fails it with
        ``AbortedError(reason)`` -- or ``error``, an exception, such as
        the ``CancelledError`` of ``Job.cancel`` -- (its callbacks then
        run in a worker).  Return that job."""
        where, found = self._held_or_pending(job)
        now = utils.now()
        if where == 'held':
            if broken_global(job) is not None:
                raise ValueError('job %d cannot be failed: its class cannot '
                                 'be imported (remove it, or deploy the code '
                                 'and requeue it)' % job_id(job))
            job.markUnloadable()
            self._unloadable.pop(job_id(job))
        else:
            found.store.discard(found, now)
        if error is None:
            error = interfaces.AbortedError('failed by an operator: %s'
                                            % (reason,))
        return self._fail_later(job, error, now)

    #: a counter (``BTrees.Length.Length``) that ``Job.cancel`` of a
    #: running job changes: the dispatchers watch it, and then look for
    #: the cancelled jobs among those they run (queues made before zasync
    #: 0.1 get it with the first cancellation, or from ``install_queues``)
    cancellations = None

    def noteCancelRequest(self):
        """A job of this queue that runs was cancelled: tell the
        dispatchers (once the caller commits)."""
        if self.cancellations is None:
            self.cancellations = BTrees.Length.Length()
        self.cancellations.change(1)

    def removeJob(self, job):
        """An operator removes a pending or held job from the queue
        (nothing runs it, and its callbacks do not run)."""
        where, found = self._held_or_pending(job)
        if where == 'held':
            self._unloadable.pop(job_id(job))
            if broken_global(job) is None:
                job.markUnloadable()
                job.parent = None
        else:
            self.remove(job)

    def requeueJob(self, job):
        """An operator puts a held job back, first in line (once its code
        is deployed: if a dispatcher still cannot load it, it is held
        again)."""
        where, found = self._held_or_pending(job)
        if where != 'held':
            raise ValueError('job %d is pending, not held: nothing to '
                             'requeue' % job_id(job))
        self._unloadable.pop(job_id(job))
        self._level(_priority_of(job)).add(job, put_back=True)

    def _quotas_of(self, job, cleaned):
        """The quotas ``job`` counts against, or None if one is full."""
        quotas = []
        for name in job.quota_names:
            quota = self.quotas.get(name)
            if quota is None:
                continue    # removed quota: ignore
            if name not in cleaned:
                quota.clean()
                cleaned.add(name)
            if quota.filled and job not in quota:
                return None
            quotas.append(quota)
        return quotas

    def _timeout_wrapper(self, job, now):
        wrapper = Job(job.fail, interfaces.TimeoutError())
        wrapper.begin_after = now
        wrapper.assignerUUID = instanceuuid.current()
        return wrapper

    # -- periodic jobs (zasync.schedule) -----------------------------------

    _schedules = None

    @property
    def schedules(self):
        """This queue's periodic jobs (``zasync.schedule.Schedules``:
        ``add(name, Schedule(...))``, ``remove(name)``); made on first use
        (queues made before zasync 0.1 have none)."""
        if self._schedules is None:
            self._schedules = Schedules()
            self._schedules.parent = self
            self._adopt(self._schedules)
        return self._schedules

    def findSchedules(self):
        """``schedules`` if this queue has them, else None (reading writes
        nothing)."""
        return self._schedules

    # -- reading -----------------------------------------------------------

    def __len__(self):
        if self._levels is None:
            return len(self._pending)
        return len(self._stores())

    def __bool__(self):
        return len(self) > 0

    def __iter__(self):
        """The pending jobs in claim order: those put back first, then by
        priority (highest first), due time and put order."""
        return iter(self._stores())

    def countDueLater(self, now=None):
        """How many pending jobs become due after ``now`` (default: now),
        from the index by due second rather than by loading the jobs;
        a job that cannot be read counts as due."""
        now = now or utils.now()

        def due(job):
            if broken_global(job) is not None:
                return None
            try:
                return job.begin_after
            except Exception:
                return None
        return self._stores().count_due_after(now, due)

    def __getitem__(self, index):
        """The job at ``index`` in claim order (linear)."""
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(index)
        for i, job in enumerate(self._stores()):
            if i == index:
                return job
        raise IndexError(index)   # pragma: no cover


# --------------------------------------------------------------------------
# Quotas


@zope.interface.implementer(interfaces.IQuota)
class Quota(utils.Base):
    """At most ``size`` running jobs naming this quota, across dispatchers.

    The jobs are a plain tuple on purpose: no conflict resolution, so two
    processes cannot both take the last slot.
    """

    _size = None

    def __init__(self, name, size):
        self.name = name
        self.size = size
        self._data = ()

    @property
    def size(self):
        """How many jobs may run at once: a whole number, at least 1."""
        return self._size

    @size.setter
    def size(self, value):
        if (not isinstance(value, int) or isinstance(value, bool)
                or value < 1):
            raise ValueError('quota %r: the size must be a whole number of '
                             'at least 1, not %r' % (self.name, value))
        self._size = value

    def clean(self):
        """Drop jobs that do not count any more: done ones and ones
        rescheduled for later."""
        now = utils.now()
        keep = tuple(
            job for job in self._data
            if job.status not in (CALLBACKS, COMPLETED)
            and not (job.status == PENDING and job.begin_after is not None
                     and job.begin_after > now))
        if len(keep) != len(self._data):
            self._data = keep

    @property
    def filled(self):
        return len(self._data) >= self.size

    def add(self, job):
        if job in self:
            return
        if not interfaces.IJob.providedBy(job):
            raise ValueError('must be IJob')
        if self.name not in job.quota_names:
            raise ValueError('quota name not in job.quota_names')
        if self.filled:
            raise ValueError('Quota is filled')
        self._data += (job,)

    def __contains__(self, job):
        return any(candidate is job for candidate in self._data)

    def __len__(self):
        return len(self._data)

    def __bool__(self):
        return bool(self._data)

    def __iter__(self):
        return iter(self._data)

    def __getitem__(self, index):
        return self._data[index]

    def get(self, index, default=None):
        """The job at ``index``, or ``default`` (zc.async's delegated to a
        tuple, which has no ``get``)."""
        try:
            return self._data[index]
        except IndexError:
            return default

    def __repr__(self):
        return '<%s %r size=%d, %d job(s)>' % (
            type(self).__name__, self.name, self.size, len(self))


@zope.interface.implementer(interfaces.IQuotas)
class Quotas(Dict):
    """A queue's quotas: use ``create`` and ``remove`` to change them."""

    def create(self, name, size=1):
        Dict.__setitem__(self, name, Quota(name, size))
        return self[name]

    def remove(self, name):
        Dict.pop(self, name)

    def _refuse(self, *args, **kwargs):
        raise TypeError('use quotas.create(name, size) and '
                        'quotas.remove(name)')

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _refuse


# --------------------------------------------------------------------------
# Dispatcher registry


class Maximum(zope.minmax.Maximum):
    """``zope.minmax.Maximum`` whose conflict resolution copes with None
    (Python 3 cannot compare None with a datetime)."""

    def _p_resolveConflict(self, old, committed, new):
        if committed is None:
            return new
        if new is None:
            return committed
        return max(committed, new)


@zope.interface.implementer(interfaces.IDispatcherAgents)
class DispatcherAgents(Dict):
    """One dispatcher's agents in a queue, and whether it is alive."""

    activated = None
    ping_interval = datetime.timedelta(seconds=30)
    ping_death_interval = datetime.timedelta(seconds=60)

    def __init__(self, uuid):
        super().__init__()
        self.UUID = uuid
        self.last_ping = Maximum()

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.UUID)

    def _check(self, key, value):
        if not interfaces.IAgent.providedBy(value):
            raise ValueError('value must be IAgent')
        if len(value):
            raise ValueError('cannot add an agent that holds jobs')
        old = self.get(key)
        if old is not None and old is not value and len(old):
            raise ValueError('cannot replace an agent that holds jobs')

    def pop(self, key, *default):
        agent = self.get(key)
        if agent is not None and len(agent):
            raise ValueError('cannot remove an agent that holds jobs')
        return Dict.pop(self, key, *default)

    @property
    def dead(self):
        """True when neither activated nor pinged within the death
        interval."""
        last_ping = self.last_ping.value
        activated = self.activated
        if activated is not None and (last_ping is None
                                      or activated > last_ping):
            reference = activated
        elif last_ping is not None:
            reference = last_ping
        else:
            return False
        return reference + self.ping_death_interval < utils.now()

    def activate(self):
        if self.activated:
            raise ValueError('Already activated')
        self._clean()
        self.activated = utils.now()
        zope.event.notify(interfaces.DispatcherActivated(self))

    def reactivate(self):
        self.activated = utils.now()
        zope.event.notify(interfaces.DispatcherReactivated(self))

    def deactivate(self):
        if not self.activated:
            raise ValueError('Not activated')
        self.activated = None
        self._clean()
        zope.event.notify(interfaces.DispatcherDeactivated(self))

    def _clean(self):
        """Take every job out of the agents: jobs that did not start go back
        to the queue, interrupted ones get a wrapper job that deals with the
        interruption, completed ones go to ``completed``."""
        queue = self.parent
        for agent in self.values():
            while len(agent):
                job = agent[0]
                if job.parent is not agent:
                    # Inconsistent: the job was moved elsewhere (it is
                    # PENDING in a queue or ASSIGNED to another agent).
                    # zc.async meant to log this but used a missing
                    # zc.async.log.  Drop it from this agent, leave it
                    # where it is now.
                    events_log.warning(
                        'unexpected status %s for %r in agent %r of %s '
                        'while cleaning; leaving it with its parent %r',
                        job.status, job, agent.name, self.UUID, job.parent)
                    agent.remove(job)
                    continue
                job = agent.pull()
                status = job.status
                if status == NEW:
                    queue.putBack(job)
                elif status == interfaces.ACTIVE:
                    queue.put(Job(job.handleInterrupt),
                              retry_policy_factory=RetryCommonForever,
                              failure_log_level=logging.CRITICAL)
                elif status == CALLBACKS:
                    wrapper = queue.put(
                        Job(job.resumeCallbacks),
                        retry_policy_factory=RetryCommonForever,
                        failure_log_level=logging.CRITICAL)
                    job.parent = wrapper
                elif status == COMPLETED:
                    events_log.warning(
                        'completed job %r found in agent %r of %s while '
                        'cleaning; moving it to completed', job, agent.name,
                        self.UUID)
                    agent.completed.add(job)


@zope.interface.implementer(interfaces.IDispatchers)
class Dispatchers(Dict):
    """UUID -> ``DispatcherAgents`` for one queue."""

    def _refuse(self, *args, **kwargs):
        raise TypeError('use register(uuid) and unregister(uuid)')

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _refuse

    def _adopt(self, key, value):
        value.name = key
        value.parent = self.parent   # the queue, so job.queue works

    def register(self, uuid):
        if uuid in self:
            raise ValueError('UUID already registered')
        agents = DispatcherAgents(uuid)
        Dict.__setitem__(self, uuid, agents)
        zope.event.notify(interfaces.DispatcherRegistered(agents))
        return agents

    def unregister(self, uuid):
        agents = self[uuid]
        if agents.activated:
            raise ValueError('UUID is activated.')
        Dict.pop(self, uuid)
        # zc.async built this event with two arguments: a TypeError
        zope.event.notify(interfaces.DispatcherUnregistered(agents))
        return agents

    def ping(self, uuid):
        agents = self[uuid]
        if not agents.activated:
            events_log.critical(
                'dispatcher %s pinged while deactivated (taken for dead: '
                'its ping_death_interval too short, commits too slow, or '
                'clocks out of step): activating it again', uuid)
            agents.reactivate()
        now = utils.now()
        last_ping = agents.last_ping.value
        if last_ping is None or last_ping + agents.ping_interval <= now:
            agents.last_ping.value = now
        sibling = self._next_activated(uuid)
        if sibling is not None and sibling.dead:
            events_log.error('deactivating dead dispatcher %s (found by %s)',
                             sibling.UUID, uuid)
            sibling.deactivate()

    def _next_activated(self, uuid):
        keys = list(self.keys())
        position = keys.index(uuid)
        for key in keys[position + 1:] + keys[:position]:
            candidate = self[key]
            if candidate.activated:
                return candidate
        return None


# --------------------------------------------------------------------------
# Installation


def _new_queue(conn, name):
    return Queue()


def install_queues(db, names=('',), factory=None, db_name=None, attempts=10):
    """Make sure ``db`` has the ``Queues`` (``root[KEY]``) and the queues
    ``names``; return the names of the queues it added.

    ``factory(conn, name)`` makes a new queue (default: a ``Queue``).  With
    ``db_name`` the ``Queues`` live in the root of that member of a
    multi-database (same key) and the main root refers to them.  Every
    addition is announced with an ``ObjectAdded`` event and committed in a
    private connection; a conflict (several processes installing at once)
    is retried up to ``attempts`` times.  Idempotent.
    """
    if isinstance(names, str):
        raise TypeError('queue names must be a sequence of names')
    factory = factory or _new_queue
    added = []
    for attempt in range(attempts):
        try:
            with utils.private_connection(db) as conn:
                tm = conn.transaction_manager
                queues, created = utils.install_in_root(
                    conn, interfaces.KEY, Queues, db_name)
                if created:
                    zope.event.notify(interfaces.ObjectAdded(
                        queues, conn.root(), interfaces.KEY))
                    tm.commit()
                    events_log.info('queues collection added')
                for name in names:
                    if name not in queues:
                        queue = factory(conn, name)
                        queues[name] = queue
                        zope.event.notify(
                            interfaces.ObjectAdded(queue, queues, name))
                        tm.commit()
                        added.append(name)
                        events_log.info('queue %r added', name)
                return added
        except transaction.interfaces.TransientError:
            if attempt == attempts - 1:
                raise
    return added   # pragma: no cover - attempts < 1


# --------------------------------------------------------------------------
# Adapter


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(interfaces.IQueue)
def getDefaultQueue(obj):
    """The default queue (``''``) of the database ``obj`` is stored in."""
    connection = utils.connection(obj)
    if connection is None:
        raise LookupError('object is not stored in a database', obj)
    return connection.root()[interfaces.KEY]['']
