"""Where an idle TLS member's memory goes: the daemon's TLS objects, one part at a time.

``python -m tests.bench.tls_memory`` (``--count N``, ``--json FILE``) makes ``N`` server
connections the way the daemon does (``lanchatd.tls.server_context``,
``lanchat.tls.TlsEngine`` over two ``MemoryBIO``) in this process, with their clients in
a child process over socket pairs (so no client allocation is counted), and measures
after each step, over all ``N``, after a full garbage collection and ``malloc_trim``:

* ``in use``: the bytes glibc's malloc has handed out and not got back (``mallinfo2``'s
  ``uordblks`` plus ``hblkhd``), which counts OpenSSL's C allocations as well as
  Python's (tracemalloc sees only Python's);
* ``rss``: the process's resident memory (``VmRSS``), which also counts what malloc
  keeps free between live blocks (fragmentation) and does not give back.

Steps: the two ``MemoryBIO``s alone; the ``SSLObject`` made (``SSL_new``); the
handshake done; one line each way (an idle member has spoken once: its record
buffers); a burst of ``BURST`` bytes each way (a member who pasted a long text and was
sent a long backlog, then went idle); and ``SSL_free_buffers`` (what OpenSSL frees of
an idle connection's record buffers when asked, reached through ``ctypes``); then,
all of them closed, what stays (sessions kept in the context's cache).
Variants (``--variant``) change one thing of the context, each measured in a fresh
child of this process:

* ``default``: the daemon's context as it is;
* ``tls12``: TLS 1.2 only (no TLS 1.3 key schedule);
* ``chacha``: TLS 1.3 with ChaCha20-Poly1305 only (no AES-GCM tables);
* ``aes128``: TLS 1.3 with AES-128-GCM only;
* ``cache_off``: the session cache off (``SSL_CTX_set_session_cache_mode``);
* ``tls12_cache_off``: both of the above;
* ``no_release``: without ``SSL_MODE_RELEASE_BUFFERS`` (CPython turns it on).

This is a measuring tool: the ``ctypes`` calls into OpenSSL and glibc (and the layout of
CPython's ``_ssl`` objects they rely on) belong here, never in the daemon.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from lanchat import tls
from lanchatd import tls as tls_identity

VARIANTS = ("default", "tls12", "chacha", "aes128", "cache_off", "tls12_cache_off",
            "no_release")
SSL_MODE_RELEASE_BUFFERS = 0x10
SSL_CTRL_MODE = 33
SSL_CTRL_CLEAR_MODE = 78
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_SESS_CACHE_OFF = 0
BURST = 60000  # bytes a member sends in one go, and gets in one pass of the loop


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2
_libssl = ctypes.CDLL("libssl.so.3")
_libssl.SSL_CTX_ctrl.restype = ctypes.c_long
_libssl.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
_libssl.SSL_free_buffers.restype = ctypes.c_int
_libssl.SSL_free_buffers.argtypes = [ctypes.c_void_p]


def _ssl_ctx(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of a context: CPython's PySSLContext starts with it after the
    object header (Modules/_ssl.c)."""
    return ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value or 0


def _ssl_of(obj: ssl.SSLObject) -> int:
    """The ``SSL *`` of an SSLObject: PySSLSocket has a weakref, then the ``SSL *``."""
    inner = obj._sslobj  # type: ignore[attr-defined]
    return ctypes.c_void_p.from_address(
        id(inner) + object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)).value or 0


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def measure() -> dict[str, int]:
    gc.collect()
    untrimmed = _rss_kib()
    _libc.malloc_trim(0)
    info = _libc.mallinfo2()
    return {"in_use": int(info.uordblks + info.hblkhd), "rss_kib": _rss_kib(),
            "rss_untrimmed_kib": untrimmed, "free_in_heap": int(info.fordblks)}


def server_context(variant: str, state_dir: str) -> ssl.SSLContext:
    identity = tls_identity.load_or_create(state_dir, None, None, name="bench")
    context = tls_identity.server_context(identity)
    if variant in ("tls12", "tls12_cache_off"):
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if variant in ("cache_off", "tls12_cache_off"):
        _libssl.SSL_CTX_ctrl(_ssl_ctx(context), SSL_CTRL_SET_SESS_CACHE_MODE,
                             SSL_SESS_CACHE_OFF, None)
    elif variant == "no_release":
        _libssl.SSL_CTX_ctrl(_ssl_ctx(context), SSL_CTRL_CLEAR_MODE,
                             SSL_MODE_RELEASE_BUFFERS, None)
    mode = _libssl.SSL_CTX_ctrl(_ssl_ctx(context), SSL_CTRL_MODE, 0, None)
    assert bool(mode & SSL_MODE_RELEASE_BUFFERS) == (variant != "no_release"), mode
    return context


def client_context(variant: str) -> ssl.SSLContext:
    context = tls.client_context()
    if variant == "chacha":
        context.maximum_version = ssl.TLSVersion.TLSv1_3
        _set_tls13_suites(context, b"TLS_CHACHA20_POLY1305_SHA256")
    elif variant == "aes128":
        context.maximum_version = ssl.TLSVersion.TLSv1_3
        _set_tls13_suites(context, b"TLS_AES_128_GCM_SHA256")
    return context


