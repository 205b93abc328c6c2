"""Periodic jobs: schedules that put one job per slot, once across a
cluster.

A ``Schedule`` names a callable by its dotted name, its arguments, and
when it is due: ``cron='*/5 * * * *'`` (five fields, computed by
``cronsim`` in the schedule's ``timezone``, a zoneinfo name) or
``interval=timedelta(...)`` (elapsed time, whatever the timezone).  It
lives in a queue's ``schedules`` (``Schedules``), and its jobs go to that
queue::

    queue.schedules.add('nightly', Schedule('myapp.reports.nightly',
                                            cron='0 3 * * *',
                                            timezone='Europe/Berlin'))

The *slots* of a schedule are the times it is due.  Each schedule keeps
its next slot (``next_slot``) in its own record.  Dispatchers call
``enqueue_due(queue)`` when they poll and when the timer they set for the
next slot fires: for each schedule whose next slot has come, it puts the
job(s) and moves ``next_slot`` on, in the caller's transaction.  Two
dispatchers doing that for the same slot both change the schedule's
record: one commits, the other gets a ``ConflictError``, and its retry
sees the slot taken.  So a slot yields one job however many dispatchers
serve the queue.

After an outage (no dispatcher ran when slots came), ``catch_up`` says
what happens with the missed slots:

``'once'`` (the default)
    one job, for the latest of them (its ``missed`` annotation counts the
    slots it stands for beyond its own);
``'all'``
    a job for each (at most ``MAX_JOBS_AT_ONCE`` per call, the rest in the
    next calls);
``'skip'``
    none -- unless the latest is less than ``grace`` old: a slot is only
    late then, not missed.

Each job put has the annotations ``SCHEDULE_ANNOTATION`` (the schedule's
name), ``SLOT_ANNOTATION`` (its slot, an aware UTC datetime) and
``MISSED_ANNOTATION`` (how many earlier slots it stands for).  See
``docs/periodic.rst``.
"""
import builtins
import datetime
import importlib
import types
import zoneinfo

import cronsim
import persistent
import transaction.interfaces

from zasync import interfaces
from zasync import utils
from zasync._dict import Dict
from zasync.durations import format_duration
from zasync.durations import parse_duration
from zasync.job import Job
from zasync.job import check_failure_log_level
from zasync.job import check_timeout
from zasync.utils import events_log

__all__ = ['CATCH_UP', 'DEFAULT_GRACE', 'MAX_JOBS_AT_ONCE',
           'MISSED_ANNOTATION', 'SCHEDULE_ANNOTATION', 'SLOT_ANNOTATION',
           'Schedule', 'ScheduleInstaller', 'Schedules', 'SlotTimer',
           'callable_name', 'check_cron', 'check_timezone', 'enqueue_due',
           'install_schedule', 'resolve', 'schedule_oids', 'slot_of']

CATCH_UP = ('once', 'all', 'skip')

#: with ``catch_up='skip'``: a slot at most this old is late, not missed
#: (an interval schedule uses half its interval when that is shorter)
DEFAULT_GRACE = datetime.timedelta(seconds=30)

#: ``catch_up='all'`` puts at most this many jobs of one schedule in one
#: transaction (the next call puts the next ones)
MAX_JOBS_AT_ONCE = 100

#: a cron schedule counts at most this many missed slots one by one (past
#: that, ``missed`` is a lower bound)
_COUNT_LIMIT = 10000

SCHEDULE_ANNOTATION = 'zasync.schedule'
SLOT_ANNOTATION = 'zasync.schedule.slot'
MISSED_ANNOTATION = 'zasync.schedule.missed'

_ONE_MICROSECOND = datetime.timedelta(microseconds=1)


# --------------------------------------------------------------------------
# Checking what a schedule is made of


def resolve(name):
    """The object the dotted ``name`` names (``'pkg.mod.func'``):
    ``ValueError`` when there is none."""
    if not isinstance(name, str) or not name or not all(
            part.isidentifier() for part in name.split('.')):
        raise ValueError('%r is not a dotted name (such as '
                         '"myapp.jobs.nightly")' % (name,))
    parts = name.split('.')
    for split in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise ValueError('%s cannot be imported: %s'
                                 % (name, utils.one_line(e))) from None
            continue
        except Exception as e:
            raise ValueError('%s cannot be imported: %s'
                             % (name, utils.one_line(e))) from None
        for attribute in parts[split:]:
            try:
                obj = getattr(obj, attribute)
            except AttributeError:
                raise ValueError('%s cannot be imported: %s has no %r'
                                 % (name, module_name, attribute)) from None
            module_name += '.' + attribute
        return obj
    raise ValueError('%s cannot be imported: no module %r'
                     % (name, parts[0]))


