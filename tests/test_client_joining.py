"""Choosing the server before joining, with a scripted person at the prompts: the only
active server is taken, and when nothing answers the person is asked for an address
(or Enter to search again, or q to quit)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanchat_testing import Daemon
from test_client_support import unused_udp_port

from lanchat.client import discovery, joining
from lanchat.client.options import Options
from lanchat.client.settings import DEFAULT_DISCOVERY_PORT


class Script:
    """A person who answers the prompts from a list (None: Ctrl-D)."""

    interactive = True

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []
        self.said: list[str] = []

    def ask(self, prompt: str) -> str | None:
        self.asked.append(prompt)
        if not self.answers:
            raise AssertionError(f"asked once more than scripted: {prompt!r}")
        return self.answers.pop(0)

    def say(self, text: str) -> None:
        self.said.append(text)


def found(name: str, state: str, host: str = "192.0.2.7") -> discovery.Found:
    return discovery.Found(host, 5000, f"id-{name}", name, state, "1.0")


def test_the_only_active_server_is_taken_without_asking() -> None:
    person = Script()  # any question fails the test
    chosen = joining.choose_server([found("alpha", "active"), found("beta", "standby")],
                                   Options(), person)
    assert chosen.name == "alpha" and person.asked == []


def test_a_choice_among_active_servers_refuses_a_standby_one() -> None:
    person = Script("2", "3")
    servers = [found("alpha", "active"), found("beta", "standby"), found("gamma", "active")]
    assert joining.choose_server(servers, Options(), person).name == "gamma"
    assert any("beta is in standby" in line for line in person.said)


def test_this_machine_is_probed_too_by_default() -> None:
    targets, local = joining.discovery_targets(Options())
    assert local == ("127.0.0.1", DEFAULT_DISCOVERY_PORT)
    assert targets[0] == discovery.ProbeTarget("255.255.255.255", DEFAULT_DISCOVERY_PORT,
                                               "broadcast")
    given = Options(discovery_targets=(("127.255.255.255", 7001),))
    assert joining.discovery_targets(given) == (
        [discovery.ProbeTarget("127.255.255.255", 7001, "unicast")], None)


def silent_options(tmp_path: Path) -> Options:
    return Options(discovery_targets=(("127.0.0.1", unused_udp_port()),),
                   discovery_timeout=0.3, state_file=tmp_path / "last-server.json")


def test_no_server_found_asks_for_an_address_or_searches_again(
        daemon: Daemon, tmp_path: Path) -> None:
    person = Script("", "lab-pc:99999", f"127.0.0.1:{daemon.tcp[1]}")
    target = joining.find_server(silent_options(tmp_path), person)
    assert (target.host, target.port) == ("127.0.0.1", daemon.tcp[1])
    assert len(person.asked) == 3 and "Enter to search again" in person.asked[0]
    assert person.said.count("Found no server on the LAN.") == 2  # searched twice
    assert any(line.startswith("Not a server address:") for line in person.said)


@pytest.mark.parametrize("answer", ["q", None])
def test_no_server_found_and_the_person_quits(tmp_path: Path, answer: str | None) -> None:
    with pytest.raises(joining.JoinError, match="No server chosen"):
        joining.find_server(silent_options(tmp_path), Script(answer))


def test_without_a_terminal_no_server_found_is_an_error_with_the_causes(
        tmp_path: Path) -> None:
    person = Script()
    person.interactive = False
    with pytest.raises(joining.JoinError, match="firewall blocks UDP port"):
        joining.find_server(silent_options(tmp_path), person)
