"""The payload: chunked AES-256-GCM in the STREAM construction (docs/format.md 2).

Protects against: truncation (the last chunk is flagged in its nonce and the
size is fixed by the signed length), reordering and swapping chunks (the
counter is in the nonce), moving chunks between payloads (each payload has a
fresh key and its header hash is in every chunk's AAD), and trailing data.
Sizes leak only up to Padmé rounding. This module sees keys and bytes only;
it knows nothing of envelopes, recipients or stores.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
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


class PayloadKeys:
    """The keys derived from one content key for one payload (format.md 2.2)."""

    def __init__(self, content_key: bytes, header: PayloadHeader) -> None:
        if len(content_key) != KEY_SIZE:
            raise ValueError("content key must be 32 bytes")
        self.header = header
        self.header_hash = header.hash
        self.content_key = content_key  # a later delta names this payload by it (2.6)
        self.commitment = hkdf(content_key, header.payload_id, b"csfs v1 commitment")
        self.aead = AESGCM(hkdf(content_key, header.payload_id, b"csfs v1 payload"))

    def check_commitment(self, commitment: bytes) -> None:
        if not hmac.compare_digest(self.commitment, commitment):
            raise AuthenticationError(
                "key commitment mismatch: the envelope does not match its content key"
            )


class ChunkCipher:
    """Random-access encryption and decryption of single chunks of one payload."""

    def __init__(self, keys: PayloadKeys, length: int, version: int = 0) -> None:
        if not 0 <= length <= MAX_PLAINTEXT:
            raise FormatError("plaintext length out of range")
        self.keys = keys
        self.length = length
        self.version = version  # of the context (a delta's map may not name it)
        self.padded = padme(length)
        self.chunk_size = keys.header.chunk_size
        self.count = chunk_count(self.padded, self.chunk_size)
        self.map_size = keys.header.map_size
        self.delta = keys.header.delta
        # Sparse or delta: extent starts, the stored chunks before each and each
        # extent's origin (0: stored here; j: source j), from the map (2.5, 2.6).
        self.starts: list[int] = []
        self.extents: list[tuple[int, int]] = []
        self.origins: list[int] = []
        self.ranks: list[int] = []
        self.sources: list[SourceRef] = []
        # Sources opened for reading (origin -> cipher), filled by SourceSet.
        self.opened: dict[int, ChunkCipher] = {}
        self.size = HEADER_SIZE + self.padded + TAG_SIZE * self.count
        if self.map_size:
            self.size = -1  # unknown until load_map

    def source_ref(self) -> SourceRef:
        """How a delta names this version as its source (format.md 2.6)."""
        return SourceRef(self.version, self.length, self.keys.header_hash, self.keys.content_key)

    @property
    def needs_map(self) -> bool:
        return self.map_size != 0 and not self.extents

    def load_map(self, block: bytes) -> None:
        """Authenticate and parse the chunk map (payload bytes [32, 32 + map_size))."""
        if len(block) != self.map_size:
            raise AuthenticationError("payload chunk map is truncated")
        try:
            plain = self.keys.aead.decrypt(
                MAP_NONCE, block, self.keys.header_hash + self.length.to_bytes(8, "big")
            )
        except InvalidTag:
            raise AuthenticationError(
                "failed to authenticate the payload's chunk map: tampered with"
            ) from None
        if self.delta:
            self.sources, full = parse_delta_map(plain, self.count, self.chunk_size, self.version)
        else:
            full = [(f, n, 0) for f, n in parse_map(plain, self.count)]
        rank = 0
        for first, n, origin in full:
            self.starts.append(first)
            self.ranks.append(rank)
            self.origins.append(origin)
            if origin == 0:
                rank += n
        self.extents = [(f, n) for f, n, _ in full]
        self.size = HEADER_SIZE + self.map_size + rank * (self.chunk_size + TAG_SIZE)
        self.size -= self.chunk_size - self.plain_len(self.count - 1)

    def origin(self, index: int) -> int:
        """-1: a hole; 0: stored in this payload; j >= 1: chunk ``index`` of source j."""
        if not self.map_size:
            return 0 if 0 <= index < self.count else -1
        if self.needs_map:
            raise ValueError("the chunk map is not loaded")
        j = bisect.bisect_right(self.starts, index) - 1
        if j >= 0 and index < self.extents[j][0] + self.extents[j][1]:
            return self.origins[j]
        return -1

    def present(self, index: int) -> bool:
        """Not a hole: stored here or inherited from a source."""
        return self.origin(index) >= 0

    def stored(self) -> int:
        """How many chunks this payload itself stores."""
        if not self.map_size:
            return self.count
        return sum(n for (_, n), o in zip(self.extents, self.origins, strict=True) if o == 0)

    def allocated(self) -> int:
        """Plaintext bytes the version really holds (holes excluded): for st_blocks."""
        if not self.map_size:
            return self.padded
        chunks = sum(n for _, n in self.extents)
        return chunks * self.chunk_size - (self.chunk_size - self.plain_len(self.count - 1))

    def plain_len(self, index: int) -> int:
        if index < self.count - 1:
            return self.chunk_size
        return self.padded - (self.count - 1) * self.chunk_size

    def offset(self, index: int) -> int:
        """Offset of chunk ``index`` in the payload (a stored one, if sparse or delta)."""
        if not self.map_size:
            return HEADER_SIZE + index * (self.chunk_size + TAG_SIZE)
        j = bisect.bisect_right(self.starts, index) - 1
        rank = self.ranks[j] + index - self.starts[j]
        return HEADER_SIZE + self.map_size + rank * (self.chunk_size + TAG_SIZE)

    def hole(self, index: int) -> bytes:
        """The plaintext of an absent chunk: zeros, cut at the plaintext length."""
        return bytes(max(0, min(self.plain_len(index), self.length - index * self.chunk_size)))

    def aad(self, index: int) -> bytes:
        """The header hash; the last chunk also binds the plaintext length (format.md 2.4)."""
        if index == self.count - 1:
            return self.keys.header_hash + self.length.to_bytes(8, "big")
        return self.keys.header_hash

    def read_range(
        self,
        fetch: Callable[[int, int], bytes],
        offset: int,
        size: int,
        source: SourceOpener | None = None,
    ) -> bytes:
        """Plaintext [offset, offset+size), decrypting only the chunks that cover it.

        ``fetch(start, stop)`` returns payload bytes [start, stop): from a store,
        a cache or a local file. ``source(j)`` opens source j of a delta payload.
        """
        end = min(offset + size, self.length)
        if offset >= end:
            return b""
        c = self.chunk_size
        first, last = offset // c, (end - 1) // c
        pieces: list[bytes] = []
        i = first
        while i <= last:
            origin = self.origin(i)
            if origin < 0:
                pieces.append(self.hole(i))
                i += 1
                continue
            if origin > 0:
                run_end = i  # one ranged read of the source for a run of its chunks
                stop = min(last, i + BATCH_CHUNKS - 1)
                while run_end < stop and self.origin(run_end + 1) == origin:
                    run_end += 1
                src, src_fetch = _need_source(source)(origin)
                for j, plain in enumerate(src.read_stored(src_fetch, i, run_end - i + 1)):
                    pieces.append(self.inherited(i + j, plain))
                i = run_end + 1
                continue
            run_end = i  # one ranged read for a run of stored chunks
            while run_end < last and self.origin(run_end + 1) == 0:
                run_end += 1
            start = self.offset(i)
            blob = memoryview(
                fetch(start, self.offset(run_end) + self.plain_len(run_end) + TAG_SIZE)
            )
            for j in range(i, run_end + 1):
                o = self.offset(j) - start
                pieces.append(self.decrypt(j, blob[o : o + self.plain_len(j) + TAG_SIZE]))
            i = run_end + 1
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        skip = offset - first * c
        if skip == 0 and len(data) == end - offset:
            return data
        return data[skip : skip + (end - offset)]

    def read_stored(self, fetch: Callable[[int, int], bytes], first: int, n: int) -> list[bytes]:
        """As a delta's source: the full C bytes of chunks first..first+n-1, which this
        payload must store itself, none its last chunk (format.md 2.6, steps 3-4).
        Stored chunks of consecutive indices are adjacent: one ranged read."""
        for index in range(first, first + n):
            if index >= self.count - 1 or self.origin(index) != 0:
                raise AuthenticationError(
                    f"a delta payload names chunk {index} of an earlier version, which "
                    "does not store it"
                )
        slot = self.chunk_size + TAG_SIZE
        start = self.offset(first)
        blob = memoryview(fetch(start, start + n * slot))
        out = []
        for j in range(n):
            plain = self.decrypt(first + j, blob[j * slot : (j + 1) * slot])
            out.append(plain + bytes(self.chunk_size - len(plain)))
        return out

    def inherited(self, index: int, plain: bytes) -> bytes:
        """Chunk ``index`` of this version from a source's C bytes: padding checked (2.3)."""
        keep = max(0, min(self.chunk_size, self.length - index * self.chunk_size))
        if keep == len(plain):
            return plain
        if any(memoryview(plain)[keep:]):
            raise AuthenticationError("payload padding is not zero")
        return plain[:keep]

    def decrypt(self, index: int, data: bytes | memoryview) -> bytes:
        """Authenticate and decrypt chunk ``index``; return its unpadded plaintext."""
        if not 0 <= index < self.count:
            raise AuthenticationError(f"chunk {index} does not exist in this payload")
        want = self.plain_len(index) + TAG_SIZE
        if len(data) != want:
            raise AuthenticationError(
                f"payload chunk {index} is {len(data)} bytes, expected {want}: "
                "truncated or tampered"
            )
        try:
            plain = self.keys.aead.decrypt(
                nonce(index, index == self.count - 1), data, self.aad(index)
            )
        except InvalidTag:
            raise AuthenticationError(CHUNK_FAILURE.format(index)) from None
        start = index * self.chunk_size
        keep = max(0, min(len(plain), self.length - start))
        if keep == len(plain):
            return plain
        if any(memoryview(plain)[keep:]):
            raise AuthenticationError("payload padding is not zero")
        return plain[:keep]

    def encrypt(self, index: int, plain: bytes) -> bytes:
        """Encrypt chunk ``index`` from its unpadded plaintext (padding added here)."""
        want = self.plain_len(index)
        if len(plain) > want:
            raise ValueError("chunk plaintext too long")
        if len(plain) < want:
            plain = plain + bytes(want - len(plain))
        return self.keys.aead.encrypt(nonce(index, index == self.count - 1), plain, self.aad(index))


