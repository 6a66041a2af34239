"""Signed blobs: a payload plus its signer's Ed25519 key and signature (docs/format.md 5.1).

Used for the few vault objects that are public but must not be forged, such
as the vault header. The domain string keeps a signature made for one kind
of object from being accepted as another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from csfs.errors import AuthenticationError, FormatError

MAX_BLOB = 1 << 20


def sign_blob(key: ed25519.Ed25519PrivateKey, domain: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_BLOB:
        raise ValueError("signed blob too large")
    body = len(payload).to_bytes(4, "big") + payload + key.public_key().public_bytes_raw()
    return body + key.sign(domain + body)


def verify_blob(raw: bytes, domain: bytes, what: str) -> tuple[bytes, bytes]:
    """Return (payload, signer public key) of a valid blob; raise otherwise."""
    if len(raw) < 4 + 96:
        raise FormatError(f"{what} is truncated")
    n = int.from_bytes(raw[:4], "big")
    if n > MAX_BLOB or len(raw) != 4 + n + 96:
        raise FormatError(f"{what} has a bad length field")
    body, signature = raw[: 4 + n + 32], raw[4 + n + 32 :]
    signer = bytes(body[4 + n :])
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(signer).verify(signature, domain + body)
    except InvalidSignature:
        raise AuthenticationError(f"{what} signature is invalid: it was tampered with") from None
    return bytes(raw[4 : 4 + n]), signer
