"""Small persistent containers that merge concurrent changes.

ZODB calls ``_p_resolveConflict(old, committed, new)`` when two
transactions changed the same object.  The containers here treat their
content as a *set of entries*: each transaction's change is the set of
entries it added and the set it removed, and two such changes merge unless
they touch the same entry.  That is exactly what a queue needs: two puts
merge, two claims of different jobs merge, two claims of the same job
conflict (one transaction wins, the other retries).

BTrees resolve conflicts too, but not for the patterns of a queue: removing
the first key of a bucket, emptying a bucket or splitting one all conflict.
"""
import persistent
from ZODB.POSException import ConflictError


def _ref_id(ref):
    """Identity of a persistent reference (or object) in a state."""
    oid = getattr(ref, 'oid', None)
    if oid is None:
        oid = getattr(ref, '_p_oid', None)
    if oid is None:
        return ('id', id(ref))
    return oid


class _Small(persistent.Persistent):
    """What the containers below share: a dict in ``_DATA``, sorted reads
    cached per connection, and ``retired``.

    ``retired`` marks a container that was dropped by its own container;
    adding to a retired one concurrently conflicts, so nothing can be added
    to an orphan.
    """

    retired = False
    _DATA = None

    def _changed(self):
        self._p_changed = True
        self._v_sorted = None

    def sorted_items(self):
        """``(key, value)`` pairs in key order (cached per connection)."""
        cached = getattr(self, '_v_sorted', None)
        if cached is None:
            cached = self._v_sorted = sorted(
                getattr(self, self._DATA).items(), key=lambda item: item[0])
        return cached

    @staticmethod
    def _merge_retired(state, committed, new, added_c, added_n):
        """Refuse additions that met a concurrent retirement; else set
        ``retired`` in the merged ``state`` if either side retired."""
        if ((committed.get('retired') and added_n)
                or (new.get('retired') and added_c)):
            raise ConflictError('entry added to a retired container')
        if committed.get('retired') or new.get('retired'):
            state['retired'] = True
        return state


class ResolvingMap(_Small):
    """A small mapping of keys to persistent objects; concurrent changes to
    *different* keys merge."""

    _DATA = '_items'

    def __init__(self):
        self._items = {}

    def __len__(self):
        return len(self._items)

    def __bool__(self):
        return bool(self._items)

    def __contains__(self, key):
        return key in self._items

    def __getitem__(self, key):
        return self._items[key]

    def add(self, key, value):
        if key in self._items:
            raise KeyError('duplicate key', key)
        self._items[key] = value
        self._changed()

    def remove(self, key):
        value = self._items.pop(key)
        self._changed()
        return value

    def _p_resolveConflict(self, old, committed, new):
        o = old.get('_items', {})
        c = committed.get('_items', {})
        n = new.get('_items', {})
        removed_c = o.keys() - c.keys()
        removed_n = o.keys() - n.keys()
        if removed_c & removed_n:
            raise ConflictError('the same entry was removed twice')
        added_c = c.keys() - o.keys()
        added_n = n.keys() - o.keys()
        if added_c & added_n:
            raise ConflictError('the same entry was added twice')
        for name in set(committed) | set(new):
            if name in ('_items', 'retired'):
                continue
            if committed.get(name) is not new.get(name) and (
                    committed.get(name) != new.get(name)):
                raise ConflictError('conflicting attribute change', name)
        items = dict(c)
        for key in removed_n:
            items.pop(key, None)
        for key in added_n:
            items[key] = n[key]
        state = dict(committed)
        state['_items'] = items
        return self._merge_retired(state, committed, new, added_c, added_n)


class ResolvingIndex(_Small):
    """A small mapping of keys to *tuples* of persistent children.

    Two transactions creating a child for the same key concurrently both
    keep theirs (the tuple then holds two children); dropping a child twice
    is harmless.  Used for the levels above the ``ResolvingMap`` leaves.
    """

    _DATA = '_children'

    def __init__(self):
        self._children = {}

    def __len__(self):
        return len(self._children)

    def get(self, key):
        return self._children.get(key, ())

    def add(self, key, child):
        self._children[key] = self._children.get(key, ()) + (child,)
        self._changed()

    def discard(self, key, child):
        children = tuple(c for c in self._children.get(key, ())
                         if c is not child)
        if children:
            self._children[key] = children
        else:
            self._children.pop(key, None)
        self._changed()

    def _p_resolveConflict(self, old, committed, new):
        o = old.get('_children', {})
        c = committed.get('_children', {})
        n = new.get('_children', {})
        added_c = added_n = False
        children = {}
        for key in set(o) | set(c) | set(n):
            old_ids = {_ref_id(r): r for r in o.get(key, ())}
            c_ids = {_ref_id(r): r for r in c.get(key, ())}
            n_ids = {_ref_id(r): r for r in n.get(key, ())}
            added_c = added_c or bool(c_ids.keys() - old_ids.keys())
            added_n = added_n or bool(n_ids.keys() - old_ids.keys())
            merged = dict(c_ids)
            for rid in n_ids.keys() - old_ids.keys():
                merged[rid] = n_ids[rid]
            for rid in old_ids.keys() - n_ids.keys():
                merged.pop(rid, None)
            if merged:
                # keep committed order, then new additions
                children[key] = tuple(merged.values())
        state = dict(committed)
        state['_children'] = children
        return self._merge_retired(state, committed, new, added_c, added_n)


# --------------------------------------------------------------------------
# Parts made on first use

_ABSENT = object()


def _same(a, b):
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:   # (values that cannot be compared: changed)
        return False


def _changed(old, state):
    return {key for key in set(old) | set(state)
            if not _same(old.get(key, _ABSENT), state.get(key, _ABSENT))}


def merge_made_parts(old, committed, new, parts):
    """Resolve a conflict of an object that makes some of its parts (the
    attributes ``parts``, None until then) on first use, in separate
    objects: a commit that only *made* such parts merges with a concurrent
    one that did not touch them; anything else conflicts.

    That keeps what a separate object gave before it was made lazily: a
    live annotation written for a running job in another transaction does
    not conflict with the job's own commit.
    """
    made_c = _changed(old, committed)
    made_n = _changed(old, new)
    if not made_c:
        return new
    if not made_n:
        return committed
    for made, made_state, other, other_state in (
            (made_c, committed, made_n, new),
            (made_n, new, made_c, committed)):
        if (made <= parts and not made & other
                and all(old.get(key) is None for key in made)):
            state = dict(other_state)
            for key in made:
                state[key] = made_state[key]
            return state
    raise ConflictError('concurrent changes of the same attributes')
