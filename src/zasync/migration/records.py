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

__all__ = ['class_of', 'convert_state', 'RecordConverter',
           'referred_databases']

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
        '_status_id' in state or 'args' in state)


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


def referred_databases(data):
    """The names of the other databases a record's references name (the
    cross-database references of a multi-database: ``['m', (name, oid,
    class)]``, ``['n', (name, oid)]``, ``['w', (oid, name)]``), read
    without importing anything."""
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
        try:
            new = self.renamer.rename(io.BytesIO(data))
        except Exception as e:
            return data, '%s: %s' % (type(e).__name__, e)
        if new is None:
            return data, ('cannot be pickled again (object %s)'
                          % ZODB.utils.oid_repr(oid))
        return new.getvalue(), None
