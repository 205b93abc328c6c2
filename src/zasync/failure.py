"""The record of an exception, stored as the result of a failed job.

A ``Failure`` keeps what a person needs to understand an error -- the
exception's class, message and arguments, and every frame of the traceback
with the reprs of its locals and globals -- and nothing else: no frames, no
traceback objects, no persistent objects.  It therefore pickles into the
ZODB with the job and reads back in any other process.
"""
import importlib
import itertools
import linecache
import pickle
import sys
import traceback

import zope.interface

from zasync import interfaces

__all__ = ['Failure', 'Frame', 'isFailure', 'MAX_REPR']

MAX_REPR = 200
_counter = itertools.count(1)


def _safe_repr(value):
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not break failures
        text = '<unrepresentable %s: %s>' % (type(value).__name__, e)
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR - 3] + '...'
    return text


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
    """The exception's args when they survive a pickle round trip."""
    try:
        args = tuple(exc.args)
        pickle.loads(pickle.dumps(args))
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
                [(k, _safe_repr(v))
                 for k, v in sorted(frame.f_locals.items())],
                [(k, _safe_repr(v)) for k, v in sorted(frame.f_globals.items())
                 if not k.startswith('__')],
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


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:
        return _safe_repr(exc)


def isFailure(value):
    return isinstance(value, Failure)
