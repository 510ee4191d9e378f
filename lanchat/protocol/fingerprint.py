"""The fingerprint of a server's TLS key, in the one form every part shows and stores.

A fingerprint is the SHA-256 of the server's public key as DER SubjectPublicKeyInfo
(the key, not the certificate: a certificate renewed for the same key keeps its
fingerprint).  It is written ``SHA256:`` and 16 groups of 4 lowercase hex digits
joined by ``-``::

    SHA256:9f86-d081-884c-7d65-9a2f-eaa0-c55a-d015-a3bf-4f1b-2b0b-822c-d15d-6c15-b0f0-0a08

Groups of four can be read aloud and compared a group at a time (as SSH's ``SHA256:``
form is, which is base64 and harder to say); the dashes keep it one word, so it fits a
``key=value`` readiness line, a JSON string and a line of ``known_servers``.  The same
string is in the readiness line, ``lanchatctl status``, the discovery ``announce`` and
the client's ``known_servers`` file.

``parse_fingerprint`` also accepts what people paste: any case, with or without the
prefix, with ``:``, ``-`` or spaces between the digits.

``of_certificate`` finds the key inside a DER certificate by walking the few DER
elements in front of it.  ``cryptography`` does the same, but importing it costs
about 75 ms, which every daemon start and every client connection would pay; the
walk is a dozen lines and ``tests/test_tls.py`` checks it against ``cryptography``.
"""

from __future__ import annotations

import hashlib
import string

PREFIX = "SHA256:"
GROUP = 4
HEX_DIGITS = 64
LENGTH = len(PREFIX) + HEX_DIGITS + HEX_DIGITS // GROUP - 1


def from_digest(digest: bytes) -> str:
    """The fingerprint for a 32-byte SHA-256 digest."""
    if len(digest) != HEX_DIGITS // 2:
        raise ValueError(f"a SHA-256 digest is 32 bytes, not {len(digest)}")
    text = digest.hex()
    return PREFIX + "-".join(text[i:i + GROUP] for i in range(0, HEX_DIGITS, GROUP))


def of_public_key(spki_der: bytes) -> str:
    """The fingerprint of a public key given as DER SubjectPublicKeyInfo."""
    return from_digest(hashlib.sha256(spki_der).digest())


def of_certificate(der: bytes) -> str:
    """The fingerprint of the public key in a DER X.509 certificate (raises ValueError)."""
    return of_public_key(spki_of_certificate(der))


def spki_of_certificate(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element of a DER certificate, as its DER bytes.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ...}
    """
    tag, start, _end = _element(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("not a DER certificate")
    tag, pos, _tbs_end = _element(der, start)
    if tag != _SEQUENCE:
        raise ValueError("not a DER certificate")
    tag, _start, end = _element(der, pos)
    if tag == _VERSION:
        pos = end
    for _field in ("serialNumber", "signature", "issuer", "validity", "subject"):
        _tag, _start, pos = _element(der, pos)
    tag, _start, end = _element(der, pos)
    if tag != _SEQUENCE:
        raise ValueError("no public key where the certificate should have it")
    return der[pos:end]


_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT, constructed


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def parse_fingerprint(text: str) -> str:
    """The canonical form of a fingerprint a person typed or a peer sent.

    Raises ValueError with a sentence for a person.
    """
    if not isinstance(text, str) or len(text) > 4 * LENGTH:
        raise ValueError("not a fingerprint")
    body = text.strip()
    if body[:len(PREFIX)].upper() == PREFIX:
        body = body[len(PREFIX):]
    digits = "".join(ch for ch in body if ch not in ":- ").lower()
    if len(digits) != HEX_DIGITS or any(ch not in string.hexdigits for ch in digits):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint ({HEX_DIGITS} hex digits, "
                         "as SHA256:xxxx-xxxx-...)")
    return from_digest(bytes.fromhex(digits))


def is_fingerprint(value: object) -> bool:
    """True for a fingerprint in the canonical form (what a well-behaved peer sends)."""
    if not isinstance(value, str) or len(value) != LENGTH:
        return False
    try:
        return parse_fingerprint(value) == value
    except ValueError:
        return False
