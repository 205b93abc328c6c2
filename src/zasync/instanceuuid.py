"""The UUID of this process (instance), identifying its dispatcher.

The value comes from the environment variable ``ZASYNC_UUID`` -- either a
UUID itself, or the path of a file holding one -- else from ``uuid.txt`` in
the current directory.  A missing file is created with a new UUID.  It is
computed the first time it is asked for, never at import.
"""
import os
import threading
import uuid

import zope.component
import zope.interface

from zasync import interfaces

__all__ = ['EXPLANATION', 'FILE_NAME', 'current', 'file_name', 'getUUID',
           'key', 'read_file', 'reset', 'use']

key = 'ZASYNC_UUID'
FILE_NAME = 'uuid.txt'

zope.interface.classImplements(uuid.UUID, interfaces.IUUID)

_lock = threading.Lock()
_value = None

EXPLANATION = """
This file holds the UUID of a zasync instance (the first line).  It
identifies this process's dispatcher in every queue it serves, so two
processes working on the same database need two different UUIDs (two
files, or two values of the %s environment variable).  Deleting the file
gives the process a new identity on its next start; the old one's jobs are
then cleaned up once it is found dead.
""" % key


def file_name():
    """The file holding the UUID (unless the environment holds the UUID)."""
    value = os.environ.get(key, '').strip()
    if value and _parse(value) is None:
        return os.path.abspath(value)
    return os.path.abspath(FILE_NAME)


def _parse(text):
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None


def read_file(path, create=True):
    """The UUID on the first line of the file ``path``.

    A missing file is created with a new UUID (and an explanation) unless
    ``create`` is false (then ``FileNotFoundError``); a file that does not
    start with a UUID raises ``ValueError`` naming it.  A file that cannot
    be read or created (a directory, no permission, a parent that is a
    file) raises an ``OSError`` whose message names it and says why.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError('the UUID file %s is a directory' % (path,))
    if os.path.exists(path):
        try:
            with open(path, encoding='utf-8', errors='replace') as f:
                first = f.readline(200)
        except OSError as e:
            raise type(e)('cannot read the UUID file %s: %s'
                          % (path, e.strerror or e)) from None
        parsed = _parse(first)
        if parsed is None:
            raise ValueError('%s does not start with a UUID: %r'
                             % (path, first.strip()))
        return parsed
    if not create:
        raise FileNotFoundError('no UUID file %s' % (path,))
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise NotADirectoryError('cannot create the UUID file %s: %s is not '
                                 'a directory' % (path, parent))
    new = uuid.uuid1()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(str(new) + '\n' + EXPLANATION)
    except OSError as e:
        raise type(e)('cannot create the UUID file %s: %s'
                      % (path, e.strerror or e)) from None
    return new


def _compute():
    value = os.environ.get(key, '').strip()
    if value:
        parsed = _parse(value)
        if parsed is not None:
            return parsed
    return read_file(file_name())


def getUUID():
    """This process's UUID (computed, and stored if need be, once)."""
    global _value
    if _value is None:
        with _lock:
            if _value is None:
                _value = _compute()
    return _value


def current():
    """The UUID of this instance: the ``IUUID`` utility where one is
    registered (a worker, a test), else ``getUUID()``."""
    registered = zope.component.queryUtility(interfaces.IUUID)
    return registered if registered is not None else getUUID()


def use(value):
    """Make ``value`` (a ``uuid.UUID``) this process's UUID: what
    ``getUUID()`` returns from now on, whatever the environment and the
    current directory hold (a worker given ``--uuid-file``: the site ZCML's
    ``IUUID`` utility then agrees with it, and no ``uuid.txt`` is made)."""
    global _value
    if not isinstance(value, uuid.UUID):
        raise TypeError('expected a uuid.UUID, not %r' % (value,))
    with _lock:
        _value = value


def reset():
    """Forget the computed UUID (for tests)."""
    global _value
    with _lock:
        _value = None


def __getattr__(name):
    # ``instanceuuid.UUID`` as in zc.async, but lazy.
    if name == 'UUID':
        return getUUID()
    raise AttributeError(name)
