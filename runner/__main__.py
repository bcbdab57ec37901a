"""``python -m runner`` is the ``soak`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
