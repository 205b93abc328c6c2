"""Who may use the standalone dashboard, and CSRF tokens.

A *users file* (``zasync web --users FILE``) has one user a line::

    # login:role:password hash
    alice:manage:{SSHA}...
    bob:view:{BCRYPT}...

``role`` is ``view`` (sees jobs: ``zasync.ViewJobs``) or ``manage`` (also
acts on them: ``zasync.ManageJobs``, when the server runs with
``--manage``).  The hash is one of zope.password's salted schemes
(``{SSHA}``, ``{SMD5}``, or ``{BCRYPT}`` with the bcrypt package:
``zasync web-user LOGIN --role manage`` prompts for a password and prints
the line).  Plain-text
passwords are refused.  Users log in with HTTP Basic authentication; who
does not is refused (401).

CSRF: every form carries a token bound to the user (an HMAC of the login
with a secret made at start); a POST without the right one is refused
(403).
"""
import base64
import hashlib
import hmac
import os

import zope.interface

__all__ = ['ANONYMOUS', 'MANAGE', 'ROLES', 'VIEW', 'CSRF', 'IUsers',
           'User', 'Users', 'hash_password', 'load_users']

VIEW = 'view'
MANAGE = 'manage'
ROLES = (VIEW, MANAGE)

DEFAULT_SCHEME = 'SSHA'


class IUsers(zope.interface.Interface):
    """The users of a dashboard."""

    def authenticate(login, password):
        """The ``User`` with these credentials, or None."""


class User:

    def __init__(self, login, role):
        self.login = login
        self.role = role

    @property
    def may_manage(self):
        return self.role == MANAGE

    def __repr__(self):
        return '<User %s (%s)>' % (self.login, self.role)


#: who uses a dashboard that has no users file (loopback only)
ANONYMOUS = User(None, MANAGE)


def _managers():
    """zope.password's managers of salted hashes, by scheme."""
    from zope.password.password import BCRYPTKDFPasswordManager
    from zope.password.password import BCRYPTPasswordManager
    from zope.password.password import SMD5PasswordManager
    from zope.password.password import SSHAPasswordManager
    return {'SSHA': SSHAPasswordManager(),
            'SMD5': SMD5PasswordManager(),
            'BCRYPT': BCRYPTPasswordManager(),
            'BCRYPT_KDF': BCRYPTKDFPasswordManager()}


def _scheme(encoded):
    if encoded.startswith('{') and '}' in encoded:
        return encoded[1:encoded.index('}')].upper()
    return None


def hash_password(password, scheme=DEFAULT_SCHEME):
    """``password`` hashed with a salt, as a users file keeps it."""
    manager = _managers()[scheme]
    encoded = manager.encodePassword(password)
    if isinstance(encoded, bytes):
        encoded = encoded.decode('ascii')
    return encoded


@zope.interface.implementer(IUsers)
class Users:
    """Users and their password hashes: ``{login: (role, hash)}``."""

    def __init__(self, entries):
        self.entries = dict(entries)
        self.managers = _managers()

    def __len__(self):
        return len(self.entries)

    def authenticate(self, login, password):
        entry = self.entries.get(login)
        if entry is None:
            # (as much work for an unknown login as for a wrong password)
            hmac.compare_digest(hashlib.sha256(password.encode()).digest(),
                                b'\0' * 32)
            return None
        role, encoded = entry
        manager = self.managers.get(_scheme(encoded))
        try:
            ok = manager is not None and manager.checkPassword(encoded,
                                                               password)
        except Exception:
            ok = False
        return User(login, role) if ok else None


def load_users(path):
    """The ``Users`` of the users file ``path``; ``ValueError`` (naming the
    file and line) for a bad one."""
    entries = {}
    known = set(_managers())
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError('cannot read the users file %s: %s'
                         % (path, e.strerror or e))
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        parts = text.split(':', 2)
        where = '%s, line %d' % (path, number)
        if len(parts) != 3 or not all(parts):
            raise ValueError('%s: expected LOGIN:ROLE:HASH' % where)
        login, role, encoded = parts
        if role not in ROLES:
            raise ValueError('%s: role %r is not one of %s'
                             % (where, role, ', '.join(ROLES)))
        scheme = _scheme(encoded)
        if scheme is None or scheme not in known:
            raise ValueError(
                '%s: the password of %s is not a salted hash ({SSHA}..., '
                '{BCRYPT}...: make one with "zasync web-user %s")'
                % (where, login, login))
        if login in entries:
            raise ValueError('%s: %s appears twice' % (where, login))
        entries[login] = (role, encoded)
    if not entries:
        raise ValueError('the users file %s has no users' % (path,))
    return Users(entries)


def basic_credentials(header):
    """``(login, password)`` of an ``Authorization: Basic`` header, or
    None."""
    if not header or not header[:6].lower() == 'basic ':
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode(
            'utf-8')
    except Exception:
        return None
    login, sep, password = text.partition(':')
    if not sep:
        return None
    return login, password


class CSRF:
    """Tokens bound to a user, with a secret of this process."""

    def __init__(self, secret=None):
        self.secret = secret or os.urandom(32)

    def token(self, user):
        login = (user.login if user is not None else None) or ''
        return hmac.new(self.secret, b'zasync-csrf:' + login.encode(),
                        hashlib.sha256).hexdigest()

    def check(self, user, token):
        return bool(token) and hmac.compare_digest(
            self.token(user), str(token))
