"""The job manager: put jobs in the queue and find them again by id.

An application registers nothing itself: ``configure.zcml`` grokks this
module, which registers ``JobManager`` as the global ``IJobManager``
utility, and ``<zasync:jobs />`` (or the ready-made ``single.zcml`` and
``multidb.zcml``) installs the queues and the ``JobContainer`` when the
database opens.  Then::

    job_id = getUtility(IJobManager).put(Job(my_function, 42))

queues the job, in the caller's transaction: it runs if, and only if, that
transaction commits.  See ``docs/manager.rst``.
"""
import ZODB.utils
import grokcore.component as grok
import zope.component
import zope.component.hooks
import zope.event
import zope.interface
import zope.location
from zope.component.interfaces import ISite
from zope.container.btree import BTreeContainer
from zope.publisher.interfaces import NotFound
from zope.publisher.interfaces.browser import IBrowserPublisher
from zope.traversing.interfaces import ITraversable
from zope.traversing.interfaces import TraversalError

from zasync import interfaces
from zasync import local as zlocal
from zasync.actions import retry_job
from zasync import utils
from zasync import z3
from zasync.queue import getDefaultQueue

__all__ = ['compute', 'get_job_id', 'job_container_installer', 'JobContainer',
           'JobContainerInstaller', 'JobManager', 'JobManagerTraversable',
           'JobManagerTraverser', 'JobsNamespace',
           'multidb_job_container_installer', 'ProgressableJob']

# --------------------------------------------------------------------------
# Jobs


def get_job_id(persisted_job):
    """The id of a stored job: its oid as a decimal string."""
    oid = getattr(persisted_job, '_p_oid', None)
    if oid is None:
        raise ValueError('the job is not stored in a database yet: %r'
                         % (persisted_job,))
    return str(ZODB.utils.u64(oid))


def _check_percent(percent):
    if percent is None:
        return
    if (isinstance(percent, bool) or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100):
        raise ValueError('percent must be a number from 0 to 100, not %r'
                         % (percent,))


@zope.interface.implementer(interfaces.IProgressableJob)
class ProgressableJob(z3.Job):
    """A job that tells how far it got: ``percent`` (None until known).

    Inside the running job, ``zasync.local.setProgress(percent, message)``
    sets it so that other connections see it while the job runs.  Setting
    ``job.percent`` directly changes it in the current transaction.
    """

    def _progress(self):
        return self.annotations.get(zlocal.PROGRESS, (None, None))

    @property
    def percent(self):
        return self._progress()[0]

    @percent.setter
    def percent(self, value):
        _check_percent(value)
        self.annotations[zlocal.PROGRESS] = (value, self._progress()[1])

    @property
    def progress_message(self):
        """The message given with the last progress report, or None."""
        return self._progress()[1]


def compute(num, duration=60):
    """A test job: take ``duration`` seconds, reporting progress in ten
    steps, and return ``num * num``."""
    steps = 10
    for step in range(1, steps + 1):
        utils.sleep(duration / steps)
        if zlocal.getJob() is not None:
            zlocal.setProgress(step * 100 // steps,
                               'step %d of %d' % (step, steps))
    return num * num


# --------------------------------------------------------------------------
# The container


@zope.interface.implementer(interfaces.IJobContainer)
class JobContainer(BTreeContainer):
    """Jobs by id (``get_job_id``).

    The container only indexes jobs: a job's place (``parent``) remains its
    queue or agent, so storing a job here neither wraps it in a proxy nor
    changes its ``__parent__``, and sends no events.
    """

    def __setitem__(self, key, job):
        if not isinstance(key, str) or not key:
            raise TypeError('job ids are non-empty strings, not %r' % (key,))
        if not interfaces.IJob.providedBy(job):
            raise TypeError('only jobs can be stored, not %r' % (job,))
        if key in self:
            if self[key] is job:
                return
            raise KeyError('another job is stored as %r' % (key,))
        self._setitemf(key, job)

    def __delitem__(self, key):
        del self._SampleContainer__data[key]
        self._BTreeContainer__len.change(-1)


class JobContainerInstaller:
    """Install a ``JobContainer`` at ``root[JOBS_KEY]`` when a database
    opens (an ``IDatabaseOpenedEvent`` subscriber); idempotent.

    With ``db_name``, the container lives in the root of that member of a
    multi-database and the main root refers to it.
    """

    def __init__(self, db_name=None):
        self.db_name = db_name
        zope.component.adapter(interfaces.IDatabaseOpenedEvent)(self)

    def __repr__(self):
        return '<%s db_name=%r>' % (type(self).__name__, self.db_name)

    def __call__(self, ev):
        with utils.private_connection(ev.database) as conn:
            container, created = utils.install_in_root(
                conn, interfaces.JOBS_KEY, _new_job_container, self.db_name)
            if created:
                zope.event.notify(interfaces.ObjectAdded(
                    container, conn.root(), interfaces.JOBS_KEY))
            conn.transaction_manager.commit()
            if created:
                utils.events_log.info('job container added')


def _new_job_container():
    container = JobContainer()
    container.__name__ = interfaces.JOBS_KEY
    return container


job_container_installer = JobContainerInstaller()
"""Installs the job container in the main database."""

multidb_job_container_installer = JobContainerInstaller(db_name='async')
"""Installs the job container in the database named ``async``."""


# --------------------------------------------------------------------------
# The manager


