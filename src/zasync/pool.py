"""The worker threads of one dispatcher agent.

Each ``AgentThreadPool`` runs the jobs its agent claimed, in up to ``size``
daemon threads.  Every thread keeps one database connection (and its cache)
for all its jobs.  A thread that finishes a job claims the next ones for
its agent at once -- it does not wait for the dispatcher's next poll -- and
a ``CLAIM`` request in the work queue (sent when a commit changed a queue)
makes an idle thread claim.
"""
import collections
import queue as queue_module
import threading
import time
import types

import ZODB.POSException
import ZODB.utils

from zasync import interfaces
from zasync import local as local_module
from zasync import timeouts
from zasync import utils
from zasync.failure import Failure
from zasync.grouping import GroupSplit
from zasync.grouping import GroupingTransactionManager

__all__ = ['AgentThreadPool', 'CLAIM', 'FailStopped', 'MAX_RESULT', 'Run',
           'STOP', 'WORKER_NAME_PREFIX']

CLAIM = object()      # work item: claim jobs for the agent
STOP = None           # work item: this thread ends
NUDGE = object()      # work item: a thread keeps jobs (see _hand_out)

MAX_RESULT = 10000

# ``threading.get_ident()`` strings of the threads of all pools, so tests
# and tear-downs can tell worker threads apart.
WORKER_NAME_PREFIX = 'zasync worker'


def _result_text(result):
    if isinstance(result, Failure):
        text = result.getTraceback(detail='verbose', elideFrameworkCode=True)
    else:
        text = repr(result)
    if len(text) > MAX_RESULT:
        text = text[:MAX_RESULT] + '\n[...TRUNCATED...]'
    return text


class Run:
    """One run of a job in a worker thread: what it takes to stop it."""

    __slots__ = ('ident', 'token', 'oid', 'database_name', 'tm', 'info',
                 'timer', 'stopped', 'thread')

    def __init__(self, ident, oid, database_name, tm, info):
        self.ident = ident          # thread ident (int)
        self.token = object()       # this run of the job, and no other
        self.oid = oid
        self.database_name = database_name
        self.tm = tm
        self.info = info
        self.timer = None           # the timeout's timer
        self.stopped = None         # the error class it was stopped with
        self.thread = threading.current_thread()


class FailStopped:
    """Work item: complete the job of an abandoned run with its error (a
    thread that replaces the abandoned one does it)."""

    __slots__ = ('oid', 'database_name', 'info', 'error')

    def __init__(self, run):
        self.oid = run.oid
        self.database_name = run.database_name
        self.info = run.info
        self.error = run.stopped


_GLOBALS = (type, types.FunctionType, types.BuiltinFunctionType)


def _callable_key(job):
    """What runs when ``job`` runs, to tell how long its runs take: the
    function (or class), or the class of the object and the method name;
    None if there is none."""
    try:
        root, name = job.callableParts()
        if name is None and isinstance(root, _GLOBALS):
            return root
        return (type(root), name)
    except Exception:
        return None