def callable_name(value):
    """The dotted name of the callable ``value`` (a dotted name itself, or
    a module-level function, class or builtin that its name imports
    again); ``ValueError`` saying why for anything else (a lambda, a
    nested function, a bound method, an object of ``__main__``)."""
    if isinstance(value, str):
        obj = resolve(value)
        if not callable(obj):
            raise ValueError('%s is not callable: %r' % (value, obj))
        return value
    if not callable(value):
        raise ValueError('a schedule needs a callable or its dotted name, '
                         'not %r' % (value,))
    if isinstance(value, types.MethodType):
        raise ValueError('%r is a bound method: a schedule names a callable '
                         'by its dotted name (a module-level function)'
                         % (value,))
    module = getattr(value, '__module__', None)
    qualname = getattr(value, '__qualname__', None)
    if not module or not qualname or '<' in qualname:
        raise ValueError('%r cannot be named by an importable dotted name (a '
                         'lambda or nested function?): a schedule needs a '
                         'module-level function' % (value,))
    if module == '__main__':
        raise ValueError('%r is defined in __main__, which other processes '
                         'cannot import: put it in a module' % (value,))
    name = '%s.%s' % (module, qualname)
    try:
        found = resolve(name)
    except ValueError:
        found = None
    if found is not value:
        raise ValueError('%r is not what its name %s imports: a schedule '
                         'needs a module-level function' % (value, name))
    return name


def check_cron(expression):
    """A five-field cron expression (``'*/5 * * * *'``), stripped;
    ``ValueError`` naming the problem otherwise."""
    if not isinstance(expression, str):
        raise ValueError('a cron expression is a string, not %r'
                         % (expression,))
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError('cron expression %r: expected five fields (minute '
                         'hour day-of-month month day-of-week), not %d'
                         % (expression, len(fields)))
    expression = ' '.join(fields)
    try:
        next(cronsim.CronSim(expression, datetime.datetime(2000, 1, 1)))
    except cronsim.CronSimError as e:
        raise ValueError('bad cron expression %r: %s'
                         % (expression, e)) from None
    except StopIteration:
        raise ValueError('cron expression %r never matches'
                         % (expression,)) from None
    return expression


def check_timezone(name):
    """The ``zoneinfo.ZoneInfo`` of ``name`` (``'Europe/Berlin'``);
    ``ValueError`` for an unknown one."""
    if not isinstance(name, str) or not name:
        raise ValueError('a timezone is a zoneinfo name such as "UTC" or '
                         '"Europe/Berlin", not %r' % (name,))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError('unknown timezone %r (a zoneinfo name such as '
                         '"UTC" or "Europe/Berlin")' % (name,)) from None


def _check_interval(value):
    try:
        interval = parse_duration(value)
    except ValueError as e:
        raise ValueError('interval: %s' % (e,)) from None
    if interval < datetime.timedelta(seconds=1):
        raise ValueError('an interval must be at least one second, not %r'
                         % (value,))
    return interval


# --------------------------------------------------------------------------
# A schedule


