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
from zasync import subscribers

__all__ = ['dispatcher', 'IDispatcherDirective', 'IJobsDirective',
           'InvalidName', 'jobs']

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
