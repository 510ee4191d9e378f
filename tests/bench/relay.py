"""The bare relay: the speed of light for lanchatd's design in Python.

One thread, one ``selectors`` selector, the same I/O pattern as lanchatd's loop and
nothing else: one ``recv`` per ready socket per pass, each complete line received is
appended to the output list of every *other* connection, and at the end of the pass
each connection with output gets one ``send`` of everything queued for it.  There is
no protocol, no rooms, no limits and no checks.  A new connection is sent one line,
``relay``, so a client knows it has been accepted (lanchatd greets too).

UDP datagrams are echoed back to their sender: the floor for a discovery round trip.

Run: ``python tests/bench/relay.py [--host 127.0.0.1] [--port 0]``.  Once both sockets
are bound it prints ``relay ready tcp=HOST:PORT udp=HOST:PORT`` and flushes, like
lanchatd's readiness line.  SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
GREETING = b"relay\n"


class Peer:
    __slots__ = ("out", "partial", "sock", "watching_write")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.partial = b""
        self.out: list[bytes] = []
        self.watching_write = False


def serve(host: str, port: int, max_passes: int | None = None) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, 0))
    udp.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, READ)
    sel.register(udp, READ)
    peers: dict[socket.socket, Peer] = {}
    dirty: set[Peer] = set()
    tcp_port = listener.getsockname()[1]
    udp_port = udp.getsockname()[1]
    print(f"relay ready tcp={host}:{tcp_port} udp={host}:{udp_port}", flush=True)

    def close(peer: Peer) -> None:
        peers.pop(peer.sock, None)
        dirty.discard(peer)
        sel.unregister(peer.sock)
        peer.sock.close()

    passes = 0
    while max_passes is None or passes < max_passes:
        passes += 1
        for key, mask in sel.select():
            sock = key.fileobj
            if sock is listener:
                for _ in range(256):
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # out of descriptors: try again on the next pass
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    peer = Peer(conn)
                    peers[conn] = peer
                    sel.register(conn, READ, peer)
                    peer.out.append(GREETING)
                    dirty.add(peer)
                continue
            if sock is udp:
                for _ in range(64):
                    try:
                        data, addr = udp.recvfrom(2048)
                    except OSError:
                        break
                    try:
                        udp.sendto(data, addr)
                    except OSError:
                        pass
                continue
            peer = key.data
            if mask & WRITE:
                dirty.add(peer)
            if not mask & READ:
                continue
            try:
                data = peer.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                close(peer)
                continue
            data = peer.partial + data
            end = data.rfind(b"\n") + 1
            peer.partial = data[end:]
            if not end:
                continue
            others = [p for p in peers.values() if p is not peer]
            for line in data[:end].splitlines(keepends=True):
                for other in others:
                    other.out.append(line)
            dirty.update(others)
        if dirty:
            flushing, dirty = dirty, set()
            for peer in flushing:
                if peer.sock not in peers:
                    continue
                data = b"".join(peer.out)
                try:
                    sent = peer.sock.send(data) if data else 0
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    close(peer)
                    continue
                peer.out = [data[sent:]] if sent < len(data) else []
                want_write = bool(peer.out)
                if want_write != peer.watching_write:
                    peer.watching_write = want_write
                    sel.modify(peer.sock, READ | WRITE if want_write else READ, peer)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The bare relay baseline of the benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("the relay serves loopback only (127.0.0.0/8)")
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