class Schedule(persistent.Persistent):
    """Put a job calling ``callable(*args, **kwargs)`` in this schedule's
    queue at each slot: by ``cron`` (five fields, in ``timezone``) or
    every ``interval`` (a ``timedelta`` or seconds; the slots are
    ``start`` plus whole intervals; without ``start``, the first slot is
    one interval after the schedule is added).

    ``catch_up`` (``'once'``, ``'all'``, ``'skip'``) and ``grace``: see
    the module.  ``begin_by``, ``timeout``, ``failure_log_level``,
    ``retry_policy_factory`` and ``priority`` go to ``Queue.put``,
    ``quota_names`` to the job.

    ``next_slot`` is the next slot due (set when the schedule is added);
    ``last_slot``, ``last_put`` and ``last_job`` tell about the last job it
    put, ``jobs_put`` how many it put, ``last_error`` why its last slot put
    nothing (or None).
    """

    name = None
    parent = None          # the Schedules
    next_slot = None
    last_slot = None
    last_put = None
    last_job = None
    last_error = None
    jobs_put = 0

    def __init__(self, callable, args=(), kwargs=None, cron=None,
                 interval=None, timezone='UTC', catch_up='once', start=None,
                 grace=None, begin_by=None, timeout=None,
                 failure_log_level=None, retry_policy_factory=None,
                 priority=None, quota_names=()):
        self.callable_name = callable_name(callable)
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        if (cron is None) == (interval is None):
            raise ValueError('a schedule needs either cron or interval '
                             '(not both)')
        self.cron = None if cron is None else check_cron(cron)
        self.interval = None if interval is None else _check_interval(
            interval)
        check_timezone(timezone)
        self.timezone = timezone
        if catch_up not in CATCH_UP:
            raise ValueError('catch_up must be one of %s, not %r'
                             % (', '.join(repr(c) for c in CATCH_UP),
                                catch_up))
        self.catch_up = catch_up
        self.start = utils.to_utc(start, 'start')
        if start is not None and self.interval is None:
            raise ValueError('start goes with interval (a cron expression '
                             'says when itself)')
        self.grace = None if grace is None else parse_duration(
            grace, allow_zero=True)
        utils.check_begin_by(begin_by)
        check_failure_log_level(failure_log_level)
        if retry_policy_factory is not None and not isinstance(
                retry_policy_factory, str) and not builtins.callable(
                    retry_policy_factory):   # (``callable`` is the job's)
            raise ValueError('retry_policy_factory must be a callable or the '
                             'name of a registered IRetryPolicy adapter, not '
                             '%r' % (retry_policy_factory,))
        self.put_options = {
            'begin_by': begin_by, 'timeout': check_timeout(timeout),
            'failure_log_level': failure_log_level,
            'retry_policy_factory': retry_policy_factory,
            'priority': priority}
        if isinstance(quota_names, str):
            raise TypeError('quota_names must be a sequence of names')
        self.quota_names = tuple(quota_names)

    def __repr__(self):
        return '<%s %r: %s %s>' % (
            type(self).__name__, self.name, self.callable_name,
            self.describe())

    def describe(self):
        """``'cron 0 3 * * * (Europe/Berlin)'`` or ``'every 1h'``."""
        if self.cron is not None:
            return 'cron %s (%s)' % (self.cron, self.timezone)
        return 'every %s' % format_duration(self.interval)

    def definition(self):
        """What the schedule is, as plain data (equal for schedules that
        put the same jobs at the same slots)."""
        return {'callable': self.callable_name, 'args': self.args,
                'kwargs': self.kwargs, 'cron': self.cron,
                'interval': self.interval, 'timezone': self.timezone,
                'catch_up': self.catch_up, 'start': self.start,
                'grace': self.grace, 'put_options': dict(self.put_options),
                'quota_names': self.quota_names}

    @property
    def queue(self):
        """The queue the jobs go to: the one whose ``schedules`` hold
        this schedule (None before it is added)."""
        schedules = self.parent
        return None if schedules is None else schedules.parent

    # -- slots -------------------------------------------------------------

    def slotAfter(self, when):
        """The first slot strictly after ``when`` (aware), in UTC."""
        when = utils.to_utc(when, 'when')
        if self.cron is not None:
            zone = zoneinfo.ZoneInfo(self.timezone)
            try:
                local = next(cronsim.CronSim(self.cron, when.astimezone(zone)))
            except StopIteration:
                return None
            return local.astimezone(utils.UTC)
        anchor = self.start if self.start is not None else when
        if when < anchor:
            return anchor
        steps = (when - anchor) // self.interval + 1
        return anchor + steps * self.interval

    def firstSlot(self, now):
        """The first slot of a schedule added at ``now``."""
        if self.cron is not None:
            return self.slotAfter(now - _ONE_MICROSECOND)
        if self.start is None:
            return now + self.interval
        return self.slotAfter(now - _ONE_MICROSECOND)

    def _grace(self):
        if self.grace is not None:
            return self.grace
        if self.interval is not None:
            return min(DEFAULT_GRACE, self.interval / 2)
        return DEFAULT_GRACE

    def _due(self, now):
        """``(count, latest, following)``: how many slots from
        ``next_slot`` are due at ``now``, the latest of them, and the slot
        after it."""
        slot = self.next_slot
        if slot is None or slot > now:
            return 0, None, slot
        if self.interval is not None:
            count = (now - slot) // self.interval + 1
            latest = slot + (count - 1) * self.interval
            return count, latest, latest + self.interval
        count, latest = 0, None
        while slot is not None and slot <= now:
            count += 1
            latest = slot
            if count >= _COUNT_LIMIT:
                # A long outage: jump to the end of it.
                jumped = self.slotAfter(now - datetime.timedelta(days=1))
                if jumped is not None and jumped <= now:
                    latest = jumped
                    while True:
                        following = self.slotAfter(latest)
                        if following is None or following > now:
                            break
                        latest = following
                slot = self.slotAfter(latest)
                break
            slot = self.slotAfter(slot)
        return count, latest, slot

    # -- putting jobs -------------------------------------------------------

    def enqueue(self, queue, now):
        """Put the jobs due at ``now`` in ``queue`` and move ``next_slot``
        on (in the caller's transaction); return the jobs put."""
        count, latest, following = self._due(now)
        if not count:
            return []
        if self.catch_up == 'all':
            slots = []
            slot = self.next_slot
            while slot is not None and slot <= now and (
                    len(slots) < MAX_JOBS_AT_ONCE):
                slots.append((slot, 0))
                slot = self.slotAfter(slot)
            following = slot
        elif self.catch_up == 'once':
            slots = [(latest, count - 1)]
        elif now - latest <= self._grace():
            slots = [(latest, 0)]    # 'skip', and the latest is only late
        else:
            slots = []
        if count > 1 or not slots:
            events_log.info(
                'schedule %r of queue %r: %d slot(s) due since %s '
                '(catch_up=%r): %d job(s) put for them', self.name,
                getattr(queue, 'name', None), count,
                self.next_slot.isoformat(), self.catch_up, len(slots))
        jobs = []
        try:
            for slot, missed in slots:
                jobs.append(self._put(queue, slot, missed, now))
        except (transaction.interfaces.TransientError,) + tuple(
                utils.EXPLOSIVE_ERRORS):
            raise
        except Exception as e:
            self.last_error = '%s (slot %s)' % (utils.one_line(e),
                                                slots[len(jobs)][0])
            events_log.error(
                'schedule %r of queue %r could not put its job for the slot '
                '%s; the slot is skipped: %s', self.name,
                getattr(queue, 'name', None),
                slots[len(jobs)][0].isoformat(), utils.one_line(e))
        else:
            self.last_error = None
        self.next_slot = following
        return jobs

    def _put(self, queue, slot, missed, now):
        func = resolve(self.callable_name)
        job = Job(func, *self.args, **self.kwargs)
        if self.quota_names:
            job.quota_names = self.quota_names
        job.annotations[SCHEDULE_ANNOTATION] = self.name
        job.annotations[SLOT_ANNOTATION] = slot
        job.annotations[MISSED_ANNOTATION] = missed
        options = {key: value for key, value in self.put_options.items()
                   if value is not None}
        job = queue.put(job, **options)
        self.last_slot = slot
        self.last_put = now
        self.last_job = job
        self.jobs_put += 1
        utils.trace_log.debug('schedule %r put job %s for the slot %s',
                              self.name, utils.custom_repr(job),
                              slot.isoformat())
        return job


