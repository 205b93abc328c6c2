"""Retry policies: whether a job is tried again after a problem.

A job asks its policy after its callable raised (``jobError``), after
committing its result failed (``commitError``) and after it was interrupted
(``interrupted``).  See "Retry policies" in ``docs/job.rst``.
"""
import datetime
import random

import BTrees.OOBTree
import persistent
import zope.component
import zope.interface

from zasync import interfaces
from zasync import utils
from zasync.utils import events_log
from zasync.utils import trace_log

__all__ = ['callback_retry_policy_factory', 'DISCONNECTED_RULE', 'NeverRetry',
           'RetryCommonForever', 'RetryCommonFourTimes', 'RetryWithBackoff',
           'TRANSACTION_RULE']


class _Rule:
    """How a retry policy treats one family of exceptions."""

    def __init__(self, exceptions, key, max_count, initial_backoff,
                 incremental_backoff, max_backoff):
        self.exceptions = exceptions
        self.key = key
        self.max_count = max_count
        self.initial_backoff = initial_backoff
        self.incremental_backoff = incremental_backoff
        self.max_backoff = max_backoff

    def backoff(self, count):
        return min(self.max_backoff, self.initial_backoff
                   + (count - 1) * self.incremental_backoff)


TRANSACTION_RULE = _Rule(utils.TRANSACTION_ERRORS, 'transaction_error', 5,
                         0, 0, 0)
DISCONNECTED_RULE = _Rule((utils.ClientDisconnected,), 'zeo_disconnected',
                          None, 5, 5, 60)


@zope.component.adapter(interfaces.IJob)
@zope.interface.implementer(interfaces.IRetryPolicy)
class RetryCommonFourTimes(persistent.Persistent):
    """The default for queued jobs.

    Conflicts and other transaction errors: 5 attempts in all.  A lost
    ZEO connection: retried forever, pausing 5, 10, ... up to 60 seconds.
    Other errors: no retry.  Interruptions: 9 retries (10 attempts).
    """

    # A lost ZEO connection is also a transient transaction error: its own
    # rule must come first.
    internal_exceptions = (DISCONNECTED_RULE, TRANSACTION_RULE)
    transaction_exceptions = internal_exceptions
    max_interruptions = 9
    log_every = 5

    def __init__(self, job):
        self.parent = self.__parent__ = job
        self.data = BTrees.OOBTree.OOBTree()

    def updateData(self, data_cache):
        for key, value in data_cache.items():
            if key == 'first_active' and 'first_active' in self.data:
                continue
            self.data[key] = value

    def jobError(self, failure, data_cache):
        return self._process(failure, data_cache, self.internal_exceptions)

    def commitError(self, failure, data_cache):
        return self._process(failure, data_cache, self.transaction_exceptions)

    def _process(self, failure, data_cache, rules):
        for rule in rules:
            if failure.check(*rule.exceptions) is None:
                continue
            count = data_cache.get(rule.key, 0) + 1
            data_cache[rule.key] = count
            data_cache['last_' + rule.key] = failure
            if 'first_active' not in data_cache:
                data_cache['first_active'] = self.parent.active_start
            if rule.max_count is not None and count >= rule.max_count:
                trace_log.warning(
                    'Retry policy for %r is not retrying after %d counts of '
                    '%s occurrences', self.parent, count, rule.key)
                return False
            if count == 1 or not count % self.log_every:
                trace_log.warning(
                    'Retry policy for %r requests another attempt after %d '
                    'counts of %s occurrences', self.parent, count, rule.key)
            backoff = rule.backoff(count)
            if backoff > 0:
                utils.sleep(backoff)
            return True
        return False

    def interrupted(self):
        if 'first_active' not in self.data:
            self.data['first_active'] = self.parent.active_start
        count = self.data['interruptions'] = self.data.get('interruptions',
                                                           0) + 1
        if self.max_interruptions is None or count <= self.max_interruptions:
            if count == 1 or not count % self.log_every:
                trace_log.info(
                    'Retry policy for %r requests another attempt after %d '
                    'interrupts', self.parent, count)
            return True
        trace_log.info(
            'Retry policy for %r is not retrying after %d interrupts',
            self.parent, count)
        return False


