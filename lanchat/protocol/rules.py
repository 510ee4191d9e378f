"""What a valid room PIN, member name and message text are.

These rules are part of the protocol (docs/protocol.md, "Rules") so that a client can
check a value before sending it and explain the server's refusal in the same words.
"""

from __future__ import annotations

import unicodedata

from lanchat.protocol import vocabulary
from lanchat.protocol.confusables import PROTOTYPES
from lanchat.protocol.errors import N_, RemoteProtocolError
from lanchat.protocol.vocabulary import ErrorCode

NAME_MAX_CHARS = vocabulary.NAME_MAX_CHARS
TEXT_MAX_CHARS = vocabulary.TEXT_MAX_CHARS
DEFAULT_PIN_MIN = vocabulary.DEFAULT_PIN_MIN
DEFAULT_PIN_MAX = vocabulary.DEFAULT_PIN_MAX

# Unicode categories that may never appear in a name or a message: controls, format
# characters (which include the bidi overrides and zero-width joiners), surrogates,
# private use and unassigned code points, line and paragraph separators.
_FORBIDDEN_IN_NAME = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# In message text a tab is allowed, and format characters other than the bidi
# embedding, override and isolate controls (emoji sequences need ZWJ).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_IN_TEXT = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})


# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt, 15.1): invisible
# wherever they appear.  Many are in category Cf (refused anyway); these ranges also
# catch the ones that are not: U+034F, U+115F, U+1160, U+17B4, U+17B5, U+180B-U+180F,
# U+3164, U+FE00-U+FE0F, U+FFA0, U+1BCA0..., U+E0100-U+E0FFF.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Characters that are neither ignorable nor spaces but show as blank: the Braille
# blank and the null notehead.  (Other spaces, U+00A0 and U+3000 among them, are
# allowed: the name's key (NFKC) makes them an ordinary space.)
_BLANK = frozenset("\u2800\U0001d159")
# A name must not begin like a line the server writes to a plain-text member
# ("! ..." notices and errors, "* ..." its own sentences and actions, "--> bob joined",
# "<-- bob left", "(private) ...", "[12:00]"): a message line is "[12:00] NAME: TEXT",
# so a name such as "<-- alice left (kicked" would otherwise forge a leave.
_SERVER_MARKS = ("!", "*", "(", "[", "-", "<", ">")


def is_ignorable(ch: str) -> bool:
    """Whether ``ch`` is a Default_Ignorable_Code_Point (invisible)."""
    code = ord(ch)
    if code < 0xAD:
        return False
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


PIN_RULE_EXACT = N_("A room PIN is exactly {min} digits (0-9).")
PIN_RULE_RANGE = N_("A room PIN is {min} to {max} digits (0-9).")
NAME_RULE_TEXT = N_(
    "A name is 1 to {max} printable characters, with no control, formatting, invisible "
    "or blank characters and no space at either end, does not begin with ! * ( [ - < or >, "
    "and is unique in the room (ignoring case and look-alike letters).")
# The refusals that name the one rule a name broke (the general rule above covers
# the rest: length, spaces at the ends, controls).
NAME_INVISIBLE_TEXT = N_(
    "A name may not contain an invisible or blank character (found {char}): it would "
    "make a second name that looks like the first.")
NAME_MARK_TEXT = N_(
    "A name may not begin with {char}: lines from the server begin so, and a name must "
    "not make a member's line look like one of them.")
NAME_TAKEN_TEXT = N_("The name {name!r} is already taken in this room.")
NAME_LOOKALIKE_TEXT = N_(
    "The name {name!r} looks like {other!r}, who is already in this room (names are "
    "compared ignoring case and look-alike letters).")


def pin_template(min_len: int, max_len: int) -> str:
    """The PIN rule's sentence before it is filled in (``min``, ``max``)."""
    return PIN_RULE_EXACT if min_len == max_len else PIN_RULE_RANGE


def pin_rule(min_len: int = DEFAULT_PIN_MIN, max_len: int = DEFAULT_PIN_MAX) -> str:
    return pin_template(min_len, max_len).format(min=min_len, max=max_len)


NAME_RULE = NAME_RULE_TEXT.format(max=NAME_MAX_CHARS)


def _invalid_pin(min_len: int, max_len: int) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.INVALID_PIN, pin_template(min_len, max_len),
                               min=min_len, max=max_len)


def _invalid_name() -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.INVALID_NAME, NAME_RULE_TEXT, max=NAME_MAX_CHARS)


