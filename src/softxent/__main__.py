"""``python -m softxent``: the same as the ``softxent`` command."""

import sys

from softxent.cli import main

if __name__ == "__main__":
    sys.exit(main())
