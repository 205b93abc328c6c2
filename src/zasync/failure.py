"""The record of an exception, stored as the result of a failed job.

A ``Failure`` keeps what a person needs to understand an error -- the
exception's class, message and arguments, and every frame of the traceback
with the reprs of its locals and globals -- and nothing else: no frames, no
traceback objects, no persistent objects.  It therefore pickles into the
ZODB with the job and reads back in any other process.

What it records is bounded, whatever the failing code holds in memory:

* each repr is cut to ``MAX_REPR`` characters (``...`` at the end), and is
  computed without building the full text for strings, bytes and the
  built-in containers (``bounded_repr``);
* of a frame's globals, only those its code refers to (``co_names``) are
  recorded -- not every global of the module -- and the same for the
  locals of module-level code (which are the module's globals);
* the message is cut to ``MAX_MESSAGE`` characters, and the exception's
  arguments are kept (to rebuild ``value``) only when they pickle into at
  most ``MAX_ARGS_SIZE`` bytes.
"""
import importlib
import itertools
import linecache
import pickle
import sys
import traceback

import zope.interface

from zasync import interfaces

__all__ = ['bounded_repr', 'Failure', 'Frame', 'from_twisted', 'isFailure',
           'MAX_ARGS_SIZE', 'MAX_MESSAGE', 'MAX_REPR']

#: the longest repr of a local or global (or of the exception) recorded
MAX_REPR = 200
#: the longest message recorded (longer ones are cut, ``...`` at the end)
MAX_MESSAGE = 10000
#: the exception's arguments are kept when they pickle into at most this
#: many bytes (else ``value`` is rebuilt from the type name and message)
MAX_ARGS_SIZE = 10000
_counter = itertools.count(1)

_SEQUENCES = {list: ('[', ']'), tuple: ('(', ')'), set: ('{', '}'),
              frozenset: ('frozenset({', '})')}
_TEXTS = (str, bytes, bytearray)
_MAX_DEPTH = 6


def _cut(text, limit):
    if len(text) > limit:
        text = text[:limit - 3] + '...' if limit > 3 else text[:limit]
    return text


def _bounded(value, limit, depth):
    """``repr(value)``, or -- once it is longer than ``limit`` -- a text
    that starts like it and is longer than ``limit``, built without the
    whole repr for texts and the built-in containers."""
    kind = type(value)
    if kind in _TEXTS:
        if len(value) > limit:
            return repr(value[:limit + 1])
        return repr(value)
    if (isinstance(value, BaseException) and depth < _MAX_DEPTH
            and kind.__repr__ is BaseException.__repr__):
        args = value.args
        if len(args) == 1:
            return '%s(%s)' % (kind.__name__,
                               _bounded(args[0], limit, depth + 1))
        return kind.__name__ + _bounded(args, limit, depth + 1)
    if depth >= _MAX_DEPTH or (kind is not dict and kind not in _SEQUENCES):
        return repr(value)
    if not value:
        return repr(value)
    if kind is dict:
        opening, closing = '{', '}'
    else:
        opening, closing = _SEQUENCES[kind]
    parts = []
    size = len(opening)
    for item in value:
        if kind is dict:
            key = _bounded(item, limit, depth + 1)
            part = key + ': ' + _bounded(
                value[item], max(0, limit - size - len(key)), depth + 1)
        else:
            part = _bounded(item, max(0, limit - size), depth + 1)
        parts.append(part)
        size += len(part) + 2
        if size > limit:
            return opening + ', '.join(parts) + ', ...'
    if kind is tuple and len(parts) == 1:
        return '(' + parts[0] + ',)'
    return opening + ', '.join(parts) + closing


def bounded_repr(value, limit=MAX_REPR):
    """``repr(value)`` cut to ``limit`` characters (``...`` at the end).

    Strings, bytes and the built-in containers (list, tuple, dict, set,
    frozenset, nested) are not represented in full first: a 200 MiB
    string costs a few hundred bytes.  Other objects are asked for their
    ``repr``; one that raises is described instead of propagating.
    """
    try:
        text = _bounded(value, limit, 0)
    except Exception as e:  # a broken __repr__ must not break failures
        text = '<unrepresentable %s: %s>' % (
            type(value).__name__, _cut(_text_of(e), limit))
    return _cut(text, limit)


