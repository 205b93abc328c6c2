"""The store of a queue's pending jobs: ordered, sharded, conflict-free.

Layout (three levels, each level a small persistent object)::

    root  ResolvingIndex   (class, epoch)   -> node(s)
    node  ResolvingIndex   (window, group)  -> shard(s)
    shard ResolvingMap     (seq, random)    -> job

* ``class`` is 0 for jobs put back (served first), 1 for the others.
* ``window`` is the second (POSIX time) at which the job becomes due;
  ``epoch`` is ``window >> EPOCH_BITS`` (about 17 minutes), so a node never
  holds more than ~1000 windows.  Put-back jobs use window 0.
* ``seq`` comes from a conflict-free counter (a ``BTrees.Length``): jobs of
  the same window are kept in put order.  ``group`` is ``seq // SHARD_SIZE``,
  so a shard holds at most about ``SHARD_SIZE`` jobs whatever the clock does.
  Concurrent puts may read the same ``seq``; the random part keeps their
  keys apart.

Every level merges concurrent changes of different entries (see
``zasync._resolving``), hence: puts never conflict with puts or claims,
claims of different jobs never conflict, two claims of the same job do.
The total is a ``BTrees.Length``.  Each put or claim loads and writes a
constant number of small objects; see ``docs/queue.rst``.
"""
import random

import BTrees.Length
import persistent

from zasync._resolving import ResolvingIndex
from zasync._resolving import ResolvingMap

SHARD_SIZE = 64
EPOCH_BITS = 10
PUT_BACK = 0
REGULAR = 1


class Location:
    """Where an entry lives (in memory only, for removal)."""

    __slots__ = ('root_key', 'node', 'node_key', 'shard', 'key', 'store')

    def __init__(self, root_key, node, node_key, shard, key, store=None):
        self.root_key = root_key
        self.node = node
        self.node_key = node_key
        self.shard = shard
        self.key = key
        self.store = store   # the PendingJobs it is in

    @property
    def put_back(self):
        return self.root_key[0] == PUT_BACK

    @property
    def window(self):
        return self.node_key[0]


