"""Shell completion for lanchatctl and lanchat (completions/): bash completes what the
parsers accept, and the bash and zsh files name every command and option the parsers
have, so neither can drift from the programs."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from lanchat.cli import build_parser as lanchat_parser
from lanchat.client.doctor import build_parser as doctor_parser
from lanchatctl.cli import build_parser as lanchatctl_parser

ROOT = Path(__file__).resolve().parent.parent
BASH = ROOT / "completions" / "bash"
ZSH = ROOT / "completions" / "zsh"


def complete(program: str, line: str) -> list[str]:
    """What bash's programmable completion offers for ``line`` (cursor at its end)."""
    script = f"""
source {BASH / program}
read -r -a COMP_WORDS <<<"$LINE"
[[ $LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE=$LINE; COMP_POINT=${{#LINE}}
read -r _ _ function _ <<<"$(complete -p {program})"  # complete -F FUNCTION {program}
"$function" {program} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script],
                            env={"LINE": line, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(word for word in result.stdout.split("\n") if word)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


@pytest.mark.parametrize(("line", "offered"), [
    ("lanchatctl st", ["standby", "start", "status", "stop"]),
    ("lanchatctl --json ro", ["rooms"]),
    ("lanchatctl kick --r", ["--reason"]),
    ("lanchatctl log --f", ["--follow"]),
    ("lanchatctl help ki", ["kick"]),
    ("lanchatctl log --event refused_", ["refused_connection", "refused_join",
                                         "refused_messages"]),
    ("lanchatctl log --s", ["--since", "--socket"]),
    ("lanchatctl --timeout 2 re", ["reload"]),
    ("lanchat --disc", ["--discover", "--discovery-address", "--discovery-port",
                        "--discovery-timeout"]),
    ("lanchat --p", ["--pin", "--plain", "--port"]),
    ("lanchat --pin ", []),
    ("lanchat do", ["doctor"]),
    ("lanchat doctor --w", ["--wait"]),
])
def test_bash_completes(line: str, offered: list[str]) -> None:
    assert complete(line.split()[0], line) == offered


def test_bash_completes_socket_paths(tmp_path: Path) -> None:
    (tmp_path / "control.sock").touch()
    assert complete("lanchatctl", f"lanchatctl --socket {tmp_path}/con") == [
        f"{tmp_path}/control.sock"]


def test_the_completions_know_every_command_and_option() -> None:
    ctl = lanchatctl_parser()
    commands = subcommands(ctl)
    bash = (BASH / "lanchatctl").read_text()
    zsh = (ZSH / "_lanchatctl").read_text()
    listed = re.search(r'local commands="([^"]*)"', bash)
    assert listed is not None
    assert listed.group(1).split() == list(commands)
    for name, sub in commands.items():
        assert re.search(rf"^  '{name}:", zsh, re.M), f"zsh: {name}"
        for option in options(sub):
            assert option in bash and option in zsh, f"{name} {option}"
    client = (BASH / "lanchat").read_text(), (ZSH / "_lanchat").read_text()
    for option in options(lanchat_parser()) | options(doctor_parser()):
        for text in client:
            assert option in text, option
    assert all("doctor" in text for text in client)


def test_the_completions_know_every_event_of_the_activity_log() -> None:
    """Events are named where lanchatd records them: record(now, "join", ...)."""
    recorded = set()
    for module in (ROOT / "lanchatd").glob("*.py"):
        recorded |= set(re.findall(r'record\(\s*[\w.]+,\s*"(\w+)"', module.read_text()))
    recorded |= set(re.findall(r'EVENT = "(\w+)"', (ROOT / "lanchatd" / "activity.py").read_text()))
    listed = re.search(r'local events="([^"]*)"', (BASH / "lanchatctl").read_text())
    assert listed is not None
    assert len(recorded) > 15 and recorded <= set(listed.group(1).split()), (
        recorded - set(listed.group(1).split()))
    zsh = (ZSH / "_lanchatctl").read_text()
    assert all(f" {event}" in zsh or f"({event}" in zsh for event in recorded)
