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
"""
import argparse
import datetime
import logging
import os
import signal
import sys
import time
import uuid as uuid_module

import transaction
import ZODB.POSException
import zope.component
import zope.component.event  # noqa: F401  (zope.event -> handlers)
import zope.event
import zope.processlifetime

from zasync import dispatcher as dispatcher_module
from zasync import instanceuuid
from zasync import interfaces
from zasync.agent import Agent
from zasync.cli_commands import UsageError
from zasync.progress import Bar

log = logging.getLogger('zasync.worker')

DEFAULT_AGENT = ('main', 3)
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_GRACE = 30.0

LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s'



# --------------------------------------------------------------------------
# Argument parsing


def agent_spec(text):
    """``NAME:SIZE`` (or ``NAME``, size 3) -> ``(name, size)``."""
    name, sep, size = text.rpartition(':')
    if not sep:
        name, size = text, str(DEFAULT_AGENT[1])
    if not name:
        raise argparse.ArgumentTypeError(
            'agent %r: expected NAME:SIZE, e.g. main:3' % (text,))
    try:
        size = int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'agent %r: the size must be a whole number' % (text,))
    if size < 0:
        raise argparse.ArgumentTypeError(
            'agent %r: the size must not be negative' % (text,))
    return name, size


def seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number of seconds'
                                         % (text,))
    if value < 0:
        raise argparse.ArgumentTypeError('%r: seconds must not be negative'
                                         % (text,))
    return value


def positive_seconds(text):
    value = seconds(text)
    if not value:
        raise argparse.ArgumentTypeError('%r: must be more than 0 seconds'
                                         % (text,))
    return value


def add_database_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        '--zodb', metavar='URI',
        help='the database, as a zodburi URI: file:///path/Data.fs, '
             'zeo://host:port, postgres://user@host:port/db?driver=psycopg2 '
             '(RelStorage), ...')
    group.add_argument(
        '--zope-conf', metavar='FILE',
        help='a zope.conf: its databases, site definition (ZCML), '
             'product-config and logging')


def configure_parser(parser):
    """The options of ``zasync worker``."""
    add_database_arguments(parser)
    parser.add_argument(
        '--agent', metavar='NAME:SIZE', action='append', type=agent_spec,
        help='an agent of this worker with SIZE worker threads '
             '(repeatable; default main:3)')
    parser.add_argument(
        '--poll-interval', type=positive_seconds,
        default=DEFAULT_POLL_INTERVAL, metavar='SECONDS',
        help='seconds between polls (housekeeping, pings, scheduled jobs; '
             'new jobs wake the worker at once); default %(default)s')
    parser.add_argument(
        '--ping-interval', type=positive_seconds, metavar='SECONDS',
        help='how often this worker records that it is alive (default: the '
             'record\'s, 30)')
    parser.add_argument(
        '--death-interval', type=positive_seconds, metavar='SECONDS',
        help='after how long without a ping siblings consider this worker '
             'dead and requeue its jobs (default: the record\'s, 60); make '
             'it several poll intervals longer than the ping interval')
    parser.add_argument(
        '--uuid-file', metavar='FILE',
        help='the file holding this worker\'s instance UUID (created with a '
             'new UUID if missing); default: $ZASYNC_UUID, else ./uuid.txt')
    parser.add_argument(
        '--grace', type=seconds, default=DEFAULT_GRACE, metavar='SECONDS',
        help='on SIGTERM/SIGINT, how long running jobs may take to finish '
             'before they are requeued as interrupted; default %(default)s')
    parser.add_argument(
        '--log-level', default='INFO',
        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
        help='level of the log on stderr; default %(default)s')
    parser.add_argument(
        '--trace', action='store_true',
        help='also log every job start and completion (zasync.trace)')
    return parser


# --------------------------------------------------------------------------
# Databases and UUIDs


def open_uri(uri, read_only=False, must_exist=False, connect_timeout=None):
    """Open the database of a zodburi URI; ``UsageError`` for a bad one."""
    import zodburi
    import ZODB
    if '://' not in uri:
        raise UsageError('%r is not a database URI (expected e.g. '
                         'file:///path/Data.fs or zeo://host:port)' % (uri,))
    given = uri
    scheme = uri.split('://', 1)[0]
    if scheme == 'file':
        path = uri.split('://', 1)[1].split('?', 1)[0]
        if must_exist and not os.path.exists(path):
            raise UsageError('no database at %s' % (path,))
        if read_only:
            # (A read-only FileStorage takes no lock: a worker may hold it.)
            uri = _with_query(uri, 'read_only', 1)
    elif scheme == 'zeo':
        if connect_timeout is not None:
            uri = _with_query(uri, 'wait_timeout',
                              max(1, int(round(connect_timeout))))
        if read_only:
            uri = _with_query(uri, 'read_only', 1)
    try:
        factory, dbkw = zodburi.resolve_uri(uri)
    except KeyError:
        raise UsageError('unknown database URI scheme %r in %r' % (
            scheme, given))
    except Exception as e:
        raise UsageError('bad database URI %r: %s' % (given, _one_line(e)))
    try:
        storage = factory()
    except Exception as e:
        raise UsageError('cannot open %s: %s' % (given, _one_line(e)))
    forget_prefetched_oids_on_reconnect(storage)
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception as e:
        storage.close()
        raise UsageError('cannot open %s: %s' % (given, _one_line(e)))


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


def _with_query(uri, name, value):
    if (name + '=') in uri:
        return uri
    return '%s%s%s=%s' % (uri, '&' if '?' in uri else '?', name, value)


def _one_line(error):
    text = str(error).strip().splitlines()
    text = text[0] if text else ''
    return '%s%s' % (type(error).__name__, (': ' + text) if text else '')


def open_zope_conf(path):
    """Load a zope.conf the way a Zope server does (logging, product-config,
    path, site ZCML), open its databases and announce them
    (``IDatabaseOpened``).  Return the main database."""
    import zope.app.appsetup.appsetup
    import zope.app.appsetup.product
    from zasync import runner
    if not os.path.exists(path):
        raise UsageError('no such configuration file: %s' % (path,))
    path = os.path.abspath(path)
    try:
        options = runner.load_options(path)
    except Exception as e:
        raise UsageError('%s: %s' % (path, _one_line(e)))
    for factory in [options.eventlog] + list(options.loggers or ()):
        if factory is not None:
            factory()
    zope.app.appsetup.product.setProductConfigurations(
        options.product_config)
    for entry in reversed(options.path or ()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    site_zcml = os.path.join(os.path.dirname(path), options.site_definition)
    if os.path.exists(site_zcml):
        runner._load_zcml(site_zcml, ('devmode',) if options.devmode else ())
    dbs, _ = zope.app.appsetup.appsetup.multi_database(options.databases)
    db = dbs[0]
    zope.event.notify(zope.processlifetime.DatabaseOpened(db))
    return db


def read_uuid_file(path, create=True):
    """The UUID in the first line of ``path``; a new one is written there
    (with an explanation) if the file does not exist."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        with open(path) as f:
            first = f.readline().strip()
        try:
            return uuid_module.UUID(first)
        except ValueError:
            raise UsageError('%s does not start with a UUID: %r'
                             % (path, first))
    if not create:
        raise UsageError('no UUID file %s' % (path,))
    value = uuid_module.uuid1()
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    with open(path, 'w') as f:
        f.write(str(value) + '\n' + instanceuuid.EXPLANATION)
    return value


