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
import contextlib
import dataclasses
import io
import json
import re
import select
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from lanchat.protocol import chat, discovery, fingerprint, rules, vocabulary
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
VOCABULARY_CLASSES = {"ErrorCode", "ByeReason", "LocalCode"}
# Non-literal codes the daemon uses: the server state itself, for a refused join.
STATE_CODES = sorted(s for s, r in states.SERVER_STATE_RULES.items() if not r.allows_joins)


@dataclasses.dataclass
class Found:
    errors: dict[str, set[str]]  # code -> files that produce it
    byes: dict[str, set[str]]
    unchecked: list[str]  # code expressions this test cannot resolve
    literals: list[str] = dataclasses.field(default_factory=list)  # codes spelled in place


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
                    found.literals.append(f"{where}: {expr.value}")
                elif (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                      and expr.value.id in VOCABULARY_CLASSES
                      and hasattr(getattr(vocabulary, expr.value.id), expr.attr)):
                    # A word of lanchat.protocol.vocabulary (ErrorCode.NAME_TAKEN).
                    code = getattr(getattr(vocabulary, expr.value.id), expr.attr)
                    target.setdefault(code, set()).add(path.name)
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
    assert "default 6 to 12" in " ".join(section("5.").split())


# --------------------------------------------------------------------------- discovery


def test_discovery_section_names_every_field_network_and_constant() -> None:
    text = section("12.")
    rows = table_rows(text)
    announce = discovery.encode_announce(discovery.Announce(
        "n", "i", "lab", 5000, "active", "1", tls_port=5443,
        tls_fingerprint=fingerprint.of_public_key(b"k")))
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
    daemon = start_daemon(SHIPPED_PINS)
    with daemon.json_client() as watcher:
        assert watcher.join("471100", "watcher")["type"] == "joined"
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


