"""The key envelope: HPKE wraps of a content key, commitment, sealed length, signature.

Protects against: an envelope moved to another file or version (the context
is in every HPKE `info` and is compared with what the reader expects), a
payload swapped under an envelope (the payload header hash is signed), two
recipients being shown different plaintexts (key commitment), and forged or
edited envelopes (Ed25519 signature over every byte before it). The exact
plaintext length is sealed under the content key: the store sees only the
Padmé-rounded payload size. Stanzas carry
no key id, so the store cannot tell who can read a file (docs/format.md 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csfs.crypto.keys import HPKE_KEMS, KEM_IDS, Identity, Recipient
from csfs.crypto.stream import KEY_SIZE, MAX_PLAINTEXT, hkdf
from csfs.errors import AuthenticationError, FormatError, NoMatchingKeyError

ENVELOPE_MAGIC = b"csfs-ev1"
CONTEXT_SIZE = 41
MAX_STANZAS = 1024
MAX_ENVELOPE_SIZE = 2 << 20
# Versions (and log sequence numbers) are below 2^63 so that every reader can hold
# them in a signed 64-bit integer and a writer can always add 1 (format.md 3.2).
MAX_VERSION = (1 << 63) - 1
SIGNATURE_DOMAIN = b"csfs v1 envelope\0"
WRAP_INFO = b"csfs v1 wrap\0"

KIND_OFFLINE, KIND_FILE, KIND_DIRECTORY, KIND_LOG, KIND_NOTICE = 1, 2, 3, 4, 5
KIND_LISTING = 6  # a folder link's listing (format.md 7.8)
KINDS = (KIND_OFFLINE, KIND_FILE, KIND_DIRECTORY, KIND_LOG, KIND_NOTICE, KIND_LISTING)
_SUITES = {
    kem_id: hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    for kem_id, kem in HPKE_KEMS.items()
}
SEALED_LEN = {kem_id: kem.enc_length() + KEY_SIZE + 16 for kem_id, kem in HPKE_KEMS.items()}


@dataclass(frozen=True)
class Context:
    """Where an envelope belongs (format.md 3.2)."""

    kind: int
    vault_id: bytes
    node_id: bytes
    version: int

    def encode(self) -> bytes:
        if self.kind not in KINDS:
            raise ValueError("unknown context kind")
        if len(self.vault_id) != 16 or len(self.node_id) != 16:
            raise ValueError("vault and node ids are 16 bytes")
        if not 0 <= self.version <= MAX_VERSION:
            raise ValueError("context version out of range")
        return bytes([self.kind]) + self.vault_id + self.node_id + self.version.to_bytes(8, "big")

    @classmethod
    def decode(cls, data: bytes) -> Context:
        if data[0] not in KINDS:
            raise FormatError(f"unknown envelope context kind {data[0]}")
        version = int.from_bytes(data[33:41], "big")
        if version > MAX_VERSION:
            # Accepted, it would become a reader's rollback floor that no writer can exceed.
            raise FormatError("envelope context version is out of range (2^63 or more)")
        return cls(data[0], bytes(data[1:17]), bytes(data[17:33]), version)

    @classmethod
    def offline(cls, payload_id: bytes) -> Context:
        return cls(KIND_OFFLINE, bytes(16), payload_id, 0)


@dataclass(frozen=True)
class Stanza:
    kem_id: int
    sealed: bytes


@dataclass(frozen=True)
class Envelope:
    context: Context
    header_hash: bytes
    sealed_length: bytes
    commitment: bytes
    stanzas: tuple[Stanza, ...]
    signer: bytes
    signature: bytes
    length: int | None = None  # known to the writer, or to a reader once unsealed; not encoded

    def signed_part(self) -> bytes:
        return _signed_part(
            self.context,
            self.header_hash,
            self.sealed_length,
            self.commitment,
            self.stanzas,
            self.signer,
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def open(self, identity: Identity) -> bytes:
        """Return the content key wrapped to ``identity`` (signature already verified)."""
        info = WRAP_INFO + self.context.encode() + self.header_hash
        suite = _SUITES[identity.recipient.kem_id]
        private = identity.hpke_private
        for stanza in self.stanzas:
            if stanza.kem_id != identity.recipient.kem_id:
                continue
            try:
                key = suite.decrypt(stanza.sealed, private, info=info)
            except Exception:  # noqa: S112 - any failure means "not for us"; try the next one
                continue
            if len(key) != KEY_SIZE:
                raise FormatError("wrapped content key has the wrong length")
            return key
        raise NoMatchingKeyError("no matching key: this file was not encrypted to your key")

    def unseal_length(self, content_key: bytes) -> int:
        """The plaintext length, decrypted with the content key (format.md 3.4)."""
        try:
            raw = AESGCM(_length_key(content_key, self.header_hash)).decrypt(
                bytes(12), self.sealed_length, self.context.encode()
            )
        except InvalidTag:
            raise AuthenticationError("key envelope length does not authenticate") from None
        length = int.from_bytes(raw, "big")
        if length > MAX_PLAINTEXT:
            raise FormatError("key envelope length is out of range")
        return length

    def verify(self, allowed_signers: set[bytes] | None = None) -> None:
        """Check the signature, and that the signer is one of ``allowed_signers`` if given."""
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.signer).verify(
                self.signature, SIGNATURE_DOMAIN + self.signed_part()
            )
        except (InvalidSignature, ValueError):
            raise AuthenticationError(
                "key envelope signature is invalid: the envelope was tampered with"
            ) from None
        if allowed_signers is not None and self.signer not in allowed_signers:
            raise AuthenticationError(
                "key envelope is signed by a key that is not an authorised writer"
            )

    def check_binding(self, context: Context, header_hash: bytes) -> None:
        if self.context != context:
            raise AuthenticationError("key envelope belongs to another file or version")
        if self.header_hash != header_hash:
            raise AuthenticationError(
                "key envelope does not match the payload (swapped or replaced)"
            )


def _length_key(content_key: bytes, header_hash: bytes) -> bytes:
    return hkdf(content_key, header_hash, b"csfs v1 length")


def seal_length(content_key: bytes, context: Context, header_hash: bytes, length: int) -> bytes:
    """The 24-byte sealed length field: AES-256-GCM of L under a key from K."""
    if not 0 <= length <= MAX_PLAINTEXT:
        raise ValueError("plaintext length out of range")
    return AESGCM(_length_key(content_key, header_hash)).encrypt(
        bytes(12), length.to_bytes(8, "big"), context.encode()
    )


def _signed_part(
    context: Context,
    header_hash: bytes,
    sealed_length: bytes,
    commitment: bytes,
    stanzas: tuple[Stanza, ...],
    signer: bytes,
) -> bytes:
    parts = [
        ENVELOPE_MAGIC,
        context.encode(),
        header_hash,
        sealed_length,
        commitment,
        len(stanzas).to_bytes(2, "big"),
    ]
    for s in stanzas:
        parts += [s.kem_id.to_bytes(2, "big"), len(s.sealed).to_bytes(2, "big"), s.sealed]
    parts.append(signer)
    return b"".join(parts)


def _wrap(content_key: bytes, recipient: Recipient, context: Context, header_hash: bytes) -> Stanza:
    info = WRAP_INFO + context.encode() + header_hash
    sealed = _SUITES[recipient.kem_id].encrypt(content_key, recipient.hpke_public, info=info)
    return Stanza(recipient.kem_id, sealed)


SEALED_LENGTH_SIZE = 24
_STANZAS_AT = 8 + CONTEXT_SIZE + 32 + SEALED_LENGTH_SIZE + 32 + 2  # 139


def seal_envelope_stanzas(
    context: Context,
    header_hash: bytes,
    sealed_length: bytes,
    commitment: bytes,
    stanzas: tuple[Stanza, ...],
    signer: Identity | ed25519.Ed25519PrivateKey,
    *,
    length: int | None = None,
) -> Envelope:
    if not 1 <= len(stanzas) <= MAX_STANZAS:
        raise ValueError(f"an envelope needs 1 to {MAX_STANZAS} recipients")
    if len(sealed_length) != SEALED_LENGTH_SIZE:
        raise ValueError("sealed length must be 24 bytes")
    key = signer.signing_key if isinstance(signer, Identity) else signer
    signer_pub = key.public_key().public_bytes_raw()
    body = _signed_part(context, header_hash, sealed_length, commitment, stanzas, signer_pub)
    return Envelope(
        context,
        header_hash,
        sealed_length,
        commitment,
        stanzas,
        signer_pub,
        key.sign(SIGNATURE_DOMAIN + body),
        length,
    )


def seal_envelope(
    content_key: bytes,
    recipients: list[Recipient],
    context: Context,
    header_hash: bytes,
    length: int,
    commitment: bytes,
    signer: Identity | ed25519.Ed25519PrivateKey,
) -> Envelope:
    """Wrap ``content_key`` to every recipient, each with a fresh ephemeral key, and sign."""
    unique = list(dict.fromkeys(recipients))
    stanzas = tuple(_wrap(content_key, r, context, header_hash) for r in unique)
    sealed = seal_length(content_key, context, header_hash, length)
    return seal_envelope_stanzas(
        context, header_hash, sealed, commitment, stanzas, signer, length=length
    )


def rewrap_envelope(
    env: Envelope,
    identity: Identity,
    recipients: list[Recipient],
    signer: Identity,
    link_keys: tuple[bytes, ...] = (),
) -> Envelope:
    """The same envelope wrapped to another set of readers (format.md 7.5), and to
    the raw X25519 public keys of the share links of this version (7.7), last.

    The content key, payload binding, sealed length and commitment are kept:
    the payload is untouched. ``identity`` must be able to open ``env``.
    """
    content_key = env.open(identity)
    unique = list(dict.fromkeys(recipients))
    stanzas = tuple(_wrap(content_key, r, env.context, env.header_hash) for r in unique)
    stanzas += tuple(
        _wrap_link(content_key, k, env.context, env.header_hash) for k in dict.fromkeys(link_keys)
    )
    return seal_envelope_stanzas(
        env.context, env.header_hash, env.sealed_length, env.commitment, stanzas, signer
    )


def new_link_key() -> tuple[bytes, bytes]:
    """A share link's key pair (format.md 7.7): raw X25519 private and public keys."""
    secret = x25519.X25519PrivateKey.generate()
    return secret.private_bytes_raw(), secret.public_key().public_bytes_raw()


