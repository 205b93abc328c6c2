"""The dispatcher: claims jobs for its agents and runs them in threads.

One ``Dispatcher`` per process (per instance UUID) serves every queue of a
database.  Every ``poll_interval`` seconds it polls: it registers and
activates itself in each queue (or takes over from a dead predecessor with
the same UUID), pings, and claims jobs for each of its agents, which worker
threads (one ``AgentThreadPool`` per agent) then perform.

Beyond zc.async, the dispatcher does not wait for the next poll to find new
work: it wakes up as soon as a transaction that changed one of its queues
commits (``zasync.wakeup``), a worker thread that finishes a job claims the
next ones itself, and each claim takes as many jobs as the agent has room
for, in one transaction.  Polls remain for housekeeping: pings, detection
of dead dispatchers, jobs scheduled for later, and the poll records that
tell what the dispatcher did.
"""
import collections
import datetime
import threading

import persistent
import transaction
import ZODB.utils

from zasync import instanceuuid
from zasync import interfaces
from zasync import schedule
from zasync import utils
from zasync import wakeup
from zasync.failure import Failure
from zasync.pool import AgentThreadPool

__all__ = ['clear', 'Dispatcher', 'get', 'getId', 'JobInfos', 'PollInfo',
           'Polls', 'pop', 'registered', 'release_reactor', 'RUNNING',
           'STARTING', 'STOPPED', 'STUCK']

# --------------------------------------------------------------------------
# The registry of dispatchers in this process, by UUID

_dispatchers = {}


def get(uuid=None, default=None):
    """The dispatcher for ``uuid`` (default: this instance's), or
    ``default``."""
    if uuid is None:
        uuid = instanceuuid.current()
    return _dispatchers.get(uuid, default)


def pop(uuid=None):
    """Remove and return the dispatcher for ``uuid`` (KeyError if none)."""
    if uuid is None:
        uuid = instanceuuid.current()
    return _dispatchers.pop(uuid)


def clear():
    """Forget every registered dispatcher."""
    _dispatchers.clear()


def registered():
    """The dispatchers registered in this process."""
    return list(_dispatchers.values())


def _quietly(func, message, tm, commit=True):
    """``utils.try_five_times`` for the dispatcher's own commits, which must
    not wake it (or its worker threads) up again."""
    wakeup.quiet.active = True
    try:
        return utils.try_five_times(func, message, tm, commit)
    finally:
        wakeup.quiet.active = False


#: ``(integer oid, database name)`` of a persistent object
getId = utils.address


def release_reactor(reactor):
    """Close the descriptors a stopped Twisted reactor keeps (its waker);
    nothing for other reactors."""
    waker = getattr(reactor, 'waker', None)
    if waker is None:
        return
    try:
        reactor.removeReader(waker)
    except Exception:
        pass
    try:
        waker.connectionLost(None)
    except Exception:
        utils.events_log.debug('closing the reactor waker failed',
                               exc_info=True)
    reactor.waker = None


# --------------------------------------------------------------------------
# Poll records

class PollInfo(dict):
    """What one poll found and did: ``{queue name: None | {agent name:
    {'size', 'len', 'error', 'new jobs', 'active jobs'}}}``.

    ``key`` orders polls (newer polls have smaller keys);
    ``utc_timestamp`` is the aware UTC time of the poll.
    """

    key = None

    @property
    def utc_timestamp(self):
        if self.key is None:
            return None
        return utils.long_to_dt(self.key)


def _key_of(value, what):
    if isinstance(value, datetime.datetime):
        return utils.dt_to_long(utils.to_utc(value, what))
    if isinstance(value, int):
        return value
    raise TypeError('%s must be a datetime or a poll key, not %r'
                    % (what, value))


class Polls:
    """The most recent polls, newest first (at most ``size``)."""

    def __init__(self, size=400):
        self.size = size
        self._polls = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, poll):
        """Add ``poll`` as the newest, giving it its ``key`` (returns
        nothing, as zc.async's did)."""
        with self._lock:
            key = utils.dt_to_long(utils.now()) + 15
            used = {p.key for p in self._polls}
            while key in used:
                key -= 1
            poll.key = key
            self._polls.appendleft(poll)

    def first(self):
        """The newest poll, or None."""
        with self._lock:
            return self._polls[0] if self._polls else None

    def last(self):
        """The oldest poll, or None."""
        with self._lock:
            return self._polls[-1] if self._polls else None

    def clear(self):
        with self._lock:
            self._polls.clear()

    def __len__(self):
        return len(self._polls)

    def __bool__(self):
        return bool(self._polls)

    def __iter__(self):
        with self._lock:
            polls = list(self._polls)
        return iter(polls)


class JobInfos(collections.OrderedDict):
    """The information on the most recently started jobs (at most
    ``size``; the oldest insertions go first)."""

    def __init__(self, size=200):
        super().__init__()
        self.size = size
        self._lock = threading.Lock()

    def __setitem__(self, key, value):
        with self._lock:
            super().__setitem__(key, value)
            while len(self) > self.size:
                self.popitem(last=False)


# --------------------------------------------------------------------------
# The dispatcher

STARTING = 'STARTING'
RUNNING = 'RUNNING'
STUCK = 'STUCK'
STOPPED = 'STOPPED'


