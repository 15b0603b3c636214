"""``python -m VirtualContrastLib`` runs the command line (used by Slicer's background process)."""

import sys

from .cli import main

sys.exit(main())
