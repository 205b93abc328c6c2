"""A tiny Zope application for the functional layer (test_functional):
views that put jobs through ``IJobManager`` and report on them."""
import json
import threading

import zope.component
import zope.component.hooks
import zope.security.management
from zope.security.proxy import removeSecurityProxy
from zope.site.interfaces import IRootFolder

from zasync import interfaces
from zasync import local as zlocal
from zasync.manager import ProgressableJob

GATE = threading.Event()
"""The job waits here after reporting 50%: the test opens it."""


def whoami_job(n):
    """Report progress, wait for the test, then say who and where we are."""
    zlocal.setProgress(50, 'halfway')
    if not GATE.wait(20):
        raise RuntimeError('the test never opened the gate')
    interaction = zope.security.management.queryInteraction()
    principals = [] if interaction is None else [
        p.principal.id for p in interaction.participations]
    site = zope.component.hooks.getSite()
    return {'square': n * n, 'principals': principals,
            'site': 'root' if IRootFolder.providedBy(site) else repr(site)}


class View:

    def __init__(self, context, request):
        self.context = context
        self.request = request

    def json(self, data):
        self.request.response.setHeader('Content-Type', 'application/json')
        return json.dumps(data, sort_keys=True)


class PutJob(View):
    """``@@put-job?n=N``: queue ``whoami_job(N)``; answer its id."""

    def __call__(self):
        n = int(self.request.form.get('n', '7'))
        manager = zope.component.getUtility(interfaces.IJobManager)
        job_id = manager.put(ProgressableJob(whoami_job, n))
        return self.json({'job_id': job_id})


class PutThenFail(View):
    """``@@put-then-fail``: queue a job, then fail: the request's
    transaction aborts, and the job with it."""

    def __call__(self):
        manager = zope.component.getUtility(interfaces.IJobManager)
        manager.put(ProgressableJob(whoami_job, 1))
        raise RuntimeError('the request failed after putting a job')


class CountJobs(View):
    """``@@count-jobs``: jobs in the manager and pending in the queue."""

    def __call__(self):
        manager = zope.component.getUtility(interfaces.IJobManager)
        queue = interfaces.IQueue(removeSecurityProxy(self.context))
        return self.json({'jobs': len(list(manager.jobs())),
                          'pending': len(queue)})


class JobStatus(View):
    """``++jobs++/<id>/@@status``: status, progress and result."""

    def __call__(self):
        job = self.context
        data = {'status': str(job.status), 'percent': job.percent,
                'message': job.progress_message, 'result': None}
        if job.status == interfaces.COMPLETED:
            result = removeSecurityProxy(job.result)
            data['result'] = (result if isinstance(result, dict)
                              else repr(result))
        return self.json(data)
