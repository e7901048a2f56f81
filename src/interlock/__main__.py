"""``python -m interlock``: the command line (see :mod:`interlock.cli`)."""

import sys

from interlock.cli import main

if __name__ == "__main__":
    sys.exit(main())
