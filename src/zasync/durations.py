"""Durations written by people: ``90`` (seconds), ``30s``, ``15m``, ``12h``,
``2d``.

``zasync worker --keep-completed``, ``zasync purge --completed-before``
and ``<zasync:periodic interval="...">`` read them with
``parse_duration``.
"""
import datetime
import math
import re

__all__ = ['UNITS', 'format_duration', 'parse_duration']

#: the suffixes ``parse_duration`` knows, in seconds
UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}

_DURATION = re.compile(r'^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*'
                       r'([smhd]?)\s*$')


def parse_duration(text, allow_zero=False):
    """``text`` -- a number of seconds, or a number followed by ``s``,
    ``m``, ``h`` or ``d`` -- as a ``timedelta``; ``ValueError`` with a
    one-line message for anything else, and for 0 unless
    ``allow_zero``."""
    if isinstance(text, datetime.timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ValueError(
                '%r is not a duration (give seconds, or a number with s, m, '
                'h or d: 90, 15m, 12h, 2d)' % (text,))
        seconds = float(match.group(1)) * UNITS[match.group(2) or 's']
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError('%r: a duration must be finite and not negative'
                         % (text,))
    if not seconds and not allow_zero:
        raise ValueError('%r: a duration must be more than 0' % (text,))
    try:
        return datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError('%r: too long a duration' % (text,)) from None


def format_duration(delta):
    """A ``timedelta`` the way ``parse_duration`` reads it, in the largest
    unit that divides it (``'2d'``, ``'90m'``, ``'1.5s'``)."""
    seconds = delta.total_seconds()
    for suffix in ('d', 'h', 'm'):
        size = UNITS[suffix]
        if seconds and not seconds % size:
            return '%d%s' % (seconds // size, suffix)
    return '%gs' % seconds