def _text_of(exc):
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def _safe_repr(value):
    return bounded_repr(value, MAX_REPR)


def _dotted_name(cls):
    return '%s.%s' % (cls.__module__, cls.__qualname__)


def _resolve(dotted):
    module, _, name = dotted.rpartition('.')
    try:
        obj = importlib.import_module(module)
        for part in name.split('.'):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj if isinstance(obj, type) else None


def _picklable_args(exc):
    """The exception's args when they survive a pickle round trip and
    pickle into at most ``MAX_ARGS_SIZE`` bytes."""
    try:
        args = tuple(exc.args)
        if any(isinstance(arg, _TEXTS) and len(arg) > MAX_ARGS_SIZE
               for arg in args):
            return None
        data = pickle.dumps(args)
        if len(data) > MAX_ARGS_SIZE:
            return None
        pickle.loads(data)
        rebuilt = type(exc)(*args)
        if str(rebuilt) != str(exc):
            return None
    except Exception:
        return None
    return args


# Frames of these files are zasync's own machinery: ``brief`` and
# ``default`` tracebacks keep them, but they can be elided on request.
_FRAMEWORK_MODULES = ('zasync/job.py', 'zasync/utils.py')


class Frame:
    """One frame of a recorded traceback."""

    __slots__ = ('filename', 'lineno', 'name', 'line', 'locals', 'globals')

    def __init__(self, filename, lineno, name, line, locals, globals):
        self.filename = filename
        self.lineno = lineno
        self.name = name
        self.line = line
        self.locals = locals
        self.globals = globals

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    @property
    def is_framework(self):
        filename = self.filename.replace('\\', '/')
        return filename.endswith(_FRAMEWORK_MODULES)


