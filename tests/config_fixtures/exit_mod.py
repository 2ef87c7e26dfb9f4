"""A module that exits at import."""

import sys

sys.exit(3)
