"""``zasync worker``: a dispatcher process of its own.

A worker opens one database -- a zodburi URI (``file://``, ``zeo://``,
RelStorage's ``postgres://``) or the databases of a zope.conf -- and runs a
dispatcher for it with the agents given on the command line, until it is
told to stop:

    zasync worker --zodb zeo://db.example.com:8100 --agent main:3 \\
        --uuid-file var/worker1.uuid

SIGTERM (or SIGINT) stops it gracefully: it claims no more jobs, gives the
running ones ``--grace`` seconds to finish, then deactivates its dispatcher
-- jobs still running go back to the queue as *interrupted* (their retry
policy decides), claimed jobs that did not start go back as they were --
and exits with status 0.  A second signal ends the grace period at once.

Many workers may serve the same database, on one machine or many; each
needs its own instance UUID (``--uuid-file``).  A worker that dies without
deactivating (SIGKILL, power loss) is found dead by a sibling once its
record has not been pinged for ``--death-interval`` seconds; the sibling
then requeues its jobs.  A worker restarted with the same UUID does the
same for its predecessor's record.  See ``docs/catastrophes.rst`` and
``docs/deployment.rst``.

This module is the engine side (``Worker``); ``zasync.cli.worker`` parses
the command line, opens the database and reports errors.
"""
import datetime
import logging
import os
import signal
import time

import zope.component
import zope.component.event  # noqa: F401  (zope.event -> handlers)

from zasync import dispatcher as dispatcher_module
from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.agent import check_period
from zasync.queue import install_queues

__all__ = ['DEFAULT_AGENT', 'DEFAULT_GRACE', 'DEFAULT_POLL_INTERVAL',
           'RecordSettings', 'Worker', 'WorkerDispatcher',
           'forget_prefetched_oids_on_reconnect']

log = logging.getLogger('zasync.worker')

DEFAULT_AGENT = ('main', 3)
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_GRACE = 30.0
#: jobs a worker thread may commit in one transaction (group commits)
DEFAULT_GROUP_COMMIT = 50


def _no_progress(done, total, text):
    pass


def forget_prefetched_oids_on_reconnect(storage):
    """Make a ZEO ``ClientStorage`` drop the oids it fetched in advance
    whenever it (re)connects.

    A ZEO client asks the server for new oids 100 at a time.  A restarted
    server (FileStorage) only knows the oids that were *committed*, and
    hands the others out again -- to another client, while this one still
    holds them: two new objects would get the same oid (their commits
    then fail with ``ValueError: A different object already has the same
    oid`` or a conflict).  Return True if ``storage`` is a ZEO client.
    """
    oids = getattr(storage, '_oids', None)
    notify = getattr(storage, 'notify_connected', None)
    if not isinstance(oids, list) or notify is None:
        return False

    def notify_connected(conn, info):
        del oids[:]
        return notify(conn, info)

    storage.notify_connected = notify_connected
    return True


# --------------------------------------------------------------------------
# The dispatcher of a worker


class WorkerDispatcher(dispatcher_module.Dispatcher):
    """A dispatcher that can stop claiming while its jobs finish."""

    draining = False

    def claimJobs(self, conn, queue_name, agent_name, pool, wait=True,
                  run_first=False):
        if self.draining:
            return []
        return super().claimJobs(conn, queue_name, agent_name, pool, wait,
                                 run_first)

    def drain(self):
        """Claim nothing more; forget claimed jobs that have not started
        (deactivation puts them back in the queue).  Return how many were
        forgotten."""
        self.draining = True
        return sum(pool.forgetQueuedJobs()
                   for pools in list(self.queues.values())
                   for pool in list(pools.values()))

    def outstanding(self):
        """How many claimed jobs worker threads have taken and not
        finished."""
        return sum(pool.outstanding
                   for pools in list(self.queues.values())
                   for pool in list(pools.values()))


class RecordSettings:
    """On activation of our record in a queue: the agents of the command
    line (added, resized; others removed -- they are empty right after
    activation), their default job timeout, how long they keep completed
    jobs (``keep_completed``, seconds; None: as they are), and the ping /
    death intervals."""

    def __init__(self, uuid, agents, ping_interval=None, death_interval=None,
                 job_timeout=None, keep_completed=None):
        self.uuid = uuid
        self.agents = list(agents)
        self.ping_interval = ping_interval
        self.death_interval = death_interval
        self.job_timeout = job_timeout
        self.keep_completed = check_period(keep_completed)

    def __call__(self, event):
        da = event.object
        if da.UUID != self.uuid:
            return
        queue_name = getattr(da.parent, 'name', None)
        for attribute, value in (('ping_interval', self.ping_interval),
                                 ('ping_death_interval',
                                  self.death_interval)):
            if value is not None:
                value = datetime.timedelta(seconds=value)
                if getattr(da, attribute) != value:
                    setattr(da, attribute, value)
        wanted = dict(self.agents)
        for name in list(da):
            if name not in wanted and not len(da[name]):
                da.pop(name)
                log.info('agent %r removed from queue %r', name, queue_name)
        for name, size in self.agents:
            agent = da.get(name)
            if agent is None:
                da[name] = Agent(size=size)
                log.info('agent %r (size %d) added to queue %r',
                         name, size, queue_name)
            elif agent.size != size:
                agent.size = size
                log.info('agent %r of queue %r resized to %d',
                         name, queue_name, size)
            agent = da[name]
            if agent.timeout != self.job_timeout:
                agent.timeout = self.job_timeout
            keep = self.keep_completed
            if keep is not None and agent.completed.period != keep:
                agent.completed.period = keep
                log.info('agent %r of queue %r keeps completed jobs for %s',
                         name, queue_name, keep)


