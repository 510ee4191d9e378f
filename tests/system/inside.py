"""Small network helpers run inside the test machine (by its /usr/bin/python3).

    inside.py probe ADDRESS PORT           send DISCOVER_SERVER, print the reply
    inside.py member HOST PORT PIN NAME    a plain-text chat member, like nc:
                                           stdin lines are sent, received lines printed
    inside.py connect HOST PORT SOURCE     try a TCP connection from SOURCE; print
                                           "connected" or the error (and exit 1)
    inside.py control PATH                 connect to a Unix socket; "connected" or error

Standard library only, so that they test the installed packages and nothing else.
"""

from __future__ import annotations

import os
import select
import socket
import sys


def probe(address: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.settimeout(5)
        sock.sendto(b"DISCOVER_SERVER", (address, port))
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            print(f"no reply from {address}:{port} within 5 s")
            return 1
        print(data.decode("utf-8", "replace"), f"from {peer[0]}:{peer[1]}")
        return 0


def member(host: str, port: int, pin: str, name: str) -> int:
    """Join by plain-text mode, then relay: stdin -> server, server -> stdout."""
    sock = socket.create_connection((host, port), timeout=10)
    buffer = b""

    def show_lines() -> None:
        nonlocal buffer
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            print(line.decode("utf-8", "replace").rstrip("\r"), flush=True)

    def read_line() -> None:
        nonlocal buffer
        while b"\n" not in buffer:
            data = sock.recv(4096)
            if not data:
                raise SystemExit("EOF during the handshake")
            buffer += data
        line, _, buffer = buffer.partition(b"\n")
        print(line.decode("utf-8", "replace").rstrip("\r"), flush=True)

    read_line()  # the greeting, which asks for the PIN
    sock.sendall(pin.encode() + b"\n")
    read_line()  # the name prompt
    sock.sendall(name.encode() + b"\n")
    sock.settimeout(None)
    stdin_open = True
    while True:
        watch = [sock.fileno()] + ([0] if stdin_open else [])
        ready, _, _ = select.select(watch, [], [])
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                buffer += b"\n" if buffer else b""
                show_lines()
                print("EOF", flush=True)
                return 0
            buffer += data
            show_lines()
        if 0 in ready:
            text = os.read(0, 65536)
            if text:
                sock.sendall(text)
            else:
                stdin_open = False
                sock.shutdown(socket.SHUT_WR)


def connect(host: str, port: int, source: str) -> int:
    try:
        with socket.create_connection((host, port), timeout=3, source_address=(source, 0)) as sock:
            sock.settimeout(3)
            first = sock.recv(200)
    except OSError as e:
        print(f"error: {e}")
        return 1
    print("connected", first.decode("utf-8", "replace").strip())
    return 0


def control(path: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as e:
            print(f"error: {e}")
            return 1
    print("connected")
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "probe":
        return probe(args[0], int(args[1]))
    if command == "member":
        return member(args[0], int(args[1]), args[2], args[3])
    if command == "connect":
        return connect(args[0], int(args[1]), args[2])
    if command == "control":
        return control(args[0])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