def slot_of(job):
    """``(schedule name, slot, missed)`` of a job a schedule put, else
    None."""
    annotations = getattr(job, 'annotations', None)
    if annotations is None or SCHEDULE_ANNOTATION not in annotations:
        return None
    return (annotations[SCHEDULE_ANNOTATION],
            annotations.get(SLOT_ANNOTATION),
            annotations.get(MISSED_ANNOTATION, 0))


# --------------------------------------------------------------------------
# A queue's schedules


class Schedules(Dict):
    """A queue's schedules by name (``queue.schedules``): ``add(name,
    schedule)``, ``remove(name)``, ``get(name)``, iteration over the
    names, ``values()``, ``items()``."""

    def _check(self, key, value):
        if not isinstance(key, str) or not key:
            raise ValueError('a schedule name is a non-empty string, not %r'
                             % (key,))
        if not isinstance(value, Schedule):
            raise ValueError('value must be a zasync.schedule.Schedule')

    def add(self, name, schedule, now=None):
        """Add ``schedule`` as ``name`` (``ValueError`` if the name is
        taken) and set its first slot; return it."""
        if name in self:
            raise ValueError('queue %r has a schedule named %r already '
                             '(remove it first)' % (
                                 getattr(self.parent, 'name', None), name))
        if schedule.parent is not None:
            raise ValueError('the schedule is in a queue already')
        self._check(name, schedule)
        now = now or utils.now()
        schedule.next_slot = schedule.firstSlot(now)
        Dict.__setitem__(self, name, schedule)
        return schedule

    def remove(self, name):
        """Remove the schedule ``name`` (``KeyError`` if there is none) and
        return it: it puts no more jobs."""
        return Dict.pop(self, name)

    def _refuse(self, *args, **kwargs):
        raise TypeError('use schedules.add(name, schedule) and '
                        'schedules.remove(name)')

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _refuse

    def nextSlot(self):
        """The earliest ``next_slot`` of the schedules, or None."""
        slots = [s.next_slot for s in self.values()
                 if s.next_slot is not None]
        return min(slots) if slots else None