def _code_point(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def check_pin(pin: object, min_len: int = DEFAULT_PIN_MIN, max_len: int = DEFAULT_PIN_MAX) -> str:
    """Return the PIN if valid, else raise RemoteProtocolError('invalid_pin')."""
    if (
        not isinstance(pin, str)
        or not min_len <= len(pin) <= max_len
        or not pin.isascii()
        or not pin.isdigit()
    ):
        raise _invalid_pin(min_len, max_len)
    return pin


def normalize_name(name: object) -> str:
    """Return the NFC form of a valid name, else raise RemoteProtocolError('invalid_name')."""
    if not isinstance(name, str) or len(name) > NAME_MAX_CHARS * 4:
        raise _invalid_name()
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= NAME_MAX_CHARS or name != name.strip():
        raise _invalid_name()
    if not name.isascii():
        for ch in name:
            if unicodedata.category(ch) in _FORBIDDEN_IN_NAME:
                raise _invalid_name()  # controls and formatting: the general rule says so
            if ch in _BLANK or is_ignorable(ch):
                raise RemoteProtocolError(ErrorCode.INVALID_NAME, NAME_INVISIBLE_TEXT,
                                          char=_code_point(ch))
    elif not name.isprintable():
        raise _invalid_name()
    if name.startswith(_SERVER_MARKS):
        raise RemoteProtocolError(ErrorCode.INVALID_NAME, NAME_MARK_TEXT, char=name[0])
    return name


def name_taken(name: str, other: str) -> RemoteProtocolError:
    """The refusal of ``name`` in a room where ``other`` has the same key: taken when
    the two differ in case only, else a look-alike of ``other``."""
    if name.casefold() == other.casefold():
        return RemoteProtocolError(ErrorCode.NAME_TAKEN, NAME_TAKEN_TEXT, name=name)
    return RemoteProtocolError(ErrorCode.NAME_TAKEN, NAME_LOOKALIKE_TEXT, name=name,
                               other=other)


# ASCII characters confusable among themselves, after case folding (UTS #39 maps
# them to one prototype).
_ASCII_LOOKALIKES = str.maketrans({"1": "l", "|": "l", "0": "o"})


def name_key(name: str) -> str:
    """The form under which names are compared for uniqueness in a room: a UTS #39
    style skeleton (NFKC, case folded, look-alikes to the letter they imitate), so
    "alice", "Alice", "аlice" with a Cyrillic а and "ａlice" are one name.  Most names
    are their own key: the room then keeps one string per member, not two."""
    if name.isascii():
        key = name.casefold().translate(_ASCII_LOOKALIKES)
    else:
        key = unicodedata.normalize("NFKC", name).casefold().translate(PROTOTYPES)
        key = key.casefold().translate(_ASCII_LOOKALIKES)
    return name if key == name else key


#: Each byte to 1 if it is a printable ASCII character (U+0020 to U+007E), else to 0.
_ASCII_PRINTABLE = bytes(int(0x20 <= b < 0x7F) for b in range(256))


def check_text(text: object) -> str:
    """Return valid message text (NFC), else raise RemoteProtocolError('invalid_text')."""
    if not isinstance(text, str):
        raise RemoteProtocolError(ErrorCode.INVALID_TEXT, N_("Message text must be a string."))
    if not text or text.isspace():  # (text.strip() would copy it)
        raise RemoteProtocolError(ErrorCode.INVALID_TEXT, N_("An empty message is not sent."))
    # The limit is on what is delivered: NFC can make a text longer (U+0958 is two code
    # points in NFC), so it is checked after normalising.
    ascii = text.isascii()
    if not ascii:
        text = unicodedata.normalize("NFC", text)
    if len(text) > TEXT_MAX_CHARS:
        raise RemoteProtocolError(
            ErrorCode.INVALID_TEXT, N_("A message is at most {max} characters."),
                max=TEXT_MAX_CHARS
        )
    # Printable: no control, format or separator characters.  ASCII text is printable
    # when it has no C0 control and no DEL, which one translate finds (isprintable()
    # looks each character up: 3 ns a character, a fifteenth of a message's cost).
    if 0 not in text.encode().translate(_ASCII_PRINTABLE) if ascii else text.isprintable():
        return text
    for ch in text:
        if ch == "\t":
            continue
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_IN_TEXT:
            raise RemoteProtocolError(
                ErrorCode.INVALID_TEXT,
                N_("Message text may not contain control characters (found {char})."),
                char=f"U+{ord(ch):04X}",
            )
    return text