Fetch = Callable[[int, int], bytes]
SourceOpener = Callable[[int], tuple[ChunkCipher, Fetch]]


def _need_source(source: SourceOpener | None) -> SourceOpener:
    if source is None:
        raise FormatError("a delta payload is read only from its vault, with its sources")
    return source


def open_source(ref: SourceRef, header_bytes: bytes, chunk_shift: int) -> ChunkCipher:
    """A delta payload's source from its payload header (format.md 2.6, steps 1-2; the
    caller then loads its map if it has one). The key comes from the delta's map,
    so the source's envelope is not read."""
    if len(header_bytes) != HEADER_SIZE or not hmac.compare_digest(
        hashlib.sha256(header_bytes).digest(), ref.header_hash
    ):
        raise AuthenticationError(
            f"the earlier version {ref.version:016x} that a delta payload draws on was "
            "replaced or damaged"
        )
    try:
        header = PayloadHeader.decode(header_bytes)
    except FormatError as exc:
        raise AuthenticationError(f"a delta payload's source is not a payload: {exc}") from None
    if header.chunk_shift != chunk_shift:
        raise AuthenticationError("a delta payload's source has another chunk size")
    return ChunkCipher(PayloadKeys(ref.key, header), ref.length, ref.version)


class SourceSet:
    """Opens the sources of a delta payload on demand, once each (kept on the cipher).

    ``fetch_for(version)`` returns a fetch of that version's payload bytes."""

    def __init__(self, cipher: ChunkCipher, fetch_for: Callable[[int], Fetch]) -> None:
        self.cipher = cipher
        self.fetch_for = fetch_for

    def __call__(self, origin: int) -> tuple[ChunkCipher, Fetch]:
        ref = self.cipher.sources[origin - 1]
        fetch = self.fetch_for(ref.version)
        src = self.cipher.opened.get(origin)
        if src is None:
            src = open_source(ref, fetch(0, HEADER_SIZE), self.cipher.chunk_size.bit_length() - 1)
            if src.needs_map:
                src.load_map(fetch(HEADER_SIZE, HEADER_SIZE + src.map_size))
            self.cipher.opened[origin] = src
        return src, fetch