class Dispatcher:
    """Claims jobs from the queues of ``db`` and performs them."""

    #: the agents of a dispatcher that has not polled for this many poll
    #: intervals (at least ``stuck_grace`` seconds) is STUCK
    stuck_grace = 1.0

    def __init__(self, db, reactor=None, poll_interval=5, uuid=None,
                 jobs_size=200, polls_size=400):
        if uuid is None:
            uuid = instanceuuid.current()
        if uuid in _dispatchers:
            raise ValueError('dispatcher for this UUID is already registered')
        _dispatchers[uuid] = self
        self.db = db
        self._reactor = reactor
        self.poll_interval = poll_interval
        self.UUID = uuid
        self.polls = Polls(polls_size)
        self.jobs = JobInfos(jobs_size)
        self.activated = False
        self.conn = None
        self.thread = None   # set by installers running a reactor thread
        self.signal_handlers = None   # a utils.SignalHandlers, if any
        self.queues = {}     # queue name -> {agent name: AgentThreadPool}
        self.dead_pools = []
        self.poll_condition = threading.Condition()
        self.watcher = wakeup.InvalidationWatcher(db, self._invalidated)
        self._threaded = False
        self._next_poll = None
        self._shutdown_trigger = None
        self._activated_queues = set()     # oids of queues we activated
        self._new_jobs = {}                # (queue, agent) -> [ids]
        self._new_jobs_lock = threading.Lock()
        self._wake_pending = False
        self._poll_soon_pending = False
        self._record_oids = frozenset()    # our DispatcherAgents records
        self._cancel_oids = frozenset()    # queues and their cancellations
        #: (oid, database name) of jobs our agents hold whose cancellation
        #: was seen before they ran (a group's older view would miss it)
        self.cancelled_claims = set()
        #: (oid, database name) of the jobs worker threads run in the
        #: transaction of their claim, which has not committed: every claim
        #: of ours passes over them (see ``AgentThreadPool``)
        self.in_flight = set()
        #: callable (see ``pool._callable_key``) -> how many of its last
        #: runs here were short, in a row (the most recent last)
        self.short_runs = collections.OrderedDict()
        self._cancel_check_pending = False
        self._pool_size_added = 0
        self.slot_timer = schedule.SlotTimer(self)   # periodic jobs

    def __repr__(self):
        return '<zasync.dispatcher.Dispatcher %s>' % (self.UUID,)

    @property
    def reactor(self):
        if self._reactor is None:
            import twisted.internet.reactor
            self._reactor = twisted.internet.reactor
        return self._reactor

    # -- pool-size bookkeeping ---------------------------------------------

    def _change_pool_size(self, delta):
        if delta:
            self.db.setPoolSize(self.db.getPoolSize() + delta)
            self._pool_size_added += delta

    # -- activation --------------------------------------------------------

    def activate(self, threaded=False):
        """Start polling (and performing jobs) once the reactor runs."""
        if self.activated:
            raise ValueError('already activated')
        utils.events_log.info('attempting to activate dispatcher %s',
                              self.UUID)
        self.activated = utils.now()
        self.cancelled_claims.clear()
        self.polls.clear()
        self.jobs.clear()
        self._activated_queues.clear()
        with self._new_jobs_lock:
            self._new_jobs.clear()
        self._threaded = threaded
        self._change_pool_size(1)   # the poll connection
        if not threaded:
            self.conn = self.db.open(
                transaction_manager=transaction.TransactionManager())
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            'before', 'shutdown', self._before_reactor_shutdown)
        self.watcher.start()
        self.reactor.callWhenRunning(self._poll_and_schedule)

    def _before_reactor_shutdown(self):
        self._shutdown_trigger = None   # firing now: nothing to remove
        if self.activated:
            self.deactivate()

    def deactivate(self):
        """Stop: deactivate this dispatcher in every queue (its jobs go
        back to the queues, running ones through an interrupt wrapper),
        stop the worker threads and give the connections back."""
        if not self.activated:
            raise ValueError('not activated')
        self.activated = None   # deactivation in progress
        try:
            self.watcher.stop()
            self._cancel_next_poll()
            self.slot_timer.cancel()
            # Always a fresh connection: the poll connection may be in use
            # or, in threaded mode, long closed (zc.async used a closed one).
            conn = self.db.open(
                transaction_manager=transaction.TransactionManager())
            tm = conn.transaction_manager
            try:
                tm.begin()
                queues = conn.root().get(interfaces.KEY)
                if queues is not None:
                    for queue in list(queues.values()):
                        da = queue.dispatchers.get(self.UUID)
                        if da is None or not da.activated:
                            continue
                        utils.try_five_times(
                            da.deactivate,
                            'deactivating dispatcher %s in queue %r'
                            % (self.UUID, queue.name), tm)
            finally:
                tm.abort()
                conn.close()
            if self.conn is not None:
                try:
                    self.conn.transaction_manager.abort()
                    self.conn.close()
                except Exception:  # pragma: no cover - poll in progress
                    utils.events_log.warning(
                        'could not close the poll connection', exc_info=True)
                self.conn = None
            for pools in self.queues.values():
                for pool in pools.values():
                    self._change_pool_size(pool.stop())
                    self.dead_pools.append(pool)
            self.queues = {}
            self._change_pool_size(-self._pool_size_added)
            if self._shutdown_trigger is not None:
                remove = getattr(self.reactor, 'removeSystemEventTrigger',
                                 None)
                if remove is not None:
                    try:
                        remove(self._shutdown_trigger)
                    except (ValueError, KeyError):
                        pass   # it is running right now
                self._shutdown_trigger = None
            utils.events_log.info('deactivated dispatcher %s', self.UUID)
        finally:
            self.activated = False

    def join(self, timeout=10):
        """Wait for the threads of stopped pools; return those alive."""
        alive = []
        for pool in self.dead_pools:
            alive.extend(pool.join(timeout))
        return alive

    def shutdown(self, timeout=10):
        """Stop this dispatcher for good; return a list of problems (empty
        when everything stopped).

        Stops the reactor running in ``self.thread`` (its shutdown
        deactivates the dispatcher: its jobs go back to the queues) and
        waits for that thread; deactivates the dispatcher if it still is
        activated; waits ``timeout`` seconds for its worker threads; puts
        back the signal handlers installed for it; closes the descriptors
        a stopped Twisted reactor keeps; and unregisters it.  A reactor
        running without ``self.thread`` must be stopped before.
        """
        problems = []
        reactor = self.reactor
        thread = self.thread
        if (thread is not None and thread.is_alive()
                and thread is not threading.current_thread()):
            try:
                reactor.callFromThread(reactor.stop)
            except Exception:   # stopped meanwhile
                utils.events_log.debug('stopping the reactor failed',
                                       exc_info=True)
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            problems.append('Dispatcher (%s, %s) failed to stop.'
                            % (thread.name, self.UUID))
        else:
            if self.activated:
                self.deactivate()
            for pool in self.dead_pools:
                for alive in pool.join(timeout):
                    job_id = pool.jobids.get(str(alive.ident))
                    info = self.jobs.get(job_id) if job_id else None
                    problems.append('Job in pool %r failed to stop: %s' % (
                        pool.name, info['call'] if info else alive.name))
            release_reactor(reactor)
        if self.signal_handlers is not None and self.signal_handlers.restore():
            self.signal_handlers = None
        if _dispatchers.get(self.UUID) is self:
            del _dispatchers[self.UUID]
        return problems

    # -- polling -----------------------------------------------------------

    def _poll_and_schedule(self):
        if not self.activated:
            return
        if self._threaded:
            self.reactor.callInThread(self._threaded_poll)
            return
        try:
            self.poll(self.conn)
        finally:
            if self.activated:
                self._next_poll = self.reactor.callLater(
                    self.poll_interval, self._poll_and_schedule)

    def directPoll(self):
        """Poll now, in the calling (reactor) thread, then every
        ``poll_interval`` (zc.async's name; the dispatcher calls it
        itself once activated)."""
        if not self.activated:
            return
        self._cancel_next_poll()
        if self._threaded:
            self._threaded_poll()
        else:
            self._poll_and_schedule()

    def threadedPoll(self):
        """Poll now in a thread of the reactor's pool, with a connection of
        its own, then every ``poll_interval`` (zc.async's name)."""
        if not self.activated:
            return
        self._cancel_next_poll()
        self.reactor.callInThread(self._threaded_poll)

    def _threaded_poll(self):
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            self.poll(conn)
        finally:
            conn.transaction_manager.abort()
            conn.close()
            if self.activated:
                self.reactor.callFromThread(self._schedule_threaded_poll)

    def _schedule_threaded_poll(self):
        if self.activated:
            self._next_poll = self.reactor.callLater(
                self.poll_interval, self._poll_and_schedule)

    def poll(self, conn):
        """One poll in ``conn``: activate, ping and claim in every queue.
        Records and returns the ``PollInfo``."""
        tm = conn.transaction_manager
        poll_info = PollInfo()
        try:
            tm.begin()
            queues = conn.root().get(interfaces.KEY)
            if queues is not None:
                watched = set()
                records = set()
                cancels = set()
                seen = set()
                for queue in list(queues.values()):
                    seen.add(queue.name)
                    self._poll_queue(conn, queue, poll_info, watched)
                    da = queue.dispatchers.get(self.UUID)
                    if da is not None and da._p_oid is not None:
                        records.update(_direct_oids(da))
                    cancels.update(_cancel_oids(queue))
                    # schedules added or removed: poll now
                    records.update(schedule.schedule_oids(queue))
                for name in list(self.queues):
                    if name not in seen:
                        self._retire_pools(name, None)
                self._record_oids = frozenset(records)
                self._cancel_oids = frozenset(cancels)
                self.watcher.watch(watched | records | cancels)
                self.stopCancelledJobs(conn)
        except Exception:
            tm.abort()
            utils.events_log.critical(
                'dispatcher %s: poll failed', self.UUID, exc_info=True)
        finally:
            tm.abort()
            self._record_poll(poll_info)
        return poll_info

    def _poll_queue(self, conn, queue, poll_info, watched):
        tm = conn.transaction_manager
        name = queue.name
        poll_info[name] = None
        if not self._activate_in(queue, tm):
            return
        # A failed ping is logged by _quietly; the claims go on (a ping is
        # housekeeping, and the next poll pings again).
        _quietly(
            lambda: queue.dispatchers.ping(self.UUID),
            'pinging dispatcher %s in queue %r' % (self.UUID, name), tm)
        _quietly(queue.retryUnloadable,
                 'retrying the jobs held in queue %r' % (name,), tm)
        self.slot_timer.poll(conn, queue)   # (the due periodic jobs)
        agents_info = poll_info[name] = {}
        pools = self.queues.setdefault(name, {})
        da = queue.dispatchers[self.UUID]
        agents = sorted(da.items())
        for agent_name, agent in agents:
            info = {'size': None, 'len': None, 'error': None,
                    'new jobs': [], 'active jobs': []}
            agents_info[agent_name] = info
            try:
                size = info['size'] = agent.size
                info['len'] = len(agent)
                info['active jobs'] = [getId(job) for job in agent]
            except Exception:
                info['error'] = Failure()
                tm.abort()
                continue
            pool = pools.get(agent_name)
            if pool is None:
                pool = pools[agent_name] = AgentThreadPool(
                    self, name, agent_name)
            if size > pool.size:
                # grow the DB pool first: the new threads open connections
                self._change_pool_size(size - pool.size)
                pool.setSize(size)
            elif size < pool.size:
                self._change_pool_size(pool.setSize(size))
            claimed = self.claimJobs(conn, name, agent_name, pool)
            if isinstance(claimed, Failure):
                info['error'] = claimed
            else:
                for item in claimed:
                    pool.put(item)
            self.archiveCompleted(conn, name, agent_name, minimum=1)
        self._retire_pools(name, {agent_name for agent_name, _ in agents})
        watched.update(_watched_oids(queue))

    def _retire_pools(self, queue_name, agent_names):
        """Stop the pools of agents (or a queue) that no longer exist.

        (zc.async compared the wrong containers here and never retired
        anything.)"""
        pools = self.queues.get(queue_name, {})
        for agent_name in list(pools):
            if agent_names is None or agent_name not in agent_names:
                pool = pools.pop(agent_name)
                self._change_pool_size(pool.stop())
                self.dead_pools.append(pool)
        if not pools or agent_names is None:
            self.queues.pop(queue_name, None)

    def _activate_in(self, queue, tm):
        """Register and activate this dispatcher in ``queue`` once per
        activation, taking over from a dead predecessor with our UUID."""
        oid = queue._p_oid
        if oid in self._activated_queues:
            return True

        def activate():
            if self.UUID not in queue.dispatchers:
                queue.dispatchers.register(self.UUID)
            da = queue.dispatchers[self.UUID]
            if da.activated:
                if da.dead:
                    da.deactivate()
                else:
                    utils.events_log.error(
                        'UUID %s already activated in queue %r (oid %d): '
                        'another process?  (To solve, stop the other '
                        'process; or wait for its record to die, which '
                        'happens %s after its last ping.)',
                        self.UUID, queue.name, ZODB.utils.u64(oid),
                        da.ping_death_interval)
                    return False
            da.activate()
            return True

        result = _quietly(
            activate, 'activating dispatcher %s in queue %r'
            % (self.UUID, queue.name), tm)
        if result is True:
            self._activated_queues.add(oid)
            return True
        return False

    def _record_poll(self, poll_info):
        with self._new_jobs_lock:
            new_jobs, self._new_jobs = self._new_jobs, {}
        for (queue_name, agent_name), ids in new_jobs.items():
            agents = poll_info.get(queue_name)
            if agents is not None and agent_name in agents:
                agents[agent_name]['new jobs'].extend(ids)
            else:
                # The agent is gone from this poll's view: keep the ids
                # for the next poll.
                with self._new_jobs_lock:
                    self._new_jobs.setdefault(
                        (queue_name, agent_name), []).extend(ids)
        previous = self.polls.first()
        self.polls.add(poll_info)
        for agents in poll_info.values():
            for info in (agents or {}).values():
                for job_id in info['new jobs']:
                    job_info = self.jobs.get(job_id)
                    if job_info is not None and job_info['poll id'] is None:
                        job_info['poll id'] = poll_info.key
        if previous is None or dict(previous) != dict(poll_info):
            utils.trace_log.debug('poll %s: %r', poll_info.key,
                                  dict(poll_info))
        with self.poll_condition:
            self.poll_condition.notify_all()

    # -- claiming ----------------------------------------------------------

    def claimJobs(self, conn, queue_name, agent_name, pool, wait=True,
                  run_first=False):
        """Claim, in one transaction of ``conn``, as many jobs as the agent
        has room for.  Return the work items, or a ``Failure``.

        One claim of an agent runs at a time (claims of one agent's threads
        would conflict).  Without ``wait``, a claim of another thread going
        on returns ``[]`` at once: that claim hands its jobs round, and
        claims once more when it is done (``pool.claim_lock``).

        ``run_first`` (a worker thread claiming, with group commits): when
        the claim took a single job that may join a group, and no other
        dispatcher is alive in the queue, the claim is not committed: the
        job is in ``in_flight``, and the calling thread runs it in the
        claim's transaction (see ``AgentThreadPool._perform_group``).
        """
        if not pool.claim_lock.acquire(wait):
            pool.claim_wanted = True
            return []
        try:
            items = self._claim_jobs(conn, queue_name, agent_name, pool,
                                     run_first)
        finally:
            pool.claim_lock.release()
        if pool.claim_wanted:
            pool.claim_wanted = False
            pool.requestClaim()
        return items

    def _claim_jobs(self, conn, queue_name, agent_name, pool,
                    run_first=False):
        tm = conn.transaction_manager
        claimed = []
        if not self.activated:
            return []
        self.watcher.await_last_commit()
        tm.begin()
        # What the commit that woke us changed (a put: the job, the
        # queue's shard and counters): one round trip for all of it (ZEO),
        # not one each as the claim reaches them.
        _prefetch_changed(conn, self.watcher.last_oids)

        attempts = []
        uncommitted = []

        def claim():
            attempts.append(1)
            del claimed[:]
            del uncommitted[:]
            queues = conn.root().get(interfaces.KEY)
            queue = queues[queue_name]
            agent = queue.dispatchers[self.UUID][agent_name]
            room = agent.size - len(agent)
            limit = agent.size
            if room > 0:
                # A deep queue: take more than the free threads, in this
                # one commit (prefetch), and at least a group's worth
                # (the claiming thread keeps them for its groups).
                want = max(room + self.prefetch, self.group_size)
                extra = min(want - room, len(queue) - room)
                if extra > 0:
                    room += extra
                    limit += extra
            # Several processes claiming from a deep queue: each
            # starts at its own place (a claim's worth apart), so
            # their claims do not conflict over the same first jobs.
            skip = room * _rank(queue.dispatchers, self.UUID)
            if room > 1:
                _prefetch_upcoming(queue, room, skip)
            # (an agent of ours passes over the jobs we run in claims not
            # committed yet; another kind of agent is not asked to)
            excludes = getattr(agent, 'excludes', False)
            more = {'exclude': self._in_flight_job} if excludes else {}
            while room > 0:
                job = agent.claimJob(limit=limit, skip=skip, **more)
                if job is None and skip:
                    skip = 0   # not that deep: from the head, then
                    job = agent.claimJob(limit=limit, **more)
                if job is None:
                    break
                # Started in the claim's transaction: one commit less
                # per job (a worker thread is waiting for it).
                job.start()
                claimed.append(job)
                room -= 1
            if (run_first and len(claimed) == 1 and excludes
                    and _alone(queue.dispatchers, self.UUID)
                    and pool.may_run_in_claim(claimed[0],
                                              getId(claimed[0]))):
                uncommitted.append(getId(claimed[0]))
            else:
                tm.commit()
            return agent

        result = _quietly(
            claim, 'claiming jobs for agent %r of queue %r'
            % (agent_name, queue_name), tm, commit=False)
        self.claim_conflicts += max(0, len(attempts) - 1)
        if isinstance(result, Failure):
            self._stash_claim_failure(conn, queue_name, agent_name,
                                      result)
            return result
        if uncommitted:
            # (run by the calling thread in this transaction: nothing to
            # prefetch, and the transaction goes on)
            self.in_flight.update(uncommitted)
        else:
            _prefetch_parts(claimed)
        items = []
        ids = []
        for job in claimed:
            job_id = getId(job)
            info = {'call': repr(job), 'agent': agent_name,
                    'queue': queue_name, 'poll id': None,
                    'quota names': tuple(job.quota_names),
                    'thread': None, 'started': None, 'completed': None,
                    'failed': False, 'result': None, 'reassigned': False,
                    'timed out': False, 'cancelled': False,
                    'abandoned': False}
            self.jobs[job_id] = info
            ids.append(job_id)
            items.append(job_id + (info,))
        if not uncommitted:
            tm.abort()
        if ids:
            with self._new_jobs_lock:
                self._new_jobs.setdefault(
                    (queue_name, agent_name), []).extend(ids)
        return items

    def _in_flight_job(self, job):
        """(``Queue.claim``'s ``exclude``) whether ``job``, an entry of a
        queue (a ghost, maybe), is run by one of our threads in a claim
        that has not committed."""
        in_flight = self.in_flight
        return bool(in_flight) and getId(job) in in_flight

    #: how many jobs a claim may take beyond an agent's free threads when
    #: its queue holds more than it could take: they wait, claimed and
    #: started, in the agent's work queue (a deactivation puts them back,
    #: and the death of the dispatcher has them rescued, as any job it
    #: claimed); fewer claim commits per job.  0: none.
    prefetch = 0

    #: group commits (``zasync.grouping``): a worker thread that claimed
    #: several jobs runs up to this many of them in one transaction, for at
    #: most ``group_age`` seconds (1: every job commits alone)
    group_size = 1
    group_age = 0.005
    groups_committed = 0   # groups of 2 jobs or more that committed
    grouped_jobs = 0       # the jobs they committed
    claim_conflicts = 0    # claims tried again after a transaction error
    run_in_claim = 0       # jobs that committed with their claim
    #: a job that comes alone runs in its claim's transaction once the
    #: last ``run_in_claim_after`` runs of its callable here each took
    #: less than ``short_run`` seconds (a longer run starts the count
    #: again; see docs/jobs_and_transactions.rst); ``short_runs_size``:
    #: how many callables are remembered
    run_in_claim_after = 3
    short_run = 0.005
    short_runs_size = 1000

    #: a worker thread archives its agent's completed jobs once this many
    #: wait in the collection's inbox (polls archive any number)
    archive_threshold = 50

    def archiveCompleted(self, conn, queue_name, agent_name, minimum=None):
        """Move the completed jobs of an agent from the inbox of its
        ``completed`` collection into the archive, in a transaction of
        ``conn``, when at least ``minimum`` (default: ``archive_threshold``)
        wait there.  Return how many were moved."""
        if minimum is None:
            minimum = self.archive_threshold
        tm = conn.transaction_manager
        tm.begin()

        def archive():
            queue = conn.root()[interfaces.KEY][queue_name]
            completed = queue.dispatchers[self.UUID][agent_name].completed
            if completed.waiting < minimum:
                return 0
            return completed.archive()

        try:
            moved = _quietly(
                archive, 'archiving completed jobs of agent %r of queue %r'
                % (agent_name, queue_name), tm)
        finally:
            tm.abort()
        return 0 if isinstance(moved, Failure) else moved

    def _stash_claim_failure(self, conn, queue_name, agent_name, failure):
        tm = conn.transaction_manager

        def stash():
            queue = conn.root()[interfaces.KEY][queue_name]
            queue.dispatchers[self.UUID][agent_name].failure = failure

        utils.try_five_times(
            stash, 'recording the claim failure of agent %r' % agent_name,
            tm)

    # -- waking up ---------------------------------------------------------

    def _invalidated(self, oids):
        """A commit changed a watched queue, or one of our records in a
        queue (called in the committing thread, which must not wait)."""
        if not self.activated:
            return
        if (oids is None or not self._cancel_oids.isdisjoint(oids)) and (
                not self._cancel_check_pending):
            self._cancel_check_pending = True
            self._call_from_thread(self._check_cancellations)
        records = self._record_oids
        if oids is None or not records.isdisjoint(oids):
            # Agents may have come or gone: poll now.
            if not self._poll_soon_pending:
                self._poll_soon_pending = True
                self._call_from_thread(self._poll_soon)
            return
        if self._wake_pending:
            return
        self._wake_pending = True
        self._call_from_thread(self._wake)

    def _check_cancellations(self):
        """(In the reactor) look for cancelled jobs in a thread."""
        self._cancel_check_pending = False
        if self.activated and any(
                pool.outstanding for pools in list(self.queues.values())
                for pool in list(pools.values())):
            self.reactor.callInThread(self._threaded_cancel_check)

    def _threaded_cancel_check(self):
        conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            self.watcher.await_last_commit()
            self.stopCancelledJobs(conn)
        except Exception:
            if self.activated:
                utils.events_log.error('looking for cancelled jobs failed',
                                       exc_info=True)
        finally:
            try:
                conn.transaction_manager.abort()
                conn.close()
            except Exception:   # (the database closed meanwhile)
                pass

    def running_jobs(self):
        """``(pool, Run)`` of every job a worker thread runs now."""
        return [(pool, run)
                for pools in list(self.queues.values())
                for pool in list(pools.values())
                for run in list(pool.runs.values())]

    def stopCancelledJobs(self, conn):
        """Stop the jobs our worker threads run whose cancellation was
        committed (read in a new transaction of ``conn``), and note the
        cancelled ones our agents hold that have not started
        (``cancelled_claims``: they will not run); return how many were
        stopped."""
        tm = conn.transaction_manager
        tm.begin()
        stopped = 0
        try:
            # (noted first: a run that starts after this sees the note,
            # one that started before is among the running)
            self._note_cancelled_claims(conn)
            running = self.running_jobs()
            for pool, run in running:
                if run.stopped is not None:
                    continue
                try:
                    jar = conn
                    if run.database_name != conn.db().database_name:
                        jar = conn.get_connection(run.database_name)
                    job = jar.get(ZODB.utils.p64(run.oid))
                    requested = job.cancel_requested
                except Exception:
                    utils.events_log.debug(
                        'could not read job %d', run.oid, exc_info=True)
                    continue
                if requested is not None and pool.stopJob(
                        run.ident, run.token, interfaces.CancelledError):
                    stopped += 1
        finally:
            tm.abort()
        return stopped

    def _note_cancelled_claims(self, conn):
        queues = conn.root().get(interfaces.KEY)
        if queues is None:
            return
        for queue_name, pools in list(self.queues.items()):
            queue = queues.get(queue_name)
            record = queue.dispatchers.get(self.UUID) if queue else None
            if record is None:
                continue
            for agent_name in list(pools):
                agent = record.get(agent_name)
                for job in (list(agent) if agent is not None else ()):
                    try:
                        if job.cancel_requested is not None:
                            self.cancelled_claims.add(getId(job))
                    except Exception:
                        continue

    def _call_from_thread(self, call):
        try:
            self.reactor.callFromThread(call)
        except Exception:  # pragma: no cover - reactor stopped
            utils.trace_log.debug('could not wake up', exc_info=True)

    def _poll_soon(self):
        self._poll_soon_pending = False
        if not self.activated or self._threaded:
            # (A threaded poll may be running: the next one comes soon.)
            self._wake()
            return
        self._cancel_next_poll()
        self._poll_and_schedule()

    def _cancel_next_poll(self):
        if self._next_poll is not None:
            try:
                if self._next_poll.active():
                    self._next_poll.cancel()
            except Exception:  # pragma: no cover - reactor specific
                pass
            self._next_poll = None

    def _wake(self):
        self._wake_pending = False
        if not self.activated:
            return
        for pools in list(self.queues.values()):
            for pool in list(pools.values()):
                pool.requestClaim()

    # -- introspection -----------------------------------------------------

    def getActiveJobIds(self, queue=None, agent=None):
        """Ids of the jobs worker threads are performing right now."""
        result = []
        for queue_name, pools in list(self.queues.items()):
            if queue is not None and queue_name != queue:
                continue
            for agent_name, pool in list(pools.items()):
                if agent is not None and agent_name != agent:
                    continue
                result.extend(i for i in list(pool.jobids.values())
                              if i is not None)
        return result

    def getJobInfo(self, oid, database_name=None):
        """The information on a job this dispatcher started."""
        if isinstance(oid, bytes):
            oid = ZODB.utils.u64(oid)
        if database_name is None:
            matches = [key for key in list(self.jobs) if key[0] == oid]
            if not matches:
                raise KeyError('job with oid %r not found' % (oid,))
            if len(matches) > 1:
                raise ValueError('ambiguous database name')
            key = matches[0]
        else:
            key = (oid, database_name)
        info = self.jobs[key]
        if info['completed'] is None and info['poll id'] is not None:
            poll = self.polls.first()
            agents = poll.get(info['queue']) if poll is not None else None
            agent_info = (agents or {}).get(info['agent'])
            if agent_info is None or (
                    key not in agent_info['active jobs']
                    and key not in agent_info['new jobs']):
                info = dict(info, reassigned=True)
        return info

    def getPollInfo(self, at=None, before=None):
        """The newest poll at or before ``at`` (a datetime or a poll key),
        or strictly before ``before``; the newest without arguments."""
        if at is not None and before is not None:
            raise ValueError('may only provide one of `at` and `before`')
        for poll in self.iterPolls(at=at, before=before):
            return poll
        raise ValueError('no poll found')

    def iterPolls(self, at=None, before=None, since=None, count=None):
        """Polls from newest to oldest, starting at ``at`` (inclusive) or
        ``before`` (exclusive), down to ``since`` (inclusive), at most
        ``count`` of them."""
        if at is not None and before is not None:
            raise ValueError('may only provide one of `at` and `before`')
        if at is not None:
            start = _key_of(at, 'at')
            if isinstance(at, datetime.datetime):
                start_ok = lambda key: key >= start  # noqa: E731
            else:
                start_ok = lambda key: key >= start  # noqa: E731
        elif before is not None:
            start = _key_of(before, 'before')
            if isinstance(before, datetime.datetime):
                start += 15   # every poll made at that instant is excluded
            start_ok = lambda key: key > start  # noqa: E731
        else:
            start_ok = lambda key: True  # noqa: E731
        if since is not None:
            stop = _key_of(since, 'since')
            if isinstance(since, datetime.datetime):
                stop += 15    # polls made at that instant are included
        else:
            stop = None
        if count is not None and count < 0:
            raise ValueError('count must be positive')
        yielded = 0
        for poll in self.polls:
            if count is not None and yielded >= count:
                return
            if not start_ok(poll.key):
                continue
            if stop is not None and poll.key > stop:
                return
            yield poll
            yielded += 1

    def getStatistics(self, at=None, before=None, since=None, queue=None,
                      agent=None):
        """Statistics on the jobs started in the polls of the range."""
        polls = list(self.iterPolls(at=at, before=before, since=since))
        started = successful = failed = unknown = 0
        timed_out = cancelled = 0
        durations = {'successful': [], 'failed': [], 'active': []}
        now = utils.now()
        seen = set()

        def consider(job_id, poll):
            nonlocal successful, failed, unknown, timed_out, cancelled
            if job_id in seen:
                return
            seen.add(job_id)
            info = self.jobs.get(job_id)
            if info is None:
                unknown += 1
                return
            begun = info['started'] or poll.utc_timestamp
            timed_out += bool(info.get('timed out'))
            cancelled += bool(info.get('cancelled'))
            if info['completed'] is not None:
                kind = 'failed' if info['failed'] else 'successful'
                if kind == 'failed':
                    failed += 1
                else:
                    successful += 1
                durations[kind].append((info['completed'] - begun, job_id))
            else:
                durations['active'].append((now - begun, job_id))

        def selected(poll):
            for queue_name, agents in poll.items():
                if queue is not None and queue_name != queue:
                    continue
                for agent_name, info in (agents or {}).items():
                    if agent is not None and agent_name != agent:
                        continue
                    yield info

        for poll in polls:
            for info in selected(poll):
                started += len(info['new jobs'])
                for job_id in info['new jobs']:
                    consider(job_id, poll)
        if polls:
            oldest = polls[-1]
            for info in selected(oldest):
                for job_id in info['active jobs']:
                    consider(job_id, oldest)
        result = {'started': started, 'successful': successful,
                  'failed': failed, 'unknown': unknown,
                  'timed out': timed_out, 'cancelled': cancelled,
                  'statistics start': polls[-1].utc_timestamp if polls
                  else None,
                  'statistics end': polls[0].utc_timestamp if polls
                  else None}
        for kind in ('successful', 'failed', 'active'):
            values = sorted(durations[kind], key=lambda item: item[0])
            result['shortest ' + kind] = values[0][1] if values else None
            result['longest ' + kind] = values[-1][1] if values else None
        return result

    def getStatusInfo(self):
        """``uuid``, ``poll interval``, ``status`` (STARTING, RUNNING,
        STUCK or STOPPED), ``time since last poll`` and ``uptime``."""
        interval = datetime.timedelta(seconds=self.poll_interval)
        result = {'uuid': self.UUID, 'poll interval': interval,
                  'status': STOPPED, 'time since last poll': None,
                  'uptime': None}
        activated = self.activated
        if not activated:
            return result
        now = utils.now()
        grace = max(interval, datetime.timedelta(seconds=self.stuck_grace))
        poll = self.polls.first()
        if poll is None:
            result['time since last poll'] = now - activated
            result['status'] = (
                STUCK if activated + interval + grace < now else STARTING)
            return result
        result['uptime'] = now - activated
        result['time since last poll'] = now - poll.utc_timestamp
        result['status'] = (
            STUCK if poll.utc_timestamp + interval + grace < now else RUNNING)
        return result


