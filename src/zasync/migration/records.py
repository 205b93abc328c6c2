"""Step 1 of a migration: every current record, pickled again for Python 3.

zodbupdate's ``ObjectRenamer`` reads each record (Python 2 ``str`` decoded
as UTF-8 where it is text, kept as bytes where it is not, such as the oids
in zc.async's keys), renames the globals (``rules.RENAMES``, the Python 2
builtin modules), lets the state converters here adjust zc.async's
attributes (``convert_state``), and pickles it again (protocol 3).  The
record keeps its oid; a record that cannot be converted is kept as it was
and reported, never dropped.
"""
import datetime
import io
import logging

import ZODB.utils
import zodbpickle.pickle
from zodbupdate.serialize import ObjectRenamer

from zasync.migration.rules import GlobalRenames

__all__ = ['class_of', 'convert_state', 'fix_multi_oid_references',
           'RecordConverter', 'referred_databases']

UTC = datetime.timezone.utc

#: zc.async's job attributes that zasync names without the underscore
_JOB_RENAMES = {'_active_start': 'active_start', '_active_end': 'active_end'}
_JOB_TIMES = ('_begin_after', 'active_start', 'active_end')


def _aware(value):
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, datetime.datetime) and value.tzinfo is not UTC:
        return value.astimezone(UTC)
    return value


def _rename_keys(state, renames):
    changed = False
    for old, new in renames.items():
        if old in state:
            value = state.pop(old)
            if new not in state:
                state[new] = value
            changed = True
    return changed


def _times(state, names):
    changed = False
    for name in names:
        value = state.get(name)
        new = _aware(value)
        if new is not value:
            state[name] = new
            changed = True
    return changed


def _is_job_state(state):
    return '_callable_root' in state and (
        '_status_id' in state or 'args' in state or '_args' in state)


def convert_state(key, state):
    """Adjust the state of a record of class ``key`` (``(module, name)``,
    after renaming) from zc.async's attributes to zasync's; return whether
    it changed.  Converting a converted state again changes nothing."""
    if not isinstance(state, dict):
        return False
    changed = False
    if _is_job_state(state):   # zc.async's Job, z3 Job, or a subclass
        changed |= _rename_keys(state, _JOB_RENAMES)
        changed |= _times(state, _JOB_TIMES)
        return changed
    module, name = key
    if module == 'zasync.queue':
        if name in ('Quotas', 'Dispatchers', 'Queues'):
            changed |= _rename_keys(state, {'__parent__': 'parent'})
        elif name == 'Quota':
            changed |= _rename_keys(state, {'size': '_size'})
        elif name == 'DispatcherAgents':
            if 'name' not in state and 'UUID' in state:
                state['name'] = state['UUID']
                changed = True
            changed |= _times(state, ('activated',))
    elif name in ('SuccessFailureCallbackProxy', 'ConditionalCallbackProxy'):
        # zc.async's proxies kept these on the class only
        for attribute in ('failure_log_level', 'retry_policy_factory'):
            if attribute not in state:
                state[attribute] = None
                changed = True
    elif (module, name) in (('zasync.retry', 'RetryCommonFourTimes'),
                            ('zasync.retry', 'RetryCommonForever'),
                            ('zasync.retry', 'NeverRetry')):
        if state.get('__parent__') is not None and 'parent' not in state:
            state['parent'] = state['__parent__']
            changed = True
    return changed


class _Decoders:
    """The ``decoders`` ObjectRenamer asks by class: ``convert_state``
    for every class (a Job subclass of the application included)."""

    def __init__(self):
        self._cache = {}

    def get(self, key, default=None):
        decoder = self._cache.get(key)
        if decoder is None:
            def decoder(state, key=key):
                return convert_state(key, state)
            self._cache[key] = decoder
        return [decoder]


class _ClassOnly(zodbpickle.pickle.Unpickler):
    def find_class(self, module, name):
        return (module, name)


def class_of(data):
    """``'module.name'`` of a record's class, read from its first pickle
    without importing anything ('?' if that fails)."""
    try:
        unpickler = _ClassOnly(io.BytesIO(data), encoding='utf-8',
                               errors='bytes')
        unpickler.persistent_load = lambda ref: None
        meta = unpickler.load()
    except Exception:
        return '?'
    if isinstance(meta, tuple) and meta and isinstance(meta[0], tuple):
        meta = meta[0]
    if (isinstance(meta, tuple) and len(meta) == 2
            and all(isinstance(p, str) for p in meta)):
        return '%s.%s' % meta
    return '?'


def _references(data):
    """The persistent ids of a record, read without importing anything."""
    found = []
    unpickler = zodbpickle.pickle.Unpickler(io.BytesIO(data),
                                            encoding='utf-8',
                                            errors='bytes')
    unpickler.persistent_load = found.append
    try:
        unpickler.noload()
        unpickler.noload()
    except Exception:
        pass   # (reported by the conversion itself)
    return found


