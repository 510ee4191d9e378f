"""The daemon's TLS identity: its key and certificate, their fingerprint, its SSL context.

At the first start the daemon makes an ECDSA P-256 key and a self-signed certificate
for it (with ``cryptography``) in its state directory, as ``tls-key.pem`` (mode 0600)
and ``tls-cert.pem``; later starts load them, so the key, and with it the fingerprint
that clients pin, stays the same across restarts.  An administrator with a certificate
of their own names it with ``tls_cert`` and ``tls_key`` instead; the fingerprint is
always that of the key.

P-256 rather than Ed25519: browsers accept it for HTTPS, and the same key can serve
the web port.  The certificate is valid for 100 years: nothing checks its dates against
an authority, and an expiry would only break clients that pin the key anyway.

The context allows TLS 1.2 and 1.3 only, refuses renegotiation (a client could make
the server redo the expensive half of a handshake at will), and sends no session
tickets (the client does not resume sessions; tickets would be bytes and CPU for
nothing).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import ssl

from lanchat.protocol import fingerprint
from lanchat.protocol.record import Record, record

KEY_FILE = "tls-key.pem"
CERT_FILE = "tls-cert.pem"
VALID_DAYS = 36525


class TlsSetupError(Exception):
    """The key or certificate cannot be made or loaded; the message says which file."""


@record
class Identity(Record):
    cert_path: str
    key_path: str
    fingerprint: str
    created: bool  # made at this start


def load_or_create(state_dir: str | None, cert_path: str | None, key_path: str | None, *,
                   name: str = "") -> Identity:
    """The configured certificate and key, else those in ``state_dir`` (made if missing)."""
    if cert_path or key_path:
        if not (cert_path and key_path):
            raise TlsSetupError("tls_cert and tls_key go together: set both or neither")
        # The key's own fingerprint: it must be the key that clients pin.
        return Identity(cert_path, key_path, _key_fingerprint(key_path), created=False)
    if not state_dir:
        raise TlsSetupError("no state directory to keep the TLS key in (set state_dir)")
    key_path = os.path.join(state_dir, KEY_FILE)
    cert_path = os.path.join(state_dir, CERT_FILE)
    created = False
    if not (os.path.exists(key_path) and os.path.exists(cert_path)):
        _create_apart(state_dir, key_path, cert_path, name or socket.gethostname())
        created = True
    # Made here, the certificate holds this very key (server_context checks that they
    # match), so its fingerprint is the key's, read without importing cryptography.
    return Identity(cert_path, key_path, _cert_fingerprint(cert_path), created)


def server_context(identity: Identity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET)
    with contextlib.suppress(AttributeError, ValueError):
        context.num_tickets = 0  # TLS 1.3 tickets (Python 3.8+ with OpenSSL 1.1.1+)
    try:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the TLS certificate {identity.cert_path} with the "
                            f"key {identity.key_path}: {_reason(exc)}") from None
    return context


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _cert_fingerprint(cert_path: str) -> str:
    try:
        with open(cert_path, encoding="ascii") as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return fingerprint.of_certificate(der)
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"cannot read the TLS certificate {cert_path}: "
                            f"{_reason(exc)}") from None


def _key_fingerprint(key_path: str) -> str:
    from cryptography.hazmat.primitives import serialization

    try:
        with open(key_path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TlsSetupError(f"cannot read the TLS key {key_path}: {_reason(exc)}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsSetupError(f"the TLS key {key_path} is not an unencrypted PEM private key "
                            f"({exc})") from None
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return fingerprint.of_public_key(spki)


def _write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only, even for a moment.

    The file is created 0600 under a temporary name (O_EXCL), synced, then renamed into
    place, so a crash leaves the old file or the new one, never half of one.
    """
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _create_apart(state_dir: str, key_path: str, cert_path: str, name: str) -> None:
    """``_create`` in a child process.

    Importing ``cryptography`` (its Rust extension and its own OpenSSL) grows the process
    by about 12 MB that is never given back; the daemon needs it once, at its first
    start, so a forked child pays for it and exits.  Its error, if any, comes back
    through a pipe.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: make the files, say what went wrong, never return
        code = 1
        try:
            os.close(read_fd)
            _create(state_dir, key_path, cert_path, name)
            code = 0
        except TlsSetupError as exc:
            os.write(write_fd, str(exc).encode("utf-8", "replace")[:4000])
        except BaseException as exc:  # anything at all: said to the parent, not raised
            os.write(write_fd, f"cannot make the TLS key in {state_dir}: {exc}"
                     .encode("utf-8", "replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        said = f.read().decode("utf-8", "replace")
    _pid, status = os.waitpid(pid, 0)
    if status != 0:
        raise TlsSetupError(said or f"the process making the TLS key in {state_dir} failed")


def _create(state_dir: str, key_path: str, cert_path: str, name: str) -> None:
    """Make what is missing: the key (if there is none), then a certificate for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        if os.path.exists(key_path):
            # A key without its certificate (a crash between the two writes, or a
            # deleted certificate): keep the key, so the fingerprint stays.
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TlsSetupError(f"{key_path} is not an ECDSA key; remove it to make a "
                                    "new one, or set tls_cert and tls_key")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                (name or "lanchatd")[:64])])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise TlsSetupError(f"cannot write the TLS key and certificate in {state_dir}: "
                            f"{_reason(exc)}") from None
    except ValueError as exc:
        raise TlsSetupError(f"cannot read the TLS key {key_path}: {exc}") from None