@grok.implementer(interfaces.IJobManager)
class JobManager(grok.GlobalUtility):
    """Puts jobs in the default queue and keeps them findable by id.

    ``site`` (every method) is any object stored in the database, used to
    find the database; it defaults to the current component site.  Jobs
    are put in the default queue of that database and in the
    ``JobContainer`` of its root.
    """

    grok.provides(interfaces.IJobManager)

    def _get_site(self, site):
        if site is None:
            site = zope.component.hooks.getSite()
            if site is None:
                raise LookupError(
                    'no site given and no component site set: pass a '
                    'persistent object as site')
        if utils.connection(site) is None:
            raise LookupError('the site is not stored in a database: %r'
                              % (site,))
        return site

    def _get_jobs_container(self, site):
        root = utils.connection(site).root()
        container = root.get(interfaces.JOBS_KEY)
        if container is None:
            raise LookupError(
                'no job container in the database: install one with '
                '<zasync:jobs /> (or zasync.manager.job_container_installer)')
        return container

    def put(self, job, site=None, timeout=None, priority=None,
            unique_key=None):
        """Queue ``job`` in the caller's transaction; return its id.
        ``timeout``: at most that many seconds of running (``Job.timeout``);
        ``priority`` and ``unique_key``: as for ``Queue.put`` (with a
        unique key that is taken, the id of the job that has it).

        Nothing is committed: the job is queued if, and only if, the
        caller's transaction commits.  ``job`` is a job or a callable; it
        runs in the current site with the current principals (see
        ``zasync.z3.secure``).  Set ``begin_after`` and friends on the job
        itself.
        """
        site = self._get_site(site)
        container = self._get_jobs_container(site)
        queue = interfaces.IQueue(site, None)
        if queue is None:
            queue = getDefaultQueue(site)
        job = z3.secure(job, site if ISite.providedBy(site) else None)
        job = queue.put(job, timeout=timeout, priority=priority,
                        unique_key=unique_key)
        job_id = get_job_id(job)
        container[job_id] = job
        return job_id

    def retry(self, job_id, site=None):
        """Put a new job making the call of the failed job ``job_id`` (same
        callable, arguments, queue, quotas, priority, timeout, site and
        principals; ``retried_from`` is the failed job), in the caller's
        transaction; return its id.  ``LookupError`` for an unknown id,
        ``ValueError`` for a job that did not fail."""
        site = self._get_site(site)
        job = self.get(job_id, site)
        if job is None:
            raise LookupError('no job %s' % (job_id,))
        queue = job.queue   # (a job failed before it ran is in none)
        if queue is None:
            queue = interfaces.IQueue(site, None) or getDefaultQueue(site)
        return get_job_id(retry_job(job, queue))

    def get(self, job_id, site=None):
        """The job with ``job_id``, or None."""
        container = self._get_jobs_container(self._get_site(site))
        return container.get(str(job_id))

    def jobs(self, site=None):
        """Iterate ``(job_id, job)`` pairs, in the order of the ids as
        strings."""
        container = self._get_jobs_container(self._get_site(site))
        return iter(container.items())

    def cancel(self, job_id, reason=None, site=None):
        """Cancel the job ``job_id`` (``Job.cancel``), in the caller's
        transaction, as the current interaction's principals; return the
        ``CancelRequest``.  ``LookupError`` for an unknown id,
        ``BadStatusError`` for a job that has a result already."""
        job = self.get(job_id, site)
        if job is None:
            raise LookupError('no job %s' % (job_id,))
        principal = ', '.join(z3.current_participants()) or None
        return job.cancel(reason, principal)

    def remove(self, job_id, site=None):
        """Forget a job (it is not stopped); unknown ids are ignored."""
        container = self._get_jobs_container(self._get_site(site))
        job_id = str(job_id)
        if job_id in container:
            del container[job_id]

    def start_test_job(self, duration=60, site=None):
        """Queue ``compute(23, duration)``; return its id."""
        return self.put(ProgressableJob(compute, 23, duration), site=site)


# --------------------------------------------------------------------------
# Traversal: ``/++jobs++/<id>`` from any object, and ``<manager>/<id>``


@zope.interface.implementer(IBrowserPublisher)
class JobManagerTraverser:
    """Publishes the jobs of a job manager by id (views win over ids)."""

    def __init__(self, context, request):
        self.context = context
        self.request = request

    def publishTraverse(self, request, name):
        view = zope.component.queryMultiAdapter(
            (self.context, request), name=name)
        if view is not None:
            return view
        job = None
        if name.isdigit():
            job = self.context.get(name)
        if job is None:
            raise NotFound(self.context, name, request)
        return job

    def browserDefault(self, request):
        return self.context, ()


@zope.interface.implementer(ITraversable)
class JobManagerTraversable:
    """Path traversal (``zope.traversing``) from a job manager to jobs."""

    def __init__(self, context, request=None):
        self.context = context

    def traverse(self, name, furtherPath):
        job = self.context.get(name) if name.isdigit() else None
        if job is None:
            raise TraversalError(self.context, name)
        return job


@zope.interface.implementer(ITraversable)
class JobsNamespace:
    """``++jobs++``: the job manager, located under the traversed object
    (whose database it then uses)."""

    def __init__(self, context, request=None):
        self.context = context
        self.request = request

    def traverse(self, name, ignored):
        manager = zope.component.getUtility(interfaces.IJobManager)
        return zope.location.LocationProxy(
            manager, self.context, '++jobs++' + name)
