"""``zasync demo``: a batch of sample jobs run by an in-process dispatcher.

The database (a FileStorage) and the instance UUID live in ``var/``; they
stay there afterwards, for ``zasync status`` / ``jobs`` to inspect.
"""
import datetime
import os
import sys
import threading
import time

import transaction
import zope.component

from zasync import dispatcher as dispatcher_module
from zasync import instanceuuid
from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.cli.common import UsageError
from zasync.cli.output import Bar
from zasync.failure import Failure
from zasync.job import Job
from zasync.job import RetryWithBackoff
from zasync.queue import install_queues

__all__ = ['add_commands', 'run']

# -- the sample jobs (module level, so that jobs can refer to them) ---------

_attempts = {}   # in this process: attempts per job name


def square(i):
    return i * i


def long_task(steps=20, pause=0.1):
    """Work for a while, telling how far it got (a live annotation)."""
    from zasync import local
    for step in range(1, steps + 1):
        time.sleep(pause)
        local.setLiveAnnotation('progress', step * 100 // steps)
    return 'processed %d steps' % steps


def flaky(name):
    """Fail the first time, then succeed (its retry policy retries)."""
    _attempts[name] = _attempts.get(name, 0) + 1
    if _attempts[name] < 2:
        raise ConnectionError('the service is not ready yet')
    return 'worked at attempt %d' % _attempts[name]


def doomed(name):
    """Fail every time: retried, then recorded as a failure."""
    _attempts[name] = _attempts.get(name, 0) + 1
    answer = 41
    raise ValueError('the answer is not %d' % answer)


def total(numbers):
    return sum(numbers)


def announce(result):
    """The callback of ``total``: gets its result."""
    return 'the total is %s' % result


def scheduled_hello():
    return 'hello from the future'


# -- running the demo -------------------------------------------------------

FAST_JOBS = 20
SCHEDULE_AFTER = 3   # seconds


def run(args):
    import ZODB
    import ZODB.FileStorage
    import twisted.internet.selectreactor

    out = sys.stdout
    var = os.path.abspath(args.var)
    os.makedirs(var, exist_ok=True)
    os.environ.setdefault(instanceuuid.key, os.path.join(var, 'uuid.txt'))
    # The logs go to var/zasync.log, not to the terminal.
    import logging
    handler = logging.FileHandler(os.path.join(var, 'zasync.log'))
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(name)s %(levelname)s %(message)s'))
    zasync_log = logging.getLogger('zasync')
    zasync_log.addHandler(handler)
    zasync_log.setLevel(logging.INFO)
    zasync_log.propagate = False
    uuid = instanceuuid.getUUID()
    zope.component.provideUtility(uuid, interfaces.IUUID)
    path = os.path.join(var, 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    install_queues(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    reactor = twisted.internet.selectreactor.SelectReactor()
    dispatcher = None
    try:
        queue = conn.root()[interfaces.KEY]['']

        dispatcher = dispatcher_module.Dispatcher(
            db, reactor, poll_interval=args.poll_interval)

        def serve():
            dispatcher.activate()
            reactor.run(installSignalHandlers=False)
        dispatcher.thread = threading.Thread(
            target=serve, daemon=True, name='zasync demo reactor')
        dispatcher.thread.start()

        def activated():
            tm.begin()
            record = queue.dispatchers.get(uuid)
            return record if record is not None and record.activated else None
        record = utils.wait_for(activated, args.timeout)
        if record is None:
            raise UsageError('the dispatcher did not activate (another '
                             'process using %s?)' % path)
        if 'main' not in record:
            record['main'] = Agent(size=args.workers)
        record['main'].size = args.workers

        began = time.perf_counter()
        now = utils.now()
        fast = [queue.put(Job(square, i)) for i in range(FAST_JOBS)]
        long_job = queue.put(Job(long_task))
        flaky_job = queue.put(
            Job(flaky, 'flaky'),
            retry_policy_factory=RetryWithBackoff(
                max_attempts=3, base=0.2, jitter=False))
        doomed_job = queue.put(
            Job(doomed, 'doomed'),
            retry_policy_factory=RetryWithBackoff(
                max_attempts=2, base=0.2, jitter=False))
        total_job = queue.put(Job(total, list(range(1, 11))))
        callback = total_job.addCallback(Job(announce))
        later = queue.put(Job(scheduled_hello), begin_after=now
                          + datetime.timedelta(seconds=SCHEDULE_AFTER))
        jobs = fast + [long_job, flaky_job, doomed_job, total_job, later]
        tm.commit()
        out.write('zasync demo: %d jobs queued in %s (dispatcher %s, %d '
                  'worker threads)\n' % (len(jobs), path, uuid, args.workers))
        out.flush()

        bar = Bar(sys.stderr)
        deadline = time.monotonic() + args.timeout
        while True:
            tm.begin()
            done = sum(1 for job in jobs
                       if job.status == interfaces.COMPLETED)
            progress = long_job.annotations.get('progress')
            note = '' if progress is None else '(long job %d%%)' % (
                100 if long_job.status == interfaces.COMPLETED
                else progress)
            bar.show(done, len(jobs), '%d/%d jobs %s' % (
                done, len(jobs), note))
            if done == len(jobs):
                break
            if time.monotonic() > deadline:
                bar.end()
                out.write('timed out after %s seconds: %d of %d jobs done\n'
                          % (args.timeout, done, len(jobs)))
                return 1
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        bar.end()

        failures = [job for job in jobs if isinstance(job.result, Failure)]
        out.write('Results:\n')
        out.write('  square(0..%d)     %d jobs, sum of results %d\n' % (
            FAST_JOBS - 1, FAST_JOBS, sum(job.result for job in fast)))
        out.write('  long_task         %r (progress reported live)\n'
                  % (long_job.result,))
        out.write('  flaky             %r (failed once, then retried)\n'
                  % (flaky_job.result,))
        out.write('  total + callback  %r -> callback: %r\n'
                  % (total_job.result, callback.result))
        delay = (later.active_start - later.begin_after).total_seconds()
        out.write('  scheduled_hello   %r (scheduled %d s ahead, started '
                  '%.1f s after it was due)\n'
                  % (later.result, SCHEDULE_AFTER, max(delay, 0)))
        out.write('Failures: %d\n' % len(failures))
        for job in failures:
            failure = job.result
            frame = failure.frames[-1] if failure.frames else None
            where = '' if frame is None else (
                '\n      File "%s", line %s, in %s: %s'
                % (frame.filename, frame.lineno, frame.name, frame.line))
            out.write('  %s after %d attempts: %s: %s%s\n' % (
                job.callable.__name__, _attempts.get('doomed', 1),
                failure.type_name, failure.getErrorMessage(), where))
        out.write('Throughput: %d jobs in %.2f s (%.1f jobs/s, including the '
                  'scheduled job\'s %d s wait)\n'
                  % (len(jobs), elapsed, len(jobs) / elapsed, SCHEDULE_AFTER))
        out.write('The database stays in %s.\n' % path)
        return 0
    finally:
        if dispatcher is not None:
            dispatcher.shutdown(timeout=10)
        tm.abort()
        conn.close()
        db.close()
        zasync_log.removeHandler(handler)
        zasync_log.propagate = True
        handler.close()


def add_commands(subparsers):
    """Register ``zasync demo``."""
    parser = subparsers.add_parser(
        'demo', help='run a batch of sample jobs in an embedded database',
        description='Run sample jobs (fast ones, a long one with progress, '
        'one failing then retried, one failing for good, one with a '
        'callback, one scheduled a few seconds ahead) with an in-process '
        'dispatcher, on a FileStorage in VAR; then report.')
    parser.add_argument('--var', default='var',
                        help='directory for the database and the instance '
                        'UUID (default: var)')
    parser.add_argument('--workers', type=int, default=4,
                        help='worker threads of the agent (default: 4)')
    parser.add_argument('--poll-interval', type=float, default=0.5,
                        help='seconds between housekeeping polls '
                        '(default: 0.5)')
    parser.add_argument('--timeout', type=float, default=60,
                        help='give up after this many seconds (default: 60)')
    parser.set_defaults(func=run)
