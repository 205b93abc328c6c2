"""The public contracts of zasync: constants, errors, events, interfaces.

Everything another module (or an application) relies on is declared here,
so that the implementations can be read against one page.
"""
import zope.interface
import zope.interface.common.mapping
import zope.interface.common.sequence
from zope.interface.interfaces import IObjectEvent
from zope.interface.interfaces import ObjectEvent

__all__ = [  # noqa: F822 (two names come from __getattr__)
           'AbortedError', 'ACTIVE', 'ASSIGNED', 'BadStatusError', 'CALLBACKS',
           'CancelledError',
           'COMPLETED', 'DatabaseOpened', 'DispatcherActivated',
           'DispatcherDeactivated', 'DispatcherReactivated',
           'DispatcherRegistered', 'DispatcherUnregistered', 'FullError',
           'IAbstractJob', 'IAgent', 'IBackgroundWorkerThread',
           'ICallbackProxy', 'IClock', 'ICompletedCollection', 'IConfigValue',
           'IDatabaseOpenedEvent', 'IDispatcherActivated', 'IDispatcherAgents',
           'IDispatcherDeactivated', 'IDispatcherReactivated',
           'IDispatcherRegistered', 'IDispatchers', 'IDispatcherUnregistered',
           'IFailure', 'IFilterAgent', 'IJob', 'IJobContainer', 'IJobManager',
           'IMainLoop', 'IObjectAdded', 'IProgressable', 'IProgressableJob',
           'IQueue', 'IQueues', 'IQuota', 'IQuotas', 'IReactor',
           'IRetryPolicy', 'ISizedSequence', 'IUUID', 'JobLoadError',
           'JOBS_KEY',
           'JobStoppedError', 'JobTimeoutError', 'KEY', 'NEW', 'ObjectAdded',
           'PENDING',
           'ReassignedError', 'Status', 'status_title', 'STATUSES',
           'TimeoutError', 'UnpicklableCallableError']

# --------------------------------------------------------------------------
# Keys and statuses

KEY = 'zasync'
"""Key of the ``Queues`` mapping in the ZODB root."""

JOBS_KEY = 'zasync.jobs'
"""Key of the job manager's ``JobContainer`` in the ZODB root."""


class Status(str):
    """A job status: a plain string id, carrying its display text.

    ``Status`` values compare (and hash) like their ids, so code may compare
    a status with ``'completed-status'`` as well as with ``COMPLETED``.
    """

    def __new__(cls, id, title):
        self = str.__new__(cls, id)
        self.title = title
        return self

    def __reduce__(self):
        # Stored (and pickled) as the bare id: old and new pickles stay
        # plain strings and never depend on this class.
        return (str, (str(self),))


NEW = Status('new-status', 'New')
PENDING = Status('pending-status', 'Pending')
ASSIGNED = Status('assigned-status', 'Assigned')
ACTIVE = Status('active-status', 'Active')
CALLBACKS = Status('callback-status', 'Performing Callbacks')
COMPLETED = Status('completed-status', 'Completed')

STATUSES = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)


def status_title(status):
    """The display text of a status id (``'Completed'``)."""
    for candidate in STATUSES:
        if candidate == status:
            return candidate.title
    raise ValueError('unknown status', status)


# --------------------------------------------------------------------------
# Errors

class AbortedError(Exception):
    """An interrupted job was not retried: its work was abandoned."""


class TimeoutError(Exception):
    """A job did not start before its deadline (or was failed by default)."""


class JobStoppedError(BaseException):
    """A running job was stopped from outside -- it ran past its timeout
    (``JobTimeoutError``) or was cancelled (``CancelledError``): its
    transaction was doomed, and nothing it wrote was committed.

    A ``BaseException`` (as ``KeyboardInterrupt``), so that job code's
    ``except Exception`` does not swallow it."""


class JobTimeoutError(JobStoppedError):
    """A running job ran past its ``timeout`` and was stopped: nothing it
    wrote was committed.  The message names the limit and the time it ran.

    ``RetryWithBackoff`` retries it only when given it in ``exceptions``."""


class CancelledError(JobStoppedError):
    """The job was cancelled (``Job.cancel``, ``JobManager.cancel``,
    ``zasync cancel``): a job that had not started never ran; a running
    one was stopped, and nothing it wrote was committed.  The message
    names the reason and who cancelled.  Never retried."""


