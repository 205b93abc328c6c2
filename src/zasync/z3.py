"""Jobs that run in the security context and the site they were made in.

A job made while a request is being published (or in any other security
interaction) remembers the ids of the interaction's principals and the
current component site.  When a worker thread runs it, ``setUp`` sets that
site and starts an interaction with those principals (looked up through the
``IAuthentication`` utility of the site); ``tearDown`` -- which the job
calls after its transaction committed or aborted, so that before-commit
hooks still see the context -- restores the worker's previous site and
interaction.  Nothing leaks out of the job.

``zasync.manager.JobManager.put`` makes every job it queues such a job (see
``secure``), so applications need not think about it.
"""
import zope.component
import zope.component.hooks
import zope.security.checker
import zope.security.management
from zope.authentication.interfaces import IAuthentication
from zope.security._definitions import thread_local

from zasync import interfaces
from zasync import job as zjob

__all__ = ['current_participants', 'Job', 'Participation', 'secure',
           'SiteAndSecurityMixin']

# Statuses are immutable strings: they pass security proxies as str does
# (a proxied status would print as its repr and could not be compared).
zope.security.checker.BasicTypes[interfaces.Status] = (
    zope.security.checker.NoProxy)


class Participation:
    """A security participation of a principal (no request)."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


def current_participants():
    """The principal ids of the current interaction, in order (or ``()``)."""
    interaction = zope.security.management.queryInteraction()
    if interaction is None:
        return ()
    ids = []
    for participation in interaction.participations:
        principal = getattr(participation, 'principal', None)
        if principal is not None:
            ids.append(principal.id)
    return tuple(ids)


class SiteAndSecurityMixin:
    """Remember the current site and principals; run with them.

    Mix into a ``zasync.job.Job`` subclass (before it).  ``site`` (a
    persistent object, or None) and ``participants`` (a tuple of principal
    ids) may be changed until the job runs.
    """

    site = None
    participants = ()

    def capture(self, site=None):
        """Remember the current site (else ``site``) and principals."""
        current = zope.component.hooks.getSite()
        self.site = current if current is not None else site
        self.participants = current_participants()

    def setUp(self):
        old_site = zope.component.hooks.getSite()
        old_interaction = zope.security.management.queryInteraction()
        zope.component.hooks.setSite(self.site)
        try:
            if old_interaction is not None:
                zope.security.management.endInteraction()
            if self.participants:
                auth = zope.component.getUtility(IAuthentication)
                participations = [
                    Participation(auth.getPrincipal(principal_id))
                    for principal_id in self.participants]
                zope.security.management.newInteraction(*participations)
        except BaseException:
            self._restore(old_site, old_interaction)
            raise
        return old_site, old_interaction

    def tearDown(self, setup_info):
        old_site, old_interaction = setup_info
        self._restore(old_site, old_interaction)

    @staticmethod
    def _restore(old_site, old_interaction):
        if zope.security.management.queryInteraction() is not None:
            zope.security.management.endInteraction()
        if old_interaction is not None:
            # newInteraction would make a new one: put the very one back.
            thread_local.interaction = old_interaction
        zope.component.hooks.setSite(old_site)


class Job(SiteAndSecurityMixin, zjob.Job):
    """A job remembering, when made, the site and the principals.

    zc.async's ``zc.async.z3.Job``.
    """

    def __init__(*args, **kwargs):
        self = args[0]
        zjob.Job.__init__(*args, **kwargs)
        self.capture()


def secure(job, site=None):
    """Return ``job`` as a job that runs in the current security context.

    * A ``SiteAndSecurityMixin`` job is returned as is (it captured its
      context when it was made); if it has no site yet, it gets ``site``.
    * A plain ``zasync.job.Job`` that is not stored yet becomes a
      ``zasync.z3.Job`` (same object, same state) and captures the current
      site (else ``site``) and principals now.
    * A callable becomes a new ``zasync.z3.Job``.
    * Any other job is returned unchanged: its class decides how it runs.
    """
    if isinstance(job, SiteAndSecurityMixin):
        if job.site is None and site is not None:
            job.site = site
        return job
    if type(job) is zjob.Job:
        if job._p_jar is None and job._p_oid is None:
            job.__class__ = Job
            job.capture(site)
        return job
    if interfaces.IJob.providedBy(job):
        return job
    new = Job(job)
    if new.site is None:
        new.site = site
    return new
