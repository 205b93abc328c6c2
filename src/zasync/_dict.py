"""A persistent, BTree-backed mapping base (zc.dict is Python 2 only).

Values get ``name`` (their key) and ``parent`` (the mapping) when added, and
lose them when removed or replaced.  The size is a conflict-free
``BTrees.Length``.
"""
import BTrees.Length
import BTrees.OOBTree

from zasync import utils

_marker = object()


class Dict(utils.Base):
    """An ``OOBTree`` + ``Length`` mapping with parent bookkeeping."""

    def __init__(self, *args, **kwargs):
        self._data = BTrees.OOBTree.OOBTree()
        self._len = BTrees.Length.Length()
        if args or kwargs:
            self.update(*args, **kwargs)

    # -- hooks -------------------------------------------------------------

    def _check(self, key, value):
        """Raise to refuse ``value``; subclasses override."""

    def _adopt(self, key, value):
        value.name = key
        value.parent = self

    def _release(self, value):
        value.name = None
        value.parent = None

    # -- writing -----------------------------------------------------------

    def __setitem__(self, key, value):
        self._check(key, value)
        old = self._data.get(key, _marker)
        if old is not _marker:
            if old is value:
                return
            self._release(old)
        else:
            self._len.change(1)
        self._data[key] = value
        self._adopt(key, value)

    def __delitem__(self, key):
        self.pop(key)

    def pop(self, key, *default):
        try:
            value = self._data.pop(key)
        except KeyError:
            if default:
                return default[0]
            raise
        self._len.change(-1)
        self._release(value)
        return value

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, value):
        if key not in self._data:
            self[key] = value
        return self._data[key]

    def clear(self):
        for key in list(self._data.keys()):
            self.pop(key)

    # -- reading -----------------------------------------------------------

    # A key of another type than the stored ones (``2`` among names) is
    # simply absent, as in a dict (a BTree cannot compare them).

    def __getitem__(self, key):
        try:
            return self._data[key]
        except TypeError:
            raise KeyError(key) from None

    def get(self, key, default=None):
        try:
            return self._data.get(key, default)
        except TypeError:
            return default

    def __contains__(self, key):
        try:
            return key in self._data
        except TypeError:
            return False

    def __len__(self):
        return self._len()

    def __bool__(self):
        return self._len() > 0

    def __iter__(self):
        return iter(self._data)

    def keys(self):
        return self._data.keys()

    def values(self):
        return self._data.values()

    def items(self):
        return self._data.items()

    def copy(self):
        raise TypeError('%s cannot be copied' % type(self).__name__)