def enqueue_due(queue, now=None):
    """Put the jobs of ``queue``'s schedules that are due at ``now``
    (default: now), in the caller's transaction; return ``(jobs, next
    slot)`` -- the next slot of any schedule of the queue, or None.
    Reading a queue without schedules writes nothing."""
    schedules = queue.findSchedules()
    if schedules is None or not len(schedules):
        return [], None
    now = now or utils.now()
    jobs = []
    for schedule in list(schedules.values()):
        if schedule.next_slot is not None and schedule.next_slot <= now:
            jobs.extend(schedule.enqueue(queue, now))
    return jobs, schedules.nextSlot()


def schedule_oids(queue):
    """The oids whose change means that schedules were added to or removed
    from ``queue``: its ``Schedules``, their tree and length -- or, while
    it has none, the queue itself (which changes when it gets them)."""
    schedules = queue.findSchedules()
    if schedules is None or schedules._p_oid is None:
        return {queue._p_oid} - {None}
    schedules._p_activate()
    oids = {schedules._p_oid}
    for value in vars(schedules).values():
        if isinstance(value, persistent.Persistent) and value._p_oid:
            oids.add(value._p_oid)
    return oids


# --------------------------------------------------------------------------
# The dispatcher's timer


class SlotTimer:
    """A dispatcher's reactor timer for the next slot of the schedules of
    the queues it serves, so that a job appears when its slot comes, not
    at the next poll.

    ``poll(conn, queue)`` (the dispatcher's poll, per queue it is active
    in) puts what is due in a transaction of its own and arms the timer;
    when the timer fires, it does the same for those queues in a
    transaction of the dispatcher's connection (in the reactor thread) or
    of a connection of its own (a threaded dispatcher).
    """

    #: fire this much after the slot (the reactor's clock and the wall
    #: clock may differ a little); a timer that fires early is set again
    lag = 0.002

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.next_slots = {}   # queue name -> next slot
        self.call = None
        self.when = None
        self.fired = 0

    def poll(self, conn, queue):
        """Put the due jobs of ``queue`` (committed, retried on conflicts);
        arm the timer for its next slot."""
        tm = conn.transaction_manager
        result = utils.try_five_times(
            lambda: enqueue_due(queue),
            'putting the due jobs of the schedules of queue %r'
            % (queue.name,), tm)
        if isinstance(result, tuple):
            self.note(queue.name, result[1])
        else:
            tm.abort()
            # A failure (logged): try again at the next poll.
        return result

    def note(self, queue_name, slot):
        """The next slot of ``queue_name`` is ``slot`` (None: none)."""
        if slot is None:
            self.next_slots.pop(queue_name, None)
        else:
            self.next_slots[queue_name] = slot
        if self.next_slots:
            try:
                self.dispatcher.reactor.callFromThread(self._arm)
            except Exception:  # pragma: no cover - reactor stopped
                utils.trace_log.debug('could not set the slot timer',
                                      exc_info=True)

    def _arm(self):
        """(In the reactor) set the timer for the earliest next slot."""
        if not self.dispatcher.activated or not self.next_slots:
            return
        when = min(self.next_slots.values())
        if self.call is not None and self.call.active():
            if self.when is not None and self.when <= when:
                return
            self.call.cancel()
        delay = max(0.0, (when - utils.now()).total_seconds()) + self.lag
        self.when = when
        self.call = self.dispatcher.reactor.callLater(delay, self._fire)

    def cancel(self):
        """Cancel the timer (the dispatcher is deactivated)."""
        call, self.call = self.call, None
        self.when = None
        self.next_slots.clear()
        if call is not None:
            try:
                if call.active():
                    call.cancel()
            except Exception:  # pragma: no cover - reactor specific
                pass

    def _fire(self):
        """(In the reactor) the earliest slot has come."""
        self.call = None
        self.when = None
        dispatcher = self.dispatcher
        if not dispatcher.activated:
            return
        self.fired += 1
        if dispatcher.conn is not None:
            self._put_due(dispatcher.conn)
        else:
            dispatcher.reactor.callInThread(self._put_due_in_thread)

    def _put_due_in_thread(self):
        conn = self.dispatcher.db.open(
            transaction_manager=transaction.TransactionManager())
        try:
            self._put_due(conn)
        finally:
            conn.transaction_manager.abort()
            conn.close()

    def _put_due(self, conn):
        tm = conn.transaction_manager
        now = utils.now()
        try:
            tm.begin()
            queues = conn.root().get(interfaces.KEY)
            for name, slot in sorted(self.next_slots.items()):
                if slot > now:
                    continue
                queue = None if queues is None else queues.get(name)
                if queue is None:
                    self.note(name, None)
                    continue
                self.poll(conn, queue)
        except Exception:
            tm.abort()
            events_log.error('putting the jobs of due schedules failed',
                             exc_info=True)
        finally:
            tm.abort()
        try:
            self.dispatcher.reactor.callFromThread(self._arm)
        except Exception:  # pragma: no cover - reactor stopped
            pass


