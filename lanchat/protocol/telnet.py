"""Telnet (RFC 854/855) for plain-text mode, sans-I/O, and a terminal's editing keys.

Theory of operation
-------------------
People reach plain-text mode with ``nc``, Linux ``telnet``, PuTTY or Windows' telnet.
The last two open with Telnet option negotiation (``IAC WILL NAWS``, ``IAC DO ECHO``...)
in front of the first line, and any Telnet client may send an ``IAC`` command later (an
interrupt, a timing mark).  ``TelnetFilter`` takes the received bytes out of that layer:
``receive(data)`` returns the clean bytes (what the person typed) and the bytes to answer
with.  A command may be cut anywhere between two reads; the filter keeps the few bytes of
state it needs and gives the same clean bytes however the stream was cut.

The server needs no option, so it refuses every one it is offered or asked for: ``DO x``
is answered ``WONT x`` and ``WILL x`` ``DONT x``, once per option (a refusal leaves the
option's state as it was, so there is no state change to answer again; a peer that
repeats a request has been answered already).  The one exception is TIMING-MARK
(RFC 860), which is a request for a mark, not a state: each ``DO TIMING-MARK`` gets its
``WONT``, since Linux telnet discards output until it sees that answer.  A ``WONT`` or
``DONT`` needs no answer: the option is off and stays off.  The server never starts a
negotiation, so a connection that never sends ``IAC`` (``nc``, every JSON client: byte
0xFF never occurs in UTF-8) never receives a Telnet command, and its bytes pass through
unchanged.  A connection whose first byte other than whitespace is ``{`` is a program in
JSON mode: the filter lets all its bytes through, so even a stray 0xFF there is left to
the UTF-8 check as before.  docs/protocol.md section 6.1 says why the server does not
offer to echo.

``IAC IAC`` is a literal byte 0xFF; ``IAC EC`` (erase character) and ``IAC EL`` (erase
line) become the keys DEL and Ctrl-U, which ``edit_line`` applies; every other command
(NOP, GA, AYT, IP, BRK, AO, DM) is dropped.  A subnegotiation (``IAC SB ... IAC SE``)
is skipped without being stored; past ``MAX_SUBNEGOTIATION`` bytes without its end the
peer is taken to be broken and the bytes that follow are data again, so no input can
make the filter hold more than a few bytes or swallow a person's typing for good.
"""

from __future__ import annotations

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
GA = 249
EL = 248  # erase line
EC = 247  # erase character
AYT = 246
AO = 245
IP = 244
BRK = 243
DM = 242
NOP = 241
SE = 240

ECHO = 1
SGA = 3  # suppress go-ahead
TIMING_MARK = 6

#: Bytes of one subnegotiation skipped at most while waiting for its ``IAC SE``.
MAX_SUBNEGOTIATION = 1024

# The filter's states: what the next byte means.
#
#   _DATA   --IAC-->  _IAC    --IAC-->                 _DATA  (a literal 0xFF)
#                     _IAC    --WILL/WONT/DO/DONT-->   _VERB  --option-->  _DATA
#                     _IAC    --SB-->                  _SB    (skipped, counted)
#                     _IAC    --any other command-->   _DATA
#   _SB     --IAC-->  _SB_IAC --SE-->  _DATA;  --IAC-->  _SB;  --other-->  _IAC (again)
#   _SB     --MAX_SUBNEGOTIATION bytes-->  _DATA
_DATA, _IAC, _VERB, _SB, _SB_IAC = range(5)

_REFUSAL = {DO: WONT, WILL: DONT}

# Backspace, DELETE and Ctrl-U: what a character-mode terminal sends to correct a line.
BS = "\x08"
DEL = "\x7f"
KILL = "\x15"  # Ctrl-U
_EDIT_KEYS = frozenset((BS, DEL, KILL))


