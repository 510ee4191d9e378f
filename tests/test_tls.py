"""TLS without sockets: the fingerprint's form, the daemon's key and certificate, the
sans-I/O engine, the client's pinning policy and the discovery fields that carry them."""

from __future__ import annotations

import hashlib
import os
import ssl
import stat
import warnings
from pathlib import Path

import pytest

from lanchat import tls
from lanchat.client import discovery, pinning
from lanchat.protocol import discovery as wire
from lanchat.protocol import fingerprint
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError
from lanchatd import tls as daemon_tls

# ------------------------------------------------------------------ the fingerprint


def test_fingerprint_is_sha256_in_sixteen_groups_of_four() -> None:
    text = fingerprint.of_public_key(b"key")
    assert text.startswith("SHA256:") and len(text) == fingerprint.LENGTH
    groups = text[len("SHA256:"):].split("-")
    assert len(groups) == 16 and all(len(g) == 4 for g in groups)
    assert "".join(groups) == hashlib.sha256(b"key").hexdigest()


def test_a_pasted_fingerprint_is_read_in_any_common_spelling() -> None:
    text = fingerprint.of_public_key(b"key")
    digits = text[7:].replace("-", "")
    colons = ":".join(digits[i:i + 2] for i in range(0, 64, 2)).upper()
    for spelling in (text, text.lower(), digits, colons, "sha256:" + digits,
                     " ".join(text[7:].split("-"))):
        assert fingerprint.parse_fingerprint(spelling) == text
    assert fingerprint.is_fingerprint(text)
    assert not fingerprint.is_fingerprint(text.upper())
    for bad in ("", "SHA256:", digits[:-1], digits + "0", "g" * 64, 5):
        with pytest.raises(ValueError):
            fingerprint.parse_fingerprint(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the daemon's identity


def test_first_start_makes_a_private_key_and_later_starts_keep_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = daemon_tls.load_or_create(str(state), None, None, name="lab")
    assert first.created and first.key_path == str(state / "tls-key.pem")
    for path in (first.key_path, first.cert_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not list(state.glob("*.tmp"))
    again = daemon_tls.load_or_create(str(state), None, None, name="lab")
    assert not again.created and again.fingerprint == first.fingerprint
    # A lost certificate is made again for the same key: the fingerprint stays.
    os.unlink(first.cert_path)
    remade = daemon_tls.load_or_create(str(state), None, None, name="lab")
    assert remade.created and remade.fingerprint == first.fingerprint
    # The certificate carries that key, as a client sees it.
    server = daemon_tls.server_context(remade)
    _, client_side = _handshake(server)
    assert client_side.peer_fingerprint() == first.fingerprint


def test_a_configured_certificate_is_used_and_its_key_gives_the_fingerprint(
        tmp_path: Path) -> None:
    made = daemon_tls.load_or_create(str(tmp_path / "elsewhere"), None, None)
    used = daemon_tls.load_or_create(str(tmp_path / "state"), made.cert_path, made.key_path)
    assert (used.cert_path, used.fingerprint, used.created) == (
        made.cert_path, made.fingerprint, False)
    assert not (tmp_path / "state").exists()


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(daemon_tls.TlsSetupError, match="go together"):
        daemon_tls.load_or_create(str(tmp_path), str(tmp_path / "c.pem"), None)
    missing = tmp_path / "missing.pem"
    with pytest.raises(daemon_tls.TlsSetupError, match=f"cannot read the TLS key {missing}"):
        daemon_tls.load_or_create(str(tmp_path), str(tmp_path / "c.pem"), str(missing))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(daemon_tls.TlsSetupError, match="not an unencrypted PEM private key"):
        daemon_tls.load_or_create(str(tmp_path), str(tmp_path / "c.pem"), str(junk))
    made = daemon_tls.load_or_create(str(tmp_path / "s"), None, None)
    other = daemon_tls.load_or_create(str(tmp_path / "t"), None, None)
    mismatched = daemon_tls.Identity(made.cert_path, other.key_path, other.fingerprint, False)
    with pytest.raises(daemon_tls.TlsSetupError, match="cannot load the TLS certificate"):
        daemon_tls.server_context(mismatched)


# ------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> object:
    identity = daemon_tls.load_or_create(str(tmp_path_factory.mktemp("tls")), None, None)
    return daemon_tls.server_context(identity)


def _handshake(context: object) -> tuple[tls.TlsEngine, tls.TlsEngine]:
    """A server and a client engine that have shaken hands: (server, client)."""
    server = tls.TlsEngine(context, server_side=True)  # type: ignore[arg-type]
    client = tls.TlsEngine(tls.client_context(), server_side=False)
    for _ in range(4):
        data = client.data_to_send()
        if data:
            server.receive_data(data)
        data = server.data_to_send()
        if data:
            client.receive_data(data)
    assert server.handshake_done and client.handshake_done
    return server, client


def test_bytes_in_plaintext_out_both_ways(server_context: object) -> None:
    server = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    client = tls.TlsEngine(tls.client_context(), server_side=False)
    server.send(b"LANCHAT/1 ready hello\n")  # held until the handshake is over
    assert server.buffered > 0
    hello = client.data_to_send()
    assert hello[0] == tls.HANDSHAKE_RECORD and b"LANCHAT" not in hello
    assert server.receive_data(hello) == b""
    flight = server.data_to_send()
    assert b"LANCHAT" not in flight  # encrypted
    received = client.receive_data(flight)
    finished = client.data_to_send()
    assert server.receive_data(finished) == b""
    received += client.receive_data(server.data_to_send())
    assert received == b"LANCHAT/1 ready hello\n"
    assert server.version() in ("TLSv1.2", "TLSv1.3")
    client.send(b"1234\nalice\n")
    wire_bytes = client.data_to_send()
    assert b"1234" not in wire_bytes and b"alice" not in wire_bytes
    # Fed a byte at a time, the plaintext still comes out whole, once.
    out = b"".join(server.receive_data(wire_bytes[i:i + 1]) for i in range(len(wire_bytes)))
    assert out == b"1234\nalice\n"
    client.close()
    assert server.receive_data(client.data_to_send()) == b"" and server.eof


def test_large_reads_and_writes_cross_the_memory_buffers_in_slices(
        server_context: object) -> None:
    """A large output is encrypted a record at a time and a large read fed in slices
    (so neither memory buffer ever holds more than a slice); the bytes come out whole
    and in order either way, in full records, the close_notify behind them included."""
    server = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    client = tls.TlsEngine(tls.client_context(), server_side=False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    assert server.handshake_done and client.handshake_done
    backlog = bytes(range(256)) * 800  # 200 KiB
    wire = server.encrypt(backlog)
    records = 0
    at = 0
    while at < len(wire):  # walk the TLS records: type, version, length
        length = int.from_bytes(wire[at + 3:at + 5], "big")
        assert length <= tls.BIO_SLICE_OUT + 256
        records += 1
        at += 5 + length
    assert at == len(wire) and records == -(-len(backlog) // tls.BIO_SLICE_OUT)
    assert client.receive_data(wire) == backlog  # one read of it all: sliced inside
    paste = b"x" * 70000 + b"\n"
    client.send(paste)
    client.close()
    assert server.receive_data(client.data_to_send()) == paste and server.eof


def test_garbage_instead_of_a_client_hello_is_an_error(server_context: object) -> None:
    typed = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    with pytest.raises(tls.NotTlsError):
        typed.receive_data(b"1234\n")
    fake = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    with pytest.raises(tls.TlsError):
        fake.receive_data(b"\x16\x03\x01\x00\x05hello" + os.urandom(200))
    cut = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    hello = tls.TlsEngine(tls.client_context(), server_side=False).data_to_send()
    cut.receive_data(hello[:20])
    with pytest.raises(tls.TlsError, match="closed during the TLS handshake"):
        cut.receive_data(b"")


def test_a_tampered_record_is_an_error(server_context: object) -> None:
    server, client = _handshake(server_context)
    client.send(b"hello\n")
    record = bytearray(client.data_to_send())
    record[-1] ^= 1
    with pytest.raises(tls.TlsError):
        server.receive_data(bytes(record))


def test_renegotiation_and_old_versions_are_refused(server_context: object) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    server = tls.TlsEngine(server_context, server_side=True)  # type: ignore[arg-type]
    try:
        client = tls.TlsEngine(old, server_side=False)
    except tls.TlsError:
        return  # the local OpenSSL refuses to offer it at all: nothing to refuse then
    with pytest.raises(tls.TlsError):
        server.receive_data(client.data_to_send())
    assert server_context.options & ssl.OP_NO_RENEGOTIATION  # type: ignore[attr-defined]


# ------------------------------------------------------------------ pinning


def test_first_contact_is_remembered_and_a_changed_key_refused(tmp_path: Path) -> None:
    known = pinning.KnownServers(tmp_path / "data" / "known_servers")
    real = fingerprint.of_public_key(b"real")
    rogue = fingerprint.of_public_key(b"rogue")
    said = pinning.check(known, "abc123", real, insecure=False, name="lab")
    assert said is not None and real in said and "abc123" in said
    assert known.get("abc123") == pinning.Known("abc123", real, "lab")
    assert pinning.check(known, "abc123", real, insecure=False, name="lab") is None
    with pytest.raises(pinning.Refused) as refused:
        pinning.check(known, "abc123", rogue, insecure=False, name="lab")
    message = str(refused.value)
    assert real in message and rogue in message and "PIN and name were not sent" in message
    assert "lanchat --forget abc123" in message
    # --insecure does not excuse a changed key.
    with pytest.raises(pinning.Refused):
        pinning.check(known, "abc123", rogue, insecure=True)
    # A known TLS server over plain text: refused unless --insecure.
    with pytest.raises(pinning.Refused, match="not encrypted"):
        pinning.check(known, "abc123", None, insecure=False)
    assert pinning.check(known, "abc123", None, insecure=True) is None
    assert pinning.check(known, "other", None, insecure=False) is None  # never met: plain ok
    assert known.forget("abc123") and not known.forget("abc123")
    assert known.get("abc123") is None
    assert pinning.check(known, "abc123", rogue, insecure=False) is not None


def test_the_file_keeps_comments_and_lines_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "known_servers"
    print_ = fingerprint.of_public_key(b"a")
    path.write_text(f"# mine\nnot a line\nsrv1 {print_} lab one\n")
    known = pinning.KnownServers(path)
    assert [k.server_id for k in known.entries()] == ["srv1"]
    assert known.get("srv1") == pinning.Known("srv1", print_, "lab one")
    known.remember("srv2", fingerprint.of_public_key(b"b"), "lab\ttwo\n")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# mine", "not a line", f"srv1 {print_} lab one"]
    assert lines[3].endswith(" lab two")


# ------------------------------------------------------------------ discovery


def _announce(**changes: object) -> wire.Announce:
    fields: dict[str, object] = dict(nonce="n1", server_id="a" * 32, name="lab", port=5000,
                                     state="active", server_version="0.1.0")
    fields.update(changes)
    return wire.Announce(**fields)  # type: ignore[arg-type]


def test_the_announce_carries_the_tls_port_and_fingerprint() -> None:
    print_ = fingerprint.of_public_key(b"k")
    data = wire.encode_announce(_announce(tls_port=5443, tls_fingerprint=print_))
    assert b'"tls_port":5443' in data and print_.encode() in data
    assert wire.parse_announce(data) == _announce(tls_port=5443, tls_fingerprint=print_)
    # Without TLS the fields are absent; a TLS-only server announces port 0.
    assert b"tls" not in wire.encode_announce(_announce())
    assert wire.parse_announce(wire.encode_announce(
        _announce(port=0, tls_port=5443, tls_fingerprint=print_))).port == 0
    for bad in (dict(tls_port=5443), dict(tls_fingerprint=print_),
                dict(tls_port=0, tls_fingerprint=print_),
                dict(tls_port=5443, tls_fingerprint="SHA256:nope"), dict(port=0)):
        with pytest.raises(LocalProtocolError):
            _announce(**bad)
    sent = wire.encode_announce(_announce(tls_port=5443, tls_fingerprint=print_))
    with pytest.raises(RemoteProtocolError):
        wire.parse_announce(sent.replace(b'"tls_port":5443', b'"tls_port":"5443"'))


def test_an_impostor_with_a_known_id_is_listed_beside_the_real_server() -> None:
    real = fingerprint.of_public_key(b"real")
    rogue = fingerprint.of_public_key(b"rogue")
    collector = discovery.Collector("n1", 0.0, 1.5)
    first = collector.answer(wire.encode_announce(
        _announce(tls_port=6666, tls_fingerprint=rogue)), ("10.0.0.66", 5001), 0.1)
    second = collector.answer(wire.encode_announce(
        _announce(tls_port=5443, tls_fingerprint=real)), ("10.0.0.1", 5001), 0.2)
    again = collector.answer(wire.encode_announce(
        _announce(tls_port=5443, tls_fingerprint=real)), ("10.0.1.1", 5001), 0.3)
    assert first is not None and second is not None and again is None
    assert sorted(f.fingerprint or "" for f in collector.results()) == sorted([real, rogue])
    assert second.tls_address == "10.0.0.1:5443"


def test_the_key_is_found_in_a_certificate_as_cryptography_finds_it(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    made = daemon_tls.load_or_create(str(tmp_path), None, None)
    der = ssl.PEM_cert_to_DER_cert(Path(made.cert_path).read_text())
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint.spki_of_certificate(der) == spki
    assert fingerprint.of_certificate(der) == made.fingerprint
    for bad in (b"", der[:40], b"\x02\x01\x00", b"\x30\x85" + der[2:]):
        with pytest.raises(ValueError):
            fingerprint.of_certificate(bad)


def test_a_key_that_cannot_be_made_is_said_plainly(tmp_path: Path) -> None:
    # Made in a child process (the daemon never loads cryptography): its error comes back.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(daemon_tls.TlsSetupError,
                       match=f"cannot write the TLS key and certificate in {blocker}"):
        daemon_tls.load_or_create(str(blocker), None, None)
