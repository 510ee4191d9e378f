"""Coverage-guided fuzzing of every lanchat.protocol decoder with atheris (optional).

This is not part of the test suite: pytest collects only ``test_*.py``, and atheris is
not a dependency.  tests/test_fuzz_protocol.py runs the same properties with hypothesis
on every test run; this harness is for long runs that let coverage guide the inputs::

    pip install atheris
    mkdir -p /tmp/lanchat-corpus
    python tests/fuzz/fuzz_decoders.py /tmp/lanchat-corpus -max_total_time=600

A crash is written to ``crash-<hash>`` in the current directory; replay one (or a whole
corpus) without atheris with::

    python tests/fuzz/fuzz_decoders.py --replay crash-<hash> [more files or directories]

One input drives one decoder: its first byte picks which, the next byte where to cut
the rest into two reads.  The decoder may return events or raise RemoteProtocolError;
any other exception, or a buffer past its line limit, is a finding.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _drain(codec: Any, chunks: list[bytes], limit: int) -> None:
    from lanchat.protocol.errors import RemoteProtocolError

    for chunk in [*(c for c in chunks if c), b""]:  # b"" means end of file: only last
        codec.receive_data(chunk)
        for _ in range(100_000):
            try:
                if codec.next_event() is None:
                    break
            except RemoteProtocolError:
                continue
        if codec._reader.buffered >= limit and not getattr(codec, "broken", False):
            raise AssertionError(f"{type(codec).__name__} kept {codec._reader.buffered} bytes")


def _targets() -> list[Callable[[bytes, int], None]]:
    from lanchat.protocol import chat, control, discovery, telnet, text
    from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError

    def server(data: bytes, cut: int) -> None:
        _drain(chat.ServerCodec(256), [data[:cut], data[cut:]], 256)

    def client(data: bytes, cut: int) -> None:
        _drain(chat.ClientCodec(256), [data[:cut], data[cut:]], 256)

    def control_server(data: bytes, cut: int) -> None:
        _drain(control.ServerConnection(256), [data[:cut], data[cut:]], 256)

    def control_client(data: bytes, cut: int) -> None:
        _drain(control.ClientConnection(256), [data[:cut], data[cut:]], 256)

    def probe(data: bytes, _cut: int) -> None:
        try:
            discovery.parse_probe(data)
        except RemoteProtocolError:
            pass

    def announce(data: bytes, _cut: int) -> None:
        try:
            discovery.parse_announce(data)
        except RemoteProtocolError:
            pass

    def command(data: bytes, _cut: int) -> None:
        try:
            text.parse_text_command(data.decode("utf-8", "surrogateescape"))
        except (LocalProtocolError, text.UnknownCommand):
            pass

    def telnet_filter(data: bytes, cut: int) -> None:
        # The plain-TCP adapter's Telnet layer: the same output however the stream is
        # cut, answers that are whole refusals, a bounded subnegotiation count.
        whole = telnet.TelnetFilter().receive(data)
        f = telnet.TelnetFilter()
        first, second = f.receive(data[:cut]), f.receive(data[cut:])
        if (first[0] + second[0], first[1] + second[1]) != whole:
            raise AssertionError("the Telnet filter's output depends on where it was cut")
        if len(whole[1]) % 3 or f._skipped > telnet.MAX_SUBNEGOTIATION:
            raise AssertionError("a partial answer, or an unbounded subnegotiation")

    return [server, client, control_server, control_client, probe, announce, command,
            telnet_filter]


TARGETS = _targets()


def one_input(data: bytes) -> None:
    """The fuzz target: the first byte picks the decoder, the second where to cut."""
    if len(data) < 2:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    rest = data[2:]
    target(rest, data[1] * len(rest) // 255 if rest else 0)


def replay(paths: list[str]) -> int:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for path in files:
        one_input(path.read_bytes())
    print(f"replayed {len(files)} input(s) without a finding")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--replay"]:
        return replay(argv[2:])
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (pip install atheris); "
              "--replay FILES runs inputs without it", file=sys.stderr)
        return 2
    atheris.instrument_all()
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv))