class JobLoadError(Exception):
    """A job cannot be loaded in this process: its own class, its callable
    or one of its arguments names a module or a name that cannot be
    imported (a deployment removed or renamed it, or the module fails at
    import).  The message names the module and the name."""


class BadStatusError(Exception):
    """The operation is not allowed in the job's current status."""


class ReassignedError(Exception):
    """The job now belongs to another dispatcher or agent.

    Raised inside a worker that kept running after its dispatcher was
    declared dead; the worker must give the job up.
    """


class FullError(Exception):
    """A container is full."""


class UnpicklableCallableError(ValueError):
    """The callable of a job cannot be stored in the database."""


# --------------------------------------------------------------------------
# Events

class IDispatcherRegistered(IObjectEvent):
    """A dispatcher UUID was registered with a queue (object: its agents)."""


class IDispatcherUnregistered(IObjectEvent):
    """A dispatcher UUID was unregistered from a queue."""


class IDispatcherActivated(IObjectEvent):
    """A dispatcher's record in a queue was activated."""


class IDispatcherDeactivated(IObjectEvent):
    """A dispatcher's record in a queue was deactivated."""


class IDispatcherReactivated(IObjectEvent):
    """A record that should have been active was found inactive at a ping."""


class IObjectAdded(IObjectEvent):
    """An object was added (by an installer) to a parent under a name."""

    parent = zope.interface.Attribute('the container')
    name = zope.interface.Attribute('the name in the container')


@zope.interface.implementer(IDispatcherRegistered)
class DispatcherRegistered(ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherUnregistered)
class DispatcherUnregistered(ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherActivated)
class DispatcherActivated(ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherDeactivated)
class DispatcherDeactivated(ObjectEvent):
    pass


@zope.interface.implementer(IDispatcherReactivated)
class DispatcherReactivated(ObjectEvent):
    pass


@zope.interface.implementer(IObjectAdded)
class ObjectAdded(ObjectEvent):

    def __init__(self, object, parent, name):
        super().__init__(object)
        self.parent = parent
        self.name = name


# --------------------------------------------------------------------------
# Infrastructure

class IUUID(zope.interface.Interface):
    """A ``uuid.UUID`` identifying this process's dispatcher."""


class IReactor(zope.interface.Interface):
    """What a dispatcher needs from an event loop (Twisted reactors fit)."""

    def callFromThread(callable, *args, **kw):
        """Run ``callable`` soon in the reactor thread; callable anywhere."""

    def callInThread(callable, *args, **kw):
        """Run ``callable`` in a worker thread; reactor thread only."""

    def callLater(seconds, callable, *args, **kw):
        """Run ``callable`` after ``seconds``; reactor thread only."""

    def addSystemEventTrigger(phase, eventType, callable, *args, **kw):
        """Register a trigger; ``('before', 'shutdown')`` must work."""

    def callWhenRunning(callable, *args, **kw):
        """Run now if the reactor runs, else as soon as it starts."""


class IClock(zope.interface.Interface):
    """The source of time: register one as a utility to control time.

    ``zasync.utils.now()`` and ``zasync.utils.sleep()`` consult it, so
    tests (and simulations) never have to sleep or patch ``datetime``.
    """

    def now():
        """Return the current time as an aware UTC datetime."""

    def sleep(seconds):
        """Wait ``seconds`` (a manual clock just advances)."""


class IFailure(zope.interface.Interface):
    """The picklable record of an exception, stored as a failed result."""

    type = zope.interface.Attribute(
        'The exception class, when importable, else None.')
    type_name = zope.interface.Attribute(
        'Dotted name of the exception class (``builtins.ValueError``).')
    value = zope.interface.Attribute(
        'The exception instance (rebuilt from its arguments when possible).')

    def check(*types):
        """Return the first of ``types`` (classes or dotted names) matching
        the exception, or None."""

    def trap(*types):
        """Like ``check``, but re-raise the exception when none matches."""

    def raiseException():
        """Raise the recorded exception."""

    def getErrorMessage():
        """The exception's message."""

    def getTraceback(detail='default'):
        """The traceback text: ``brief``, ``default`` or ``verbose``."""

    def getBriefTraceback():
        """A one-line-per-frame traceback."""


# --------------------------------------------------------------------------
# Jobs

