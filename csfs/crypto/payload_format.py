"""Payload formats (docs/format.md 2): sizes, the payload header, and the chunk
maps of sparse (2.5) and delta (2.6) payloads. Bytes and layouts only: the
cipher is in csfs.crypto.chunks, the streaming pipeline in csfs.crypto.stream.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from csfs.errors import AuthenticationError, FormatError

PAYLOAD_MAGIC = b"csfs-pl1"
SPARSE_MAGIC = b"csfs-pl2"
DELTA_MAGIC = b"csfs-pl3"
HEADER_SIZE = 32
TAG_SIZE = 16
KEY_SIZE = 32
DEFAULT_CHUNK_SHIFT = 16
MIN_CHUNK_SHIFT, MAX_CHUNK_SHIFT = 12, 20
MAX_PLAINTEXT = 1 << 48
MAX_EXTENTS = 1 << 20
MAX_SOURCES = 8  # earlier versions a delta payload may draw on (format.md 2.6)
SOURCE_ENTRY = 80  # version, length, header hash, content key
MAP_NONCE = bytes(11) + b"\x02"  # never a chunk's nonce, whose last byte is 0 or 1

CHUNK_FAILURE = (
    "failed to decrypt and authenticate payload chunk {}: the data is corrupted or tampered with"
)


def padme(length: int) -> int:
    """Padmé padded length (PURBs paper): leaks O(log log L) bits, at most ~12% overhead."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def map_block_size(extents: int) -> int:
    """Size of the encrypted chunk map of a sparse payload with ``extents`` extents (2.5)."""
    return padme(8 + 16 * extents) + TAG_SIZE


def delta_map_block_size(sources: int, extents: int) -> int:
    """Size of the encrypted map of a delta payload (2.6)."""
    return padme(16 + SOURCE_ENTRY * sources + 24 * extents) + TAG_SIZE


MAX_SPARSE_MAP = map_block_size(MAX_EXTENTS)
MIN_MAP_SIZE = map_block_size(1)
MIN_DELTA_MAP = delta_map_block_size(1, 1)
MAX_DELTA_MAP = delta_map_block_size(MAX_SOURCES, MAX_EXTENTS)
MAX_MAP_SIZE = max(MAX_SPARSE_MAP, MAX_DELTA_MAP)  # the largest map of any payload