@zope.interface.implementer(interfaces.IFailure)
class Failure:
    """The picklable record of an exception.

    ``Failure()`` records the exception being handled; ``Failure(exc)``
    records ``exc`` with its ``__traceback__`` when it has one.
    """

    def __init__(self, exc_value=None, exc_type=None, exc_tb=None):
        if exc_value is None:
            exc_type, exc_value, exc_tb = sys.exc_info()
            if exc_value is None:
                raise ValueError('no exception to record: pass one, or '
                                 'create the Failure in an except clause')
        if (isinstance(exc_value, type)
                and issubclass(exc_value, BaseException)):
            exc_value = exc_value()
        if not isinstance(exc_value, BaseException):
            raise TypeError('Failure needs an exception, not %r'
                            % (exc_value,))
        if isinstance(exc_value, Failure):  # pragma: no cover - defensive
            raise TypeError('cannot wrap a Failure in a Failure')
        exc_type = exc_type or type(exc_value)
        if exc_tb is None:
            exc_tb = exc_value.__traceback__
        self.count = next(_counter)
        self.type_name = _dotted_name(exc_type)
        self.message = _safe_str(exc_value)
        self.value_repr = _safe_repr(exc_value)
        self.args = _picklable_args(exc_value)
        self.frames = []
        for frame, lineno in traceback.walk_tb(exc_tb):
            code = frame.f_code
            self.frames.append(Frame(
                code.co_filename, lineno, code.co_name,
                linecache.getline(code.co_filename, lineno).strip(),
                _variables(frame, locals=True),
                _variables(frame, locals=False),
            ))
        self._mro = tuple(_dotted_name(c) for c in exc_type.__mro__)
        # Deliberately forget the exception itself: it may reference frames
        # (``__traceback__``, ``__context__``) and persistent objects.

    # -- the exception ---------------------------------------------------

    @property
    def type(self):
        return _resolve(self.type_name)

    @property
    def value(self):
        """The exception, rebuilt from its class and arguments.

        When the class is gone or cannot be rebuilt from its arguments, an
        ``Exception`` carrying the message stands in.
        """
        cls = self.type
        if cls is not None and self.args is not None:
            try:
                return cls(*self.args)
            except Exception:
                pass
        return Exception('%s: %s' % (self.type_name, self.message))

    def check(self, *error_types):
        """Return the first type (class or dotted name) that matches."""
        for error_type in error_types:
            name = (error_type if isinstance(error_type, str)
                    else _dotted_name(error_type))
            if name in self._mro:
                return error_type
        return None

    def trap(self, *error_types):
        """Return the matching type, or re-raise the recorded exception."""
        match = self.check(*error_types)
        if match is None:
            self.raiseException()
        return match

    def raiseException(self):
        raise self.value

    def getErrorMessage(self):
        return self.message

    # -- tracebacks ------------------------------------------------------

    def getTraceback(self, detail='default', elideFrameworkCode=True):
        """The traceback text, ``brief``, ``default`` or ``verbose``.

        Frames of zasync's own job machinery are left out unless
        ``elideFrameworkCode`` is false.
        """
        frames = self.frames
        if elideFrameworkCode:
            frames = [f for f in frames if not f.is_framework]
        if detail == 'brief':
            lines = ['Traceback: %s: %s' % (self.type_name, self.message)]
            lines.extend('%s:%s:%s' % (f.filename, f.lineno, f.name)
                         for f in frames)
        elif detail == 'default':
            lines = ['Traceback (most recent call last):']
            for f in frames:
                lines.append('  File "%s", line %s, in %s'
                             % (f.filename, f.lineno, f.name))
                if f.line:
                    lines.append('    ' + f.line)
            lines.append('%s: %s' % (self.type_name, self.message))
        elif detail == 'verbose':
            lines = ['*--- Failure #%d (pickled) ---' % self.count]
            for f in frames:
                lines.append('%s:%s: %s(...)' % (f.filename, f.lineno, f.name))
                lines.append(' [ Locals ]')
                lines.extend('  %s : %s' % item for item in f.locals)
                lines.append(' ( Globals )')
                lines.extend('  %s : %s' % item for item in f.globals)
                if not f.globals:
                    # (only the globals a frame's code refers to are kept)
                    lines.append('  (none referred to)')
            lines.append('%s: %s' % (self.type_name, self.message))
            lines.append('*--- End of Failure #%d ---' % self.count)
        else:
            raise ValueError(
                "detail must be 'brief', 'default' or 'verbose', not %r"
                % (detail,))
        return '\n'.join(lines)

    def getBriefTraceback(self):
        return self.getTraceback(detail='brief')

    def printTraceback(self, file=None, detail='default'):
        (file or sys.stdout).write(self.getTraceback(detail=detail) + '\n')

    def __repr__(self):
        return '<zasync.Failure %s: %s>' % (self.type_name, self.message)

    __str__ = __repr__


def _variables(frame, locals):
    """``(name, repr)`` pairs, sorted by name, of a frame's locals or of
    the globals its code refers to (``co_names``: globals and attribute
    names; the module's other globals are left out).  The locals of
    module-level code are the module's globals: the same rule applies."""
    f_globals = frame.f_globals
    if locals:
        namespace = frame.f_locals
        if namespace is not f_globals:
            return [(k, _safe_repr(v)) for k, v in sorted(namespace.items(),
                                                          key=_first)]
    else:
        namespace = f_globals
    names = set(frame.f_code.co_names)
    return [(k, _safe_repr(namespace[k])) for k in sorted(names)
            if k in namespace and not k.startswith('__')]


def _first(item):
    return str(item[0])


def _safe_str(exc):
    try:
        text = str(exc)
    except Exception:
        return _safe_repr(exc)
    return _cut(text, MAX_MESSAGE)


def isFailure(value):
    return isinstance(value, Failure)


def from_twisted(value):
    """``value`` as a zasync ``Failure`` if it is a Twisted ``Failure``
    (which cannot be stored in a database), else ``value`` unchanged."""
    try:
        from twisted.python.failure import Failure as TwistedFailure
    except ImportError:  # pragma: no cover - Twisted is a dependency
        return value
    if isinstance(value, TwistedFailure):
        return Failure(value.value, value.type, value.getTracebackObject())
    return value