def add_link_stanza(env: Envelope, identity: Identity, public: bytes, signer: Identity) -> Envelope:
    """``env`` with one more stanza wrapping its content key to a bare X25519 key
    (a share link, format.md 7.7), its other stanzas kept, signed by ``signer``."""
    stanza = _wrap_link(env.open(identity), public, env.context, env.header_hash)
    return seal_envelope_stanzas(
        env.context, env.header_hash, env.sealed_length, env.commitment,
        (*env.stanzas, stanza), signer,
    )


def _wrap_link(content_key: bytes, public: bytes, context: Context, header_hash: bytes) -> Stanza:
    """A stanza for a share link's bare X25519 public key (3.3, 7.7)."""
    info = WRAP_INFO + context.encode() + header_hash
    kem = KEM_IDS["x25519"]
    key = x25519.X25519PublicKey.from_public_bytes(public)
    return Stanza(kem, _SUITES[kem].encrypt(content_key, key, info=info))


def parse_envelope(data: bytes) -> Envelope:
    """Parse envelope bytes, checking every length before it is used (format.md 3.1)."""
    if len(data) > MAX_ENVELOPE_SIZE:
        raise FormatError("key envelope is larger than 2 MiB")
    if len(data) < _STANZAS_AT + 96:
        raise FormatError("key envelope is truncated")
    if data[:8] != ENVELOPE_MAGIC:
        raise FormatError("not a csfs key envelope (bad magic)")
    context = Context.decode(data[8:49])
    header_hash = bytes(data[49:81])
    sealed_length = bytes(data[81:105])
    commitment = bytes(data[105:137])
    count = int.from_bytes(data[137:139], "big")
    if not 1 <= count <= MAX_STANZAS:
        raise FormatError(f"key envelope has {count} stanzas (allowed: 1 to {MAX_STANZAS})")
    pos = _STANZAS_AT
    stanzas = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise FormatError("key envelope is truncated in a stanza")
        kem_id = int.from_bytes(data[pos : pos + 2], "big")
        sealed_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if kem_id not in SEALED_LEN:
            raise FormatError(f"key envelope stanza has unknown KEM id 0x{kem_id:04x}")
        if sealed_len != SEALED_LEN[kem_id]:
            raise FormatError("key envelope stanza length field is wrong")
        pos += 4
        if pos + sealed_len > len(data):
            raise FormatError("key envelope is truncated in a stanza")
        stanzas.append(Stanza(kem_id, bytes(data[pos : pos + sealed_len])))
        pos += sealed_len
    if len(data) - pos != 96:
        raise FormatError(
            "key envelope is truncated"
            if len(data) - pos < 96
            else "trailing data after key envelope"
        )
    return Envelope(
        context,
        header_hash,
        sealed_length,
        commitment,
        tuple(stanzas),
        bytes(data[pos : pos + 32]),
        bytes(data[pos + 32 :]),
    )


def new_content_key() -> bytes:
    return os.urandom(KEY_SIZE)
