"""A short form of the WebSocket benchmark (tests/bench/web.py), so that it never rots.

Small sizes and no speed threshold: every receiver, TCP or WebSocket, counts every
message of the stream exactly once, and the table row is built.
"""

from __future__ import annotations

from pathlib import Path

from bench import servers, web


def test_web_fanout_counts_every_message_over_both_transports(tmp_path: Path) -> None:
    servers.raise_nofile(4096)
    server = servers.Lanchatd(tmp_path / "d").start()
    try:
        result = web.compare(server, receivers=5, messages=300, rounds=1,
                             latency_seconds=0.5, say=lambda _: None)
    finally:
        server.stop()
    for transport in ("tcp", "ws"):
        figures = result[transport]
        assert figures["transport"] == transport
        assert figures["wrong_counts"] == 0
        assert figures["deliveries"] == 5 * 300
    assert "ws_over_tcp" in result
    for transport in ("tcp", "ws"):
        delays = result[f"latency_{transport}"]
        assert delays["wrong_counts"] == 0 and delays["samples"] == 5 * 100
        assert 0 < delays["p50_ms"] <= delays["p99_ms"] <= delays["max_ms"]