class TelnetFilter:
    """One connection's Telnet layer: ``receive(data) -> (clean, answer)``."""

    __slots__ = ("_refused", "_skipped", "_state", "_undecided", "_verb", "json",
                 "spoke_telnet")

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0
        # Until the first byte that is not ASCII whitespace: "{" there means JSON mode
        # (docs/protocol.md section 4), whose bytes pass through untouched, 0xFF included
        # (it is invalid UTF-8 there, and answered as such).
        self._undecided = True
        #: True once the stream is known to be JSON mode's: all of it passes untouched.
        self.json = False
        self._skipped = 0  # bytes of the current subnegotiation
        # (verb, option) pairs already refused, each answered once (made when first
        # needed: most connections never send a Telnet command).
        self._refused: set[tuple[int, int]] | None = None
        #: True once the peer sent a Telnet command (it is a Telnet client).
        self.spoke_telnet = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """The bytes the person typed, and the bytes to send back (often ``b""``)."""
        if self.json:
            return data, b""
        if self._undecided:
            first = data.lstrip()[:1]
            if first:
                self._undecided = False
                if first == b"{":  # a program speaking JSON mode: not Telnet, ever
                    self.json = True
                    return data, b""
        if self._state == _DATA and IAC not in data:
            return data, b""  # nc, and telnet's ordinary lines
        self.spoke_telnet = True
        clean = bytearray()
        answer = bytearray()
        state = self._state
        i = 0
        n = len(data)
        while i < n:
            if state == _DATA:  # copy the run of data up to the next IAC
                j = data.find(b"\xff", i)
                if j < 0:
                    clean += data[i:]
                    break
                clean += data[i:j]
                state = _IAC
                i = j + 1
                continue
            if state == _SB:  # skip the subnegotiation's bytes up to the next IAC
                j = data.find(b"\xff", i)
                end = n if j < 0 else j
                room = MAX_SUBNEGOTIATION - self._skipped
                if end - i >= room:  # too long: the peer is broken, its bytes are data
                    i += room
                    state = _DATA
                    continue
                self._skipped += end - i
                if j < 0:
                    break
                state = _SB_IAC
                i = j + 1
                continue
            byte = data[i]
            i += 1
            if state == _IAC:
                if byte == IAC:
                    clean.append(IAC)
                    state = _DATA
                elif byte in (WILL, WONT, DO, DONT):
                    self._verb = byte
                    state = _VERB
                elif byte == SB:
                    self._skipped = 0
                    state = _SB
                else:
                    if byte == EC:
                        clean.append(ord(DEL))
                    elif byte == EL:
                        clean.append(ord(KILL))
                    state = _DATA  # NOP, GA, AYT, IP, BRK, AO, DM, a stray SE: dropped
            elif state == _VERB:
                answer += self._negotiate(self._verb, byte)
                state = _DATA
            elif byte == SE:  # _SB_IAC
                state = _DATA
            elif byte == IAC:  # a doubled 0xFF inside the subnegotiation
                self._skipped += 1
                state = _SB if self._skipped < MAX_SUBNEGOTIATION else _DATA
            else:
                # RFC 855 allows only IAC or SE here: the peer forgot the SE.  End the
                # subnegotiation and read this byte as the command it begins.
                state = _IAC
                i -= 1
        self._state = state
        return bytes(clean), bytes(answer)

    def _negotiate(self, verb: int, option: int) -> bytes:
        refusal = _REFUSAL.get(verb)
        if refusal is None:  # WONT / DONT: the option is off, and it stays off
            return b""
        if option == TIMING_MARK and verb == DO:
            return bytes((IAC, WONT, TIMING_MARK))
        key = (verb, option)
        if self._refused is None:
            self._refused = set()
        elif key in self._refused:
            return b""
        self._refused.add(key)
        return bytes((IAC, refusal, option))


def edit_line(line: str) -> str:
    """``line`` with a terminal's corrections applied: BS and DEL remove the character
    before them, Ctrl-U removes everything before it.

    Plain-text mode applies this to every line a person sends, before any check, so a
    line typed in a character-mode terminal ("12x<BS>34") means what the person saw.
    """
    if not _EDIT_KEYS.intersection(line):
        return line
    out: list[str] = []
    for ch in line:
        if ch in (BS, DEL):
            if out:
                out.pop()
        elif ch == KILL:
            out.clear()
        else:
            out.append(ch)
    return "".join(out)
