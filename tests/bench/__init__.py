"""Benchmarks: lanchatd measured beside a bare relay and ngIRCd in the same run.

docs/performance.md has the method and the figures.  ``python -m tests.bench`` runs the
whole suite (``python -m tests.bench --help`` lists each measure as its own command).

- ``relay.py``: the bare relay, a script of its own;
- ``servers.py``: starting lanchatd with the benchmark configuration, the relay, or
  ngIRCd with a configuration of its own, and reading a server's memory and CPU time
  from /proc;
- ``load.py``: the load generator's clients (lanchat's protocol, or IRC for ngIRCd) and
  worker processes;
- ``measures.py``: one function per measure, each returning a dict of figures;
- ``run.py``: the command line, the table and the JSON file.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The test harness (tests/lanchat_testing.py) is imported as a top-level module, as the
# tests' conftest.py does.
_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
