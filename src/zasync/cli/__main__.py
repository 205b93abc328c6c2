"""``python -m zasync.cli``: the ``zasync`` command."""
import sys

from zasync.cli import main

sys.exit(main())