BATCH_CHUNKS = 16  # chunks per unit of work: 1 MiB at the default chunk size
PIPELINE_DEPTH = 4  # batches in flight; bounds memory at a few MiB whatever the file size


_Pair = tuple[bytearray, bytearray]


class _OrderedPool:
    """Runs batch jobs on two threads (AES-GCM releases the GIL), writes results in order.

    Buffers are reused from a small ring: on this kind of machine, touching
    fresh memory (page faults) costs more than the encryption itself.
    """

    def __init__(self, dst: BinaryIO, in_size: int, out_size: int) -> None:
        self.dst = dst
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csfs-aead")
        self.free: deque[_Pair] = deque(
            (bytearray(in_size), bytearray(out_size)) for _ in range(PIPELINE_DEPTH + 2)
        )
        self.pending: deque[tuple[Future[int], _Pair]] = deque()

    def acquire(self) -> _Pair:
        while not self.free:
            self._write_one()
        return self.free.popleft()

    def release(self, pair: _Pair) -> None:
        self.free.append(pair)

    def submit(self, fn: Callable[..., int], pair: _Pair, *args: object) -> None:
        self.pending.append((self.pool.submit(fn, pair, *args), pair))
        while len(self.pending) >= PIPELINE_DEPTH:
            self._write_one()

    def _write_one(self) -> None:
        future, pair = self.pending.popleft()
        n = future.result()
        self.dst.write(memoryview(pair[1])[:n])
        self.free.append(pair)

    def drain(self) -> None:
        while self.pending:
            self._write_one()

    def close(self) -> None:
        for f, _ in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)