_NOT_WATCHED = frozenset(['parent', '_z_parent__', '__parent__', 'dispatchers',
                          'quotas'])


def _direct_oids(obj):
    """The oid of ``obj`` and of the persistent objects it holds directly
    (but not its parent)."""
    oids = {obj._p_oid}
    obj._p_activate()
    for name, value in list(vars(obj).items()):
        if (name not in _NOT_WATCHED
                and isinstance(value, persistent.Persistent)
                and value._p_oid is not None
                and not interfaces.IAgent.providedBy(value)):
            oids.add(value._p_oid)
    return oids


#: the persistent parts of a job that running it loads
_JOB_PARTS = ('_args', '_kwargs', '_callbacks')


def _alone(dispatchers, uuid):
    """Whether no dispatcher but ``uuid`` is alive in a queue (none other
    could claim a job whose claim has not committed)."""
    return not any(other != uuid and record.activated and not record.dead
                   for other, record in dispatchers.items())


def _rank(dispatchers, uuid):
    """The place of ``uuid`` among the live dispatchers of a queue (by
    UUID): 0 for the first, and for a dispatcher alone."""
    rank = 0
    for other, record in dispatchers.items():
        if (other < uuid and record.activated and not record.dead):
            rank += 1
    return rank


def _prefetch(objects):
    """Ask the storage to load those of ``objects`` that are ghosts, in the
    background (ZEO: one round trip for all, instead of one each; other
    storages: nothing)."""
    by_jar = {}
    for obj in objects:
        if getattr(obj, '_p_changed', False) is None:   # a ghost
            by_jar.setdefault(obj._p_jar, []).append(obj._p_oid)
    for jar, oids in by_jar.items():
        try:
            jar.prefetch(oids)
        except Exception:   # (an optimisation only)
            utils.trace_log.debug('prefetching failed', exc_info=True)


