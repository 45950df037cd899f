"""``python -m torchgrow``: the :mod:`torchgrow.cli` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
