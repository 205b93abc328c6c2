"""Agents claim jobs from a queue for a dispatcher and hold them meanwhile.

See ``docs/agent.rst``.
"""
import datetime
import heapq
import operator

import BTrees.LOBTree
import BTrees.Length
import persistent
import random
import zope.component
import zope.interface

from zasync import interfaces
from zasync import utils
from zasync._resolving import ResolvingMap
from zasync.job import check_timeout

__all__ = ['addMainAgentActivationHandler', 'Agent', 'check_period',
           'chooseFirst', 'CompletedCollection']


# --------------------------------------------------------------------------
# Completed jobs


@zope.interface.implementer(interfaces.ICompletedCollection)
class CompletedCollection(persistent.Persistent):
    """Recently completed jobs, newest first, pruned by age.

    Keys come from ``zasync.utils.dt_to_long`` (newer times get smaller
    keys), with the low 4 bits keeping jobs completed within the same
    microsecond apart.

    A job usually completes in the same transaction as its result, and
    jobs of one agent complete concurrently in several threads and
    processes.  A BTree insert can conflict with a concurrent one (when a
    bucket splits), and a conflict there would make the job run again.  So
    ``add`` only puts the job in a small conflict-resolving *inbox*; the
    dispatcher moves the inbox into the BTree now and then (``archive``),
    in transactions of its own, dropping jobs older than ``period`` as it
    goes.  Readers see both, merged, and never a job older than
    ``period``; ``len`` counts such jobs until they are archived away.
    """

    period = datetime.timedelta(days=7)
    #: ``add`` archives itself once the inbox holds this many jobs (a
    #: dispatcher archives long before)
    inbox_limit = 200
    __parent__ = None

    def __init__(self, period=None):
        if period is not None:
            self.period = period
        self._data = BTrees.LOBTree.LOBTree()
        self._length = BTrees.Length.Length()
        self._inbox = ResolvingMap()

    def add(self, job):
        now = utils.now()
        key = utils.dt_to_long(now) + 15
        waiting = {entry[0] for entry, _ in self._inbox.sorted_items()}
        while key in waiting or key in self._data:
            key -= 1
        job.key = key
        job.parent = self.__parent__
        # Concurrent adds cannot see each other and may pick the same key:
        # a random tie-breaker keeps their entries apart, so they merge.
        self._inbox.add((key, random.getrandbits(62)), job)
        if len(self._inbox) >= self.inbox_limit:
            self.archive(now)

    @property
    def waiting(self):
        """How many completed jobs wait in the inbox to be archived."""
        return len(self._inbox)

    def archive(self, now=None):
        """Move the inbox into the BTree and drop old jobs; return how many
        jobs were moved.  Best in a transaction of its own."""
        items = list(self._inbox.sorted_items())
        for entry, job in items:
            self._inbox.remove(entry)
            key = entry[0]
            while key in self._data:
                key -= 1
            if job.key != key:   # (rarely: do not store the job again)
                job.key = key
            self._data[key] = job
        if items:
            self._length.change(len(items))
        self.prune(now)
        return len(items)

    def older(self, before, after_key=None, limit=None):
        """``(key, job)`` of the archived jobs completed before
        ``before`` (an aware datetime), newest first, starting after the
        key ``after_key``, at most ``limit`` of them (the inbox is left
        out: ``archive`` first)."""
        low = utils.dt_to_long(utils.to_utc(before, 'before')) + 16
        if after_key is not None:
            low = max(low, after_key + 1)
        items = self._data.items(min=low)
        result = []
        for key, job in items:
            if limit is not None and len(result) >= limit:
                break
            result.append((key, job))
        return result

    def discard(self, key):
        """Forget the archived job stored under ``key`` (see ``older``);
        return it (``KeyError`` if there is none)."""
        job = self._data.pop(key)
        self._length.change(-1)
        return job

    def prune(self, now=None):
        """Drop jobs completed more than ``period`` before ``now``."""
        if now is None:
            now = utils.now()
        cutoff = utils.dt_to_long(now - self.period) + 15
        old = list(self._data.keys(min=cutoff, excludemin=True))
        for key in old:
            del self._data[key]
        if old:
            self._length.change(-len(old))
        return len(old)

    def _range(self, start=None, stop=None):
        low = None if start is None else utils.dt_to_long(start)
        high = None if stop is None else utils.dt_to_long(stop) + 15
        # Jobs past their period are never shown, archived or not.
        cutoff = utils.dt_to_long(utils.now() - self.period) + 15
        high = cutoff if high is None else min(high, cutoff)
        recent = [(entry[0], job)
                  for entry, job in self._inbox.sorted_items()
                  if (low is None or entry[0] >= low)
                  and (high is None or entry[0] <= high)]
        archived = self._data.items(min=low, max=high)
        for key, job in heapq.merge(recent, archived,
                                    key=operator.itemgetter(0)):
            yield job

    def iter(self, start=None, stop=None):
        """Jobs from ``start`` (the newer bound) back to ``stop``."""
        return self._range(start, stop)

    def __iter__(self):
        return self._range()

    def __len__(self):
        return self._length() + len(self._inbox)

    def __bool__(self):
        return len(self) > 0

    def first(self, start=None):
        """The newest job, or the newest at or older than ``start``."""
        for job in self._range(start, None):
            return job
        raise ValueError('no job')

    def last(self, stop=None):
        """The oldest job, or the oldest at or newer than ``stop``."""
        job = None
        for job in self._range(None, stop):
            pass
        if job is None:
            raise ValueError('no job')
        return job