class RetryCommonForever(RetryCommonFourTimes):
    """The default for callbacks and interrupt wrappers: they must finish.

    Transaction errors and lost connections are retried forever; so is any
    other error while committing, pausing 0, 1, 2, ... up to 60 seconds
    and logging CRITICAL (at the first and every fifth time).
    """

    internal_exceptions = (
        DISCONNECTED_RULE,
        _Rule(utils.TRANSACTION_ERRORS, 'transaction_error', None, 0, 0, 0))
    transaction_exceptions = internal_exceptions
    max_interruptions = None
    other_commit_initial_backoff = 0
    other_commit_incremental_backoff = 1
    other_commit_max_backoff = 60

    def commitError(self, failure, data_cache):
        if super().commitError(failure, data_cache):
            return True
        count = data_cache['other'] = data_cache.get('other', 0) + 1
        data_cache['last_other'] = failure
        if 'first_active' not in data_cache:
            data_cache['first_active'] = self.parent.active_start
        if count == 1 or not count % self.log_every:
            events_log.critical(
                'Retry policy for %r requests another attempt after %d '
                'counts of other commit errors:\n%s', self.parent, count,
                failure.getTraceback())
        backoff = min(self.other_commit_max_backoff,
                      self.other_commit_initial_backoff
                      + (count - 1) * self.other_commit_incremental_backoff)
        if backoff > 0:
            utils.sleep(backoff)
        return True


@zope.component.adapter(interfaces.IJob)
@zope.interface.implementer(interfaces.IRetryPolicy)
class NeverRetry(persistent.Persistent):
    """Never retry anything."""

    def __init__(self, job):
        self.parent = self.__parent__ = job

    def updateData(self, data_cache):
        pass

    def jobError(self, failure, data_cache):
        return False

    def commitError(self, failure, data_cache):
        return False

    def interrupted(self):
        return False


class RetryWithBackoff(RetryCommonFourTimes):
    """Retry application errors later, with exponential backoff.

    ``RetryWithBackoff(max_attempts=5, base=1, cap=300, jitter=True,
    exceptions=(Exception,))`` is a factory: pass it as a job's
    ``retry_policy_factory``.  When the callable raises one of
    ``exceptions``, the job goes back to its queue to run again after
    ``base * 2 ** (n - 1)`` seconds (at most ``cap``; with ``jitter``, a
    random time between half that and that), until ``max_attempts``
    attempts were made.  The worker thread is free meanwhile.  Transaction
    errors, lost connections and interruptions are treated as by
    ``RetryCommonFourTimes``.
    """

    def __init__(self, max_attempts=5, base=1.0, cap=300.0, jitter=True,
                 exceptions=(Exception,), job=None):
        if interfaces.IJob.providedBy(max_attempts):
            # The class itself used as a factory: default settings.
            job, max_attempts = max_attempts, 5
        if max_attempts < 1:
            raise ValueError('max_attempts must be at least 1')
        if base <= 0 or cap <= 0:
            raise ValueError('base and cap must be positive')
        self.max_attempts = max_attempts
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.exceptions = tuple(exceptions)
        self.parent = self.__parent__ = job
        self.data = BTrees.OOBTree.OOBTree()

    def __call__(self, job):
        """Used as a factory: a fresh policy with these settings for job."""
        return type(self)(self.max_attempts, self.base, self.cap,
                          self.jitter, self.exceptions, job)

    def delay(self, attempt):
        """Seconds to wait after failed attempt number ``attempt``."""
        delay = min(self.cap, self.base * 2 ** (attempt - 1))
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        return delay

    def jobError(self, failure, data_cache):
        retry = super().jobError(failure, data_cache)
        if retry or failure.check(*self.exceptions) is None:
            return retry
        attempts = self.data['attempts'] = self.data.get('attempts', 0) + 1
        if attempts >= self.max_attempts:
            trace_log.warning(
                'Retry policy for %r is not retrying after %d attempts',
                self.parent, attempts)
            return False
        delay = self.delay(attempts)
        trace_log.warning(
            'Retry policy for %r: attempt %d failed with %s; trying again '
            'in %.3f seconds', self.parent, attempts, failure.type_name,
            delay)
        return datetime.timedelta(seconds=delay)


def callback_retry_policy_factory(job):
    """The retry policy of a callback: the ``'callback'`` adapter, if any,
    else ``RetryCommonForever``."""
    policy = zope.component.queryAdapter(job, interfaces.IRetryPolicy,
                                         'callback')
    if policy is None:
        policy = RetryCommonForever(job)
    return policy
