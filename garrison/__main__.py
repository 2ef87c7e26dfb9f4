"""``python -m garrison`` is the ``garrison`` command."""

from ._cli import main

raise SystemExit(main())
