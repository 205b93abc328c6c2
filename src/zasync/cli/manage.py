"""``zasync fail ID``, ``zasync remove ID`` and ``zasync requeue ID``: an
operator's hand on stuck work.

- ``fail ID --reason TEXT``: a pending job, or one held because it cannot
  be loaded, is taken out of the queue and failed (``AbortedError`` with
  the reason) by a job queued first in line: its callbacks run in a worker,
  as for any failure.
- ``remove ID``: a pending or held job leaves the queue; nothing runs it
  and its callbacks do not run.
- ``requeue ID``: a held job goes back to the front of the queue, once its
  code is deployed (if a worker still cannot load it, it is held again).

- ``cancel ID [--reason TEXT] [--wait SECONDS]``: a pending or held job
  is failed with ``CancelledError`` without running (as ``fail`` does); a
  running one is stopped by its dispatcher, as soon as the cancellation
  commits, and nothing it wrote commits.  With ``--wait``, the command
  waits until the job has completed (exit status 1 if it has not by then).

- ``retry ID``: a failed job's call is put again, as a new job (same
  callable, arguments, queue, quotas, priority and timeout; its
  ``retried_from`` is the failed job); prints the new job's id.
- ``pause [QUEUE]`` / ``resume [QUEUE]``: no dispatcher claims jobs from
  the queue (default: the default queue, ``''``) while it is paused; puts
  go on, and the running jobs finish.  Resuming wakes the dispatchers at
  once.

Each prints one line; an error is one line and a non-zero exit status.
These commands write to the database (in one transaction, retried on a
conflict); they never run job code themselves.  Only ``cancel`` touches
running jobs.
"""
import getpass
import socket
import time

import transaction
import ZODB.POSException

from zasync import inspection
from zasync import interfaces
from zasync.cli.common import UsageError
from zasync.cli.common import open_uri
from zasync.cli.common import positive_seconds
from zasync.unloadable import job_id

__all__ = ['add_commands', 'cancel', 'fail', 'pause', 'remove', 'requeue',
           'resume', 'retry']

ATTEMPTS = 5


def find(root, text):
    """``(queue, job)`` for the job id ``text``: held in a queue because it
    cannot be loaded, or pending in one; ``UsageError`` otherwise."""
    conn = root._p_jar
    queues = root.get(interfaces.KEY)
    if queues is None:
        raise UsageError('no zasync queues in this database')
    try:
        number = int(text)
    except ValueError:
        raise UsageError('job ids are whole numbers, not %r' % (text,))
    for queue in queues.values():
        for record in queue.unloadableJobs():
            if job_id(record.job) == number:
                return queue, record.job
    try:
        job = inspection.load_job(conn, text)
    except (ValueError, LookupError) as e:
        raise UsageError(str(e))
    queue = job.parent
    if job.status != interfaces.PENDING or not interfaces.IQueue.providedBy(
            queue):
        raise UsageError('job %s is %s, not pending or held: nothing to do'
                         % (text, job.status.title.lower()))
    return queue, job


def find_any(root, text):
    """``(queue or None, job)`` for the job id ``text``, whatever its
    status; ``UsageError`` if there is none."""
    conn = root._p_jar
    queues = root.get(interfaces.KEY)
    if queues is not None:
        for queue in queues.values():
            for record in queue.unloadableJobs():
                if str(job_id(record.job)) == text.strip():
                    return queue, record.job
    try:
        job = inspection.load_job(conn, text)
    except (ValueError, LookupError) as e:
        raise UsageError(str(e))
    if not interfaces.IJob.providedBy(job):
        raise UsageError('job %s cannot be loaded here, so it cannot be '
                         'cancelled (zasync job %s tells why)' % (text, text))
    return job.queue, job


