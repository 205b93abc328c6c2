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

The database is ``--zodb URI`` or the ``<zodb>`` sections of a
``--zope-conf`` (a multi-database; no site ZCML is loaded).  An ``ID`` is
what ``zasync jobs`` shows: the oid of a job of the main database
(``19``), or the oid and the name of the member database holding it
(``19@async``: with ``multidb.zcml`` the queues and their jobs live in
``async``).
"""
import getpass
import socket
import time

import transaction
import ZODB.POSException

from zasync import inspection
from zasync import interfaces
from zasync.cli.common import UsageError
from zasync.cli.common import check_member_databases
from zasync.cli.common import close_databases
from zasync.cli.common import member_hint
from zasync.cli.common import open_database
from zasync.cli.common import positive_seconds

__all__ = ['add_commands', 'cancel', 'fail', 'pause', 'remove', 'requeue',
           'resume', 'retry']

ATTEMPTS = 5


def _address(conn, text):
    """``(oid, database name)`` of the job id ``text``; ``UsageError`` for
    a bad one."""
    try:
        return inspection.resolve_job_id(conn, text)
    except (ValueError, LookupError) as e:
        raise UsageError(str(e))


def _held(queues, address):
    """``(queue, job)`` of the job at ``address`` held in one of
    ``queues`` because it cannot be loaded, or None."""
    for queue in queues.values():
        for record in queue.unloadableJobs():
            if inspection.job_address(record.job) == address:
                return queue, record.job
    return None


def _load(conn, text):
    try:
        return inspection.load_job(conn, text)
    except (ValueError, LookupError) as e:
        raise UsageError(str(e))


def find(root, text):
    """``(queue, job)`` for the job id ``text``: held in a queue because it
    cannot be loaded, or pending in one; ``UsageError`` otherwise."""
    conn = root._p_jar
    queues = root.get(interfaces.KEY)
    if queues is None:
        raise UsageError('no zasync queues in this database')
    held = _held(queues, _address(conn, text))
    if held is not None:
        return held
    job = _load(conn, text)
    if not interfaces.IJob.providedBy(job):
        raise UsageError('job %s cannot be loaded here, and no queue holds '
                         'it (zasync job %s tells why)' % (text, text))
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
    address = _address(conn, text)
    queues = root.get(interfaces.KEY)
    if queues is not None:
        held = _held(queues, address)
        if held is not None:
            return held
    job = _load(conn, text)
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
    new = retry_job(job)
    if new.retried_from is not job:
        return ('job %s: not retried: job %s holds its unique key %r'
                % (args.id, _name(new, args), new.unique_key))
    return 'job %s: retried as job %s in queue %r' % (
        args.id, _name(new, args), new.queue.name)


def _name(job, args):
    """The id of ``job`` as ``zasync jobs`` shows it."""
    return inspection.job_name(job, args.main_database)


def _error(error, job, args):
    """The engine's ``ValueError`` or ``LookupError`` about ``job`` as a
    ``UsageError``, naming the job by its id (the engine says ``job
    OID``, which is ambiguous in a multi-database)."""
    return UsageError(inspection.name_in_message(
        str(error), job, args.main_database))


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
    return ('job %s: out of queue %r; job %s fails it with AbortedError(%r)'
            % (args.id, queue.name, _name(wrapper, args), args.reason))


def _remove(queue, job, args):
    queue.removeJob(job)
    return 'job %s: removed from queue %r' % (args.id, queue.name)


def _requeue(queue, job, args):
    queue.requeueJob(job)
    return 'job %s: back at the front of queue %r' % (args.id, queue.name)


def _act(args, action, finder=find):
    db = open_database(args)
    tm = transaction.TransactionManager()
    try:
        conn = db.open(transaction_manager=tm)
    except BaseException:
        close_databases(db)
        raise
    args.main_database = db.database_name
    try:
        for attempt in range(ATTEMPTS):
            tm.begin()
            check_member_databases(conn, member_hint(args))
            queue, job = finder(conn.root(), args.id)
            try:
                message = action(queue, job, args)
            except (ValueError, LookupError) as e:
                raise _error(e, job, args)
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
        close_databases(db)


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
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument(
            '--zodb', metavar='URI',
            help='the database, as a zodburi URI (file://, zeo://, '
                 'postgres://...); a file:// database must not be in use '
                 'by a worker (FileStorage allows one writer)')
        group.add_argument(
            '--zope-conf', metavar='FILE',
            help='the databases of the <zodb> sections of a zope.conf (a '
                 'multi-database; its site definition is not loaded)')
        if name in ('pause', 'resume'):
            parser.add_argument('queue', nargs='?', default='',
                                help="the queue's name (default: the "
                                     "default queue, '')")
        else:
            parser.add_argument(
                'id', help='the job id, as "zasync jobs" shows it: its oid '
                           '(a job of the main database) or OID@DATABASE '
                           '(a job of the member database DATABASE)')
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