def _multi_oid_references(data):
    """``(ZODB 3's ['n', ...], zodbupdate's broken ['m', (name, oid)])``
    in the record: how many."""
    found = [ref for ref in _references(data)
             if isinstance(ref, list) and len(ref) == 2]
    return (sum(1 for mode, info in found if mode == 'n'),
            sum(1 for mode, info in found
                if mode == 'm' and isinstance(info, tuple)
                and len(info) == 2))


_STRING_OPS = ('BINUNICODE', 'SHORT_BINUNICODE', 'UNICODE', 'BINUNICODE8')
_PUT_OPS = ('BINPUT', 'LONG_BINPUT', 'PUT', 'MEMOIZE')
_GET_OPS = ('BINGET', 'LONG_BINGET', 'GET')


def fix_multi_oid_references(data):
    """``data`` (a record zodbupdate pickled for Python 3) with every
    ``['m', (name, oid)]`` made ``['n', (name, oid)]``.

    ZODB 3 wrote a reference to an object of another database whose class
    has ``__getnewargs__`` without the class, ``['n', (name, oid)]``;
    zodbupdate 3.0 pickles it again as ``['m', (name, oid)]``, which ZODB
    cannot load (``'m'`` needs the class).  After the opcode that pushed
    the ``'m'`` (and its memo entry, which other references may use) a
    POP and an ``'n'`` are inserted."""
    import pickletools
    ops = []
    start = 0
    while start < len(data):
        part = list(pickletools.genops(io.BytesIO(data[start:])))
        ops.extend((op.name, op, arg, pos + start) for op, arg, pos in part)
        start += part[-1][2] + 1
    memo, marks, inserts = {}, [], []
    memo_count = 0
    previous = None
    for index, (name, op, arg, pos) in enumerate(ops):
        if name == 'MARK':
            marks.append(index)
        elif pickletools.markobject in op.stack_before:
            mark = marks.pop()
            if name == 'APPENDS' and ops[index + 1][0] == 'BINPERSID':
                inner = [o for o in ops[mark + 1:index] if o[0] not in
                         _PUT_OPS]
                first = ops[mark + 1]
                mode = (first[2] if first[0] in _STRING_OPS else
                        memo.get(first[2]) if first[0] in _GET_OPS else None)
                if (len(inner) >= 2 and mode == 'm'
                        and inner[-1][0] == 'TUPLE2'):
                    after = mark + 2
                    while ops[after][0] in _PUT_OPS:
                        after += 1
                    inserts.append(ops[after][3])
        if name in _PUT_OPS:
            key = memo_count if name == 'MEMOIZE' else arg
            memo_count += name == 'MEMOIZE'
            memo[key] = previous
            continue
        previous = (arg if name in _STRING_OPS else
                    memo.get(arg) if name in _GET_OPS else None)
    for position in reversed(inserts):
        data = data[:position] + b'0X\x01\x00\x00\x00n' + data[position:]
    return data


def referred_databases(data):
    """The names of the other databases a record's references name (the
    cross-database references of a multi-database: ``['m', (name, oid,
    class)]``, ``['n', (name, oid)]``, ``['w', (oid, name)]``), read
    without importing anything."""
    found = _references(data)
    names = set()
    for reference in found:
        if not isinstance(reference, list) or len(reference) != 2:
            continue
        mode, information = reference
        if mode in ('m', 'n') and information:
            names.add(information[0])
        elif mode == 'w' and len(information) == 2:
            names.add(information[1])
    return {name.decode('utf-8', 'replace') if isinstance(name, bytes)
            else name for name in names}


class _Missing(logging.Handler):
    """Collects the globals zodbupdate could not import."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def emit(self, record):
        text = record.getMessage()
        marker = 'Missing factory for '
        if marker in text:
            self.names.add('.'.join(text.split(marker, 1)[1].split(' ')))


class RecordConverter:
    """``convert(oid, data)`` -> ``(new data, problem)``: the record pickled
    for Python 3 with zasync's names, or the record unchanged and why."""

    def __init__(self):
        self.renamer = ObjectRenamer(
            renames=GlobalRenames(), decoders=_Decoders(),
            pickle_protocol=3, repickle_all=True, encoding='utf-8')
        self.missing = _Missing()

    def __enter__(self):
        logging.getLogger('zodbupdate.serialize').addHandler(self.missing)
        return self

    def __exit__(self, *exc):
        logging.getLogger('zodbupdate.serialize').removeHandler(self.missing)

    def convert(self, oid, data):
        multi_oid, broken = _multi_oid_references(data)
        if broken:
            # (zodbupdate already ran over it: make them 'n' again)
            data = fix_multi_oid_references(data)
        try:
            new = self.renamer.rename(io.BytesIO(data))
        except Exception as e:
            return data, '%s: %s' % (type(e).__name__, e)
        if new is None:
            return data, ('cannot be pickled again (object %s)'
                          % ZODB.utils.oid_repr(oid))
        new = new.getvalue()
        if multi_oid or broken:
            new = fix_multi_oid_references(new)
        return new, None