def check_period(value):
    """How long completed jobs are kept: None (the default, a week), a
    ``timedelta`` or seconds, more than 0; ``ValueError`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, datetime.timedelta):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError('completed_period is a timedelta or seconds, '
                             'not %r' % (value,))
        try:
            value = datetime.timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ValueError('completed_period %r is out of range'
                             % (value,)) from None
    if value <= datetime.timedelta(0):
        raise ValueError('completed_period must be more than 0, not %r'
                         % (value,))
    return value


# --------------------------------------------------------------------------
# The agent


@zope.interface.implementer(interfaces.IAgent)
class Agent(utils.Base):
    """Claims up to ``size`` jobs at a time, chosen by ``filter(job)``
    (side-effect free) or by ``chooser(agent)`` (which claims itself).

    The held jobs live in a conflict-resolving map: claiming a job and
    completing another one in different transactions merge.

    ``completed_period`` (a ``timedelta`` or seconds; default a week) is
    how long ``completed`` keeps the jobs completed here (its ``period``,
    which may be changed later too).
    """

    name = None
    _chooser = None
    _filter = None
    #: False: every job of this agent commits in a transaction of its own,
    #: never in a group (see ``zasync.grouping``)
    group_commit = True

    #: the default ``timeout`` of the jobs this agent runs (seconds, or
    #: None: no limit); a job's own ``timeout`` comes first
    timeout = None

    def __init__(self, chooser=None, filter=None, size=3, timeout=None,
                 completed_period=None):
        if chooser is not None and filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self._data = ResolvingMap()
        self.size = size
        if timeout is not None:
            self.timeout = check_timeout(timeout)
        self.filter = filter
        self.chooser = chooser
        self.completed = CompletedCollection(
            check_period(completed_period))
        self.completed.__parent__ = self

    def __repr__(self):
        return '<%s %r (%d/%d jobs)>' % (
            type(self).__name__, self.name, len(self), self.size)

    @property
    def chooser(self):
        return self._chooser

    @chooser.setter
    def chooser(self, value):
        if value is not None and self._filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self._chooser = value
        if value is None:
            zope.interface.alsoProvides(self, interfaces.IFilterAgent)
        else:
            zope.interface.noLongerProvides(self, interfaces.IFilterAgent)

    @property
    def filter(self):
        return self._filter

    @filter.setter
    def filter(self, value):
        if value is not None and self._chooser is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self._filter = value

    @property
    def queue(self):
        record = self.parent
        return None if record is None else record.parent

    # -- sequence API ------------------------------------------------------

    def _items(self):
        return self._data.sorted_items()

    def __len__(self):
        return len(self._data)

    def __bool__(self):
        return bool(self._data)

    def __iter__(self):
        return iter([job for key, job in self._items()])

    def __getitem__(self, index):
        return self._items()[index][1]

    def __delitem__(self, index):
        self._data.remove(self._items()[index][0])

    def index(self, job):
        for i, (key, candidate) in enumerate(self._items()):
            if candidate is job:
                return i
        raise ValueError('job not in agent', job)

    def remove(self, job):
        """Remove ``job`` (left with its parent: the caller re-homes it)."""
        del self[self.index(job)]

    def pull(self, index=0):
        """Remove and return the job at ``index``, without parent."""
        key, job = self._items()[index]
        self._data.remove(key)
        job.parent = None
        return job

    def _append(self, job):
        items = self._items()
        seq = items[-1][0][0] + 1 if items else 0
        self._data.add((seq, random.getrandbits(62)), job)

    # -- claiming ----------------------------------------------------------

    def claimJob(self, limit=None, skip=0, exclude=None):
        """Claim a job if the dispatcher is alive and there is room: fewer
        than ``size`` jobs held (or ``limit``: a dispatcher that prefetches
        lets an agent hold more than it runs at once).  ``skip`` and
        ``exclude``: see ``Queue.claim`` (a chooser is not told; only an
        agent that ``excludes`` honours ``exclude``)."""
        record = self.parent
        if record is None or not record.activated or record.dead:
            return None
        if len(self) >= (self.size if limit is None else limit):
            return None
        if exclude is not None and self.excludes:
            job = self.queue.claim(self._filter, skip=skip, exclude=exclude)
        else:
            job = self._choose(skip)
        if job is not None:
            job.parent = self
            self._append(job)
        return job

    @property
    def excludes(self):
        """Whether ``claimJob`` honours ``exclude``: the agent claims with
        its filter (no chooser, and ``_choose`` is not overridden)."""
        return self._chooser is None and type(self)._choose is Agent._choose

    def _choose(self, skip=0):
        """The subclass hook: claim (and return) a job, or None."""
        if self._chooser is not None:
            return self._chooser(self)
        return self.queue.claim(self._filter, skip=skip)

    def jobCompleted(self, job):
        """Move ``job`` from the held jobs to ``completed``."""
        self.remove(job)
        self.completed.add(job)


@zope.component.adapter(interfaces.IDispatcherActivated)
def addMainAgentActivationHandler(event):
    """On ``IDispatcherActivated``: give the dispatcher a ``'main'`` agent
    if it has none."""
    agents = event.object
    if 'main' not in agents:
        agents['main'] = Agent()


def chooseFirst(agent):
    """A chooser claiming the first job the agent's queue offers (what an
    agent without chooser or filter does; zc.async's name, kept so that
    ``Agent(chooser=chooseFirst)`` and stored references to it work)."""
    return agent.queue.claim()
