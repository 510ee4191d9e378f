"""``python -m lanchatctl``: the same as the lanchatctl command."""

import sys

from lanchatctl.cli import main

sys.exit(main())