# --------------------------------------------------------------------------
# The worker


class Worker:
    """A dispatcher for ``db`` run by a Twisted reactor in this thread,
    stopped gracefully by ``stop()`` (SIGTERM, SIGINT).

    ``progress(done, total, text)``, if given, is told how the grace period
    goes (seconds gone of the grace), and ``text`` None when it ends: the
    command draws a progress bar with it.  ``job_timeout`` (seconds) is
    the default ``timeout`` of the jobs its agents run;
    ``keep_completed`` (seconds or a ``timedelta``) how long they keep
    completed jobs; ``group_commit`` how many short jobs a worker thread
    may commit in one transaction (``Dispatcher.group_size``; 1: each job
    alone).
    """

    def __init__(self, db, uuid, agents=(DEFAULT_AGENT,),
                 poll_interval=DEFAULT_POLL_INTERVAL, ping_interval=None,
                 death_interval=None, grace=DEFAULT_GRACE, reactor=None,
                 progress=None, job_timeout=None, keep_completed=None,
                 group_commit=DEFAULT_GROUP_COMMIT):
        if (isinstance(group_commit, bool) or not isinstance(group_commit, int)
                or group_commit < 1):
            raise ValueError('group_commit must be a whole number of jobs, '
                             '1 or more, not %r' % (group_commit,))
        self.group_commit = group_commit
        self.db = db
        self.uuid = uuid
        self.agents = list(agents)
        self.poll_interval = poll_interval
        self.grace = grace
        self.settings = RecordSettings(uuid, self.agents, ping_interval,
                                       death_interval, job_timeout,
                                       keep_completed)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.dispatcher = None
        self.stopping = None   # monotonic deadline once stopping
        self.stop_signal = None
        self.progress = progress or _no_progress

    def run(self, install_signal_handlers=True):
        """Run until stopped; return the exit status."""
        gsm = zope.component.getGlobalSiteManager()
        gsm.registerUtility(self.uuid, interfaces.IUUID)
        gsm.registerHandler(self.settings,
                            [interfaces.IDispatcherActivated])
        handlers = utils.SignalHandlers()
        try:
            install_queues(self.db)
            self.dispatcher = WorkerDispatcher(
                self.db, self.reactor, poll_interval=self.poll_interval,
                uuid=self.uuid)
            self.dispatcher.group_size = self.group_commit
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    handlers.install(signum, self._signalled)
            log.info('worker %s starting (pid %d): agents %s, poll interval '
                     '%s s', self.uuid, os.getpid(),
                     ', '.join('%s:%d' % agent for agent in self.agents),
                     self.poll_interval)
            self.dispatcher.activate()
            self.reactor.callWhenRunning(self._watch_first_poll)
            self.reactor.run(installSignalHandlers=False)
        finally:
            handlers.restore()
            gsm.unregisterHandler(self.settings,
                                  [interfaces.IDispatcherActivated])
            gsm.unregisterUtility(self.uuid, interfaces.IUUID)
            if self.dispatcher is not None:
                # Deactivated and unregistered; its job threads are not
                # waited for (``self.dispatcher.join``).
                self.dispatcher.shutdown(timeout=0)
        return 0

    def _watch_first_poll(self):
        if self.dispatcher.polls:
            log.info('worker %s running', self.uuid)
        elif self.dispatcher.activated and self.stopping is None:
            self.reactor.callLater(0.05, self._watch_first_poll)

    def _signalled(self, signum, frame):
        # In a signal handler: only hand the work to the reactor.
        self.reactor.callFromThread(self.stop, signum)

    def stop(self, signum=None):
        """Stop claiming, give running jobs the grace period, then stop the
        reactor (which deactivates the dispatcher).  Called again while
        waiting, stop at once."""
        name = signal.Signals(signum).name if signum else 'stop request'
        if self.stopping is not None:
            log.warning('%s again: not waiting for running jobs any longer',
                        name)
            self._finish()
            return
        self.stop_signal = signum
        self.stopping = time.monotonic() + self.grace
        forgotten = self.dispatcher.drain()
        running = self.dispatcher.outstanding()
        log.info('%s: claiming no more jobs; %d running job(s) get %s s to '
                 'finish%s', name, running, self.grace,
                 ('; %d claimed job(s) that had not started go back to the '
                  'queue' % forgotten) if forgotten else '')
        self._check_drained()

    def _check_drained(self):
        if self.stopping is None or not self.reactor.running:
            return
        running = self.dispatcher.outstanding()
        if not running:
            log.info('no job running: stopping')
            self._finish()
        elif time.monotonic() >= self.stopping:
            log.warning('grace period over: %d job(s) still running go back '
                        'to the queue as interrupted', running)
            self._finish()
        else:
            left = self.stopping - time.monotonic()
            self.progress(self.grace - left, self.grace,
                          '%d job(s) running, %.0f s of grace left'
                          % (running, left))
            self.reactor.callLater(0.05, self._check_drained)

    def _finish(self):
        self.progress(self.grace, self.grace, None)
        if self.reactor.running:
            self.reactor.stop()   # triggers the dispatcher's deactivation
