"""Placeholders for what a zc.async database holds and zasync has not.

The migration renames the containers zc.async took from zc.queue, zc.dict
and zope.bforest to the classes here.  They only *read* the old state:
``zasync migrate`` then rebuilds zasync's own structures from them (in the
same order) and nothing refers to them afterwards.  A database converted
by zodbupdate alone (with zasync's entry points) holds them until
``zasync migrate`` has run.

``TwistedFailure`` reads a ``twisted.python.failure.Failure`` /
``zc.twist.Failure`` and is stored again as a ``zasync.failure.Failure``
with the exception's class, message and traceback text.  ``chooseFirst``
is zc.async's pre-1.5 agent chooser, for agents that still name it.
"""
import persistent

from zasync.failure import Failure
from zasync.failure import Frame
from zasync.failure import bounded_repr
from zasync.migration.rules import zcasync_class_name

__all__ = ['BucketQueue', 'chooseFirst', 'CompositeQueue', 'Forest',
           'Periodic', 'success_or_failure', 'TwistedFailure']


class BucketQueue(persistent.Persistent):
    """A ``zc.queue`` bucket: its items in order."""

    def items(self):
        return list(self.__dict__.get('_data', ()))

    def __iter__(self):
        return iter(self.items())

    def __len__(self):
        return len(self.items())


class CompositeQueue(persistent.Persistent):
    """A ``zc.queue`` composite queue: its buckets' items in order."""

    def items(self):
        found = []
        for bucket in self.__dict__.get('_data', ()):
            found.extend(bucket.items())
        return found

    def __iter__(self):
        return iter(self.items())

    def __len__(self):
        return len(self.items())


class Forest(persistent.Persistent):
    """A ``zope.bforest`` forest: the union of its trees' items."""

    def trees(self):
        return list(self.__dict__.get('buckets', ()))

    def items(self):
        found = []
        for tree in self.trees():
            found.extend(tree.items())
        return found


class Periodic(persistent.Persistent):
    """zc.async's completed-jobs collection (``zc.async.utils.Periodic``):
    ``(key, job)`` pairs, oldest job first (newer jobs have smaller
    keys)."""

    def forest(self):
        return self.__dict__.get('_data')

    def items(self):
        forest = self.forest()
        if forest is None:
            return []
        return sorted(forest.items(), key=lambda item: item[0], reverse=True)

    def __len__(self):
        return len(self.items())


def chooseFirst(agent):
    """zc.async's legacy chooser: the first job the agent's queue gives."""
    return agent.queue.claim()


def success_or_failure(success, failure, res):
    """zc.async's legacy callback: ``failure(res)`` for a failure,
    ``success(res)`` otherwise (None: the result passes)."""
    chosen = failure if isinstance(res, Failure) else success
    if chosen is None:
        return res
    return chosen(res)


def _message(value):
    args = getattr(value, 'args', None)
    if args is None:
        args = getattr(value, '__Broken_newargs__', ())
    try:
        if isinstance(value, BaseException):
            return str(value)
    except Exception:
        pass
    if len(args) == 1:
        return str(args[0])
    return ', '.join(str(a) for a in args) if args else ''


def _args(value):
    if not isinstance(value, BaseException):
        return None
    args = tuple(value.args)
    try:
        if str(type(value)(*args)) != str(value):
            return None
    except Exception:
        return None
    return args


class TwistedFailure(Failure):
    """A Twisted / zc.twist ``Failure`` read from a zc.async database:
    once its state is read it *is* a ``zasync.failure.Failure`` (see
    ``from_twisted``), and is stored again as one."""

    def __setstate__(self, state):
        self.__dict__.update(from_twisted(state))
        self.__class__ = Failure


def from_twisted(state):
    """The state of a ``zasync.failure.Failure`` for the pickled state of a
    Twisted failure (``type``, ``value``, ``parents``, ``frames``,
    ``count``): the exception's class (by name), message and arguments,
    and the traceback's frames, with the variables Twisted kept."""
    value = state.get('value')
    parents = [zcasync_class_name(str(name))
               for name in state.get('parents') or ()]
    cls = state.get('type')
    if parents:
        type_name = parents[0]
    elif isinstance(cls, type):
        type_name = zcasync_class_name('%s.%s' % (cls.__module__,
                                                  cls.__name__))
    else:
        type_name = 'builtins.Exception'
    frames = []
    for frame in state.get('frames') or ():
        try:
            name, filename, lineno, local_items, global_items = frame
        except (TypeError, ValueError):
            continue
        frames.append(Frame(
            str(filename), lineno, str(name), '',
            [(str(k), bounded_repr(v)) for k, v in local_items or ()],
            [(str(k), bounded_repr(v)) for k, v in global_items or ()]))
    message = _message(value)
    if isinstance(value, BaseException):
        value_repr = bounded_repr(value)
    else:
        value_repr = '%s(%r)' % (type_name.rpartition('.')[2], message)
    return {
        'count': state.get('count') or 0,
        'type_name': type_name,
        'message': message,
        'value_repr': value_repr,
        'args': _args(value),
        'frames': frames,
        '_mro': tuple(parents) or (type_name,),
    }