def window_of(when):
    """The integer second of an aware datetime."""
    return int(when.timestamp() // 1)


class PendingJobs(persistent.Persistent):
    """Ordered pending entries: put-back ones first (FIFO), then by due
    second, then in put order."""

    def __init__(self):
        self._root = ResolvingIndex()
        self._seq = BTrees.Length.Length()
        self._length = BTrees.Length.Length()

    def __len__(self):
        return self._length()

    def add(self, obj, when=None, put_back=False):
        """Add ``obj``, due at ``when`` (aware datetime), or first in line
        when ``put_back``."""
        seq = self._seq()
        self._seq.change(1)
        group = seq // SHARD_SIZE
        if put_back:
            root_key, node_key = (PUT_BACK, 0), (0, group)
        else:
            window = window_of(when)
            root_key = (REGULAR, window >> EPOCH_BITS)
            node_key = (window, group)
        node = self._live_child(self._root, root_key, ResolvingIndex)
        shard = self._live_child(node, node_key, ResolvingMap)
        key = (seq, random.getrandbits(62))
        shard.add(key, obj)
        self._length.change(1)
        return Location(root_key, node, node_key, shard, key, self)

    def _live_child(self, index, key, factory):
        for child in index.get(key):
            if not child.retired:
                return child
        child = factory()
        jar = self._p_jar
        if jar is not None:
            jar.add(child)
        index.add(key, child)
        return child

    def entries(self, until=None, put_back=None):
        """``(location, obj)`` in order; with ``until`` (a datetime), stop
        before the first window later than ``until``'s second; with
        ``put_back`` True only the entries put back, False only the
        others."""
        limit = None if until is None else window_of(until)
        for root_key, nodes in self._root.sorted_items():
            if put_back is not None and (root_key[0] == PUT_BACK) != put_back:
                if put_back:
                    return   # (the put-back entries come first)
                continue
            if (limit is not None and root_key[0] == REGULAR
                    and root_key[1] > limit >> EPOCH_BITS):
                return
            if len(nodes) == 1:
                node_items = ((k, [(nodes[0], shard) for shard in shards])
                              for k, shards in nodes[0].sorted_items())
            else:   # nodes created concurrently: merge them by key
                merged = {}
                for node in nodes:
                    for k, shards in node.sorted_items():
                        merged.setdefault(k, []).extend(
                            (node, shard) for shard in shards)
                node_items = sorted(merged.items(), key=lambda item: item[0])
            for node_key, shards in node_items:
                if (limit is not None and root_key[0] == REGULAR
                        and node_key[0] > limit):
                    return
                if len(shards) == 1:
                    node, shard = shards[0]
                    items = ((k, node, shard, v)
                             for k, v in shard.sorted_items())
                else:   # shards created concurrently: merge them by key
                    items = sorted(
                        ((k, node, shard, v) for node, shard in shards
                         for k, v in shard.sorted_items()),
                        key=lambda item: item[0])
                for key, node, shard, obj in items:
                    yield Location(root_key, node, node_key, shard, key,
                                   self), obj

    def __iter__(self):
        for location, obj in self.entries():
            yield obj

    def count_due_after(self, now, due):
        """How many entries become due after ``now`` (an aware datetime):
        counted from the index by due second -- the entries of later
        seconds by length -- loading only the objects of ``now``'s second
        and those put back; ``due(obj)`` is an object's due time (or None:
        due).  A shard that cannot be read counts nothing."""
        limit = window_of(now)
        epoch = limit >> EPOCH_BITS

        def later(shard):
            try:
                return sum(1 for key, obj in shard.sorted_items()
                           if (due(obj) or now) > now)
            except Exception:
                return 0

        count = 0
        for root_key, nodes in self._root.sorted_items():
            if root_key[0] != REGULAR:
                # put back: first in line, but not due either
                count += sum(later(shard) for node in nodes
                             for node_key, shards in node.sorted_items()
                             for shard in shards)
                continue
            if root_key[1] < epoch:
                continue
            for node in nodes:
                for node_key, shards in node.sorted_items():
                    if node_key[0] > limit:
                        count += sum(len(shard) for shard in shards)
                    elif node_key[0] == limit:
                        count += sum(later(shard) for shard in shards)
        return count

    def find(self, obj):
        """The location of ``obj`` (by identity), or None.  Linear."""
        for location, candidate in self.entries():
            if candidate is obj:
                return location
        return None

    def discard(self, location, now=None):
        """Remove the entry at ``location``; prune what became empty and can
        no longer receive entries."""
        location.shard.remove(location.key)
        self._length.change(-1)
        self._prune(location, now)

    def _prune(self, location, now):
        shard, node = location.shard, location.node
        if shard:
            return
        current_group = self._seq() // SHARD_SIZE
        old_group = location.node_key[1] < current_group - 1
        old_window = (now is not None and not location.put_back
                      and location.window < window_of(now) - 1)
        if not (old_group or old_window):
            return   # puts may still target this shard
        # Retiring writes the shard: a concurrent put into it conflicts
        # instead of adding to an orphan.
        shard.retired = True
        node.discard(location.node_key, shard)
        if (len(node) == 0 and not location.put_back and now is not None
                and location.root_key[1] < window_of(now) >> EPOCH_BITS):
            node.retired = True
            self._root.discard(location.root_key, node)


# --------------------------------------------------------------------------
# Priorities

MIN_PRIORITY = -100
MAX_PRIORITY = 100


def check_priority(value):
    """A priority: an ``int`` from -100 to 100 (higher runs first)."""
    if (isinstance(value, bool) or not isinstance(value, int)
            or not MIN_PRIORITY <= value <= MAX_PRIORITY):
        raise ValueError('priority must be a whole number from %d to %d, '
                         'not %r' % (MIN_PRIORITY, MAX_PRIORITY, value))
    return value


class Levels:
    """A queue's pending jobs over priorities (a view, not stored).

    Priority 0 lives in the queue's original ``PendingJobs``; every other
    priority in a ``PendingJobs`` of its own, in ``levels`` (an ``OOBTree``
    by priority, or None while no other priority was used).  Claim order:
    the entries put back, highest priority first; then the others, by
    priority, highest first, and within one priority by due second and
    put order.  A claim scans a level only up to its first job due later,
    so each level costs what a queue without priorities costs.
    """

    def __init__(self, default, levels):
        self.default = default
        self.levels = levels

    def stores(self):
        """``[(priority, PendingJobs)]``, highest priority first."""
        if not self.levels:
            return [(0, self.default)]
        others = list(self.levels.items())
        result = [(p, store) for p, store in reversed(others) if p > 0]
        result.append((0, self.default))
        result.extend((p, store) for p, store in reversed(others) if p < 0)
        return result

    def entries(self, until=None):
        """``(location, obj)`` in claim order (see the class)."""
        stores = self.stores()
        if len(stores) == 1:
            yield from self.default.entries(until)
            return
        for put_back in (True, False):
            for priority, store in stores:
                yield from store.entries(until, put_back=put_back)

    def __iter__(self):
        for location, obj in self.entries():
            yield obj

    def __len__(self):
        return sum(len(store) for priority, store in self.stores())

    def find(self, obj, priority=None):
        """The location of ``obj`` (by identity), or None: in the level of
        ``priority`` first, when given.  Linear."""
        stores = self.stores()
        if priority is not None:
            stores.sort(key=lambda item: item[0] != priority)
        for p, store in stores:
            location = store.find(obj)
            if location is not None:
                return location
        return None

    def count_due_after(self, now, due):
        return sum(store.count_due_after(now, due)
                   for priority, store in self.stores())