def operator_principal():
    """Who an operator at this command line is: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = 'unknown'
    return '%s@%s' % (user, socket.gethostname())


def _cancel(queue, job, args):
    if not interfaces.IJob.providedBy(job):
        raise UsageError('job %s: its class cannot be imported here, so it '
                         'cannot be cancelled (zasync remove takes it out of '
                         'its queue)' % (args.id,))
    running = job.status in (interfaces.ACTIVE, interfaces.ASSIGNED)
    try:
        job.cancel(args.reason, operator_principal())
    except interfaces.BadStatusError as e:
        raise UsageError('job %s: %s' % (args.id, e))
    if running:
        return ('job %s: cancelled; its dispatcher stops it (nothing it '
                'wrote commits)' % (args.id,))
    return ('job %s: cancelled; it does not run, and fails with '
            'CancelledError' % (args.id,))


def _retry(queue, job, args):
    from zasync.actions import retry_job
    try:
        new = retry_job(job)
    except ValueError as e:
        raise UsageError(str(e))
    if new.retried_from is not job:
        return ('job %s: not retried: job %d holds its unique key %r'
                % (args.id, job_id(new), new.unique_key))
    return 'job %s: retried as job %d in queue %r' % (
        args.id, job_id(new), new.queue.name)


def find_queue(root, name):
    """``(queue, None)`` for the queue ``name``; ``UsageError`` if there is
    none."""
    queues = root.get(interfaces.KEY)
    if queues is None:
        raise UsageError('no zasync queues in this database')
    queue = queues.get(name)
    if queue is None:
        raise UsageError('no queue %r (there are: %s)' % (
            name, ', '.join(repr(n) for n in sorted(queues)) or 'none'))
    return queue, None


def _pause(queue, ignored, args):
    if queue.paused:
        return 'queue %r: paused already' % (queue.name,)
    queue.pause()
    return ('queue %r: paused (%d pending; no job starts until zasync '
            'resume)' % (queue.name, len(queue)))


def _resume(queue, ignored, args):
    if not queue.paused:
        return 'queue %r: not paused' % (queue.name,)
    queue.resume()
    return 'queue %r: resumed (%d pending)' % (queue.name, len(queue))


def _fail(queue, job, args):
    wrapper = queue.failJob(job, args.reason)
    return ('job %s: out of queue %r; job %d fails it with AbortedError(%r)'
            % (args.id, queue.name, job_id(wrapper), args.reason))


def _remove(queue, job, args):
    queue.removeJob(job)
    return 'job %s: removed from queue %r' % (args.id, queue.name)


def _requeue(queue, job, args):
    queue.requeueJob(job)
    return 'job %s: back at the front of queue %r' % (args.id, queue.name)


def _act(args, action, finder=find):
    db = open_uri(args.zodb, must_exist=True)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in range(ATTEMPTS):
            tm.begin()
            queue, job = finder(conn.root(), args.id)
            try:
                message = action(queue, job, args)
            except (ValueError, LookupError) as e:
                raise UsageError(str(e))
            try:
                tm.commit()
            except ZODB.POSException.ConflictError:
                tm.abort()
                if attempt == ATTEMPTS - 1:
                    raise UsageError('the database kept changing; try again')
                continue
            print(message)
            wait = getattr(args, 'wait', None)
            if wait is not None:
                return _wait_until_completed(tm, job, args.id, wait)
            return 0
    finally:
        tm.abort()
        conn.close()
        db.close()


def _wait_until_completed(tm, job, text, seconds):
    """Wait (reading new transactions) until ``job`` has completed; print
    its outcome.  Exit status 0, or 1 if it did not complete in time."""
    deadline = time.monotonic() + seconds
    while True:
        tm.begin()
        if job.status == interfaces.COMPLETED:
            result = job.result
            error = getattr(result, 'value', None)
            outcome = (('failed: %s: %s' % (type(error).__name__, error))
                       if isinstance(error, BaseException)
                       else 'completed: %r' % (result,))
            print('job %s: %s' % (text, outcome))
            return 0
        if time.monotonic() >= deadline:
            raise UsageError('job %s has not completed after %g s (it is %s)'
                             % (text, seconds, job.status.title.lower()))
        time.sleep(0.05)


def cancel(args):
    return _act(args, _cancel, finder=find_any)


def retry(args):
    return _act(args, _retry, finder=find_any)


def pause(args):
    args.id = args.queue
    return _act(args, _pause, finder=find_queue)


def resume(args):
    args.id = args.queue
    return _act(args, _resume, finder=find_queue)


def fail(args):
    return _act(args, _fail)


def remove(args):
    return _act(args, _remove)


def requeue(args):
    return _act(args, _requeue)


COMMANDS = [
    ('cancel', cancel,
     'cancel a job: a pending one never runs, a running one is stopped '
     'and nothing it wrote commits'),
    ('retry', retry,
     "put a failed job's call again, as a new job; prints its id"),
    ('pause', pause,
     'pause a queue: jobs may be put, none starts until it is resumed'),
    ('resume', resume, 'resume a paused queue'),
    ('fail', fail, 'fail a pending or held job (its callbacks run)'),
    ('remove', remove, 'remove a pending or held job from its queue'),
    ('requeue', requeue,
     'put a job held because it could not be loaded back in its queue'),
]


def add_commands(subparsers):
    """Register ``zasync cancel``, ``retry``, ``pause``, ``resume``, ``fail``,
    ``remove`` and ``requeue``."""
    for name, func, help in COMMANDS:
        parser = subparsers.add_parser(name, help=help, description=help)
        parser.add_argument(
            '--zodb', metavar='URI', required=True,
            help='the database, as a zodburi URI (file://, zeo://, '
                 'postgres://...); a file:// database must not be in use '
                 'by a worker (FileStorage allows one writer)')
        if name in ('pause', 'resume'):
            parser.add_argument('queue', nargs='?', default='',
                                help="the queue's name (default: the "
                                     "default queue, '')")
        else:
            parser.add_argument('id', help='the job id (what "zasync jobs" '
                                           'shows)')
        if name == 'fail':
            parser.add_argument('--reason', required=True,
                                help='why (recorded in the failure)')
        if name == 'cancel':
            parser.add_argument('--reason',
                                help='why (recorded in the failure)')
            parser.add_argument(
                '--wait', metavar='SECONDS', type=positive_seconds,
                help='wait until the job has completed, at most this long')
        parser.set_defaults(func=func)