def encrypt_payload(src: BinaryIO, dst: BinaryIO, keys: PayloadKeys) -> int:
    """Stream-encrypt ``src`` to ``dst`` in constant memory; return the plaintext length.

    The length is unknown until EOF (stdin works), so a batch is encrypted
    only once the next read shows that more data follows it.
    """
    c = keys.header.chunk_size
    aead, aad = keys.aead, keys.header_hash
    batch_size = BATCH_CHUNKS * c
    out_size = BATCH_CHUNKS * (c + TAG_SIZE)

    def seal(pair: _Pair, first: int) -> int:
        src_view, out_view = memoryview(pair[0]), memoryview(pair[1])
        for j in range(BATCH_CHUNKS):
            o = j * (c + TAG_SIZE)
            aead.encrypt_into(
                nonce(first + j, False),
                src_view[j * c : (j + 1) * c],
                aad,
                out_view[o : o + c + TAG_SIZE],
            )
        return out_size

    dst.write(keys.header.encode())
    index = 0
    first = _read_upto(src, batch_size)
    if len(first) < batch_size:
        # Everything fits in one batch (most files, every manifest): no threads, no ring.
        return _encrypt_tail(dst, keys, first, len(first), 0)
    pool = _OrderedPool(dst, batch_size, out_size)
    try:
        cur = pool.acquire()
        cur[0][:] = first
        cur_len = batch_size
        while cur_len == batch_size:
            nxt = pool.acquire()
            nxt_len = _read_full(src, nxt[0])
            if nxt_len == 0:
                pool.release(nxt)
                break
            pool.submit(seal, cur, index)
            index += BATCH_CHUNKS
            cur, cur_len = nxt, nxt_len
        pool.drain()
    finally:
        pool.close()
    return _encrypt_tail(dst, keys, cur[0], cur_len, index)


