"""The payload: chunked AES-256-GCM in the STREAM construction (docs/format.md 2).

Protects against: truncation (the last chunk is flagged in its nonce and the
size is fixed by the signed length), reordering and swapping chunks (the
counter is in the nonce), moving chunks between payloads (each payload has a
fresh key and its header hash is in every chunk's AAD), and trailing data.
Sizes leak only up to Padmé rounding. This module sees keys and bytes only;
it knows nothing of envelopes, recipients or stores.

This module is the streaming pipeline (whole payloads encrypted and decrypted
in batches, and the incremental writer); the formats are in payload_format.py
and the chunk cipher in chunks.py. It re-exports both, for its importers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag

from csfs.crypto.chunks import (
    BATCH_CHUNKS,
    ChunkCipher,
    Fetch,
    PayloadKeys,
    SourceOpener,
    SourceSet,
    _need_source,
    open_source,
)
from csfs.crypto.payload_format import (
    CHUNK_FAILURE,
    DEFAULT_CHUNK_SHIFT,
    DELTA_MAGIC,
    HEADER_SIZE,
    KEY_SIZE,
    MAP_NONCE,
    MAX_CHUNK_SHIFT,
    MAX_DELTA_MAP,
    MAX_EXTENTS,
    MAX_MAP_SIZE,
    MAX_PLAINTEXT,
    MAX_SOURCES,
    MAX_SPARSE_MAP,
    MIN_CHUNK_SHIFT,
    MIN_DELTA_MAP,
    MIN_MAP_SIZE,
    PAYLOAD_MAGIC,
    SOURCE_ENTRY,
    SPARSE_MAGIC,
    TAG_SIZE,
    PayloadHeader,
    SourceRef,
    chunk_count,
    delta_map_block_size,
    encode_delta_map,
    encode_map,
    extents_of,
    hkdf,
    map_block_size,
    nonce,
    padme,
    parse_delta_map,
    parse_map,
    payload_size,
)
from csfs.errors import AuthenticationError, FormatError

__all__ = [
    "BATCH_CHUNKS",
    "CHUNK_FAILURE",
    "DEFAULT_CHUNK_SHIFT",
    "DELTA_MAGIC",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAP_NONCE",
    "MAX_CHUNK_SHIFT",
    "MAX_DELTA_MAP",
    "MAX_EXTENTS",
    "MAX_MAP_SIZE",
    "MAX_PLAINTEXT",
    "MAX_SOURCES",
    "MAX_SPARSE_MAP",
    "MIN_CHUNK_SHIFT",
    "MIN_DELTA_MAP",
    "MIN_MAP_SIZE",
    "PAYLOAD_MAGIC",
    "PIPELINE_DEPTH",
    "SOURCE_ENTRY",
    "SPARSE_MAGIC",
    "TAG_SIZE",
    "ChunkCipher",
    "Fetch",
    "PayloadHeader",
    "PayloadKeys",
    "PayloadWriter",
    "SourceOpener",
    "SourceRef",
    "SourceSet",
    "chunk_count",
    "decrypt_payload",
    "delta_map_block_size",
    "encode_delta_map",
    "encode_map",
    "encrypt_payload",
    "encrypt_sparse",
    "extents_of",
    "hkdf",
    "map_block_size",
    "nonce",
    "open_source",
    "padme",
    "parse_delta_map",
    "parse_map",
    "payload_size",
]

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

