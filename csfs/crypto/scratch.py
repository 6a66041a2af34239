"""Scratch files: random-access, encrypted local storage for files open for writing.

Protects against: plaintext reaching the local disk while a program edits a
file. Each scratch file has its own AES-256-GCM key that lives only in memory,
so the scratch bytes are useless once the process is gone; each chunk write
uses a fresh random nonce (a chunk may be rewritten many times). This is not
a storage format: scratch files never leave the machine and are deleted on
release.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csfs.errors import AuthenticationError

SCRATCH_CHUNK = 1 << 16
_SLOT = 12 + SCRATCH_CHUNK + 16  # nonce, ciphertext, tag


class ScratchFile:
    """A sparse file of fixed-size encrypted chunks. Chunks never written read as absent."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.aead = AESGCM(AESGCM.generate_key(256))
        self.present: set[int] = set()
        self.lock = threading.Lock()

    def read_chunk(self, index: int) -> bytes | None:
        """The plaintext of chunk ``index`` (SCRATCH_CHUNK bytes), or None if never written."""
        if index not in self.present:
            return None
        slot = os.pread(self.fd, _SLOT, index * _SLOT)
        if len(slot) != _SLOT:
            raise AuthenticationError("scratch file is damaged (short read)")
        try:
            return self.aead.decrypt(slot[:12], slot[12:], index.to_bytes(8, "big"))
        except InvalidTag:
            raise AuthenticationError("scratch file is damaged (authentication failed)") from None

    def write_chunk(self, index: int, plain: bytes) -> None:
        if len(plain) != SCRATCH_CHUNK:
            raise ValueError("scratch chunks are written whole")
        nonce = os.urandom(12)
        slot = memoryview(nonce + self.aead.encrypt(nonce, plain, index.to_bytes(8, "big")))
        at = index * _SLOT
        while slot:  # a nearly full disk takes part of a write without an error
            n = os.pwrite(self.fd, slot, at)
            slot, at = slot[n:], at + n
        self.present.add(index)

    def drop_from(self, index: int) -> None:
        """Forget chunks >= index (truncate)."""
        self.present = {i for i in self.present if i < index}
        os.ftruncate(self.fd, index * _SLOT)

    def close(self) -> None:
        try:
            os.close(self.fd)
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
