"""A short form of the TLS benchmark (tests/bench/tls.py), so that it never rots.

Small sizes, no speed thresholds: every receiver of both kinds gets every message,
connections of both kinds are served, idle members of both kinds join, and the table
and the targets are printed from the figures.
"""

from __future__ import annotations

from pathlib import Path

from bench import servers
from bench import tls as bench_tls


def test_the_tls_benchmark_runs_on_both_kinds(tmp_path: Path) -> None:
    servers.raise_nofile(4096)
    size = {"receivers": 6, "messages": 300, "connects": 20, "idle": 20, "rounds": 1}
    said: list[str] = []
    results = bench_tls.run(size, tmp_path, said.append)
    for group in ("fanout", "handshakes", "idle", "idle_history"):
        for kind in bench_tls.KINDS:
            assert len(results[group][kind]) == 1, (group, kind)
    for kind in bench_tls.KINDS:
        fan = results["fanout"][kind][0]
        assert fan["deliveries_per_s"] > 0 and fan["seconds"] > 0
        assert results["handshakes"][kind][0]["connections_per_s"] > 0
    table = bench_tls.table(results)
    assert "fan-out, per daemon CPU s" in table and "idle member, KiB" in table
    assert "idle, after history, KiB" in table
    assert len(said) == 8
