"""docs/protocol.md and the code say the same thing.

The reference is only useful if it is complete and true, so these tests read the
sources (with ``ast``) and the tables of the document, and fail when either side
changes without the other: every error code and bye reason the code can produce has
a row, and every row is one the code can produce; every request and event has its
section with every field; the state tables, limits and defaults match the code; the
example sessions decode with our own codecs; and the minimal client printed in the
document works against a real daemon.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from lanchat.protocol import chat, discovery, rules
from lanchat.protocol.errors import RemoteProtocolError
from lanchatd import states
from lanchatd.config import DEFAULT_DISCOVERY_ALLOW, Config

REPO = Path(__file__).resolve().parents[1]
DOC_PATH = REPO / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

# --------------------------------------------------------------------------- reading the doc


def section(number: str) -> str:
    """The text of the level-2 section whose heading starts with ``## <number>``."""
    match = re.search(rf"^## {re.escape(number)}(?=\s).*?$(.*?)(?=^## |\Z)", DOC,
                      re.M | re.S)
    assert match, f"docs/protocol.md has no section '## {number}'"
    return match.group(1)


def subsection(text: str, word: str) -> str | None:
    """The text under the first ``####`` heading that names `word`, up to the next heading."""
    match = re.search(rf"^####[^\n]*`{re.escape(word)}`[^\n]*$(.*?)(?=^###|\Z)", text,
                      re.M | re.S)
    return match.group(1) if match else None


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the Markdown tables in ``text`` whose first cell is one `word`, by that word."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


# --------------------------------------------------------------------------- reading the code

SOURCES = [*sorted((REPO / "lanchat" / "protocol").glob("*.py")), REPO / "lanchatd" / "core.py"]
# Callables whose argument of this name is an error code or a bye reason.
ERROR_CARRIERS = {"RemoteProtocolError", "LocalProtocolError", "ProtocolError", "Error",
                  "_error", "_refuse_join"}
BYE_CARRIERS = {"Bye", "_bye"}
CLASS_CARRIERS = {"RemoteProtocolError": "code", "LocalProtocolError": "code",
                  "ProtocolError": "code", "Error": "code", "Bye": "reason"}
# Non-literal codes the daemon uses: the server state itself, for a refused join.
STATE_CODES = sorted(s for s, r in states.SERVER_STATE_RULES.items() if not r.allows_joins)


@dataclasses.dataclass
class Found:
    errors: dict[str, set[str]]  # code -> files that produce it
    byes: dict[str, set[str]]
    unchecked: list[str]  # code expressions this test cannot resolve


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _method_params(trees: dict[Path, ast.Module]) -> dict[str, list[str]]:
    """Parameter names (without self) of every function defined in the sources."""
    params = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                names = [a.arg for a in node.args.args]
                params[node.name] = names[1:] if names[:1] == ["self"] else names
    return params


