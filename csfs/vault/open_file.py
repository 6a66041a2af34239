"""An open file's bytes (csfs.vault.filesystem): reading sealed versions through
the cache, the encrypted scratch file or stream sealer that holds its edits,
truncation, and sealing a new version from it (dense, sparse or delta:
docs/format.md 2.4-2.6). No plaintext reaches the local disk."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time

from csfs.crypto import (
    MAX_PLAINTEXT,
    MAX_SOURCES,
    SCRATCH_CHUNK,
    ChunkCipher,
    Envelope,
    Recipient,
    ScratchFile,
    SourceRef,
    StreamSealer,
    chunk_count,
    padme,
    seal_sparse,
)
from csfs.errors import AuthenticationError, FileTooBig
from csfs.vault.layout import content_key, envelope_key, new_id, new_version
from csfs.vault.manifest import Entry
from csfs.vault.session import SessionState
from csfs.vault.versions import open_version, read_range

C = SCRATCH_CHUNK


class OpenFile:
    """State shared by every handle open on one file."""

    def __init__(self, file_id: str, parent_id: str, name: str, entry: Entry) -> None:
        self.file_id = file_id
        self.parent_id = parent_id
        self.name = name
        self.mode = entry.mode
        self.base_version = entry.version  # what the content derives from
        self.base_size = entry.size
        self.base_limit = entry.size  # base bytes at or past this offset read as zeros
        self.size = entry.size
        self.mtime_ns = entry.mtime_ns
        self.ctime_ns = entry.ctime_ns or 0
        self.atime_ns = entry.atime_ns or 0
        self.entry = entry  # its metadata as opened; serves fstat once unlinked
        self.state = "clean"  # clean | stream | scratch
        self.sealer: StreamSealer | None = None
        self.sealer_path = ""
        self.version = 0
        self.scratch: ScratchFile | None = None
        self.dirty = False
        self.refs = 0
        self.lock = threading.RLock()


def check_size(end: int) -> None:
    """Refuse, before anything is written, a file the format cannot hold (docs/format.md 2.4)."""
    if end > MAX_PLAINTEXT:
        raise FileTooBig(f"a file ends at most at 2^48 bytes (asked: {end})")


class FileContent(SessionState):
    """The content side of a session: what an open file reads and holds, and how
    a version is sealed from it. Never asks the store for anything but version
    bytes, never commits: the session queues what is sealed."""

    # -- space held ---------------------------------------------------------------------

    def _open_allocated(self, of: OpenFile) -> int | None:
        """Bytes an open file really holds: its scratch chunks and what it keeps of its base."""
        if of.state != "scratch" or of.scratch is None:
            return None
        base = self._allocated_of(of.file_id, of.base_version)
        base = of.base_limit if base is None else min(base, of.base_limit)
        return min(of.size, len(of.scratch.present) * C + base)

    def _allocated_of(self, file_id: str, version: int) -> int | None:
        with self.allocated_lock:
            return self.allocated.get((file_id, version))

    def _note_allocated(self, key: tuple[str, int], allocated: int) -> None:
        with self.allocated_lock:
            self.allocated[key] = allocated

    # -- reading sealed versions --------------------------------------------------------

    def _cipher(self, file_id: str, version: int, length: int) -> ChunkCipher:
        """A version opened through the cache by the one checked path (open_version);
        ``length``: its plaintext length, as its entry or queued record says."""
        key = (file_id, version)
        with self.lock:  # cachetools caches are not thread-safe: a racing eviction raised
            cipher = self.ciphers.get(key)
        if cipher is None:
            entry = Entry(file_id, "f", size=length, version=version)
            _, cipher = open_version(self.vault, entry, self.source)
            with self.lock:
                self.ciphers[key] = cipher
            self._note_allocated(key, cipher.allocated())
            with self.allocated_lock:
                self.stored_chunks[key] = cipher.stored()
        elif cipher.length != length:
            raise AuthenticationError("file size in its directory does not match its envelope")
        return cipher

    def read_version(
        self, file_id: str, version: int, length: int, offset: int, size: int
    ) -> bytes:
        """Plaintext [offset, offset+size) of a version of ``length`` bytes,
        decrypting only those chunks."""
        if version == 0 or size <= 0:
            return b""
        try:
            return self._read_version(file_id, version, length, offset, size)
        except AuthenticationError:
            # A damaged cache entry must not pass for tampering in the store: refetch once.
            with self.lock:
                cipher = self.ciphers.pop((file_id, version), None)
            for ref in cipher.sources if cipher is not None else []:
                self.cache.drop(content_key(file_id, ref.version))
            self.cache.drop(content_key(file_id, version))
            self.cache.drop(envelope_key(file_id, version))
            return self._read_version(file_id, version, length, offset, size)

    def _read_version(
        self, file_id: str, version: int, length: int, offset: int, size: int
    ) -> bytes:
        cipher = self._cipher(file_id, version, length)
        entry = Entry(file_id, "f", size=length, version=version)
        return read_range(self.vault, entry, cipher, offset, size, self.source)

    # -- editing ------------------------------------------------------------------------

    def _discard(self, of: OpenFile) -> None:
        if of.scratch is not None:
            of.scratch.close()
            of.scratch = None
        if of.sealer is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(of.sealer_path)
            of.sealer = None
        of.state = "clean"

    def _start_stream(self, of: OpenFile) -> None:
        """Begin a fresh version written front to back (a new or truncated file)."""
        self._discard(of)
        of.version = new_version()
        of.sealer_path = self.cache.path_for_new(content_key(of.file_id, of.version))
        context = self.vault.file_context(of.file_id, of.version)
        of.sealer = StreamSealer(self.cache.open_new(of.sealer_path), context)
        of.state = "stream"
        of.size = 0
        of.base_limit = 0

    def _to_scratch(self, of: OpenFile) -> None:
        """Switch to random-access editing; keep what was streamed so far."""
        scratch = ScratchFile(os.path.join(self.scratch_dir, new_id()))
        if of.state == "stream" and of.sealer is not None:
            buf = bytearray()
            index = 0
            for piece in of.sealer.replay(of.sealer_path):
                buf += piece
                while len(buf) >= C:
                    whole = bytes(buf[:C])
                    self.cache.roomy(functools.partial(scratch.write_chunk, index, whole))
                    index += 1
                    del buf[:C]
            if buf:
                last = bytes(buf) + bytes(C - len(buf))
                self.cache.roomy(functools.partial(scratch.write_chunk, index, last))
            of.sealer.file.close()
            os.unlink(of.sealer_path)
            of.sealer = None
            of.base_limit = 0  # everything now lives in the scratch file
        of.scratch = scratch
        of.state = "scratch"

    def _chunk(self, of: OpenFile, index: int) -> bytearray:
        """Current plaintext of scratch chunk ``index``, C bytes (zeros past the data)."""
        assert of.scratch is not None
        data = of.scratch.read_chunk(index)
        if data is not None:
            return bytearray(data)
        start = index * C
        out = bytearray(C)
        if start < of.base_limit:
            base = self.read_version(
                of.file_id, of.base_version, of.base_size, start, min(C, of.base_limit - start)
            )
            out[: len(base)] = base
        return out

    def _scratch_read(self, of: OpenFile, offset: int, size: int) -> bytes:
        end = min(offset + size, of.size)
        if offset >= end:
            return b""
        out = bytearray()
        for i in range(offset // C, (end - 1) // C + 1):
            out += self._chunk(of, i)
        skip = offset - (offset // C) * C
        return bytes(out[skip : skip + end - offset])

    def _scratch_write(self, of: OpenFile, offset: int, data: bytes) -> None:
        assert of.scratch is not None
        pos = 0
        while pos < len(data):
            at = offset + pos
            index, inner = divmod(at, C)
            take = min(C - inner, len(data) - pos)
            if inner == 0 and take == C:
                chunk = bytearray(data[pos : pos + C])
            else:
                chunk = self._chunk(of, index)
                chunk[inner : inner + take] = data[pos : pos + take]
            self.cache.roomy(functools.partial(of.scratch.write_chunk, index, bytes(chunk)))
            pos += take

    def _truncate(self, of: OpenFile, length: int) -> None:
        if length == of.size and of.state != "clean":
            return
        if length == 0:
            self._start_stream(of)
        else:
            if of.state != "scratch":
                self._to_scratch(of)
            assert of.scratch is not None
            if length < of.size:
                index, inner = divmod(length, C)
                if inner:
                    chunk = self._chunk(of, index)
                    chunk[inner:] = bytes(C - inner)
                    self.cache.roomy(functools.partial(of.scratch.write_chunk, index, bytes(chunk)))
                    of.scratch.drop_from(index + 1)
                else:
                    of.scratch.drop_from(index)
                of.base_limit = min(of.base_limit, length)
            of.size = length
        of.mtime_ns = of.ctime_ns = time.time_ns()
        of.dirty = True

    # -- sealing ------------------------------------------------------------------------

    def _seal_payload(self, of: OpenFile, recipients: list[Recipient]) -> Envelope:
        """Seal what ``of`` holds as a new version (``of.version``) in the cache: the
        stream written so far, or its chunks as a sparse or delta payload. Returns
        its envelope."""
        if of.state != "stream":
            if of.state == "clean":
                self._to_scratch(of)
            scratch_of = of
            version = new_version()
            path = self.cache.path_for_new(content_key(of.file_id, version))
            f = self.cache.open_new(path)
            try:
                # Only chunks that hold data are sealed; the rest are holes (format.md 2.5),
                # so a truncate that extends a file costs (almost) nothing.
                present = self._present_chunks(scratch_of)
                # Chunks not written since the base version come from earlier versions
                # (a delta, format.md 2.6): an fsync uploads what changed.
                inherit = self._inheritance(scratch_of, present)
                env, _ = seal_sparse(
                    f,
                    self.vault.file_context(of.file_id, version),
                    scratch_of.size,
                    present,
                    functools.partial(self._chunk, scratch_of),
                    recipients,
                    self.vault.identity,
                    inherit,
                )
                os.fsync(f.fileno())
            finally:
                f.close()
            of.version = version
            self._note_allocated(
                (of.file_id, version), min(of.size, (len(present) + 1) * C)
            )
            last = chunk_count(padme(of.size), C) - 1
            with self.allocated_lock:
                self.stored_chunks[(of.file_id, version)] = len({*present, last} - set(inherit))
        else:
            assert of.sealer is not None
            env = of.sealer.seal(recipients, self.vault.identity)
            of.sealer = None
        return env

    def _present_chunks(self, of: OpenFile) -> list[int]:
        """Chunks that may hold data: written here, or kept from the base version and
        not a hole there. Every other chunk reads as zeros."""
        assert of.scratch is not None
        present = set(of.scratch.present)
        if of.base_version and of.base_limit > 0:
            base_chunks = -(-of.base_limit // C)
            cipher = self._cipher(of.file_id, of.base_version, of.base_size)
            if cipher.map_size and cipher.chunk_size == C:
                for first, n in cipher.extents:
                    present.update(range(first, min(first + n, base_chunks)))
            else:
                present.update(range(base_chunks))
        return sorted(present)

    def _inheritance(self, of: OpenFile, present: list[int]) -> dict[int, SourceRef]:
        """Which chunks of the version being sealed to take from earlier versions, and
        from which (format.md 2.6): each chunk not written since the base version, from
        the version that stores it. The base counts only once it is in the store (a
        queued version may be replaced before it leaves); its own sources always are.
        At most MAX_SOURCES sources (the chunks of the others are stored again); none
        when the sources would hold four times what is used of them (a compaction: the
        version is written whole)."""
        assert of.scratch is not None
        if not of.base_version or of.base_limit <= 0:
            return {}
        base = self._cipher(of.file_id, of.base_version, of.base_size)
        if base.chunk_size != C:
            return {}
        base_ref = base.source_ref()
        base_usable = self._in_store(of.file_id, of.base_version)
        written = of.scratch.present
        # Never a source's last chunk, nor this version's; nothing past the base's data.
        limit = min(
            base.count - 1, chunk_count(padme(of.size), C) - 1, -(-of.base_limit // C)
        )
        by_source: dict[int, list[int]] = {}
        refs: dict[int, SourceRef] = {}
        for i in present:
            if i >= limit:
                break
            if i in written:
                continue
            origin = base.origin(i)
            if origin == 0 and base_usable:
                ref = base_ref
            elif origin > 0:
                ref = base.sources[origin - 1]
            else:
                continue
            refs[ref.version] = ref
            by_source.setdefault(ref.version, []).append(i)
        # Over the limit, the sources that give the fewest chunks are merged into this
        # version, and then every next one that gives no more than it now stores: sizes
        # grow geometrically, so a chunk is stored again only O(log n) times.
        own = len(set(present) | {chunk_count(padme(of.size), C) - 1})
        own -= sum(len(c) for c in by_source.values())
        keep = sorted(by_source, key=lambda v: len(by_source[v]))
        merging = False
        while keep and (len(keep) > MAX_SOURCES or (merging and len(by_source[keep[0]]) <= own)):
            own += len(by_source[keep.pop(0)])
            merging = True
        used = sum(len(by_source[v]) for v in keep)
        with self.allocated_lock:
            held = sum(
                self.stored_chunks.get(
                    (of.file_id, v), chunk_count(padme(refs[v].length), C)
                )
                for v in keep
            )
        if used * 4 < held:
            return {}
        return {i: refs[v] for v in keep for i in by_source[v]}

    def _in_store(self, file_id: str, version: int) -> bool:
        """Whether a version's objects are in the store for good: not one that this
        mount's queue holds, may still replace, or set aside."""
        if version in self.queue.own_versions(file_id):
            return False
        with self.queue.lock:
            return not any(
                q["record"]["file_id"] == file_id and q["record"]["version"] == version
                for q in self.queue.quarantined.values()
            )
