"""``python -m lanchatd``: the same as the ``lanchatd`` command."""

from lanchatd.cli import main

raise SystemExit(main())
