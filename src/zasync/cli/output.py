"""Terminal output of the ``zasync`` command: a progress bar for long
waits, text tables, and times and durations for people.

The bar is drawn only when its stream is a terminal: redirected output,
logs and ``--json`` never see it.
"""
from zasync import utils

__all__ = ['Bar', 'age', 'duration', 'short_time', 'table']


class Bar:
    """``show(done, total, text)`` redraws the bar in place; ``end()``
    finishes its line (if one was drawn).  Called as ``bar(done, total,
    text)`` it shows, or ends with ``text`` None (a ``Worker``'s
    ``progress``)."""

    def __init__(self, stream, width=30):
        self.stream = stream
        self.width = width
        isatty = getattr(stream, 'isatty', None)
        self.live = bool(isatty and isatty())
        self.last = None

    def show(self, done, total, text=''):
        if not self.live:
            return
        filled = int(self.width * min(max(done, 0), total) // max(total, 1))
        line = '[%s%s] %s' % ('#' * filled, '.' * (self.width - filled),
                              text)
        if line != self.last:
            # Padded, and the cursor back at the start of the line: a log
            # line written meanwhile overwrites the bar instead of
            # following it.
            self.stream.write('\r' + line.ljust(79) + '\r')
            self.stream.flush()
            self.last = line

    def end(self):
        if self.live and self.last is not None:
            self.stream.write('\n')
            self.stream.flush()
            self.last = None

    def __call__(self, done, total, text):
        if text is None:
            self.end()
        else:
            self.show(done, total, text)


def table(rows, columns):
    """Format ``rows`` (dicts) as a text table with ``columns`` (pairs of
    key and title)."""
    cells = [[title for key, title in columns]]
    for row in rows:
        cells.append(['-' if row.get(key) in (None, '') else str(row[key])
                      for key, title in columns])
    widths = [max(len(line[i]) for line in cells)
              for i in range(len(columns))]
    lines = []
    for line in cells:
        lines.append('  '.join(cell.ljust(width) for cell, width
                               in zip(line, widths)).rstrip())
    return '\n'.join(lines)


def short_time(value):
    """An aware datetime as ``YYYY-MM-DD HH:MM:SS`` (UTC); ``-`` for None."""
    if value is None:
        return '-'
    return value.astimezone(utils.UTC).strftime('%Y-%m-%d %H:%M:%S')


def age(value, now):
    """How long ago ``value`` was (``'3.20 s ago'``, ``'in 2 min'``)."""
    if value is None:
        return 'never'
    seconds = (now - value).total_seconds()
    if -1 < seconds < 0:
        seconds = 0.0   # another machine's clock, a little ahead
    if seconds < 0:
        return 'in %s' % duration(-seconds)
    return '%s ago' % duration(seconds)


def duration(seconds):
    """Seconds for people: ``'0.25 s'``, ``'42 s'``, ``'12 min'``,
    ``'3.5 h'``; ``-`` for None."""
    if seconds is None:
        return '-'
    if seconds < 10:
        return '%.2f s' % seconds
    if seconds < 120:
        return '%.0f s' % seconds
    if seconds < 7200:
        return '%.0f min' % (seconds / 60)
    return '%.1f h' % (seconds / 3600)