class IRetryPolicy(zope.interface.Interface):
    """Decides whether a job is tried again after a problem.

    Each method returns True (retry now), False or None (do not retry), a
    ``datetime`` (reschedule then; naive means UTC) or a ``timedelta``
    (reschedule that much later; zero or negative means "first in line").
    """

    def jobError(failure, data_cache):
        """The callable (or ``setUp``) raised ``failure``."""

    def commitError(failure, data_cache):
        """Committing the result raised ``failure``."""

    def interrupted():
        """The job was interrupted, e.g. by the death of its dispatcher."""

    def updateData(data_cache):
        """Store what the in-memory ``data_cache`` learned persistently."""


class IAbstractJob(zope.interface.Interface):

    status = zope.interface.Attribute('One of the status constants.')
    result = zope.interface.Attribute('The result, or None.')
    parent = zope.interface.Attribute('The containing object, or None.')

    def addCallback(callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Add a callback, called with the result; return it prepared."""

    def addCallbacks(success=None, failure=None, failure_log_level=None,
                     retry_policy_factory=None):
        """Add a ``SuccessFailureCallbackProxy``; return it."""


class IJob(IAbstractJob):
    """A persistent call of a callable, with its arguments."""

    callable = zope.interface.Attribute(
        'The callable; settable only while the job is NEW.')
    args = zope.interface.Attribute('Persistent list of arguments.')
    kwargs = zope.interface.Attribute('Persistent mapping of keywords.')
    callbacks = zope.interface.Attribute('Callbacks, in insertion order.')
    annotations = zope.interface.Attribute('OOBTree of metadata.')
    begin_after = zope.interface.Attribute(
        'Aware UTC datetime before which the job does not start, or None.')
    begin_by = zope.interface.Attribute(
        'timedelta after begin_after by which the job must have started.')
    quota_names = zope.interface.Attribute('Tuple of quota names.')
    assignerUUID = zope.interface.Attribute(
        'UUID of the process that put the job in a queue.')
    active_start = zope.interface.Attribute('When the last attempt started.')
    active_end = zope.interface.Attribute('When the result was set.')
    initial_callbacks_end = zope.interface.Attribute(
        'When the job first completed its callbacks in an agent.')
    key = zope.interface.Attribute('Key in the completed collection.')
    queue = zope.interface.Attribute('The queue the job is in, or None.')
    agent = zope.interface.Attribute('The agent the job is in, or None.')
    retry_policy_factory = zope.interface.Attribute(
        'None, a callable(job) or the name of an IRetryPolicy adapter.')
    failure_log_level = zope.interface.Attribute(
        'Logging level for failures (None means logging.ERROR).')
    timeout = zope.interface.Attribute(
        'Seconds the callable may run (zasync), or None: no limit.')
    priority = zope.interface.Attribute(
        'Claimed before due jobs of lower priority, -100 to 100 (zasync).')
    unique_key = zope.interface.Attribute(
        'The unique key the job was put with (zasync), or None.')
    retried_from = zope.interface.Attribute(
        'The failed job this one retries (zasync), or None.')
    cancel_requested = zope.interface.Attribute(
        'None, or the CancelRequest of a running job that was cancelled '
        '(zasync): its reason, principal and time.')

    def __call__(*args, **kwargs):
        """Run the job: the callable, retries, result, callbacks."""

    def fail(e=None):
        """Fail a job that has not started (default: ``TimeoutError``)."""

    def cancel(reason=None, principal=None):
        """Cancel the job (zasync), in the caller's transaction: a job that
        has not started is failed with ``CancelledError`` without running;
        a running one is stopped by its dispatcher once the caller commits
        (``cancel_requested``).  ``BadStatusError`` once the job has a
        result (CALLBACKS or COMPLETED)."""

    def resumeCallbacks():
        """Run the callbacks that have not run (status CALLBACKS)."""

    def start():
        """Make the job ACTIVE without committing (zasync: a dispatcher
        does this in the transaction that claims the job)."""

    def runStarted():
        """Run a job made ACTIVE by ``start`` (and committed since); return
        its result (zasync)."""

    def handleInterrupt():
        """Deal with an interruption: retry per policy or abort."""

    def handleCallbackInterrupt(caller):
        """Deal with an interruption of this job as a callback of caller."""

    def getRetryPolicy():
        """The retry policy object of this job."""

    def setUp():
        """Hook run before each attempt; its result goes to tearDown."""

    def tearDown(setup_info):
        """Hook run after each attempt (after commit or abort)."""


class ICallbackProxy(IAbstractJob):
    """Chooses the job to run as a callback once the result is known."""

    job = zope.interface.Attribute('The chosen job, or None.')

    def getJob(result):
        """Choose (once), and return, the job to call with ``result``."""


# --------------------------------------------------------------------------
# Queues, quotas, agents, dispatcher records

class IQueues(zope.interface.common.mapping.IEnumerableMapping):
    """The mapping of queue names to queues, at ``root[KEY]``."""

    def __setitem__(name, queue):
        """Add a queue."""

    def __delitem__(name):
        """Remove a queue."""


class ISizedSequence(zope.interface.common.sequence.IFiniteSequence):
    """A sequence of jobs with a maximum size (zc.async's interface; no
    zasync class provides it, it is kept for code that names it)."""

    size = zope.interface.Attribute(
        'The maximum length: ``add`` raises ``FullError`` beyond it.')

    def add(item):
        """Add a job (``FullError`` if full); it gets the sequence as its
        parent."""

    def remove(item):
        """Remove ``item`` (``ValueError`` if it is not there)."""

    def index(item):
        """The index of ``item`` (``ValueError`` if it is not there)."""

    def __delitem__(index):
        """Remove the item at ``index``."""


class IQuota(zope.interface.common.sequence.IFiniteSequence):
    """A limit on the number of running jobs naming it."""

    name = zope.interface.Attribute('The name.')
    size = zope.interface.Attribute('The maximum number of jobs.')
    filled = zope.interface.Attribute('True when ``len(quota) >= size``.')

    def clean():
        """Drop jobs that no longer count against the quota."""

    def add(job):
        """Count ``job`` against the quota."""


class IQuotas(zope.interface.common.mapping.IEnumerableMapping):

    def create(name, size=1):
        """Create (or replace) a quota."""

    def remove(name):
        """Remove a quota."""


class IQueue(zope.interface.Interface):
    """Where jobs wait until an agent claims them."""

    name = zope.interface.Attribute('Name in the Queues mapping.')
    quotas = zope.interface.Attribute('IQuotas')
    dispatchers = zope.interface.Attribute('IDispatchers')

    paused = zope.interface.Attribute(
        'Whether no dispatcher claims jobs from the queue (zasync).')

    def put(item, begin_after=None, begin_by=None, failure_log_level=None,
            retry_policy_factory=None, timeout=None, priority=None,
            unique_key=None):
        """Add a job (or something adaptable to IJob); return the job.
        ``timeout``: at most that many seconds of running; ``priority``:
        -100 to 100, higher first among due jobs; ``unique_key``: while a
        job put with that key has not completed, return it instead."""

    def uniqueJob(key):
        """The job put with the unique ``key`` that has not completed, or
        None (zasync)."""

    def pause():
        """Stop the dispatchers claiming jobs from this queue (zasync)."""

    def resume():
        """Let the dispatchers claim jobs again (zasync)."""

    def putBack(item):
        """Put a rescheduled or interrupted job first in line."""

    def pull(index=0):
        """Remove and return the pending job at ``index``."""

    def remove(item):
        """Remove a pending job."""

    def claim(filter=None, default=None):
        """Remove and return the first due job accepted by ``filter``."""

    def __len__():
        """Number of pending jobs."""

    def __iter__():
        """Pending jobs in claim order."""


class IDispatchers(zope.interface.common.mapping.IEnumerableMapping):
    """UUID -> IDispatcherAgents, for one queue."""

    def register(uuid):
        """Create the record for ``uuid``."""

    def unregister(uuid):
        """Remove the (deactivated) record for ``uuid``."""

    def ping(uuid):
        """Record that ``uuid`` is alive; check the next sibling."""


class IDispatcherAgents(zope.interface.common.mapping.IEnumerableMapping):
    """A dispatcher's agents in one queue, with its liveness record."""

    UUID = zope.interface.Attribute('The dispatcher UUID.')
    activated = zope.interface.Attribute('Aware datetime, or None.')
    last_ping = zope.interface.Attribute('Conflict-free maximum of pings.')
    ping_interval = zope.interface.Attribute('timedelta')
    ping_death_interval = zope.interface.Attribute('timedelta')
    dead = zope.interface.Attribute('True when not pinged in time.')

    def activate():
        """Mark the record active."""

    def deactivate():
        """Mark inactive and clean the agents out."""

    def reactivate():
        """Mark active again, without cleaning."""


class IAgent(zope.interface.common.sequence.IFiniteSequence):
    """Claims jobs from a queue for one dispatcher; holds them meanwhile."""

    size = zope.interface.Attribute('How many jobs at once.')
    chooser = zope.interface.Attribute('callable(agent) -> job or None.')
    completed = zope.interface.Attribute('ICompletedCollection')

    def claimJob():
        """Claim a job if there is room; return it or None."""

    def jobCompleted(job):
        """Move ``job`` from the active jobs to ``completed``."""


class IFilterAgent(IAgent):
    """An agent choosing jobs with a side-effect-free ``filter(job)``."""

    filter = zope.interface.Attribute('callable(job) -> bool, or None.')


class ICompletedCollection(zope.interface.Interface):
    """Recently completed jobs, newest first, pruned by age."""

    def add(job):
        """Add a completed job."""

    def __iter__():
        """Newest to oldest."""

    def __len__():
        """Number of jobs kept."""

    def first(start=None):
        """The newest job (at or older than ``start``)."""

    def last(stop=None):
        """The oldest job (at or newer than ``stop``)."""


# --------------------------------------------------------------------------
# Job manager (Zope integration)

class IJobManager(zope.interface.Interface):
    """Puts jobs in the default queue and keeps them findable by id."""

    def put(job, site=None, timeout=None, priority=None, unique_key=None):
        """Queue ``job`` in the caller's transaction; return its id."""

    def retry(job_id, site=None):
        """Put a new job making the call of the failed job ``job_id``;
        return the new job's id."""

    def get(job_id, site=None):
        """The job with ``job_id``, or None."""

    def jobs(site=None):
        """Iterate ``(job_id, job)`` pairs."""

    def cancel(job_id, reason=None, site=None):
        """Cancel a job (``IJob.cancel``) as the current principals."""

    def remove(job_id, site=None):
        """Forget a job; unknown ids are ignored."""

    def start_test_job(duration=60, site=None):
        """Queue a job that sleeps ``duration`` seconds; return its id."""


class IJobContainer(zope.interface.Interface):
    """A container of jobs keyed by their ids."""


class IProgressableJob(IJob):
    """A job that reports how far it got."""

    percent = zope.interface.Attribute('Progress in percent (0-100), or None.')


# --------------------------------------------------------------------------
# Runners and background threads (zasync.runner, zasync.background)

class IMainLoop(zope.interface.Interface):
    """Calls a worker once per tick, one transaction per call."""

    app = zope.interface.Attribute('The site set while the loop runs.')
    ticks = zope.interface.Attribute('Default pause between calls (s).')
    worker = zope.interface.Attribute('The callable, called without args.')
    principal = zope.interface.Attribute(
        'None, a principal id, a principal, or a callable returning one.')
    once = zope.interface.Attribute('Call the worker only once.')
    running = zope.interface.Attribute('True while the loop runs.')

    def __call__():
        """Run the loop until stopped; return the worker's last result."""

    def stop():
        """Stop after the current call (at once when waiting); safe from
        other threads and signal handlers."""


class IConfigValue(zope.interface.Interface):
    """A configuration value looked up when called."""

    def __call__():
        """Return the value; raise LookupError when it is not configured."""


class IBackgroundWorkerThread(zope.interface.Interface):
    """A thread that works on a site of a ZODB in units of work."""

    site_db = zope.interface.Attribute('The database holding the site.')
    site_oid = zope.interface.Attribute('The oid of the site.')
    site_name = zope.interface.Attribute('The name of the site (for logs).')
    user_name = zope.interface.Attribute(
        'The user recorded in the transactions and, when the site can look'
        ' the id up, the principal of the interaction.')

    def scheduleNextWork():
        """Wait until work is available; return False to end the thread."""

    def doWork():
        """Do one unit of work, with a connection, the site and an
        interaction; committed on success, aborted on error."""

    def doCleanup():
        """Clean up after ``doWork`` (also after an error), in its own
        transaction, with the site still set."""


IProgressable = IProgressableJob
"""waeup.kofa's name for ``IProgressableJob``."""


# --------------------------------------------------------------------------
# Database events (zope.processlifetime, part of the ``zope`` extra)

_PROCESSLIFETIME = {'IDatabaseOpenedEvent': 'IDatabaseOpened',
                    'DatabaseOpened': 'DatabaseOpened'}


def __getattr__(name):
    # ``IDatabaseOpenedEvent`` and ``DatabaseOpened`` are
    # zope.processlifetime's, imported when first asked for: a plain ZODB
    # program (the core install) never needs them.
    if name in _PROCESSLIFETIME:
        import zope.processlifetime
        return getattr(zope.processlifetime, _PROCESSLIFETIME[name])
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
