"""``python -m lanchat``: the same as the ``lanchat`` command."""

from lanchat.cli import main

raise SystemExit(main())
