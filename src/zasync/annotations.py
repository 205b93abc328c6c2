"""A job's annotations, stored only once something is written to them.

Most jobs never get an annotation.  Giving each its own ``OOBTree`` when it
is made costs one more object to store with every put, and to load when it
is inspected.  ``job.annotations`` therefore gives, while the job has none,
a ``PendingAnnotations``: it reads as an empty ``OOBTree``, and the first
write makes the job's real ``OOBTree`` (stored with the job), which every
later call reaches.  Reading never writes: a page or a command that looks
at a job's annotations does not change the job.
"""
import BTrees.OOBTree

__all__ = ['PendingAnnotations']

#: the ``OOBTree`` methods that only read; any other attribute (a write)
#: makes the job's tree first
READERS = frozenset([
    'get', 'keys', 'values', 'items', 'has_key', 'minKey', 'maxKey',
    'byValue', 'iterkeys', 'itervalues', 'iteritems',
])


class PendingAnnotations:
    """``job.annotations`` of a job that has no tree of annotations yet.

    ``owner`` is the job; ``attribute`` the name under which it keeps its
    tree (None until there is one).
    """

    __slots__ = ('_owner', '_attribute', '_empty')

    def __init__(self, owner, attribute='_annotations'):
        self._owner = owner
        self._attribute = attribute
        self._empty = None

    def _reading(self):
        tree = getattr(self._owner, self._attribute)
        if tree is not None:
            return tree
        if self._empty is None:
            self._empty = BTrees.OOBTree.OOBTree()   # (never stored)
        return self._empty

    def _writing(self):
        tree = getattr(self._owner, self._attribute)
        if tree is None:
            tree = BTrees.OOBTree.OOBTree()
            setattr(self._owner, self._attribute, tree)
        return tree

    def __getattr__(self, name):
        if name in READERS:
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

    def __setitem__(self, key, value):
        self._writing()[key] = value

    def __delitem__(self, key):
        del self._writing()[key]

    def __repr__(self):
        return '<PendingAnnotations of %r: %r>' % (
            self._owner, dict(self._reading().items()))