def _anchor(heading: str) -> str:
    """The fragment a Markdown renderer (GitHub's rules) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_inside_the_document_leads_to_a_heading() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", DOC, re.M)}
    assert _anchor("16. The control protocol (lanchatctl ↔ lanchatd), version 1") == (
        "16-the-control-protocol-lanchatctl--lanchatd-version-1")
    links = re.findall(r"\]\(#([^)]+)\)", DOC)
    assert links and sorted(set(links) - anchors) == []


def test_the_control_examples_are_requests_and_replies_the_codecs_accept() -> None:
    from lanchat.protocol import control

    blocks = re.findall(r"^```json\n(.*?)^```", section("16."), re.M | re.S)
    requests = [b for b in blocks if '"cmd"' in b]
    replies = [b for b in blocks if '"ok"' in b]
    assert len(requests) >= 2 and len(replies) >= 3
    for block in requests:
        assert isinstance(control.parse_request(block.strip().encode()).request,
                          control.Request)
    for block in replies:
        assert isinstance(control.parse_reply(block.strip().encode()),
                          (control.Ok, control.Failure))


def test_the_control_limits_are_named_with_their_defaults() -> None:
    text = " ".join(section("16.").split())
    keys = [f.name for f in dataclasses.fields(Config)
            if f.metadata["section"] == "control" and f.name.startswith("control_")
            and f.name not in ("control_socket", "control_group", "control_watch_group")]
    assert len(keys) == 3
    for key in keys:
        mentions = re.findall(rf"`{key}`[^()`]*\(([\d.]+)", text)
        assert mentions and set(mentions) == {f"{DEFAULTS[key]:g}"}, key


def test_the_control_protocol_and_the_websocket_transport_close_the_document() -> None:
    headings = re.findall(r"^## (.*)$", DOC, re.M)
    assert headings[-2].startswith("16. The control protocol")
    assert headings[-1].startswith("17. The WebSocket transport")
    for part in ("The socket", "Framing", "The version check", "Commands", "Errors"):
        assert re.search(rf"^### 16\.\d+ {part}", section("16."), re.M), part


# --------------------------------------------------------------------------- the replays
#
# Every example session (section 13, and the control session of 16.9) is replayed
# against a real daemon and compared line by line.  The document marks each transcript
# with ``<!-- replay: RUN NAME -->``: transcripts of one RUN share a daemon started with
# that run's settings, and their connections are interleaved as the document tells:
# before any connection sends, everything the server had to say so far has arrived
# (two round trips on a separate control connection: the loop is single-threaded, so
# once the second answer is back every earlier pass has written its output), and the
# first connection in document order that has a line to send sends it, with the lines
# that directly follow it (sent at once, as "three messages at once" means).  A
# connection is opened when it is first its turn, so its handshake time starts then.
# ``A: lanchatctl ...`` lines run lanchatctl against the daemon's control socket.

SERVER_NAME = '[server]\nname = "lab"\n'
LIMITS = {"max_line_bytes": 64, "message_rate": 1.0, "message_burst": 5, "max_errors": 3,
          "keepalive_interval": 1.0, "keepalive_timeout": 1.0, "handshake_timeout": 3.0}
# The document's servers have the shipped PIN length (the tests' daemons otherwise
# allow four digits, lanchat_testing.TEST_PIN_MIN).
SHIPPED_PINS = f"[rooms]\npin_min_length = {DEFAULTS['pin_min_length']}\n"
RUNS = {
    "lab": SERVER_NAME + SHIPPED_PINS,
    "limits": SERVER_NAME + SHIPPED_PINS + "[limits]\n"
    + "".join(f"{k} = {v}\n" for k, v in LIMITS.items()),
    "admin": SERVER_NAME + SHIPPED_PINS,
    "control": SERVER_NAME + SHIPPED_PINS,
}
MARKER = re.compile(r"^<!-- replay: (\S+) (\S+) -->\n```([a-z]*)\n(.*?)^```", re.M | re.S)
REPLAY_WAIT = 15.0  # seconds a replay waits for a line the server must send by itself
# Values that differ from run to run, compared only for being there.
VOLATILE_CHAT = frozenset({"ts", "server_id"})
VOLATILE_CONTROL = VOLATILE_CHAT | {"pid", "actor", "seq", "last_seq", "addr", "time"}


@dataclasses.dataclass
class Transcript:
    run: str
    name: str
    lines: list[tuple[str, str]]  # (who, text): S the server, C the client, A lanchatctl

    @property
    def control(self) -> bool:
        return self.run == "control"


def transcripts() -> list[Transcript]:
    found = []
    for match in MARKER.finditer(DOC):
        run, name, kind, body = match.groups()
        lines = []
        for line in body.splitlines():
            if kind == "console":  # a socat session: requests have a cmd, the rest answers
                if not line.startswith("$ "):
                    lines.append(("C" if '"cmd":' in line else "S", line))
            elif line[:3] in ("S: ", "C: ", "A: "):
                lines.append((line[0], line[3:]))
            else:
                raise AssertionError(f"replay {run} {name}: a line that is no S:, C: or A: "
                                     f"line: {line!r}")
        found.append(Transcript(run, name, lines))
    return found


TRANSCRIPTS = transcripts()


def test_every_example_session_is_marked_for_replay() -> None:
    sessions = [block for block in code_blocks(section("13."))
                if any(line.startswith("S: ") for line in block)]
    marked = [t for t in TRANSCRIPTS if not t.control]
    assert len(marked) == len(sessions) > 8
    assert [t.name for t in TRANSCRIPTS if t.control] == ["admin"]
    assert sorted({t.run for t in TRANSCRIPTS}) == sorted(RUNS)
    assert len({(t.run, t.name) for t in TRANSCRIPTS}) == len(TRANSCRIPTS)
    prose = " ".join(section("13.").split("### 13.5", 1)[1].split("<!--", 1)[0].split())
    for key, value in LIMITS.items():  # the "limits" run is the one the text describes
        assert f"`{key} = {value}`" in prose, key


def _wire(text: str) -> bytes:
    """A C: line as bytes: ``<U+202E>`` is that character, ``\\xff`` that byte."""
    text = re.sub(r"<U\+([0-9A-F]{4,6})>", lambda m: chr(int(m.group(1), 16)), text)
    if text.startswith("{"):
        return text.encode() + b"\n"
    parts = re.split(r"\\x([0-9a-f]{2})", text)
    return b"".join(bytes([int(p, 16)]) if i % 2 else p.encode()
                    for i, p in enumerate(parts)) + b"\n"


def _normal(line: str, control: bool) -> Any:
    """A server line with the run's own values masked, for comparing."""
    line = re.sub(r"lanchatd([/ ])\d+\.\d+\.\d+\S*?(?=[\")\s])", r"lanchatd\1VERSION", line)
    line = re.sub(r"^\[\d\d:\d\d:\d\d\] ", "[HH:MM:SS] ", line)
    if not line.startswith("{"):
        return line
    volatile = VOLATILE_CONTROL if control else VOLATILE_CHAT

    def mask(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return [(key, "..." if key in volatile else value) for key, value in pairs]

    return json.loads(line, object_pairs_hook=mask)


class Peer:
    """One transcript's connection to the daemon, read without blocking."""

    def __init__(self, transcript: Transcript) -> None:
        self.t = transcript
        self.pos = 0
        self.sock: socket.socket | None = None  # connected when it is first its turn
        self.buf = b""
        self.eof = False

    def connect(self, daemon: Any) -> None:
        if self.t.control:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(daemon.control)
        else:
            self.sock = socket.create_connection(daemon.tcp, timeout=REPLAY_WAIT)
        self.sock.setblocking(False)

    @property
    def next(self) -> tuple[str, str] | None:
        return self.t.lines[self.pos] if self.pos < len(self.t.lines) else None

    def where(self) -> str:
        return f"replay {self.t.run} {self.t.name}, line {self.pos + 1}"

    def pump(self) -> None:
        while self.sock is not None and not self.eof:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                chunk = b""
            self.buf += chunk
            self.eof = not chunk

    def line(self) -> str | None:
        if b"\n" not in self.buf:
            return None
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode("utf-8")


class Barrier:
    """Round trips on a control connection: once answered, earlier output is out."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REPLAY_WAIT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.calls = 0
        self._call('"cmd":"hello","versions":[1]')

    def _call(self, body: str) -> None:
        self.calls += 1
        self.sock.sendall(b'{"id":%d,%s}\n' % (self.calls, body.encode()))
        assert json.loads(self.file.readline())["id"] == self.calls

    def __call__(self) -> None:
        self._call('"cmd":"rooms"')
        self._call('"cmd":"rooms"')

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _lanchatctl(control: str, command: str) -> None:
    from lanchatctl.cli import main

    words = shlex.split(command)
    assert words[0] == "lanchatctl", command
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = main(["--socket", control, *words[1:]])
    assert status == 0, (command, out.getvalue())


def _cause(peers: list[Peer], daemon: Any, done: set[int]) -> bool:
    """Start what the transcript shows happening elsewhere; True if something was."""
    for peer in peers:
        expected = peer.next
        if (expected and expected[0] == "S" and '"event":"refused_connection"' in expected[1]
                and id(peer) not in done):
            done.add(id(peer))  # someone connects while the server refuses clients
            with socket.create_connection(daemon.tcp, timeout=REPLAY_WAIT) as someone:
                assert someone.recv(4096).startswith(b"LANCHAT/1 standby")
            return True
    return False


def replay(run: str, daemon: Any) -> int:
    """Replay the run's transcripts; returns how many server lines were compared."""
    peers = [Peer(t) for t in TRANSCRIPTS if t.run == run]
    barrier = Barrier(daemon.control)
    caused: set[int] = set()
    compared = 0
    try:
        while any(peer.next for peer in peers):
            barrier()
            arrived = False
            for peer in peers:
                peer.pump()
                while peer.next and peer.next[0] == "S":
                    got = peer.line()
                    if got is None:
                        if peer.eof:
                            raise AssertionError(f"{peer.where()}: the server closed the "
                                                 f"connection; the document shows "
                                                 f"{peer.next[1]}")
                        break
                    control = peer.t.control
                    assert _normal(got, control) == _normal(peer.next[1], control), (
                        f"{peer.where()}: the server sent\n  {got}\nthe document shows\n"
                        f"  {peer.next[1]}")
                    peer.pos += 1
                    compared += 1
                    arrived = True
            if arrived:
                continue
            sender = next((p for p in peers
                           if p.next and (p.sock is None or p.next[0] in "CA")), None)
            if sender is not None:
                assert sender.next is not None
                if sender.sock is None:
                    sender.connect(daemon)
                    continue
                if sender.next[0] == "A":
                    _lanchatctl(daemon.control, sender.next[1])
                    sender.pos += 1
                    continue
                data = b""
                while sender.next and sender.next[0] == "C":
                    data += _wire(sender.next[1])
                    sender.pos += 1
                sender.sock.sendall(data)
                continue
            if _cause(peers, daemon, caused):
                continue
            # Everyone waits for the server to speak by itself (a ping, a timeout).
            waiting = [p.sock for p in peers if p.next and p.sock is not None]
            ready, _, _ = select.select(waiting, [], [], REPLAY_WAIT)
            assert ready, "nothing came: " + "; ".join(
                f"{p.where()} waits for {p.next[1]}" for p in peers if p.next)
        barrier()
        for peer in peers:
            peer.pump()
            assert peer.line() is None, f"{peer.where()}: the server sent more than shown"
    finally:
        barrier.close()
        for peer in peers:
            if peer.sock is not None:
                peer.sock.close()
    return compared


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_example_sessions_replay_against_the_daemon(
        run: str, start_daemon: Callable[..., Any]) -> None:
    daemon = start_daemon(RUNS[run])
    shown = sum(1 for t in TRANSCRIPTS if t.run == run for who, _ in t.lines if who == "S")
    assert replay(run, daemon) == shown > 0
