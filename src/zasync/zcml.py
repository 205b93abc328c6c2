"""The ``zasync`` ZCML directives (namespace
``http://namespaces.zope.org/zasync``).

``<zasync:jobs database="" queues="" />``
    When the database opens, install the queues (the default queue ``''``
    and those named in ``queues``) and the job container, in the main
    database, or in the member ``database`` of a multi-database.

``<zasync:dispatcher poll_interval="5" agent="main" size="3" database="" />``
    When the database opens, start a threaded dispatcher (own Twisted
    reactor in a daemon thread) on the main database or on the member
    ``database``, and give it an agent ``agent`` of ``size`` threads in
    every queue.  One per configuration: two conflict.

``<zasync:periodic name="nightly" callable="pkg.mod.func" cron="0 3 * * *"
timezone="Europe/Berlin" queue="" catch_up="once" database="" />``
    When the database opens, make sure the queue ``queue`` has the
    schedule ``name`` (``zasync.schedule``): ``callable`` at each slot of
    ``cron`` (five fields) in ``timezone``, or every ``interval`` (seconds,
    or 30s, 15m, 12h, 2d).  An unchanged schedule keeps its state; a
    changed one is replaced.

Bad values fail when the configuration is loaded, with a
``ConfigurationError`` naming the file and line.
"""
import re

import zope.component.event  # noqa: F401 (zope.event -> subscribers)
import zope.interface
import zope.schema
from zope.component.zcml import subscriber
from zope.configuration.fields import Tokens

from zasync import interfaces
from zasync import manager
from zasync import schedule
from zasync import subscribers
from zasync.durations import parse_duration

__all__ = ['dispatcher', 'IDispatcherDirective', 'IJobsDirective',
           'BadSchedule', 'InvalidName', 'IPeriodicDirective', 'jobs',
           'periodic']

_NAME = re.compile(r'^[A-Za-z0-9_.\-]*$')


class InvalidName(zope.schema.ValidationError):
    __doc__ = ('Names may only use letters, digits, "_", "." and "-"')


def _name_constraint(value):
    if not _NAME.match(value):
        raise InvalidName(value)
    return True


def _queue_names_constraint(value):
    for name in value:
        _name_constraint(name)
    return True


class IJobsDirective(zope.interface.Interface):
    """Install queues and the job container when the database opens."""

    database = zope.schema.TextLine(
        title='Database name',
        description='Member of the multi-database holding the queues and '
                    'the job container; empty: the main database.',
        required=False, default='', constraint=_name_constraint)

    queues = Tokens(
        title='Queue names',
        description="Queues to install besides the default queue ''.",
        value_type=zope.schema.TextLine(constraint=_name_constraint),
        required=False, default=[])


class IDispatcherDirective(zope.interface.Interface):
    """Start a threaded dispatcher with one agent when the database opens.
    """

    poll_interval = zope.schema.Float(
        title='Poll interval',
        description='Seconds between two polls (new work wakes the '
                    'dispatcher at once anyway).',
        required=False, default=5.0, min=0.01, max=3600.0)

    agent = zope.schema.TextLine(
        title='Agent name', required=False, default='main', min_length=1,
        constraint=_name_constraint)

    size = zope.schema.Int(
        title='Agent size', description='Jobs performed at once.',
        required=False, default=3, min=1, max=1000)

    database = zope.schema.TextLine(
        title='Database name',
        description='Member of the multi-database holding the queues; '
                    'empty: the main database.',
        required=False, default='', constraint=_name_constraint)


def jobs(_context, database='', queues=()):
    db_name = database or None
    names = ('',) + tuple(name for name in queues if name)
    for handler in (subscribers.QueueInstaller(names, db_name=db_name),
                    manager.JobContainerInstaller(db_name=db_name)):
        subscriber(_context, for_=(interfaces.IDatabaseOpenedEvent,),
                   handler=handler)


def dispatcher(_context, poll_interval=5.0, agent='main', size=3,
               database=''):
    # Two dispatchers in one process would share the instance UUID.
    _context.action(discriminator=('zasync:dispatcher',))
    subscriber(_context, for_=(interfaces.IDatabaseOpenedEvent,),
               handler=subscribers.ThreadedDispatcherInstaller(
                   poll_interval=poll_interval, db_name=database or None))
    subscriber(_context, for_=(interfaces.IDispatcherActivated,),
               handler=subscribers.AgentInstaller(agent, size=size))


# --------------------------------------------------------------------------
# <zasync:periodic>


class BadSchedule(zope.schema.ValidationError):
    __doc__ = 'Not a valid schedule setting'

    def __str__(self):
        return str(self.args[0]) if self.args else self.__doc__


def _checked(check):
    def constraint(value):
        try:
            check(value)
        except ValueError as e:
            raise BadSchedule(str(e))
        return True
    return constraint


class IPeriodicDirective(zope.interface.Interface):
    """Install a schedule of periodic jobs when the database opens."""

    name = zope.schema.TextLine(
        title='Schedule name', required=True, min_length=1)

    callable = zope.schema.TextLine(
        title='Callable', description='The dotted name of a module-level '
        'function (pkg.mod.func).', required=True,
        constraint=_checked(schedule.callable_name))

    cron = zope.schema.TextLine(
        title='Cron expression', description='Five fields: minute hour '
        'day-of-month month day-of-week.', required=False,
        constraint=_checked(schedule.check_cron))

    interval = zope.schema.TextLine(
        title='Interval', description='Seconds, or 30s, 15m, 12h, 2d.',
        required=False,
        constraint=_checked(lambda value: schedule.Schedule(
            'builtins.print', interval=parse_duration(value))))

    timezone = zope.schema.TextLine(
        title='Timezone', description='A zoneinfo name (cron schedules).',
        required=False, default='UTC',
        constraint=_checked(schedule.check_timezone))

    queue = zope.schema.TextLine(
        title='Queue name', required=False, default='',
        constraint=_name_constraint)

    catch_up = zope.schema.Choice(
        title='Catch-up policy', values=schedule.CATCH_UP, required=False,
        default='once')

    database = zope.schema.TextLine(
        title='Database name',
        description='Member of the multi-database holding the queues; '
                    'empty: the main database.',
        required=False, default='', constraint=_name_constraint)


def periodic(_context, name, callable, cron=None, interval=None,
             timezone='UTC', queue='', catch_up='once', database=''):
    from zope.configuration.exceptions import ConfigurationError
    if (cron is None) == (interval is None):
        raise ConfigurationError('zasync:periodic %r: give either cron or '
                                 'interval' % (name,))
    db_name = database or None
    try:
        installer = schedule.ScheduleInstaller(
            name, queue=queue, db_name=db_name, callable=callable, cron=cron,
            interval=None if interval is None else parse_duration(interval),
            timezone=timezone, catch_up=catch_up)
    except ValueError as e:
        raise ConfigurationError('zasync:periodic %r: %s' % (name, e))
    _context.action(discriminator=('zasync:periodic', database, queue, name))
    # The queue first (the subscribers run in this order).
    subscriber(_context, for_=(interfaces.IDatabaseOpenedEvent,),
               handler=subscribers.QueueInstaller((queue,), db_name=db_name))
    subscriber(_context, for_=(interfaces.IDatabaseOpenedEvent,),
               handler=installer)