# --------------------------------------------------------------------------
# Installing schedules when a database opens


def install_schedule(db, queue_name, name, definition, db_name=None,
                     attempts=10):
    """Make sure the queue ``queue_name`` of ``db`` (it must exist) has the
    schedule ``name`` made by ``Schedule(**definition)``.  A schedule of
    that name with the same definition stays as it is (its next slot
    too); one with another definition is replaced.  Committed in a
    private connection; a conflict (several processes installing at once)
    is retried.  Return ``'added'``, ``'replaced'`` or ``'kept'``."""
    for attempt in range(attempts):
        try:
            with utils.private_connection(db) as conn:
                root = conn.root()
                if db_name is not None and interfaces.KEY not in root:
                    root = conn.get_connection(db_name).root()
                queues = root.get(interfaces.KEY)
                if queues is None or queue_name not in queues:
                    raise LookupError('no queue %r for the schedule %r'
                                      % (queue_name, name))
                schedules = queues[queue_name].schedules
                schedule = Schedule(**definition)
                existing = schedules.get(name)
                if existing is not None:
                    if existing.definition() == schedule.definition():
                        return 'kept'
                    schedules.remove(name)
                    outcome = 'replaced'
                else:
                    outcome = 'added'
                schedules.add(name, schedule)
                conn.transaction_manager.commit()
                events_log.info('schedule %r of queue %r %s: %s', name,
                                queue_name, outcome, schedule.describe())
                return outcome
        except transaction.interfaces.TransientError:
            if attempt == attempts - 1:
                raise
    return None   # pragma: no cover - attempts < 1


class ScheduleInstaller:
    """An ``IDatabaseOpenedEvent`` subscriber installing a schedule
    (``install_schedule``); ``<zasync:periodic>`` registers one.  The
    definition is checked when the installer is made."""

    def __init__(self, name, queue='', db_name=None, **definition):
        Schedule(**definition)   # (refuse a bad one now)
        self.name = name
        self.queue = queue
        self.db_name = db_name
        self.definition = definition

    def __repr__(self):
        return '<%s %r queue=%r>' % (type(self).__name__, self.name,
                                     self.queue)

    def __call__(self, ev):
        install_schedule(ev.database, self.queue, self.name,
                         self.definition, self.db_name)
