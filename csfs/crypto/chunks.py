"""The chunk cipher (docs/format.md 2.2-2.6): a payload's keys, random access
to single chunks (holes, stored and inherited ones), and the sources a delta
payload draws on. Sees keys and bytes only, never envelopes or stores.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csfs.crypto.payload_format import (
    CHUNK_FAILURE,
    HEADER_SIZE,
    KEY_SIZE,
    MAP_NONCE,
    MAX_PLAINTEXT,
    TAG_SIZE,
    PayloadHeader,
    SourceRef,
    chunk_count,
    hkdf,
    nonce,
    padme,
    parse_delta_map,
    parse_map,
)
from csfs.errors import AuthenticationError, FormatError

BATCH_CHUNKS = 16  # chunks per unit of work: 1 MiB at the default chunk size


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