def _encrypt_tail(
    dst: BinaryIO, keys: PayloadKeys, tail: bytes | bytearray, tail_len: int, index: int
) -> int:
    """Encrypt the last data (``tail[:tail_len]``, from chunk ``index``) and Padmé's zeros."""
    c = keys.header.chunk_size
    aead, aad = keys.aead, keys.header_hash
    total = index * c + tail_len
    if total > MAX_PLAINTEXT:
        raise FormatError("plaintext longer than 2^48 bytes")
    data = memoryview(tail)[:tail_len]
    remaining = padme(total) - index * c
    tail_chunks = chunk_count(remaining, c)
    for j in range(tail_chunks):
        take = min(c, remaining - j * c)
        seg = bytes(data[j * c : j * c + take])
        seg += bytes(take - len(seg))  # Padmé's zeros
        last = j == tail_chunks - 1
        chunk_aad = aad + total.to_bytes(8, "big") if last else aad
        dst.write(aead.encrypt(nonce(index + j, last), seg, chunk_aad))
    return total


def decrypt_payload(
    src: BinaryIO, dst: BinaryIO, cipher: ChunkCipher, source: SourceOpener | None = None
) -> None:
    """Stream-decrypt chunks 0..n-1 from ``src`` (positioned after the header).

    A batch of plaintext is written only after every chunk in it verified.
    ``source`` opens the sources of a delta payload (2.6).
    """
    if cipher.map_size:
        _decrypt_sparse(src, dst, cipher, source)
        return
    c = cipher.chunk_size
    aead, aad = cipher.keys.aead, cipher.keys.header_hash

    def unseal(pair: _Pair, first: int, count: int) -> int:
        src_view, out_view = memoryview(pair[0]), memoryview(pair[1])
        for j in range(count):
            o = j * (c + TAG_SIZE)
            try:
                aead.decrypt_into(
                    nonce(first + j, False),
                    src_view[o : o + c + TAG_SIZE],
                    aad,
                    out_view[j * c : (j + 1) * c],
                )
            except InvalidTag:
                raise AuthenticationError(CHUNK_FAILURE.format(first + j)) from None
        keep = max(0, min(count * c, cipher.length - first * c))
        if any(out_view[keep : count * c]):
            raise AuthenticationError("payload padding is not zero")
        return keep

    if cipher.count == 1:
        return _decrypt_last(src, dst, cipher)
    pool = _OrderedPool(dst, BATCH_CHUNKS * (c + TAG_SIZE), BATCH_CHUNKS * c)
    try:
        index = 0
        while index < cipher.count - 1:
            count = min(BATCH_CHUNKS, cipher.count - 1 - index)
            pair = pool.acquire()
            want = count * (c + TAG_SIZE)
            if _read_full(src, memoryview(pair[0])[:want]) != want:
                raise AuthenticationError(f"payload truncated near chunk {index}")
            pool.submit(unseal, pair, index, count)
            index += count
        pool.drain()
    finally:
        pool.close()
    _decrypt_last(src, dst, cipher)


