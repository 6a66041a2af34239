"""Joins envelopes and payloads: encrypt a stream to recipients, decrypt it back.

The public functions choose their randomness and call private functions that
take it as arguments, so that test vectors can be generated reproducibly
(scripts/make_vectors.py). HPKE's ephemeral keys are the exception: the
library draws them itself.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import BinaryIO, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from csfs.crypto.envelope import (
    KIND_FILE,
    MAX_ENVELOPE_SIZE,
    Context,
    Envelope,
    new_content_key,
    parse_envelope,
    rewrap_envelope,
    seal_envelope,
)
from csfs.crypto.keys import Identity, Recipient
from csfs.crypto.stream import (
    DEFAULT_CHUNK_SHIFT,
    HEADER_SIZE,
    MIN_CHUNK_SHIFT,
    TAG_SIZE,
    ChunkCipher,
    PayloadHeader,
    PayloadKeys,
    PayloadWriter,
    SourceOpener,
    SourceRef,
    decrypt_payload,
    encrypt_payload,
    encrypt_sparse,
    payload_size,
)
from csfs.errors import AuthenticationError, FormatError


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: list[Recipient],
    signer: Identity | None = None,
    *,
    context: Context | None = None,
    chunk_shift: int = DEFAULT_CHUNK_SHIFT,
) -> Envelope:
    """Encrypt ``src`` into ``dst`` (the payload) and return the signed envelope.

    Without ``context`` the envelope is bound to this payload alone (an
    offline file). Without ``signer`` a throwaway Ed25519 key signs.
    """
    if not recipients:
        raise ValueError("at least one recipient is needed")
    header = PayloadHeader.new(chunk_shift)
    return _encrypt_stream(
        src,
        dst,
        recipients,
        signer or ed25519.Ed25519PrivateKey.generate(),
        new_content_key(),
        header,
        context or Context.offline(header.payload_id),
    )


def _encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: list[Recipient],
    signer: Identity | ed25519.Ed25519PrivateKey,
    content_key: bytes,
    header: PayloadHeader,
    context: Context,
) -> Envelope:
    keys = PayloadKeys(content_key, header)
    length = encrypt_payload(src, dst, keys)
    return seal_envelope(
        content_key, recipients, context, keys.header_hash, length, keys.commitment, signer
    )


def open_envelope(
    envelope: bytes | Envelope,
    header_bytes: bytes,
    identity: Identity,
    *,
    context: Context | None = None,
    allowed_signers: set[bytes] | None = None,
) -> tuple[Envelope, ChunkCipher]:
    """Check an envelope against a payload header and unwrap it (format.md 3.6).

    Returns the envelope and a cipher for random access to the payload's
    chunks. ``context`` defaults to the offline context of the header.
    """
    env = parse_envelope(envelope) if isinstance(envelope, bytes | bytearray) else envelope
    env.verify(allowed_signers)
    header = PayloadHeader.decode(header_bytes)
    expect = context or Context.offline(header.payload_id)
    if header.delta and expect.kind != KIND_FILE:
        raise FormatError("a delta payload (format.md 2.6) outside a vault file version")
    env.check_binding(expect, header.hash)
    content_key = env.open(identity)
    keys = PayloadKeys(content_key, header)
    keys.check_commitment(env.commitment)
    length = env.unseal_length(content_key)
    return replace(env, length=length), ChunkCipher(keys, length, expect.version)


def decrypt_stream(
    src: BinaryIO,
    envelope: bytes | Envelope,
    dst: BinaryIO,
    identity: Identity,
    *,
    context: Context | None = None,
    allowed_signers: set[bytes] | None = None,
    source: Callable[[ChunkCipher], SourceOpener] | None = None,
) -> Envelope:
    """Decrypt the payload in ``src`` into ``dst``; return the verified envelope.

    Plaintext reaches ``dst`` one authenticated chunk at a time. On an error
    ``dst`` may hold a verified prefix: callers that must not release partial
    output write to a temporary file (see csfs.offline). ``source(cipher)``
    gives what opens the sources of a delta payload (a vault's, 2.6).
    """
    header_bytes = src.read(HEADER_SIZE)
    env, cipher = open_envelope(
        envelope, header_bytes, identity, context=context, allowed_signers=allowed_signers
    )
    decrypt_opened(src, dst, cipher, None if source is None else source(cipher))
    return env


def decrypt_opened(
    src: BinaryIO, dst: BinaryIO, cipher: ChunkCipher, source: SourceOpener | None = None
) -> None:
    """Decrypt the chunks of an opened payload; ``src`` is positioned after the header."""
    if cipher.needs_map:
        cipher.load_map(src.read(cipher.map_size))
    size = _remaining_size(src)
    if size is not None and size != cipher.size - HEADER_SIZE - cipher.map_size:
        # Known before any plaintext is released: truncation or trailing data.
        raise AuthenticationError(
            f"payload is {size + HEADER_SIZE} bytes but its envelope says {cipher.size}: "
            "truncated or extended"
        )
    decrypt_payload(src, dst, cipher, source)


def _remaining_size(src: BinaryIO) -> int | None:
    try:
        if not src.seekable():
            return None
        pos = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(pos)
        return end - pos
    except (OSError, ValueError, AttributeError):
        return None


class PayloadSink(Protocol):
    """Where a payload is written: a local file (perhaps one that makes room when full)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...

    def flush(self) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class StreamSealer:
    """A new payload written incrementally, then sealed with its envelope.

    The mount uses it for files written front to back: each byte is encrypted
    once, straight into ``file``, the payload that will be uploaded.
    """

    def __init__(
        self, dst: PayloadSink, context: Context, chunk_shift: int = DEFAULT_CHUNK_SHIFT
    ) -> None:
        self.file = dst
        self.context = context
        self.content_key = new_content_key()
        self.keys = PayloadKeys(self.content_key, PayloadHeader.new(chunk_shift))
        self.writer = PayloadWriter(dst, self.keys)

    @property
    def length(self) -> int:
        return self.writer.length

    def write(self, data: bytes | memoryview) -> None:
        self.writer.write(data)

    def replay(self, path: str) -> Iterator[bytes]:
        """The plaintext written so far, in order: each chunk already sealed, read
        back from ``path`` (where ``file`` writes) and checked, then the bytes held
        back. For switching to random-access editing."""
        self.file.flush()
        cs = self.keys.header.chunk_size
        with open(path, "rb") as rf:
            for i in range(self.writer.chunks):
                rf.seek(HEADER_SIZE + i * (cs + TAG_SIZE))
                yield self.writer.written_plaintext(i, rf.read(cs + TAG_SIZE))
        yield bytes(self.writer.buf)

    def finish(self, recipients: list[Recipient], signer: Identity) -> Envelope:
        """Write the last chunks and return the signed envelope; ``file`` stays open."""
        length = self.writer.finish()
        return seal_envelope(
            self.content_key,
            recipients,
            self.context,
            self.keys.header_hash,
            length,
            self.keys.commitment,
            signer,
        )

    def seal(self, recipients: list[Recipient], signer: Identity) -> Envelope:
        """`finish`, then make the payload durable (fsync) and close ``file``."""
        env = self.finish(recipients, signer)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return env


def seal_sparse(
    dst: PayloadSink,
    context: Context,
    length: int,
    present: list[int],
    chunk_plain: Callable[[int], bytes | bytearray],
    recipients: list[Recipient],
    signer: Identity,
    inherit: dict[int, SourceRef] | None = None,
) -> tuple[Envelope, bytes]:
    """A new version that holds only the chunks in ``present``; the others read as
    zeros (format.md 2.5), or, those in ``inherit``, as the same chunks of earlier
    versions (a delta, 2.6). Dense when every chunk is present. Returns the
    envelope and the content key (which a later delta names its source by)."""
    content_key = new_content_key()
    env = _seal_sparse(
        dst, context, length, present, chunk_plain, recipients, signer,
        content_key, os.urandom(16), DEFAULT_CHUNK_SHIFT, inherit,
    )
    return env, content_key


def _seal_sparse(
    dst: PayloadSink,
    context: Context,
    length: int,
    present: list[int],
    chunk_plain: Callable[[int], bytes | bytearray],
    recipients: list[Recipient],
    signer: Identity | ed25519.Ed25519PrivateKey,
    content_key: bytes,
    payload_id: bytes,
    chunk_shift: int,
    inherit: dict[int, SourceRef] | None = None,
) -> Envelope:
    keys = encrypt_sparse(
        dst, content_key, chunk_shift, payload_id, length, present, chunk_plain, inherit
    )
    return seal_envelope(
        content_key, recipients, context, keys.header_hash, length, keys.commitment, signer
    )


def seal_object(
    data: bytes,
    recipients: list[Recipient],
    signer: Identity,
    context: Context,
    link_keys: tuple[bytes, ...] = (),
) -> bytes:
    """``env_len || envelope || payload``: the layout of manifests, log bodies,
    notices and folder-link listings (format.md 5.3), for small metadata held in
    memory; ``link_keys``: share links' raw X25519 keys wrapped to as well (7.8),
    which needs ``signer`` among ``recipients``."""
    payload = io.BytesIO()
    env = encrypt_stream(io.BytesIO(data), payload, recipients, signer, context=context)
    if link_keys:
        env = rewrap_envelope(env, signer, recipients, signer, link_keys)
    env_bytes = env.encode()
    return len(env_bytes).to_bytes(4, "big") + env_bytes + payload.getvalue()


def max_payload_size(max_length: int) -> int:
    """The largest valid payload of a plaintext of at most ``max_length`` bytes
    (smallest chunks, so the most tags): a bound for reading one from a store."""
    return payload_size(max_length, MIN_CHUNK_SHIFT)


def max_object_size(max_length: int) -> int:
    """The largest valid sealed object (``env_len || envelope || payload``) whose
    plaintext is at most ``max_length`` bytes."""
    return 4 + MAX_ENVELOPE_SIZE + max_payload_size(max_length)


def open_object(
    raw: bytes,
    identity: Identity,
    expect: Context,
    *,
    allowed_signers: set[bytes] | None,
    what: str,
    max_length: int | None = None,
) -> tuple[Envelope, bytes]:
    """Open a sealed object. ``expect.version`` < 0 takes the version from the
    envelope itself (for manifests, whose caller then applies the rollback rule).
    A plaintext longer than ``max_length`` is a FormatError, raised before any
    chunk is decrypted."""
    if len(raw) < 4:
        raise FormatError(f"{what} is truncated")
    n = int.from_bytes(raw[:4], "big")
    if n > min(len(raw) - 4, MAX_ENVELOPE_SIZE):
        raise FormatError(f"{what} has a bad envelope length")
    env = parse_envelope(raw[4 : 4 + n])
    if expect.version < 0:
        expect = replace(expect, version=env.context.version)
    src = io.BytesIO(raw[4 + n :])
    env, cipher = open_envelope(
        env, src.read(HEADER_SIZE), identity, context=expect, allowed_signers=allowed_signers
    )
    if max_length is not None and cipher.length > max_length:
        raise FormatError(f"{what} is larger than {max_length} bytes")
    out = io.BytesIO()
    decrypt_opened(src, out, cipher)
    return env, out.getvalue()