def install_queues(db, names=('',), attempts=10):
    """Make sure the database has the ``Queues`` and the queues ``names``
    (several workers starting at once: conflicts are retried)."""
    from zasync.queue import Queue
    from zasync.queue import Queues
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in range(attempts):
            try:
                tm.begin()
                root = conn.root()
                queues = root.get(interfaces.KEY)
                if queues is None:
                    queues = root[interfaces.KEY] = Queues()
                for name in names:
                    if name not in queues:
                        queues[name] = Queue()
                tm.commit()
                return
            except ZODB.POSException.ConflictError:
                tm.abort()
                if attempt == attempts - 1:
                    raise
    finally:
        tm.abort()
        conn.close()


# --------------------------------------------------------------------------
# The dispatcher of a worker


class WorkerDispatcher(dispatcher_module.Dispatcher):
    """A dispatcher that can stop claiming while its jobs finish."""

    draining = False

    def _claim(self, conn, queue_name, agent_name, pool):
        if self.draining:
            return []
        return super()._claim(conn, queue_name, agent_name, pool)

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
    activation) and the ping / death intervals."""

    def __init__(self, uuid, agents, ping_interval=None, death_interval=None):
        self.uuid = uuid
        self.agents = list(agents)
        self.ping_interval = ping_interval
        self.death_interval = death_interval

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


# --------------------------------------------------------------------------
# The worker


class Worker:
    """A dispatcher for ``db`` run by a Twisted reactor in this thread,
    stopped gracefully by ``stop()`` (SIGTERM, SIGINT)."""

    def __init__(self, db, uuid, agents=(DEFAULT_AGENT,),
                 poll_interval=DEFAULT_POLL_INTERVAL, ping_interval=None,
                 death_interval=None, grace=DEFAULT_GRACE, reactor=None):
        self.db = db
        self.uuid = uuid
        self.agents = list(agents)
        self.poll_interval = poll_interval
        self.grace = grace
        self.settings = RecordSettings(uuid, self.agents, ping_interval,
                                       death_interval)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.dispatcher = None
        self.stopping = None   # monotonic deadline once stopping
        self.stop_signal = None
        self.bar = Bar(sys.stderr)   # the grace period, on a terminal

    def run(self, install_signal_handlers=True):
        """Run until stopped; return the exit status."""
        gsm = zope.component.getGlobalSiteManager()
        gsm.registerUtility(self.uuid, interfaces.IUUID)
        gsm.registerHandler(self.settings,
                            [interfaces.IDispatcherActivated])
        old_handlers = {}
        try:
            install_queues(self.db)
            self.dispatcher = WorkerDispatcher(
                self.db, self.reactor, poll_interval=self.poll_interval,
                uuid=self.uuid)
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    old_handlers[signum] = signal.signal(
                        signum, self._signalled)
            log.info('worker %s starting (pid %d): agents %s, poll interval '
                     '%s s', self.uuid, os.getpid(),
                     ', '.join('%s:%d' % agent for agent in self.agents),
                     self.poll_interval)
            self.dispatcher.activate()
            self.reactor.callWhenRunning(self._watch_first_poll)
            self.reactor.run(installSignalHandlers=False)
        finally:
            for signum, handler in old_handlers.items():
                # (A handler installed since then stays.)
                if signal.getsignal(signum) == self._signalled:
                    signal.signal(signum, handler)
            gsm.unregisterHandler(self.settings,
                                  [interfaces.IDispatcherActivated])
            gsm.unregisterUtility(self.uuid, interfaces.IUUID)
            dispatcher = self.dispatcher
            if dispatcher is not None:
                if dispatcher.activated:
                    dispatcher.deactivate()
                if dispatcher_module.get(self.uuid) is dispatcher:
                    dispatcher_module.pop(self.uuid)
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
            self.bar.show(self.grace - left, self.grace,
                          '%d job(s) running, %.0f s of grace left'
                          % (running, left))
            self.reactor.callLater(0.05, self._check_drained)

    def _finish(self):
        self.bar.end()
        if self.reactor.running:
            self.reactor.stop()   # triggers the dispatcher's deactivation


# --------------------------------------------------------------------------
# The command


def configure_logging(level='INFO', trace=False, stream=None,
                      handler=True):
    """Log to stderr at ``level`` (``handler=False``: only set the
    levels, e.g. when a zope.conf's eventlog has the handlers)."""
    root = logging.getLogger()
    if handler:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(getattr(logging, level))
    if not trace:
        logging.getLogger('zasync.trace').setLevel(
            max(logging.WARNING, getattr(logging, level)))
    return handler


def run(args):
    """Run ``zasync worker`` with parsed ``args``; return the exit
    status."""
    if args.zodb is None and args.zope_conf is None:
        raise UsageError('give the database: --zodb URI or --zope-conf FILE')
    if args.uuid_file:
        uuid = read_uuid_file(args.uuid_file)
    else:
        uuid = instanceuuid.getUUID()
    # With a zope.conf, its eventlog says where the log goes.
    configure_logging(args.log_level, args.trace,
                      handler=not args.zope_conf)
    if args.zope_conf:
        db = open_zope_conf(args.zope_conf)
        if dispatcher_module.get(uuid) is not None:
            raise UsageError(
                '%s already starts a dispatcher for %s (zasync:dispatcher); '
                'a worker process needs a configuration without one'
                % (args.zope_conf, uuid))
    else:
        db = open_uri(args.zodb)
    agents = args.agent or [DEFAULT_AGENT]
    names = [name for name, size in agents]
    if len(set(names)) != len(names):
        db.close()
        raise UsageError('agent names must differ: %s' % ', '.join(names))
    worker = Worker(db, uuid, agents, poll_interval=args.poll_interval,
                    ping_interval=args.ping_interval,
                    death_interval=args.death_interval, grace=args.grace)
    status = worker.run()
    alive = [thread for pool in worker.dispatcher.dead_pools
             for thread in pool.join(1)]
    if alive:
        # Jobs beyond the grace period: their records went back to the
        # queue; do not wait for (or tear the database out from under)
        # their threads.
        log.info('worker %s stopped, leaving %d job thread(s) behind',
                 uuid, len(alive))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    db.close()
    log.info('worker %s stopped', uuid)
    return status


def main(argv=None):
    """``zasync-worker`` / ``python -m zasync.worker``."""
    parser = configure_parser(argparse.ArgumentParser(
        prog='zasync worker', description=__doc__.split('\n\n')[0]))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print('zasync worker: error: %s' % (e,), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