def _decrypt_sparse(
    src: BinaryIO, dst: BinaryIO, cipher: ChunkCipher, source: SourceOpener | None
) -> None:
    """Chunks of a sparse or delta payload whose map is loaded; holes are written as
    zeros, inherited chunks come from the sources."""
    c = cipher.chunk_size
    zeros = bytes(c)
    # A sink that need not be given the zeros (a verifier) says so with skip_zeros.
    skip: Callable[[int], None] | None = getattr(dst, "skip_zeros", None)
    pos = 0  # next chunk index to emit
    for (first, n), origin in zip(cipher.extents, cipher.origins, strict=True):
        hole_end = min(first * c, cipher.length)
        if skip is not None and pos * c < hole_end:
            skip(hole_end - pos * c)
            pos = first
        while pos * c < hole_end:
            dst.write(zeros[: min(c, hole_end - pos * c)])
            pos += 1
        pos = first
        if origin:
            opened, fetch = _need_source(source)(origin)
            for at in range(first, first + n, BATCH_CHUNKS):
                count = min(BATCH_CHUNKS, first + n - at)
                for j, plain in enumerate(opened.read_stored(fetch, at, count)):
                    dst.write(cipher.inherited(at + j, plain))
            pos = first + n
            continue
        for i in range(first, first + n):
            want = cipher.plain_len(i) + TAG_SIZE
            data = src.read(want)
            if len(data) != want:
                raise AuthenticationError(f"payload truncated near chunk {i}")
            dst.write(cipher.decrypt(i, data))
        pos = first + n
    if src.read(1):
        raise AuthenticationError("unexpected data after the last payload chunk")


def encrypt_sparse(
    dst: _Writable,
    content_key: bytes,
    chunk_shift: int,
    payload_id: bytes,
    length: int,
    present: list[int],
    chunk_plain: Callable[[int], bytes | bytearray],
    inherit: dict[int, SourceRef] | None = None,
) -> PayloadKeys:
    """Write a payload of ``length`` bytes holding only the chunks in ``present``
    (sorted, distinct); the others are holes (format.md 2.5). ``chunk_plain(i)``
    gives chunk i's plaintext (at most C bytes; Padmé's zeros are added here).
    ``inherit`` maps chunks to the earlier version that stores them: a delta
    payload (2.6), whose caller made sure those sources are valid and flat.
    Writes a dense payload (2.4) when nothing is left out. Returns the keys."""
    if not 0 <= length <= MAX_PLAINTEXT:
        raise FormatError("plaintext longer than 2^48 bytes")
    c = 1 << chunk_shift
    count = chunk_count(padme(length), c)
    inherit = {i: r for i, r in (inherit or {}).items() if i < count - 1}
    sources = sorted({r.version: r for r in inherit.values()}.values(), key=lambda r: r.version)
    if len(sources) > MAX_SOURCES:
        raise ValueError("too many sources for a delta payload")
    number = {r.version: j + 1 for j, r in enumerate(sources)}
    wanted = sorted({i for i in present if 0 <= i < count - 1 and i not in inherit} | {count - 1})
    runs3: list[tuple[int, int, int]] = []
    origins = [(i, 0) for i in wanted] + [(i, number[r.version]) for i, r in inherit.items()]
    for i, origin in sorted(origins):
        if runs3 and runs3[-1][0] + runs3[-1][1] == i and runs3[-1][2] == origin:
            runs3[-1] = (runs3[-1][0], runs3[-1][1] + 1, origin)
        else:
            runs3.append((i, 1, origin))
    runs = extents_of(wanted)
    if len(wanted) == count:
        header = PayloadHeader(chunk_shift, payload_id)
    elif len(runs3) > MAX_EXTENTS:
        # The map must stay bounded: store everything (holes as encrypted zero chunks).
        wanted, sources = list(range(count)), []
        header = PayloadHeader(chunk_shift, payload_id)
    elif sources:
        header = PayloadHeader(
            chunk_shift, payload_id, delta_map_block_size(len(sources), len(runs3)), True
        )
    else:
        header = PayloadHeader(chunk_shift, payload_id, map_block_size(len(runs)))
    keys = PayloadKeys(content_key, header)
    cipher = ChunkCipher(keys, length)
    dst.write(header.encode())
    if header.sparse:
        plain_map = encode_delta_map(sources, runs3) if header.delta else encode_map(runs)
        dst.write(
            keys.aead.encrypt(MAP_NONCE, plain_map, keys.header_hash + length.to_bytes(8, "big"))
        )
    for i in wanted:
        keep = max(0, min(cipher.plain_len(i), length - i * c))
        dst.write(cipher.encrypt(i, bytes(memoryview(chunk_plain(i))[:keep])))
    return keys


