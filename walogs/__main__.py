"""``python -m walogs``: the same as the ``walogs`` command."""

import sys

from walogs.cli import main

sys.exit(main())