#: a commit that changed at most this many objects (a put changes 4) has
#: all of them prefetched when it wakes a claim, not only those the claim's
#: connection had loaded before
SMALL_COMMIT = 16


def _prefetch_changed(conn, oids):
    """Ask, in one round trip, for the objects of ``oids`` (what a commit
    changed) that ``conn`` will load: those its cache holds as ghosts
    (invalidated), and, for a small commit, the new ones too (a put's job).
    Nothing for a storage that cannot prefetch (FileStorage)."""
    if not oids or not hasattr(conn.db().storage, 'prefetch'):
        return
    cache = conn._cache
    wanted = []
    for oid in oids:
        obj = cache.get(oid, None)
        if obj is None:
            if len(oids) <= SMALL_COMMIT:
                wanted.append(oid)
        elif obj._p_changed is None:
            wanted.append(oid)
    if wanted:
        try:
            conn.prefetch(wanted)
        except Exception:   # (an optimisation only)
            utils.trace_log.debug('prefetching failed', exc_info=True)


def _prefetch_parts(jobs):
    """Prefetch the parts of ``jobs`` that claiming or running them needs
    (loading the jobs, which a prefetch of their own may have asked for;
    a job that cannot be loaded is left to the claim, which holds it)."""
    parts = []
    for job in jobs:
        try:
            parts.extend(getattr(job, name, None) for name in _JOB_PARTS)
        except Exception:
            continue
    _prefetch(parts)


