"""A job's parts that are stored only once something is written to them.

Most jobs never get an annotation, and most are called without keyword
arguments.  Giving each job its own ``OOBTree`` of annotations and its own
``PersistentMapping`` of keyword arguments when it is made costs two more
objects to store with every put, and to load when it is claimed or
inspected.  While a job has none, ``job.annotations`` and ``job.kwargs``
give a stand-in that reads as an empty one, and whose first write makes
the job's real one (stored with the job), which every later call reaches.
Reading never writes: a page or a command that looks at a job does not
change it.

A job's positional arguments are stored in the job's own record, as a
plain list: ``job.args`` gives an ``InlineArguments`` reading it, whose
writes mark the job changed.  (zc.async stored them in a
``PersistentList`` of their own: one more object for every put; a job
loaded with one, from zc.async or an earlier zasync, keeps it.)
"""
import BTrees.OOBTree
import persistent.mapping

__all__ = ['InlineArguments', 'PendingAnnotations', 'PendingKeywords',
           'PendingPart']


class PendingPart:
    """The stand-in for a part of ``owner`` kept in its attribute
    ``attribute`` (None until the first write makes it with
    ``factory``).  ``READERS``: the methods that only read; any other
    attribute (a write) makes the part first."""

    __slots__ = ('_owner', '_attribute', '_empty')

    factory = None
    READERS = frozenset()

    def __init__(self, owner, attribute):
        self._owner = owner
        self._attribute = attribute
        self._empty = None

    def _reading(self):
        part = getattr(self._owner, self._attribute)
        if part is not None:
            return part
        if self._empty is None:
            self._empty = self.factory()   # (never stored)
        return self._empty

    def _writing(self):
        part = getattr(self._owner, self._attribute)
        if part is None:
            part = self.factory()
            setattr(self._owner, self._attribute, part)
        return part

    def __getattr__(self, name):
        if name.startswith('_'):
            # (``_p_changed``, ``__html__``, ...: a question about the
            # stand-in, which must not make the part)
            raise AttributeError(name)
        if name in self.READERS:
            return getattr(self._reading(), name)
        return getattr(self._writing(), name)

    def __getitem__(self, key):
        return self._reading()[key]

    def __contains__(self, key):
        return key in self._reading()

    def __len__(self):
        return len(self._reading())

    def __bool__(self):
        return bool(self._reading())

    def __iter__(self):
        return iter(self._reading())

    def __eq__(self, other):
        if isinstance(other, PendingPart):
            other = other._reading()
        return self._reading() == other

    __hash__ = None

    def __setitem__(self, key, value):
        self._writing()[key] = value

    def __delitem__(self, key):
        del self._writing()[key]

    def __repr__(self):
        return repr(self._reading())   # (it reads as the part would)


class PendingAnnotations(PendingPart):
    """``job.annotations`` of a job that has no tree of annotations yet."""

    __slots__ = ()
    factory = BTrees.OOBTree.OOBTree
    READERS = frozenset([
        'get', 'keys', 'values', 'items', 'has_key', 'minKey', 'maxKey',
        'byValue', 'iterkeys', 'itervalues', 'iteritems',
    ])


class PendingKeywords(PendingPart):
    """``job.kwargs`` of a job called without keyword arguments."""

    __slots__ = ()
    factory = persistent.mapping.PersistentMapping
    READERS = frozenset(['get', 'keys', 'values', 'items', 'copy'])


class InlineArguments(PendingPart):
    """``job.args`` of a job whose arguments are a plain list in its own
    record (``attribute``): it reads as that list, and a write changes it
    and marks the job changed, so that it is stored with the job."""

    __slots__ = ()
    READERS = frozenset(['index', 'count', 'copy'])

    def _reading(self):
        return getattr(self._owner, self._attribute)

    def _writing(self):
        self._owner._p_changed = True
        return getattr(self._owner, self._attribute)

    def __add__(self, other):
        return list(self._reading()) + list(other)

    def __radd__(self, other):
        return list(other) + list(self._reading())

    def __iadd__(self, other):
        self._writing().extend(other)
        return self

    def __reversed__(self):
        return reversed(self._reading())
