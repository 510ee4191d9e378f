"""The daemon's own CPU cost per message, without sockets: ``python -m tests.bench micro``.

On a shared machine, throughput and latency drift with what else runs; the CPU time
that lanchatd's Python code spends on one room message does not (much).  This drives
the real ``ChatCore`` and the real ``Loop.apply`` in one process: R members joined in a
room, then one member's socket read of ``batch`` say lines at a time is fed to
its transport and ``ChatCore.receive``, its effects to ``Loop.apply``, exactly as
``on_readable`` does (``ChatConnection.feed``);
the queued output is then dropped instead of written (writing is the kernel's cost, the
same for the relay).  The figure is CPU microseconds per message, the best of
``repeats``; it is what each tuning change in docs/performance.md is measured by.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from lanchatd.config import Config
from lanchatd.loop import ChatConnection, Loop

from .load import payload_text, say_line


def _lines(*objs: str) -> bytes:
    return "".join(o + "\n" for o in objs).encode()


def core_cost(*, members: int = 51, batch: int = 600, batches: int = 50, repeats: int = 5,
              size: int = 64, text_members: int = 0) -> dict[str, Any]:
    """CPU microseconds per room message (``members`` in the room, one of them sending,
    ``text_members`` of them in plain-text mode)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(log_file=str(Path(tmp) / "activity.log"), state_dir=tmp,
                        control_socket=str(Path(tmp) / "control.sock"),
                        message_rate=1e9, message_burst=10**9, join_rate=1e6,
                        join_burst=10**6, max_connections_per_address=100000,
                        connection_rate=1e6, connection_burst=10**6,
                        output_buffer_bytes=1 << 30)
        loop = Loop(config, lambda: config, environ={})
        now = time.time()
        for cid in range(1, members + 1):
            conn = ChatConnection(loop, cid, None)  # type: ignore[arg-type]  # never written
            loop.conns[cid] = conn
            loop.apply(loop.core.connect(cid, ("127.0.0.1", 40000 + cid), now))
            if cid > members - text_members:
                hello = _lines("123456", f"m{cid}")
            else:
                hello = _lines('{"type":"hello","versions":[1]}',
                               f'{{"type":"join","pin":"123456","name":"m{cid}"}}')
            conn.transport.data_received(hello)
            conn.feed(now)
        chunk = b"".join(say_line(payload_text(0, n, size)) for n in range(batch))
        sender = loop.conns[1]
        best = float("inf")
        for _ in range(repeats):
            _drop_output(loop)
            t0 = time.process_time()
            for _ in range(batches):
                sender.transport.data_received(chunk)
                sender.feed(now)
                _drop_output(loop)
            best = min(best, time.process_time() - t0)
        delivered = sum(len(c.pending) for c in loop.conns.values())
        loop.activity.close()
    return {"members": members, "text_members": text_members, "batch": batch,
            "us_per_message": round(best / (batch * batches) * 1e6, 2),
            "messages_per_cpu_s": round(batch * batches / best),
            "left_queued": delivered}


def _drop_output(loop: Loop) -> None:
    for conn in loop.dirty:
        conn.pending = []
        conn.pending_bytes = 0
    loop.dirty.clear()


def json_floor(*, lines: int = 600, batches: int = 50, repeats: int = 5,
               size: int = 64) -> dict[str, Any]:
    """CPU microseconds per ``say`` line for the least a server of JSON lines does in
    CPython, as a reference for ``core_cost``: ``decode``, the bytes decoded to a string
    and scanned by json's C scanner, nothing checked; ``decode_encode``, that and the
    ``message`` line made for the room (its text escaped by json's C escaper, room, seq,
    time and sender put around it), nothing checked, numbered or logged."""
    scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]
    escape = json.encoder.encode_basestring
    chunk = [say_line(payload_text(0, n, size)) for n in range(lines)]

    def decode() -> None:
        for line in chunk:
            scan(line.decode(), 0)

    head = '{"type":"message","room":"123456","seq":'
    middle = ',"ts":1795244423.491,"from":"m1","text":'

    def decode_encode() -> None:
        for seq, line in enumerate(chunk):
            obj = scan(line.decode(), 0)[0]
            (head + str(seq) + middle + escape(obj["text"]) + "}\n").encode()

    out = {}
    for name, work in (("decode", decode), ("decode_encode", decode_encode)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(batches):
                work()
            best = min(best, time.process_time() - t0)
        out[f"{name}_us_per_line"] = round(best / (lines * batches) * 1e6, 2)
    return out