class AgentThreadPool:
    """Threads performing the jobs of the agent ``name`` of ``queue_name``."""

    def __init__(self, dispatcher, queue_name, name, size=0):
        self.dispatcher = dispatcher
        self.queue_name = queue_name
        self.name = name
        self.size = 0
        self.queue = queue_module.Queue()
        self.threads = []
        self.jobids = {}            # thread id string -> (oid, db) or None
        self.runs = {}              # thread ident -> the Run it performs
        self.abandoned = set()      # idents of threads given up on
        self._timers = []           # of stopping jobs
        self.claim_lock = threading.Lock()   # see Dispatcher.claimJobs
        self.claim_wanted = False   # a thread found the claim lock taken
        self._lock = threading.Lock()
        self._stops = 0             # STOP items queued but not yet taken
        self._claim_requested = False
        self.outstanding = 0        # claimed jobs not yet finished here
        self.finished = 0           # work items finished here (ever)
        # thread ident string -> [deque of the jobs it claimed and keeps
        # for its groups, monotonic time since when it keeps some]
        self._kept = {}
        self._archived_at = 0       # ``finished`` at the last archiving
        # (oid, database name) of jobs whose run in their claim's
        # transaction did not commit: claimed the usual way from then on
        self._split_in_claim = collections.OrderedDict()
        # thread ident string -> the id of the job it runs in its claim's
        # transaction (also in ``Dispatcher.in_flight``)
        self._in_flight = {}
        if size:
            self.setSize(size)

    def __repr__(self):
        return '<AgentThreadPool %r/%r size %d>' % (
            self.queue_name, self.name, self.size)

    # -- size -------------------------------------------------------------

    def setSize(self, size=None):
        """Start or stop threads to have ``size`` of them; return the change
        of the configured size.  ``None`` replaces dead threads."""
        with self._lock:
            old = self.size
            if size is not None:
                self.size = size
            self.threads = [t for t in self.threads if t.is_alive()]
            running = len(self.threads) - self._stops
            for _ in range(self.size - running):
                thread = threading.Thread(
                    target=self._work, daemon=True,
                    name='%s %s/%s' % (WORKER_NAME_PREFIX, self.queue_name,
                                       self.name))
                self.threads.append(thread)
                thread.start()
            for _ in range(running - self.size):
                self._stops += 1
                self.queue.put(STOP)
            return self.size - old

    def stop(self):
        """Forget queued work and stop every thread; return the change of
        the configured size."""
        while True:
            try:
                self.queue.get_nowait()
            except queue_module.Empty:
                break
        for kept, since in list(self._kept.values()):
            kept.clear()
        with self._lock:
            self._stops = 0
            self._claim_requested = False
        self._cancel_timers()
        return self.setSize(0)

    def join(self, timeout=None):
        """Wait for the threads to end; return the ones still alive."""
        deadline = None if timeout is None else time.monotonic() + timeout
        alive = []
        for thread in list(self.threads):
            remaining = None if deadline is None else max(
                0, deadline - time.monotonic())
            thread.join(remaining)
            if thread.is_alive():
                alive.append(thread)
        return alive

    def forgetQueuedJobs(self):
        """Take the claimed jobs that no thread has started yet out of the
        work queue (their records stay claimed: deactivating the
        dispatcher puts them back in the queue); keep ``STOP`` and
        ``CLAIM`` requests.  Return how many jobs were taken out."""
        kept = []
        forgotten = 0
        while True:
            try:
                item = self.queue.get_nowait()
            except queue_module.Empty:
                break
            if isinstance(item, (tuple, FailStopped)):
                self._done()
                forgotten += 1
            elif item is not NUDGE:
                kept.append(item)
        for item in kept:
            self.queue.put(item)
        for jobs, since in list(self._kept.values()):
            while True:
                try:
                    jobs.pop()
                except IndexError:
                    break
                self._done()
                forgotten += 1
        return forgotten

    # -- work -------------------------------------------------------------

    def put(self, item):
        with self._lock:
            self.outstanding += 1
        self.queue.put(item)

    def requestClaim(self):
        """Ask an idle thread to claim jobs, unless the agent looks full or
        a request is pending.  Return True if one was queued."""
        with self._lock:
            if (self._claim_requested or self.outstanding >= self.size
                    or len(self.threads) - self._stops <= 0):
                return False
            self._claim_requested = True
        self.queue.put(CLAIM)
        return True

    # -- the jobs a thread keeps for its groups ----------------------------
    #
    # With group commits, the thread that claimed a batch keeps it for its
    # own groups instead of handing it round: threads that each took a
    # share would commit a group each (several commits, each waiting for
    # the storage's commit lock, where one would do), and more threads
    # would be slower than one.  Another thread takes half of what a
    # thread keeps once it has kept jobs for ``steal_after`` seconds (long
    # jobs, or a stuck one); an idle thread then looks that often (only
    # while some thread keeps jobs).

    #: seconds a thread keeps the jobs it claimed before idle threads take
    #: half of them
    steal_after = 0.02

    def _hand_out(self, ident, items):
        """The claimed jobs ``items`` that this thread does not run now:
        kept for its groups (group commits), or for any thread."""
        if not items:
            return
        if self.dispatcher.group_size <= 1:
            for item in items:
                self.queue.put(item)
            return
        kept = self._kept.get(ident)
        if kept is None:
            kept = self._kept[ident] = [collections.deque(), None]
        if not kept[0]:
            kept[1] = time.monotonic()
        kept[0].extend(items)
        if self.size > 1:
            self.queue.put(NUDGE)   # (an idle thread now looks, timed)

    def _pop_kept(self, ident):
        kept = self._kept.get(ident)
        if kept is not None:
            try:
                return kept[0].popleft()
            except IndexError:
                pass
        return None

    def _keeps(self, ident):
        """Whether this thread keeps jobs."""
        kept = self._kept.get(ident)
        return bool(kept is not None and kept[0])

    def _others_keep(self, ident):
        return any(jobs for owner, (jobs, since) in list(self._kept.items())
                   if owner != ident)

    def _steal(self, ident):
        """Half of the jobs another thread has kept for ``steal_after``
        seconds or more: the first one, and the others kept here."""
        now = time.monotonic()
        for owner, (jobs, since) in list(self._kept.items()):
            if (owner == ident or not jobs or since is None
                    or now - since < self.steal_after):
                continue
            taken = []
            for i in range(max(1, len(jobs) // 2)):
                try:
                    taken.append(jobs.pop())   # (the owner takes the first)
                except IndexError:
                    break
            if taken:
                taken.reverse()
                self._hand_out(ident, taken[1:])
                return taken[0]
        return None

    def _release_kept(self, ident):
        """Hand the jobs this thread kept to any thread (it ends)."""
        kept = self._kept.pop(ident, None)
        if kept is not None:
            for item in kept[0]:
                self.queue.put(item)

    def _take(self, ident=None):
        kept = self._pop_kept(ident)
        if kept is not None:
            return kept
        while True:
            if self._others_keep(ident):
                try:
                    item = self.queue.get(timeout=self.steal_after)
                except queue_module.Empty:
                    stolen = self._steal(ident)
                    if stolen is not None:
                        return stolen
                    continue
            else:
                item = self.queue.get()
            if item is not NUDGE:
                break
        with self._lock:
            if item is STOP:
                self._stops -= 1
            elif item is CLAIM:
                self._claim_requested = False
        return item

    def _take_more(self, count, ident=None):
        """Up to ``count`` more jobs kept by this thread or waiting in the
        work queue now (for a group), without waiting."""
        more = []
        while len(more) < count:
            kept = self._pop_kept(ident)
            if kept is not None:
                more.append(kept)
                continue
            try:
                item = self.queue.get_nowait()
            except queue_module.Empty:
                break
            if item is NUDGE:
                continue
            if not isinstance(item, tuple):
                self.queue.put(item)   # (STOP or CLAIM: for later)
                break
            more.append(item)
        return more

    def _done(self):
        with self._lock:
            self.outstanding -= 1
            self.finished += 1

    def _archive_due(self):
        """Whether enough jobs finished here since the last look for this
        thread to archive the agent's completed jobs (a look costs a
        transaction; the polls archive whatever waits)."""
        with self._lock:
            if (self.finished - self._archived_at
                    < self.dispatcher.archive_threshold):
                return False
            self._archived_at = self.finished
            return True

    def _work(self):
        dispatcher = self.dispatcher
        local = local_module.local
        local.dispatcher = dispatcher
        local.name = self.name
        ident = str(threading.get_ident())
        self.jobids[ident] = None
        conn = dispatcher.db.open(
            transaction_manager=GroupingTransactionManager())
        try:
            while True:
                item = self._take(ident)
                if item is STOP:
                    break
                if item is CLAIM:
                    items = self._claim(conn, run_first=True)
                else:
                    items = [item]
                while items:
                    first = items[0]
                    self._hand_out(ident, items[1:])
                    try:
                        if (dispatcher.group_size > 1
                                and isinstance(first, tuple)):
                            keep_going = self._perform_group(
                                conn, ident, first)
                        else:
                            keep_going = self._perform(conn, ident, first)
                    except timeouts.Abandoned:
                        # Given up on, and replaced, long ago: end, and
                        # write nothing.
                        utils.events_log.warning(
                            'an abandoned worker thread (%s) came back from '
                            'its job; it ends, and nothing it did commits',
                            ident)
                        return
                    finally:
                        if int(ident) not in self.abandoned:
                            self._done()
                    if (keep_going and dispatcher.activated
                            and self._archive_due()):
                        dispatcher.archiveCompleted(
                            conn, self.queue_name, self.name)
                    if not keep_going or not dispatcher.activated:
                        break
                    if self._keeps(ident) or not self.queue.empty():
                        break   # (jobs claimed already come first)
                    items = self._claim(conn, run_first=True)
        finally:
            self._release_kept(ident)
            self._forget_in_flight(ident)
            local.dispatcher = None
            local.name = None
            local.job = None
            try:
                conn.transaction_manager.abort()
                conn.close()
            except Exception:  # pragma: no cover - db closed under us
                utils.trace_log.debug('closing a worker connection failed',
                                      exc_info=True)
            self.jobids.pop(ident, None)
            self.runs.pop(int(ident), None)
            self.abandoned.discard(int(ident))
            if dispatcher.activated:
                # Replace this thread if it died of an unexpected error.
                try:
                    dispatcher.reactor.callFromThread(self._replace)
                except Exception:  # pragma: no cover - reactor gone
                    pass

    def _replace(self):
        if self.dispatcher.activated and self.size:
            self.setSize()

    def _claim(self, conn, run_first=False):
        """Claim jobs for the agent in this thread's connection; return the
        work items (already counted as outstanding).  ``run_first``: with
        group commits, this thread may run a single claimed job in the
        claim's transaction (``Dispatcher.claimJobs``)."""
        dispatcher = self.dispatcher
        if not dispatcher.activated:
            return []
        items = dispatcher.claimJobs(
            conn, self.queue_name, self.name, self, wait=False,
            run_first=run_first and dispatcher.group_size > 1)
        if isinstance(items, Failure):
            return []
        with self._lock:
            self.outstanding += len(items)
        if items and items[0][:2] in dispatcher.in_flight:
            self._in_flight[str(threading.get_ident())] = items[0][:2]
        return items

    # -- running a job in the transaction of its claim -----------------------
    #
    # With group commits, a worker thread whose claim took a single job
    # that may join a group, of a callable seen to run short (the queue is
    # shallow: the job just came), runs
    # it in the claim's transaction, and the claim commits with the job's
    # result: one commit fewer before the job starts (its latency), and
    # per job.  Until that commit, the job is still pending for everybody
    # else: our other claims pass over it (``Dispatcher.in_flight``), and
    # it is only done when no other dispatcher is alive in the queue (it
    # would run the job too, and one of the two commits would conflict).
    # If the job has to abort, or the commit fails, nothing of it (not
    # even the claim) committed: the job is claimed again the usual way.

    def may_run_in_claim(self, job, key):
        """Whether ``job`` (``key``: its id), just claimed and started, may
        run in its claim's transaction (see above): it may join a group,
        and the last ``Dispatcher.run_in_claim_after`` runs of its
        callable here were short."""
        dispatcher = self.dispatcher
        return (key not in self._split_in_claim
                and dispatcher.short_runs.get(_callable_key(job), 0)
                >= dispatcher.run_in_claim_after
                and self._may_join_group(job, key))

    def _note_run(self, job, seconds):
        """Count a run of ``job``'s callable that took ``seconds``: the
        short runs in a row of each callable (``Dispatcher.short_runs``)."""
        dispatcher = self.dispatcher
        key = _callable_key(job)
        if key is None:
            return
        runs = dispatcher.short_runs
        with self._lock:
            if seconds < dispatcher.short_run:
                runs[key] = runs.pop(key, 0) + 1
                while len(runs) > dispatcher.short_runs_size:
                    runs.popitem(last=False)   # (the oldest first)
            else:
                runs.pop(key, None)

    def _forget_in_flight(self, ident):
        key = self._in_flight.pop(ident, None)
        if key is not None:
            self.dispatcher.in_flight.discard(key)

    def _split_from_claim(self, item):
        """The run of ``item`` in its claim's transaction did not commit:
        the job is pending again; claim it the usual way next time."""
        key = item[:2]
        self._split_in_claim[key] = True
        while len(self._split_in_claim) > 1000:
            self._split_in_claim.popitem(last=False)
        jobs = self.dispatcher.jobs
        if jobs.get(key) is item[2]:
            del jobs[key]   # (it was not claimed after all)

    def _load(self, conn, oid, database_name):
        """Load the job in a fresh transaction, retrying database trouble."""
        tm = conn.transaction_manager
        backoff = utils.INITIAL_BACKOFF
        errors = 0
        while True:
            tm.begin()
            try:
                if database_name != conn.db().database_name:
                    jar = conn.get_connection(database_name)
                else:
                    jar = conn
                job = jar.get(ZODB.utils.p64(oid))
                job._p_activate()
                return job
            except utils.ClientDisconnected:
                tm.abort()
                utils.events_log.info(
                    'ZEO client disconnected while loading job %d; '
                    'retrying in %d seconds', oid, backoff)
                utils.sleep(backoff)
                backoff = min(utils.MAX_BACKOFF,
                              backoff + utils.BACKOFF_INCREMENT)
            except ZODB.POSException.TransactionError:
                tm.abort()
                errors += 1
                if errors == 1 or errors % 5 == 0:
                    utils.events_log.warning(
                        'transaction error loading job %d (%d so far); '
                        'retrying', oid, errors, exc_info=True)

    def _perform(self, conn, ident, item):
        """Run one job; return False if the thread should stop."""
        dispatcher = self.dispatcher
        if isinstance(item, FailStopped):
            return self._fail_stopped(conn, ident, item)
        oid, database_name, info = item
        tm = conn.transaction_manager
        if not dispatcher.activated:
            return False
        self.jobids[ident] = (oid, database_name)
        info['thread'] = int(ident)
        info['started'] = utils.now()
        utils.trace_log.info('starting in thread %s: %s', ident, info['call'])
        run = Run(int(ident), oid, database_name, tm, info)
        # (known before the job is loaded: a cancellation committed after
        # the load began finds it)
        self.runs[run.ident] = run
        try:
            job = self._load(conn, oid, database_name)
            if (job.cancel_requested is not None
                    or (oid, database_name) in dispatcher.cancelled_claims):
                # Cancelled after it was claimed: it does not run.
                run.stopped = interfaces.CancelledError
                info['cancelled'] = True
                return self._complete_stopped(job, run, tm)
            timeouts.assign(run.token)
            timeout = job.effectiveTimeout()
            if timeout is not None:
                run.timer = threading.Timer(timeout, self.stopJob, (
                    run.ident, run.token, interfaces.JobTimeoutError,
                    timeout))
                run.timer.daemon = True
                run.timer.start()
            try:
                tm.job_starts()   # (what it writes is its own)
                began = time.monotonic()
                result = job.runStarted()   # started when claimed
                self._note_run(job, time.monotonic() - began)
                tm.job_done()
            except interfaces.BadStatusError:
                tm.abort()
                if self._taken_over(job):
                    info['reassigned'] = True
                    info['completed'] = utils.now()
                    return True
                utils.events_log.error(
                    'job already completed?  %s', info['call'], exc_info=True)
                self._remove_bad_job(job, tm)
                result = job.result
            except interfaces.ReassignedError:
                tm.abort()
                info['reassigned'] = True
                info['completed'] = utils.now()
                return True
            except (SystemExit, KeyboardInterrupt):
                tm.abort()
                raise
            except Exception:
                tm.abort()
                utils.events_log.critical(
                    'unexpected error in worker thread %s running %s; '
                    'the thread ends and is replaced', ident, info['call'],
                    exc_info=True)
                info['completed'] = utils.now()
                info['failed'] = True
                info['result'] = _result_text(Failure())
                return False
            self._record(info, result)
            return True
        finally:
            timeouts.assign(None)
            if run.timer is not None:
                run.timer.cancel()
            if self.runs.get(run.ident) is run:
                del self.runs[run.ident]
            if info['completed'] is not None:
                dispatcher.cancelled_claims.discard((oid, database_name))
            local_module.local.job = None
            if run.ident not in self.abandoned:
                self.jobids[ident] = None
                utils.trace_log.info(
                    'completed in thread %s: %s', ident, info['call'])
            tm.abort()   # (in a group: GroupSplit if the job had to abort)

    # -- group commits -------------------------------------------------------

    def _groupable(self, conn, item):
        """Whether the job of ``item`` may commit in a group."""
        oid, database_name, info = item
        try:
            jar = conn
            if database_name != conn.db().database_name:
                jar = conn.get_connection(database_name)
            job = jar.get(ZODB.utils.p64(oid))
        except Exception:
            return False
        return self._may_join_group(job, (oid, database_name))

    def _may_join_group(self, job, key):
        """Whether ``job`` (``key``: its id) may commit in a group: a plain
        job that opted in (``group_commit``, also on its agent), with no
        callbacks, no timeout and no cancellation."""
        try:
            agent = job.agent
            return bool(
                job.status == interfaces.ACTIVE
                and getattr(job, 'group_commit', False)
                and getattr(agent, 'group_commit', True)
                and not len(job.callbacks)
                and job.effectiveTimeout() is None
                and job.cancel_requested is None
                and key not in self.dispatcher.cancelled_claims
                and not interfaces.IJob.providedBy(job.result))
        except Exception:
            return False

    def _perform_group(self, conn, ident, first):
        """Run ``first`` (a job this thread took) and, in the same
        transaction, the jobs it takes from the work queue after it, as
        long as they may join (``_groupable``), up to
        ``Dispatcher.group_size`` jobs started within
        ``Dispatcher.group_age`` seconds; then commit them together.  If
        that fails, run them again, one per transaction.  (The jobs wait
        in the work queue until the thread takes them: a thread that gets
        stuck holds none but its own.)  Return False if the thread should
        stop."""
        tm = conn.transaction_manager
        dispatcher = self.dispatcher
        in_claim = first[:2] in dispatcher.in_flight
        if not in_claim:
            tm.begin()   # (see the claims' commits)
            if not self._groupable(conn, first):
                return self._perform(conn, ident, first)
        grouped = [first]
        leftover = None
        keep_going = True
        deadline = time.monotonic() + dispatcher.group_age
        split = None
        tm.start_group(claimed=in_claim)
        try:
            item = first
            while True:
                keep_going = self._perform(conn, ident, item)
                if (not keep_going or not dispatcher.activated
                        or len(grouped) >= dispatcher.group_size
                        or time.monotonic() > deadline):
                    break
                more = self._take_more(1, ident)
                if not more:
                    break
                item = more[0]
                if not self._groupable(conn, item):
                    leftover = item
                    break
                grouped.append(item)
            if in_claim and first[2]['started'] is None:
                # (it did not run -- we were deactivated -- and its claim
                # must not commit: the job stays pending)
                raise GroupSplit('its first job did not start')
            committed = tm.end_group()
        except GroupSplit as e:
            split = 'a job of it had to abort (%s)' % (e,)
        except Exception as e:
            split = 'its commit failed (%s)' % (utils.one_line(e),)
        finally:
            if tm.grouping:
                tm.abandon_group()
            if in_claim:
                self._forget_in_flight(ident)
        if split is None:
            if len(grouped) > 1:
                dispatcher.groups_committed += 1
                dispatcher.grouped_jobs += committed
            if in_claim:
                dispatcher.run_in_claim += 1
        else:
            utils.events_log.info(
                'a group of %d jobs did not commit: %s; running them one '
                'per transaction', len(grouped), split)
            if in_claim:
                # (its claim did not commit either: it is pending again)
                self._split_from_claim(first)
            for item in (grouped[1:] if in_claim else grouped):
                item[2]['completed'] = None
                if keep_going and dispatcher.activated:
                    keep_going = self._perform(conn, ident, item)
        if leftover is not None:
            grouped.append(leftover)
            if keep_going and dispatcher.activated:
                keep_going = self._perform(conn, ident, leftover)
        for item in grouped[1:]:   # (the caller counts the first)
            self._done()
        return keep_going and dispatcher.activated

    def _taken_over(self, job):
        """Whether another dispatcher took ``job`` over from us (it was
        requeued when we were taken for dead, and completed or claimed
        elsewhere, while our run of it had not committed: a group of ours
        that did not commit, say); log it as a reassignment."""
        try:
            agent = job.agent
            ours = (agent is not None and agent.name == self.name
                    and getattr(agent.parent, 'UUID', None)
                    == self.dispatcher.UUID
                    and job.status != interfaces.COMPLETED)
        except Exception:
            return False
        if ours:
            return False
        utils.events_log.error(
            '%r was reassigned: another dispatcher took it over while this '
            'one ran it (nothing of this run committed)', job)
        return True

    def _record(self, info, result):
        info['failed'] = isinstance(result, Failure)
        info['result'] = _result_text(result)
        info['completed'] = utils.now()

    # -- stopping running jobs ----------------------------------------------

    #: seconds between two deliveries of the exception that stops a job
    #: (each waits ``timeouts.DELIVERY_WINDOW`` for the thread to come out,
    #: then takes the exception back: the thread is in C code), and how
    #: many deliveries a job's thread gets before it is given up on as
    #: stuck in C code
    stop_interval = 0.25
    stop_attempts = 6

    def stopJob(self, ident, token, error, timeout=None, tries=0):
        """Stop the run ``token`` in the thread ``ident``: doom its
        transaction, and raise ``error`` (``JobTimeoutError`` with the
        ``timeout`` that passed, or ``CancelledError``) in its callable; a
        thread stuck in C code is given up on and replaced, and its job
        completed by the new thread.  If the thread is not in the
        callable yet (the job's ``setUp``), try again a little later,
        until the run is over.  Return whether it was stopped now."""
        run = self.runs.get(ident)
        if run is None or run.token is not token or run.stopped is not None:
            return False

        def before_stop():
            # (the job's thread cannot leave its callable meanwhile)
            try:
                run.tm.get().doom()
            except Exception:   # pragma: no cover - no transaction
                pass

        if not timeouts.stop(ident, token, error, before=before_stop):
            if tries < 200 and run.info['completed'] is None:
                self._later(0.05, self.stopJob,
                            ident, token, error, timeout, tries + 1)
            return False
        run.stopped = error
        if error is interfaces.JobTimeoutError:
            run.info['timed out'] = True
            utils.events_log.warning(
                'job %d ran past its timeout of %g s: stopping it (%s)',
                run.oid, timeout, run.info['call'])
        else:
            run.info['cancelled'] = True
            utils.events_log.warning(
                'job %d was cancelled: stopping it (%s)', run.oid,
                run.info['call'])
        self._later(self.stop_interval, self._watch_stop, run, 1)
        return True

    def _later(self, delay, func, *args):
        timer = threading.Timer(delay, func, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
            timer.start()   # (before stop() may join it)

    def _cancel_timers(self):
        with self._lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join(1)

    def _watch_stop(self, run, attempts):
        """The thread of a stopped run has not left its callable: deliver
        the exception again, or, after ``stop_attempts``, give up on the
        thread."""
        if not timeouts.stopping(run.ident, run.token):
            return
        if attempts < self.stop_attempts:
            timeouts.resend(run.ident, run.token)
            self._later(self.stop_interval, self._watch_stop, run,
                        attempts + 1)
            return
        if timeouts.abandon(run.ident, run.token):
            self._abandon(run)

    def _abandon(self, run):
        """Replace the thread of ``run``, stuck in C code; a new thread
        completes its job."""
        with self._lock:
            self.abandoned.add(run.ident)
            if run.thread in self.threads:
                self.threads.remove(run.thread)
            self.outstanding -= 1
        self.jobids.pop(str(run.ident), None)
        if self.runs.get(run.ident) is run:
            del self.runs[run.ident]
        self._release_kept(str(run.ident))
        run.info['abandoned'] = True
        utils.events_log.error(
            'job %d does not stop (its thread %d must be stuck in C code: '
            'time.sleep, a socket, a lock, an extension): the job fails '
            'all the same, and the thread is abandoned and replaced; if it '
            'ever comes back, nothing it did commits (%s)',
            run.oid, run.ident, run.info['call'])
        self.put(FailStopped(run))
        self.setSize()

    def _fail_stopped(self, conn, ident, item):
        """Complete the job of an abandoned run with its error."""
        tm = conn.transaction_manager
        self.jobids[ident] = (item.oid, item.database_name)
        try:
            job = self._load(conn, item.oid, item.database_name)
            run = Run(int(ident), item.oid, item.database_name, tm,
                      item.info)
            run.stopped = item.error
            return self._complete_stopped(job, run, tm)
        finally:
            local_module.local.job = None
            tm.abort()
            self.jobids[ident] = None

    def _complete_stopped(self, job, run, tm):
        """Fail ``job``, whose run was stopped without running it to the
        end, with the error of ``run`` (in this thread's transaction)."""
        error = run.stopped
        try:
            result = job.failRunning(error)
        except interfaces.BadStatusError:
            tm.abort()
            utils.events_log.info(
                'job %d has a result already; it is not failed again (%s)',
                run.oid, run.info['call'])
            return True
        except interfaces.ReassignedError:
            tm.abort()
            run.info['reassigned'] = True
            run.info['completed'] = utils.now()
            return True
        self._record(run.info, result)
        return True

    #: consecutive database errors after which cleaning up a bad job logs
    #: CRITICAL (and then again every this many errors)
    frequent_errors = 10

    def _remove_bad_job(self, job, tm):
        """Move a job the queue should not have handed out off the agent."""
        if job.status == interfaces.CALLBACKS:
            try:
                job.resumeCallbacks()
            except Exception:
                tm.abort()
                utils.events_log.critical(
                    'could not resume callbacks of %r', job, exc_info=True)
            return
        errors = 0
        while True:
            try:
                tm.begin()
                agent = job.agent
                status = job.status
                if status == interfaces.COMPLETED:
                    if agent is not None and job.parent is agent:
                        agent.jobCompleted(job)
                elif status == interfaces.ACTIVE:
                    # Someone else runs it (or it was interrupted): the
                    # agent's cleaning deals with it, not us.
                    tm.abort()
                    return
                else:
                    job.fail()
                tm.commit()
                return
            except (SystemExit, KeyboardInterrupt):
                tm.abort()
                raise
            except interfaces.BadStatusError:
                tm.abort()
                utils.events_log.error(
                    'cannot move bad job %r off its agent', job, exc_info=True)
                return
            except Exception:
                tm.abort()
                errors += 1
                if errors % self.frequent_errors == 0:
                    utils.events_log.critical(
                        'frequent database errors (%d) while removing bad '
                        'job %r from its agent', errors, job, exc_info=True)
                utils.sleep(1)