def scan_codes() -> Found:
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in SOURCES}
    params = _method_params(trees)
    found = Found({}, {}, [])
    for name in ("_error", "_refuse_join", "_bye"):
        assert name in params, f"{name} is no longer defined; update this test"

    def argument(call: ast.Call, callee: str) -> ast.expr | None:
        wanted = CLASS_CARRIERS.get(callee)
        if wanted is None:
            names = params[callee]
            wanted = "reason" if "reason" in names and callee in BYE_CARRIERS else "code"
            position = names.index(wanted)
        else:
            position = 0
        for keyword in call.keywords:
            if keyword.arg == wanted:
                return keyword.value
        return call.args[position] if len(call.args) > position else None

    def visit(node: ast.AST, path: Path, enclosing: list[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            enclosing = [a.arg for a in node.args.args]
        if isinstance(node, ast.Call):
            callee = _callee(node)
            if callee in ERROR_CARRIERS or callee in BYE_CARRIERS:
                target = found.byes if callee in BYE_CARRIERS else found.errors
                expr = argument(node, callee)
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
                    target.setdefault(expr.value, set()).add(path.name)
                elif isinstance(expr, ast.Attribute) and expr.attr == "code":
                    pass  # re-raising a caught error: its code is found where it is made
                elif isinstance(expr, ast.Name) and expr.id in enclosing:
                    pass  # handed through from the caller, which is scanned too
                elif (isinstance(expr, ast.Attribute) and expr.attr == "state"
                      and isinstance(expr.value, ast.Name) and expr.value.id == "self"):
                    for code in STATE_CODES:
                        target.setdefault(code, set()).add(path.name)
                else:
                    shown = ast.unparse(expr) if expr else ""
                    found.unchecked.append(f"{where}: {callee}({shown})")
        for child in ast.iter_child_nodes(node):
            visit(child, path, enclosing)

    for path, tree in trees.items():
        visit(tree, path, [])
    return found


FOUND = scan_codes()


def documented_elsewhere(code: str, files: set[str]) -> bool:
    """Codes of a control-protocol module are documented in section 16 (their own table)."""
    if not all(f.startswith("control") for f in files):
        return False
    return f"`{code}`" in section("16.")


# --------------------------------------------------------------------------- error codes


def test_the_scan_finds_the_codes_it_must() -> None:
    assert FOUND.unchecked == [], "code expressions this test cannot resolve"
    for code in ("line_too_long", "bad_json", "invalid_name", "name_taken", "rate_limited",
                 "standby", "bad_probe", "not_lanchat"):
        assert code in FOUND.errors
    for reason in ("quit", "kicked", "shutdown", "too_many_errors", "standby"):
        assert reason in FOUND.byes


def test_every_error_code_the_code_can_produce_has_a_row() -> None:
    rows = set(table_rows(section("9.")))
    rows |= set(table_rows(section("15.")))
    missing = sorted(code for code, files in FOUND.errors.items()
                     if code not in rows and not documented_elsewhere(code, files))
    assert missing == [], "error codes missing from docs/protocol.md sections 9/15"


def test_every_documented_error_code_is_one_the_code_produces() -> None:
    documented = set(table_rows(section("9."))) | set(table_rows(section("15.")))
    assert sorted(documented - set(FOUND.errors)) == []


def test_every_bye_reason_has_a_row_and_every_row_is_real() -> None:
    documented = set(table_rows(section("10.")))
    assert sorted(set(FOUND.byes) - documented) == [], "bye reasons missing from section 10"
    assert sorted(documented - set(FOUND.byes)) == [], "section 10 lists unknown reasons"


def test_every_code_appears_in_the_doc_in_backticks() -> None:
    words = backticked(DOC)
    missing = sorted(code for code, files in {**FOUND.errors, **FOUND.byes}.items()
                     if code not in words and not documented_elsewhere(code, files))
    assert missing == []


# --------------------------------------------------------------------------- messages


def _all_subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


EVENT_CLASSES = {cls.TYPE: cls for cls in _all_subclasses(chat.Event)}
CLIENT_TYPES = sorted(chat._CLIENT_PARSERS)
SERVER_TYPES = sorted(chat._SERVER_TYPES)


def wire_fields(cls: type) -> list[str]:
    return ["from" if f.name == "sender" else f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("kind", CLIENT_TYPES)
def test_every_request_has_a_section_with_every_field(kind: str) -> None:
    text = subsection(section("5."), kind)
    assert text is not None, f"no '#### `{kind}`' section for the request"
    fields = wire_fields(EVENT_CLASSES[kind])
    if fields:
        rows = table_rows(text)
        assert sorted(set(["type", *fields]) - set(rows)) == []
    else:
        assert f'{{"type":"{kind}"}}' in text


@pytest.mark.parametrize("kind", SERVER_TYPES)
def test_every_server_event_has_a_section_with_every_field(kind: str) -> None:
    events = section("5.").split("### 5.4", 1)[1]
    text = subsection(events, kind)
    assert text is not None, f"no '#### `{kind}`' section for the event"
    rows = set(table_rows(text))
    if kind in CLIENT_TYPES:  # ping and pong: one table in the requests section
        rows |= set(table_rows(subsection(section("5."), kind) or ""))
    assert sorted(set(wire_fields(chat._SERVER_TYPES[kind])) - rows) == []


def test_no_section_documents_a_message_type_that_does_not_exist() -> None:
    headings = re.findall(r"^#### (.*)$", section("5."), re.M)
    named = set().union(*(backticked(h) for h in headings))
    assert sorted(named - set(CLIENT_TYPES) - set(SERVER_TYPES)) == []


def test_the_greeting_statuses_are_exactly_the_codes() -> None:
    assert sorted(table_rows(section("3."))) == sorted(chat.GREETING_STATUSES)
    assert f"LANCHAT/{chat.PROTOCOL_VERSION} ready" in section("3.")
    assert chat.GREETING_MAGIC == "LANCHAT/"


def test_the_connection_state_table_is_the_code_table() -> None:
    text = section("5.").split("### 5.2", 1)[1].split("### 5.3", 1)[0]
    conn_states = table_rows(text)
    assert sorted(conn_states) == sorted(states.CONN_ALLOWS)
    for state, cells in conn_states.items():
        accepted = backticked(cells[-1])
        assert accepted == set(states.CONN_ALLOWS[state]), state


def test_the_server_state_table_is_the_code_table() -> None:
    rows = table_rows(section("8."))
    assert sorted(rows) == sorted(states.SERVER_STATE_RULES)
    for state, rule in states.SERVER_STATE_RULES.items():
        connections, joins, messages, meaning = rows[state]
        assert connections.startswith("yes" if rule.accepts_connections else "no"), state
        assert joins.startswith("yes" if rule.allows_joins else "no"), state
        assert messages.startswith("yes" if rule.allows_messages else "no"), state
        assert meaning == rule.description, state


def test_the_versions_in_the_doc_are_the_supported_ones() -> None:
    assert chat.SUPPORTED_VERSIONS == (1,)
    assert DOC.startswith(f"# The lanchat wire protocol, version {chat.PROTOCOL_VERSION}\n")


# --------------------------------------------------------------------------- limits and rules

LIMIT_KEYS = sorted(
    [f.name for f in dataclasses.fields(Config) if f.metadata["section"] == "limits"]
    + ["pin_min_length", "pin_max_length", "history", "discovery_rate", "discovery_burst"]
)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}


def test_every_limit_is_in_the_table_with_its_default() -> None:
    rows = table_rows(section("11."))
    assert sorted(set(LIMIT_KEYS) - set(rows)) == [], "limits missing from section 11"
    for key, cells in rows.items():
        assert key in DEFAULTS, f"section 11 lists {key!r}, which is not a setting"
        assert cells[0] == str(DEFAULTS[key]), f"default of {key}"


def test_the_fixed_limits_are_the_codes() -> None:
    text = " ".join(section("11.").split())
    for phrase in [
        f"names {rules.NAME_MAX_CHARS} characters",
        f"message text {rules.TEXT_MAX_CHARS} characters",
        f"PINs {chat.PIN_MAX_DIGITS} digits at most",
        f"discovery datagrams {discovery.MAX_DATAGRAM} bytes",
        f"discovery nonces {discovery.MAX_NONCE} characters",
    ]:
        assert phrase in text


def test_the_rules_section_states_the_rules_in_the_servers_words() -> None:
    text = " ".join(section("7.").split())
    assert rules.NAME_RULE in text
    assert rules.pin_rule() in text
    assert f"At most {rules.TEXT_MAX_CHARS} characters" in text
    assert f"1 to {rules.NAME_MAX_CHARS} characters" in text
    assert "U+202A to U+202E and U+2066 to U+2069" in text
    bidi = {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
    assert bidi == rules._BIDI_CONTROLS


def test_the_defaults_quoted_in_the_handshake_match() -> None:
    welcome = chat.Welcome(1, "s", "i", "n", "active")
    assert welcome.pin_min == DEFAULTS["pin_min_length"]
    assert welcome.pin_max == DEFAULTS["pin_max_length"]
    assert welcome.max_line == DEFAULTS["max_line_bytes"] == chat.DEFAULT_MAX_LINE
    assert "default 4 to 12" in " ".join(section("5.").split())


# --------------------------------------------------------------------------- discovery


def test_discovery_section_names_every_field_network_and_constant() -> None:
    text = section("12.")
    rows = table_rows(text)
    announce = discovery.encode_announce(discovery.Announce("n", "i", "lab", 5000, "active", "1"))
    probe = discovery.encode_probe("n")
    assert sorted((set(json.loads(announce)) | set(json.loads(probe))) - set(rows)) == []
    words = backticked(text)
    assert discovery.LEGACY_PROBE.decode() in words
    assert discovery.LEGACY_REPLY.decode() in words
    assert sorted(set(DEFAULT_DISCOVERY_ALLOW) - words) == []
    assert f"**{discovery.MAX_DATAGRAM} bytes**" in text
    assert f"UDP port {DEFAULTS['discovery_port']}" in text


def test_discovery_examples_decode() -> None:
    blocks = code_blocks(section("12."))
    probes = [line for block in blocks for line in block if line.startswith('{"type":"discover"')]
    answers = [line for block in blocks for line in block if line.startswith('{"type":"announce"')]
    assert probes and answers
    for line in probes:
        assert isinstance(discovery.parse_probe(line.encode()), discovery.Probe)
    for line in answers:
        assert discovery.parse_announce(line.encode()).state in chat.STATES


# --------------------------------------------------------------------------- examples


def code_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"^```[a-z]*\n(.*?)^```", text,
                                                         re.M | re.S)]


def example_lines(prefix: str) -> list[str]:
    return [line[len(prefix):] for block in code_blocks(section("13."))
            for line in block if line.startswith(prefix)]


def test_the_examples_have_both_modes_and_every_event_of_a_session() -> None:
    server = [line for line in example_lines("S: ") if line.startswith("{")]
    kinds = {chat.parse_server_message(line).TYPE for line in server}
    assert sorted(set(SERVER_TYPES) - kinds) == [], "event types without an example"
    requests = set()
    for line in example_lines("C: "):
        try:
            requests.add(chat.parse_client_message(line).TYPE)
        except RemoteProtocolError:
            pass
    assert sorted(set(CLIENT_TYPES) - requests - {"pong"}) == []
    assert any(line.startswith("* You are in room") for line in example_lines("S: "))


def test_every_line_in_the_examples_decodes_or_is_refused_as_shown() -> None:
    """A JSON request decodes, unless the server's next line is the error it gets."""
    checked = 0
    for block in code_blocks(section("13.")):
        for i, line in enumerate(block):
            if line.startswith("S: LANCHAT/"):
                assert chat.parse_greeting(line[3:]).status in chat.GREETING_STATUSES
            elif line.startswith("S: {"):
                assert not isinstance(chat.parse_server_message(line[3:]), chat.Unknown), line
            elif line.startswith("C: {"):
                try:
                    chat.parse_client_message(line[3:])
                except RemoteProtocolError as exc:
                    answer = next(json.loads(later[3:]) for later in block[i + 1:]
                                  if later.startswith("S: {"))
                    assert (answer["type"], answer["code"]) == ("error", exc.code), line
            else:
                continue
            checked += 1
    assert checked > 50


def test_the_example_errors_are_the_codes_documented() -> None:
    codes = set()
    for line in example_lines("S: "):
        if line.startswith("{"):
            event = chat.parse_server_message(line)
            if isinstance(event, (chat.Error, chat.Bye)):
                codes.add(event.code if isinstance(event, chat.Error) else event.reason)
    documented = set(table_rows(section("9."))) | set(table_rows(section("10.")))
    assert sorted(codes - documented) == []


# --------------------------------------------------------------------------- the minimal client


def minimal_client(port: int) -> str:
    match = re.search(r"<!-- doc-test: minimal-client -->\n```python\n(.*?)^```", DOC,
                      re.M | re.S)
    assert match, "the minimal client block is missing"
    source, count = re.subn(r'^HOST, PORT = .*$', f'HOST, PORT = "127.0.0.1", {port}',
                            match.group(1), flags=re.M)
    assert count == 1
    return source


def test_the_minimal_client_in_the_doc_works(start_daemon: Callable[..., Any]) -> None:
    daemon = start_daemon()
    with daemon.json_client() as watcher:
        assert watcher.join("4711", "watcher")["type"] == "joined"
        result = subprocess.run(
            [sys.executable, "-c", minimal_client(daemon.tcp[1])],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "#1 scripted: hello from the example client", "Goodbye."]
        message = watcher.recv_type("message")
        assert (message["from"], message["text"], message["seq"]) == (
            "scripted", "hello from the example client", 1)
        assert watcher.recv_type("presence")["event"] == "leave"


# --------------------------------------------------------------------------- the end


def test_the_last_section_is_the_control_protocol() -> None:
    headings = re.findall(r"^## (.*)$", DOC, re.M)
    assert headings[-1].startswith("16. The control protocol")
    for part in ("The socket", "Framing", "The version check", "Commands", "Errors"):
        assert re.search(rf"^### 16\.\d+ {part}", section("16."), re.M), part
