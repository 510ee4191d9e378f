"""What a valid room PIN, member name and message text are.

These rules are part of the protocol (docs/protocol.md, "Rules") so that a client can
check a value before sending it and explain the server's refusal in the same words.
"""

from __future__ import annotations

import unicodedata

from lanchat.protocol.errors import RemoteProtocolError

NAME_MAX_CHARS = 32
TEXT_MAX_CHARS = 2000
DEFAULT_PIN_MIN = 4
DEFAULT_PIN_MAX = 12

# Unicode categories that may never appear in a name or a message: controls, format
# characters (which include the bidi overrides and zero-width joiners), surrogates,
# private use and unassigned code points, line and paragraph separators.
_FORBIDDEN_IN_NAME = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# In message text a tab is allowed, and format characters other than the bidi
# embedding, override and isolate controls (emoji sequences need ZWJ).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_IN_TEXT = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})


def pin_rule(min_len: int = DEFAULT_PIN_MIN, max_len: int = DEFAULT_PIN_MAX) -> str:
    if min_len == max_len:
        return f"A room PIN is exactly {min_len} digits (0-9)."
    return f"A room PIN is {min_len} to {max_len} digits (0-9)."


NAME_RULE = (
    f"A name is 1 to {NAME_MAX_CHARS} printable characters, with no control or "
    "formatting characters and no space at either end, and is unique in the room "
    "(ignoring case)."
)


def check_pin(pin: object, min_len: int = DEFAULT_PIN_MIN, max_len: int = DEFAULT_PIN_MAX) -> str:
    """Return the PIN if valid, else raise RemoteProtocolError('invalid_pin')."""
    if (
        not isinstance(pin, str)
        or not min_len <= len(pin) <= max_len
        or not pin.isascii()
        or not pin.isdigit()
    ):
        raise RemoteProtocolError("invalid_pin", pin_rule(min_len, max_len))
    return pin


def normalize_name(name: object) -> str:
    """Return the NFC form of a valid name, else raise RemoteProtocolError('invalid_name')."""
    if not isinstance(name, str) or len(name) > NAME_MAX_CHARS * 4:
        raise RemoteProtocolError("invalid_name", NAME_RULE)
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= NAME_MAX_CHARS or name != name.strip():
        raise RemoteProtocolError("invalid_name", NAME_RULE)
    for ch in name:
        if unicodedata.category(ch) in _FORBIDDEN_IN_NAME:
            raise RemoteProtocolError("invalid_name", NAME_RULE)
    return name


def name_key(name: str) -> str:
    """The form under which names are compared for uniqueness in a room."""
    return name.casefold()


def check_text(text: object) -> str:
    """Return valid message text (NFC), else raise RemoteProtocolError('invalid_text')."""
    if not isinstance(text, str):
        raise RemoteProtocolError("invalid_text", "Message text must be a string.")
    if not text.strip():
        raise RemoteProtocolError("invalid_text", "An empty message is not sent.")
    if len(text) > TEXT_MAX_CHARS:
        raise RemoteProtocolError(
            "invalid_text", f"A message is at most {TEXT_MAX_CHARS} characters."
        )
    if text.isprintable():  # fast path: no control, format or separator characters
        return unicodedata.normalize("NFC", text) if not text.isascii() else text
    for ch in text:
        if ch == "\t":
            continue
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_IN_TEXT:
            raise RemoteProtocolError(
                "invalid_text",
                f"Message text may not contain control characters (found U+{ord(ch):04X}).",
            )
    return unicodedata.normalize("NFC", text)