def _prefetch_upcoming(queue, count, skip):
    """Before a claim: prefetch the jobs it will look at first, then their
    parts (two round trips on ZEO, where looking at them one by one took
    two per job)."""
    jobs = queue.upcoming(count, skip) or (
        queue.upcoming(count) if skip else [])
    if jobs:
        _prefetch(jobs)
        _prefetch_parts(jobs)


def _cancel_oids(queue):
    """The oids whose change may mean that a running job of ``queue`` was
    cancelled: its ``cancellations`` counter, and the queue itself (which
    changes when an older queue gets the counter)."""
    oids = {queue._p_oid}
    counter = queue.cancellations
    if counter is not None and counter._p_oid is not None:
        oids.add(counter._p_oid)
    return oids - {None}


def _watched_oids(queue):
    """The oids whose change means that jobs were put in the queue: the
    queue and the persistent objects it holds (its job structures and its
    length counter), and theirs, but not its dispatcher records and
    quotas, which pings and claims change."""
    oids = set()
    if queue._p_oid is not None:
        oids.add(queue._p_oid)
    queue._p_activate()
    values = [value for name, value in list(vars(queue).items())
              if name not in _NOT_WATCHED]
    stores = getattr(queue, 'pendingStores', None)
    if stores is not None:
        values.extend(stores())   # (the jobs of every priority)
    for value in values:
        if isinstance(value, persistent.Persistent) and value._p_oid:
            oids.add(value._p_oid)
            try:
                value._p_activate()
                inner_values = list(vars(value).items())
            except Exception:
                continue
            for inner_name, inner in inner_values:
                if (inner_name not in _NOT_WATCHED
                        and isinstance(inner, persistent.Persistent)
                        and inner._p_oid):
                    oids.add(inner._p_oid)
    return oids
