"""Jobs run in the site and as the principals that made them (zasync.z3),
and leave no site and no interaction behind."""
import threading

import zope.component
import zope.component.hooks
import zope.security.management
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.principalregistry.principalregistry import principalRegistry

import zasync.job
import zasync.local
from zasync import interfaces
from zasync import subscribers
from zasync import testing
from zasync import z3
from zasync.failure import Failure
from zasync.manager import JobContainerInstaller
from zasync.tests.zopefixtures import StubSite
from zasync.tests.zopefixtures import ZopeTestCase

SEEN = []
RELEASE = threading.Event()


def context():
    """The site and principals a job sees (its result)."""
    interaction = zope.security.management.queryInteraction()
    principals = ()
    if interaction is not None:
        principals = tuple(p.principal.id
                           for p in interaction.participations)
    site = zope.component.hooks.getSite()
    return (getattr(site, '__name__', None), principals)


def context_at_commit():
    """Record, in a before-commit hook, the context the commit sees."""
    job = zasync.local.getJob()
    tm = job._p_jar.transaction_manager
    tm.get().addBeforeCommitHook(lambda: SEEN.append(context()))
    return context()


def fails():
    raise ValueError('boom')


class Participation:
    interaction = None

    def __init__(self, principal):
        self.principal = principal


class Base(ZopeTestCase):

    def setUp(self):
        super().setUp()
        del SEEN[:]
        for pid in ('mickey', 'minnie', 'goofy'):
            principalRegistry.definePrincipal(pid, pid.title(), login=pid)
        zope.component.provideUtility(principalRegistry, IAuthentication)
        self.db = self.open_db()
        self.conn = self.connect(self.db)
        self.root = self.conn.root()
        self.site = self.root['site'] = StubSite()
        self.conn.transaction_manager.commit()

    def interact(self, *ids):
        zope.security.management.newInteraction(
            *[Participation(principalRegistry.getPrincipal(i)) for i in ids])

    def make_job(self, *args, cls=z3.Job, ids=('mickey',)):
        """Make a job in the site, as ``ids``; store it; leave no context.
        """
        zope.component.hooks.setSite(self.site)
        self.interact(*ids)
        try:
            job = cls(*args)
        finally:
            zope.security.management.endInteraction()
            zope.component.hooks.setSite(None)
        self.root['job'] = job
        self.conn.transaction_manager.commit()
        return job

    def assertNoContext(self):
        self.assertIsNone(zope.security.management.queryInteraction())
        self.assertIsNone(zope.component.hooks.getSite())


class Z3JobTests(Base):

    def test_defaults_outside_an_interaction(self):
        job = z3.Job(context)
        self.assertIsNone(job.site)
        self.assertEqual(job.participants, ())

    def test_remembers_site_and_principal_and_runs_with_them(self):
        job = self.make_job(context)
        self.assertIs(job.site, self.site)
        self.assertEqual(job.participants, ('mickey',))
        self.assertEqual(job(), ('stub-site', ('mickey',)))
        self.assertNoContext()

    def test_three_participants_in_order(self):
        job = self.make_job(context, ids=('minnie', 'goofy', 'mickey'))
        self.assertEqual(job.participants, ('minnie', 'goofy', 'mickey'))
        self.assertEqual(job()[1], ('minnie', 'goofy', 'mickey'))
        self.assertNoContext()

    def test_teardown_after_commit(self):
        # before-commit hooks of the job's transaction see the context
        job = self.make_job(context_at_commit)
        self.assertEqual(job(), ('stub-site', ('mickey',)))
        self.assertEqual(SEEN, [('stub-site', ('mickey',))])
        self.assertNoContext()

    def test_failing_job_leaves_no_context(self):
        job = self.make_job(fails)
        job.retry_policy_factory = zasync.job.NeverRetry
        self.conn.transaction_manager.commit()
        result = job()
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(ValueError))
        self.assertNoContext()

    def test_unknown_principal_fails_the_job_without_running_it(self):
        job = self.make_job(context)
        job.participants = ('nobody',)
        job.retry_policy_factory = zasync.job.NeverRetry
        self.conn.transaction_manager.commit()
        result = job()
        self.assertTrue(result.check(PrincipalLookupError))
        self.assertNoContext()

    def test_outer_site_and_interaction_are_restored(self):
        job = self.make_job(context, ids=('minnie',))
        other = StubSite('other')
        zope.component.hooks.setSite(other)
        self.interact('goofy')
        outer = zope.security.management.getInteraction()
        try:
            self.assertEqual(job(), ('stub-site', ('minnie',)))
            self.assertIs(zope.security.management.getInteraction(), outer)
            self.assertIs(zope.component.hooks.getSite(), other)
        finally:
            zope.security.management.endInteraction()
            zope.component.hooks.setSite(None)

    def test_secure_converts_plain_unstored_jobs_in_place(self):
        zope.component.hooks.setSite(self.site)
        self.interact('mickey')
        try:
            plain = zasync.job.Job(context)
            same = z3.secure(plain)
            made = z3.secure(context)
            stored = zasync.job.Job(context)
            self.root['stored'] = stored
            self.conn.transaction_manager.commit()
            unchanged = z3.secure(stored)
        finally:
            zope.security.management.endInteraction()
            zope.component.hooks.setSite(None)
        self.assertIs(same, plain)
        self.assertIs(type(plain), z3.Job)
        self.assertEqual(plain.participants, ('mickey',))
        self.assertIs(plain.site, self.site)
        self.assertIs(type(made), z3.Job)
        self.assertEqual(made.participants, ('mickey',))
        self.assertIs(unchanged, stored)
        self.assertIs(type(stored), zasync.job.Job)

    def test_secure_falls_back_on_the_given_site(self):
        self.interact('mickey')
        try:
            job = z3.secure(zasync.job.Job(context), self.site)
        finally:
            zope.security.management.endInteraction()
        self.assertIs(job.site, self.site)


class DispatcherTests(Base):
    """The same through a real threaded dispatcher and the job manager."""

    def setUp(self):
        super().setUp()
        self.load_zcml()
        opened = interfaces.DatabaseOpened(self.db)
        subscribers.QueueInstaller()(opened)
        JobContainerInstaller()(opened)
        zope.component.provideHandler(subscribers.AgentInstaller(
            'main', size=1))
        self.dispatcher = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.2)(opened)
        self.dispatchers.append(self.dispatcher)
        self.conn.transaction_manager.begin()   # see the installers' work

    def test_put_in_a_request_runs_as_its_principal_and_leaks_nothing(self):
        manager = zope.component.getUtility(interfaces.IJobManager)
        zope.component.hooks.setSite(self.site)
        self.interact('minnie')
        try:
            # a plain job and a callable: the manager secures both
            first = manager.put(zasync.job.Job(context))
            second = manager.put(context)
            self.conn.transaction_manager.commit()
        finally:
            zope.security.management.endInteraction()
            zope.component.hooks.setSite(None)
        # a job queued outside any interaction, after them, in the same
        # (single) worker thread: it must see no site and no principal
        queue = self.root[interfaces.KEY]['']
        third = queue.put(context)
        self.conn.transaction_manager.commit()
        jobs = [manager.get(first, self.site), manager.get(second, self.site)]
        for job in jobs:
            self.assertEqual(testing.wait_for_result(job, 10),
                             ('stub-site', ('minnie',)))
        self.assertEqual(testing.wait_for_result(third, 10), (None, ()))
