"""``python -m rnnkit``: the command line of :mod:`rnnkit.cli`."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