def chunk_count(padded: int, chunk_size: int) -> int:
    return max(1, -(-padded // chunk_size))


def payload_size(length: int, chunk_shift: int = DEFAULT_CHUNK_SHIFT) -> int:
    """Exact size of the payload of a plaintext of ``length`` bytes."""
    padded = padme(length)
    return HEADER_SIZE + padded + TAG_SIZE * chunk_count(padded, 1 << chunk_shift)


def nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(key)


@dataclass(frozen=True)
class SourceRef:
    """An earlier version a delta payload draws chunks from (format.md 2.6)."""

    version: int
    length: int
    header_hash: bytes
    key: bytes

    def encode(self) -> bytes:
        return (
            self.version.to_bytes(8, "big")
            + self.length.to_bytes(8, "big")
            + self.header_hash
            + self.key
        )


@dataclass(frozen=True)
class PayloadHeader:
    chunk_shift: int
    payload_id: bytes
    map_size: int = 0  # 0: a dense payload (2.4); otherwise sparse (2.5) or delta (2.6)
    delta: bool = False

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_shift

    @property
    def sparse(self) -> bool:
        return self.map_size != 0

    def encode(self) -> bytes:
        if self.sparse:
            return (
                (DELTA_MAGIC if self.delta else SPARSE_MAGIC)
                + bytes([self.chunk_shift])
                + bytes(3)
                + self.map_size.to_bytes(4, "big")
                + self.payload_id
            )
        return PAYLOAD_MAGIC + bytes([self.chunk_shift]) + bytes(7) + self.payload_id

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> PayloadHeader:
        if len(data) < HEADER_SIZE:
            raise FormatError("payload is shorter than its 32-byte header")
        magic = bytes(data[:8])
        if magic not in (PAYLOAD_MAGIC, SPARSE_MAGIC, DELTA_MAGIC):
            raise FormatError("not a csfs payload (bad magic)")
        shift = data[8]
        if not MIN_CHUNK_SHIFT <= shift <= MAX_CHUNK_SHIFT:
            raise FormatError(f"payload chunk size 2^{shift} is out of range")
        if magic == PAYLOAD_MAGIC:
            if any(data[9:16]):
                raise FormatError("payload header has non-zero reserved bytes")
            return cls(shift, bytes(data[16:32]))
        if any(data[9:12]):
            raise FormatError("payload header has non-zero reserved bytes")
        map_size = int.from_bytes(data[12:16], "big")
        delta = magic == DELTA_MAGIC
        low, high = (MIN_DELTA_MAP, MAX_DELTA_MAP) if delta else (MIN_MAP_SIZE, MAX_SPARSE_MAP)
        if not low <= map_size <= high:
            raise FormatError(f"payload map size {map_size} is out of range")
        return cls(shift, bytes(data[16:32]), map_size, delta)

    @classmethod
    def new(cls, chunk_shift: int = DEFAULT_CHUNK_SHIFT) -> PayloadHeader:
        return cls(chunk_shift, os.urandom(16))


def extents_of(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct chunk indices as maximal (first, count) runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def encode_map(extents: list[tuple[int, int]]) -> bytes:
    body = len(extents).to_bytes(8, "big") + b"".join(
        f.to_bytes(8, "big") + c.to_bytes(8, "big") for f, c in extents
    )
    return body + bytes(padme(len(body)) - len(body))


def encode_delta_map(sources: list[SourceRef], extents: list[tuple[int, int, int]]) -> bytes:
    body = (
        len(sources).to_bytes(8, "big")
        + len(extents).to_bytes(8, "big")
        + b"".join(r.encode() for r in sources)
        + b"".join(
            f.to_bytes(8, "big") + c.to_bytes(8, "big") + o.to_bytes(8, "big")
            for f, c, o in extents
        )
    )
    return body + bytes(padme(len(body)) - len(body))


def parse_delta_map(
    plain: bytes, count: int, chunk_size: int, own_version: int
) -> tuple[list[SourceRef], list[tuple[int, int, int]]]:
    """Sources and (first, count, origin) extents of an authenticated delta map
    (format.md 2.6); a breach is an authentication error, as in parse_map."""

    def bad(why: str) -> AuthenticationError:
        return AuthenticationError(f"delta payload chunk map is invalid: {why}")

    if len(plain) < 16:
        raise bad("too short")
    s = int.from_bytes(plain[:8], "big")
    k = int.from_bytes(plain[8:16], "big")
    if not 1 <= s <= MAX_SOURCES:
        raise bad(f"{s} sources (1 to {MAX_SOURCES} allowed)")
    if not 1 <= k <= MAX_EXTENTS:
        raise bad("wrong extent count")
    used = 16 + SOURCE_ENTRY * s + 24 * k
    if len(plain) != padme(used):
        raise bad("wrong source and extent counts for its size")
    if any(plain[used:]):
        raise bad("padding is not zero")
    sources: list[SourceRef] = []
    for j in range(s):
        o = 16 + SOURCE_ENTRY * j
        version = int.from_bytes(plain[o : o + 8], "big")
        length = int.from_bytes(plain[o + 8 : o + 16], "big")
        if not 1 <= version < 1 << 63 or version == own_version:
            raise bad("a source version is out of range or the version itself")
        if sources and version <= sources[-1].version:
            raise bad("source versions are not strictly increasing")
        if length > MAX_PLAINTEXT:
            raise bad("a source is longer than 2^48 bytes")
        sources.append(
            SourceRef(version, length, bytes(plain[o + 16 : o + 48]), bytes(plain[o + 48 : o + 80]))
        )
    extents: list[tuple[int, int, int]] = []
    referenced: set[int] = set()
    end, last_origin = -1, -1
    base = 16 + SOURCE_ENTRY * s
    for j in range(k):
        o = base + 24 * j
        first = int.from_bytes(plain[o : o + 8], "big")
        n = int.from_bytes(plain[o + 8 : o + 16], "big")
        origin = int.from_bytes(plain[o + 16 : o + 24], "big")
        if n < 1 or origin > s or first < end or (first == end and origin == last_origin):
            raise bad("extents are empty, out of order, overlapping or touching")
        if origin:
            src_count = chunk_count(padme(sources[origin - 1].length), chunk_size)
            if first + n > src_count - 1:
                raise bad("a reference beyond the source's chunks (or to its last chunk)")
            referenced.add(origin)
        end, last_origin = first + n, origin
        extents.append((first, n, origin))
    if end != count or last_origin != 0:
        raise bad("the last chunk is not stored in the payload")
    if len(referenced) != s:
        raise bad("a source is named but never used")
    return sources, extents


def parse_map(plain: bytes, count: int) -> list[tuple[int, int]]:
    """The extents of an authenticated map (format.md 2.5); any breach is an
    authentication error: only a holder of the content key could have written it."""

    def bad(why: str) -> AuthenticationError:
        return AuthenticationError(f"sparse payload chunk map is invalid: {why}")

    if len(plain) < 8:
        raise bad("too short")
    k = int.from_bytes(plain[:8], "big")
    if not 1 <= k <= MAX_EXTENTS or len(plain) != padme(8 + 16 * k):
        raise bad("wrong extent count for its size")
    if any(plain[8 + 16 * k :]):
        raise bad("padding is not zero")
    extents: list[tuple[int, int]] = []
    end = -1
    for j in range(k):
        o = 8 + 16 * j
        first = int.from_bytes(plain[o : o + 8], "big")
        n = int.from_bytes(plain[o + 8 : o + 16], "big")
        if n < 1 or first <= end:
            raise bad("extents are empty, out of order, overlapping or touching")
        end = first + n
        extents.append((first, n))
    if end != count:
        raise bad("the last chunk is not present")
    return extents

