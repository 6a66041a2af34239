"""Cryptography for csfs: the only package that imports cryptography.hazmat.

What the rest of csfs may use is exported here; the submodules are internals.
"""

from csfs.crypto.envelope import (
    KIND_FILE,
    MAX_ENVELOPE_SIZE,
    Context,
    Envelope,
    parse_envelope,
    rewrap_envelope,
)
from csfs.crypto.keys import (
    Identity,
    Recipient,
    generate_identity,
    load_identity,
    load_recipient,
    save_identity,
)
from csfs.crypto.scratch import SCRATCH_CHUNK, ScratchFile
from csfs.crypto.sealed import (
    PayloadSink,
    StreamSealer,
    decrypt_opened,
    decrypt_stream,
    encrypt_stream,
    max_payload_size,
    open_envelope,
    seal_sparse,
)
from csfs.crypto.stream import (
    HEADER_SIZE,
    MAX_MAP_SIZE,
    MAX_PLAINTEXT,
    MAX_SOURCES,
    ChunkCipher,
    Fetch,
    SourceOpener,
    SourceRef,
    SourceSet,
    chunk_count,
    padme,
    payload_size,
)

__all__ = [
    "HEADER_SIZE",
    "KIND_FILE",
    "MAX_ENVELOPE_SIZE",
    "MAX_MAP_SIZE",
    "MAX_PLAINTEXT",
    "MAX_SOURCES",
    "SCRATCH_CHUNK",
    "ChunkCipher",
    "Context",
    "Envelope",
    "Fetch",
    "Identity",
    "PayloadSink",
    "Recipient",
    "ScratchFile",
    "SourceOpener",
    "SourceRef",
    "SourceSet",
    "StreamSealer",
    "chunk_count",
    "decrypt_opened",
    "decrypt_stream",
    "encrypt_stream",
    "generate_identity",
    "load_identity",
    "load_recipient",
    "max_payload_size",
    "open_envelope",
    "padme",
    "parse_envelope",
    "payload_size",
    "rewrap_envelope",
    "save_identity",
    "seal_sparse",
]
