"""A one-line progress bar for the long waits of the ``zasync`` command.

It is drawn only when its stream is a terminal: redirected output, logs and
``--json`` never see it.
"""


class Bar:
    """``show(done, total, text)`` redraws the bar in place; ``end()``
    finishes its line (if one was drawn)."""

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
