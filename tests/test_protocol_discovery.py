"""Discovery datagrams (lanchat.protocol.discovery), with no socket.

The original design's probe and answer must stay byte for byte what old clients send
and expect; the JSON probe and announce must survive a round trip and refuse what
does not fit.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from lanchat.protocol import discovery
from lanchat.protocol.errors import LocalProtocolError, RemoteProtocolError

ANNOUNCE = discovery.Announce(
    nonce="5f2c9a", server_id="8d0cac96fb2a4b21a60ee23957cad253", name="lab", port=5000,
    state="active", server_version="0.1.0",
)


def refusal(data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        discovery.parse_probe(data)
    return info.value.code


# ============================================================================ legacy

def test_the_legacy_probe_and_answer_are_the_original_bytes() -> None:
    assert discovery.LEGACY_PROBE == b"DISCOVER_SERVER"
    assert discovery.LEGACY_REPLY == b"SERVER_HERE"


@pytest.mark.parametrize("data", [b"DISCOVER_SERVER", b"DISCOVER_SERVER\n",
                                  b"DISCOVER_SERVER\r\n"])
def test_the_legacy_probe_is_recognised_with_or_without_a_line_ending(data: bytes) -> None:
    assert discovery.parse_probe(data) == discovery.LegacyProbe()


@pytest.mark.parametrize("data", [
    b"", b"DISCOVER_SERVE", b"DISCOVER_SERVERS", b"discover_server", b" DISCOVER_SERVER",
    b"DISCOVER_SERVER extra", b"SERVER_HERE", b"DISCOVER_SERVER\x00",
])
def test_near_misses_of_the_legacy_probe_are_not_probes(data: bytes) -> None:
    assert refusal(data) == "bad_probe"


# ============================================================================ JSON probe

def test_the_json_probe_is_one_small_object() -> None:
    data = discovery.encode_probe("5f2c9a")
    assert data == b'{"type":"discover","version":1,"nonce":"5f2c9a"}'
    assert discovery.parse_probe(data) == discovery.Probe("5f2c9a", 1)


def test_a_probe_without_version_is_version_1_and_extra_fields_are_ignored() -> None:
    assert discovery.parse_probe(b'{"type":"discover","nonce":"n"}') == discovery.Probe("n", 1)
    assert discovery.parse_probe(
        b'{"type":"discover","version":1,"nonce":"n","client":"x"}') == discovery.Probe("n")


def test_a_probe_from_a_newer_client_is_still_a_probe() -> None:
    assert discovery.parse_probe(b'{"type":"discover","version":3,"nonce":"n"}') == (
        discovery.Probe("n", 3))


@pytest.mark.parametrize("nonce", ["n", "x" * 64, "ø" * 64, "a b"])
def test_any_nonce_of_1_to_64_characters_round_trips(nonce: str) -> None:
    assert discovery.parse_probe(discovery.encode_probe(nonce)) == discovery.Probe(nonce)


@pytest.mark.parametrize("data", [
    b'{"type":"discover","version":1}',
    b'{"type":"discover","version":1,"nonce":""}',
    b'{"type":"discover","version":1,"nonce":"' + b"x" * 65 + b'"}',
    b'{"type":"discover","version":1,"nonce":5}',
    b'{"type":"discover","version":0,"nonce":"n"}',
    b'{"type":"discover","version":"1","nonce":"n"}',
    b'{"type":"discover","version":true,"nonce":"n"}',
    b'{"type":"discover","version":1.5,"nonce":"n"}',
    b'{"type":"announce","version":1,"nonce":"n"}',
    b'{"version":1,"nonce":"n"}',
    b'["discover"]',
    b"{",
    b"\xff\xfe",
    b"[" * 400,
    b"null",
])
def test_malformed_probes_are_refused_and_never_answered(data: bytes) -> None:
    assert refusal(data) == "bad_probe"


def test_a_probe_may_be_512_bytes_and_no_more() -> None:
    def padded(total: int) -> bytes:
        head = b'{"type":"discover","version":1,"nonce":"n","pad":"'
        return head + b"p" * (total - len(head) - 2) + b'"}'

    assert discovery.MAX_DATAGRAM == 512
    assert discovery.parse_probe(padded(512)) == discovery.Probe("n")
    assert refusal(padded(513)) == "too_large"
    assert refusal(b"DISCOVER_SERVER" + b"\n" * 600) == "too_large"


@pytest.mark.parametrize("nonce", ["", "x" * 65, None, 5])
def test_we_cannot_encode_a_probe_with_a_bad_nonce(nonce: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        discovery.encode_probe(nonce)
    assert info.value.code == "bad_probe"


# ============================================================================ announce

def test_the_announce_carries_every_field_and_round_trips() -> None:
    data = discovery.encode_announce(ANNOUNCE)
    assert json.loads(data) == {
        "type": "announce", "version": 1, "nonce": "5f2c9a",
        "server_id": "8d0cac96fb2a4b21a60ee23957cad253", "name": "lab", "port": 5000,
        "state": "active", "server_version": "0.1.0",
    }
    assert b" " not in data  # compact
    assert discovery.parse_announce(data) == ANNOUNCE


@pytest.mark.parametrize("state", ["active", "standby", "stopped"])
def test_every_server_state_can_be_announced(state: str) -> None:
    announce = discovery.Announce("n", "id", "lab", 5000, state, "0.1.0")
    assert discovery.parse_announce(discovery.encode_announce(announce)).state == state


def test_a_largest_announce_is_utf8_and_still_parses() -> None:
    announce = discovery.Announce(
        nonce="🛰" * 64, server_id="i" * 64, name="Kontoret på loftet 🏠".ljust(64, "ø"),
        port=65535, state="standby", server_version="v" * 32,
    )
    data = discovery.encode_announce(announce)
    assert "på".encode() in data  # UTF-8, not \u escapes
    assert len(data) <= 4 * discovery.MAX_DATAGRAM
    assert discovery.parse_announce(data) == announce


@pytest.mark.parametrize("changes", [
    {"port": 0}, {"port": 65536}, {"port": "5000"}, {"port": True},
    {"state": "sleeping"}, {"server_id": ""}, {"server_id": "x" * 65},
    {"name": "n" * 65}, {"name": None}, {"server_version": "v" * 33}, {"nonce": 5},
    {"version": "1"},
])
def test_an_announce_with_a_bad_field_cannot_exist(changes: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        dataclasses.replace(ANNOUNCE, **changes)
    assert info.value.code == "bad_announce"


@pytest.mark.parametrize(("data", "code"), [
    (b"SERVER_HERE", "bad_announce"),
    (b"\xff", "bad_announce"),
    (b'{"type":"discover","version":1,"nonce":"n"}', "bad_announce"),
    (b'{"type":"announce","version":1,"nonce":"n"}', "bad_announce"),
    (b'{"type":"announce","version":1,"nonce":"n","server_id":"i","name":"lab",'
     b'"port":"5000","state":"active","server_version":"0.1.0"}', "bad_announce"),
    (b"[" * 1000, "bad_announce"),
    (b" " * 2049, "too_large"),
])
def test_a_malformed_answer_is_the_servers_error(data: bytes, code: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        discovery.parse_announce(data)
    assert info.value.code == code


def test_an_answer_with_extra_fields_is_still_an_announce() -> None:
    obj = json.loads(discovery.encode_announce(ANNOUNCE))
    obj["colour"] = "blue"
    assert discovery.parse_announce(json.dumps(obj).encode()) == ANNOUNCE