def _set_tls13_suites(context: ssl.SSLContext, suites: bytes) -> None:
    # The ssl module's set_ciphers covers TLS 1.2 only; the client offers what it has.
    fn = _libssl.SSL_CTX_set_ciphersuites
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    assert fn(_ssl_ctx(context), suites) == 1


def _client_side(socks: list[socket.socket], variant: str) -> None:
    """The child: one blocking TLS client per socket, a line each way, then wait."""
    context = client_context(variant)
    clients = []
    for sock in socks:
        client = context.wrap_socket(sock)
        line = b""
        while not line.endswith(b"\n"):
            line += client.recv(100)
        client.sendall(b"hello\n")
        clients.append(client)
    sys.stdin.read(1)  # the parent has measured the idle members
    for client in clients:  # a member who pastes a long text, and gets a long backlog
        client.sendall(b"x" * (BURST - 1) + b"\n")
        got = 0
        while got < BURST:
            got += len(client.recv(65536))
    sys.stdin.read()  # until the parent is done measuring


def run_variant(variant: str, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state_dir:
        context = server_context(variant, state_dir)
        pairs = [socket.socketpair() for _ in range(count)]
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_fd)
            os.dup2(read_fd, 0)
            sys.stdin = os.fdopen(0)
            for mine, _theirs in pairs:
                mine.close()
            _client_side([theirs for _mine, theirs in pairs], variant)
            os._exit(0)
        os.close(read_fd)
        ends = [mine for mine, theirs in pairs]
        for _mine, theirs in pairs:
            theirs.close()
        steps: dict[str, dict[str, int]] = {"start": measure()}
        bios = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(count)]
        steps["memory_bios"] = measure()
        del bios
        engines = [tls.TlsEngine(context, server_side=True) for _ in range(count)]
        steps["ssl_new"] = measure()
        for sock, engine in zip(ends, engines):
            while not engine.handshake_done:
                engine.receive_data(sock.recv(65536))
                sock.sendall(engine.data_to_send())
            engine.send(b"LANCHAT/1 ready hello\n")
            sock.sendall(engine.data_to_send())
        steps["handshake"] = measure()
        for sock, engine in zip(ends, engines):
            got = b""
            while not got.endswith(b"\n"):
                got += engine.receive_data(sock.recv(65536))
        steps["one_line_each_way"] = measure()
        os.write(write_fd, b"b")  # the clients' bursts may come now
        for sock, engine in zip(ends, engines):
            got = b""
            while not got.endswith(b"\n"):
                got += engine.receive_data(sock.recv(65536))
            sock.sendall(engine.encrypt(b"y" * (BURST - 1) + b"\n"))
        steps["burst_each_way"] = measure()
        for engine in engines:
            _libssl.SSL_free_buffers(_ssl_of(engine._obj))
        steps["ssl_free_buffers"] = measure()
        version = engines[0].version()
        cipher = engines[0]._obj.cipher()
        for engine in engines:
            # A clean close (close_notify), as the daemon's: OpenSSL drops from its
            # cache the session of a connection freed without one.
            engine.close()
            engine.data_to_send()
        del engines  # what stays once they are gone: sessions in the context's cache
        steps["closed"] = measure()
        os.close(write_fd)
        os.waitpid(pid, 0)
        for sock in ends:
            sock.close()
    per: dict[str, dict[str, float]] = {}
    previous = steps["start"]
    for name, figures in steps.items():
        if name == "start":
            continue
        base = steps["start"] if name == "ssl_new" else previous
        per[name] = {
            "in_use_total": (figures["in_use"] - steps["start"]["in_use"]) / count,
            "rss_total": (figures["rss_kib"] - steps["start"]["rss_kib"]) / count * 1024,
            "rss_untrimmed": (figures["rss_untrimmed_kib"]
                              - steps["start"]["rss_untrimmed_kib"]) / count * 1024,
            "in_use_step": (figures["in_use"] - base["in_use"]) / count,
        }
        previous = figures
    return {"variant": variant, "count": count, "version": version,
            "cipher": cipher[0] if cipher else None, "per_connection": per}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tls_memory")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = []
    for variant in args.variant or VARIANTS:
        # Each variant in a fresh child: one's freed memory does not pad the next.
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            with os.fdopen(write_fd, "w") as out:
                json.dump(run_variant(variant, args.count), out)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            result = json.load(f)
        os.waitpid(pid, 0)
        results.append(result)
        print(f"{variant}: {result['version']} {result['cipher']}, "
              f"{args.count} connections, bytes per connection (in use: malloc's live "
              "bytes; rss: resident before and after malloc_trim)")
        for step, figures in result["per_connection"].items():
            print(f"  {step:20} in use {figures['in_use_total']:8.0f} "
                  f"(step {figures['in_use_step']:+7.0f})   rss {figures['rss_untrimmed']:8.0f}"
                  f" / {figures['rss_total']:8.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
