"""Fixtures of the reliability suite, and the summary it prints at the end.

Each scenario test takes the ``scenario`` fixture, starts its daemon through it and
describes the load it applies; the outcome, the steady client's worst delay and the
daemon's memory are collected here and printed as one table after the run (and written
as Markdown to $LANCHAT_RELIABILITY_SUMMARY when that is set, for docs/reliability.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_kit import Scenario, format_table, raise_nofile

_SCENARIOS: list[Scenario] = []


@pytest.fixture(scope="session", autouse=True)
def _many_descriptors() -> None:
    """Room for thousands of sockets here and in the daemons started from here."""
    raise_nofile(16384)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scenario]:
    name = request.node.name
    if name.startswith("test_"):
        name = name[len("test_"):]
    record = Scenario(name.replace("_", " "), tmp_path)
    _SCENARIOS.append(record)
    yield record
    record.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    record = getattr(item, "funcargs", {}).get("scenario")
    if isinstance(record, Scenario):
        if report.when == "call" or (report.when == "setup" and report.failed):
            record.result = "pass" if report.passed else "FAIL"
        elif report.when == "teardown" and report.failed:
            record.result = "FAIL (teardown)"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SCENARIOS:
        return
    table = format_table([s.row() for s in _SCENARIOS])
    terminalreporter.write_sep("=", "lanchat reliability summary")
    for line in table.splitlines():
        terminalreporter.write_line(line)
    path = os.environ.get("LANCHAT_RELIABILITY_SUMMARY")
    if path:
        Path(path).write_text(table + "\n")