def _decrypt_last(src: BinaryIO, dst: BinaryIO, cipher: ChunkCipher) -> None:
    last = cipher.count - 1
    want = cipher.plain_len(last) + TAG_SIZE
    data = src.read(want)
    if len(data) != want:
        raise AuthenticationError(f"payload truncated in its last chunk ({last})")
    if src.read(1):
        raise AuthenticationError("unexpected data after the last payload chunk")
    dst.write(cipher.decrypt(last, data))


def _read_upto(src: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at EOF."""
    parts = []
    while n > 0:
        data = src.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _read_full(src: BinaryIO, buf: bytearray | memoryview) -> int:
    """Fill ``buf`` from ``src`` unless EOF comes first; return the count read."""
    view = memoryview(buf)
    got = 0
    readinto = getattr(src, "readinto", None)
    while got < len(buf):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = src.read(len(buf) - got)
            n = len(data)
            view[got : got + n] = data
        if not n:
            break
        got += n
    return got


class _Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


class PayloadWriter:
    """Incremental encryption of a payload whose plaintext arrives sequentially.

    Used by the mount for the common case of a program writing a new file
    front to back: data is encrypted once, straight into the payload format.
    One full chunk is held back in memory because only ``finish`` knows
    which chunk is the last.
    """

    def __init__(self, dst: _Writable, keys: PayloadKeys) -> None:
        self.dst = dst
        self.keys = keys
        self.c = keys.header.chunk_size
        self.buf = bytearray()
        self.chunks = 0  # chunks written to dst
        self.length = 0
        dst.write(keys.header.encode())

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data
        self.length += len(data)
        c = self.c
        # Keep at least one byte beyond the chunks we emit: a chunk followed by
        # nothing might turn out to be the last.
        n = (len(self.buf) - 1) // c if self.buf else 0
        if n <= 0:
            return
        view = memoryview(self.buf)
        out = bytearray(n * (c + TAG_SIZE))
        ov = memoryview(out)
        for j in range(n):
            self.keys.aead.encrypt_into(
                nonce(self.chunks + j, False),
                view[j * c : (j + 1) * c],
                self.keys.header_hash,
                ov[j * (c + TAG_SIZE) : (j + 1) * (c + TAG_SIZE)],
            )
        view.release()
        ov.release()
        self.dst.write(out)
        del self.buf[: n * c]
        self.chunks += n

    def written_plaintext(self, index: int, data: bytes) -> bytes:
        """Decrypt a chunk already written (to switch to random-access editing)."""
        try:
            return self.keys.aead.decrypt(nonce(index, False), data, self.keys.header_hash)
        except InvalidTag:
            raise AuthenticationError(CHUNK_FAILURE.format(index)) from None

    def finish(self) -> int:
        """Emit the remaining data and padding; return the plaintext length."""
        c = self.c
        total = self.length
        remaining = padme(total) - self.chunks * c
        count = chunk_count(remaining, c)
        tail = bytes(self.buf)
        for j in range(count):
            take = min(c, remaining - j * c)
            seg = tail[j * c : j * c + take]
            seg += bytes(take - len(seg))
            last = j == count - 1
            aad = (
                self.keys.header_hash + total.to_bytes(8, "big") if last else self.keys.header_hash
            )
            self.dst.write(self.keys.aead.encrypt(nonce(self.chunks + j, last), seg, aad))
        self.chunks += count
        self.buf = bytearray()
        return total
