"""File versions: the one path that opens, reads and writes a version's objects
(its payload and key envelope, docs/format.md 2 and 3).

Every read goes through `open_version`, whatever the bytes come from (the store,
or a mount's ciphertext cache): it checks the envelope's signer against the
allowed ones, its binding and key commitment, the length against the directory
entry, and loads a sparse or delta payload's map (2.5, 2.6); a delta's sources
are opened through the same byte source. The functions take the vault as their
first argument; `Vault` exposes them as methods.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO, Protocol

from csfs.crypto import (
    HEADER_SIZE,
    KIND_FILE,
    MAX_ENVELOPE_SIZE,
    MAX_MAP_SIZE,
    ChunkCipher,
    Context,
    Envelope,
    Fetch,
    Recipient,
    SourceOpener,
    SourceSet,
    decrypt_opened,
    encrypt_stream,
    max_payload_size,
    open_envelope,
    payload_size,
)
from csfs.errors import (
    AuthenticationError,
    FormatError,
    IntegrityError,
    IsADirectory,
    NoMatchingKeyError,
    NotFound,
    UsageError,
)
from csfs.store import Store
from csfs.vault.layout import content_key, envelope_key, new_id, new_version, read_limited
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import conflict_name

if TYPE_CHECKING:
    from csfs.vault.cache import ObjectCache
    from csfs.vault.vault import Vault

SMALL_FILE = 8 << 20  # payloads up to this size are built in memory, larger ones in a temp file
_EXTENDED = "a file's ciphertext is longer than its directory entry allows: extended or replaced"
_MISSING = "a file's ciphertext or key envelope is missing from the store"


class VersionSource(Protocol):
    """Where a version's bytes come from: the store, or a mount's ciphertext cache."""

    def envelope(self, file_id: str, version: int) -> bytes:
        """A version's key envelope (bounded)."""
        ...

    def read(self, file_id: str, version: int, start: int, stop: int, size: int | None) -> bytes:
        """Bytes [start, stop) of a version's payload; ``size``, the payload's size if
        known, bounds a cache's read-ahead."""
        ...


class StoreSource:
    """Reads straight from the store; a missing object is an integrity error (the
    manifest names it, so the store lost or withheld it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def envelope(self, file_id: str, version: int) -> bytes:
        try:
            return read_limited(
                self.store, envelope_key(file_id, version), MAX_ENVELOPE_SIZE, "key envelope"
            )
        except NotFound:
            raise IntegrityError(_MISSING) from None

    def read(self, file_id: str, version: int, start: int, stop: int, size: int | None) -> bytes:
        try:
            return self.store.get(content_key(file_id, version), start, stop)
        except NotFound:
            raise IntegrityError(
                f"a file's ciphertext ({content_key(file_id, version)}) is missing from the store"
            ) from None


class CacheSource:
    """Reads through a mount's ciphertext cache (which fetches from the store)."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache

    def envelope(self, file_id: str, version: int) -> bytes:
        return self.cache.get_small(envelope_key(file_id, version))

    def read(self, file_id: str, version: int, start: int, stop: int, size: int | None) -> bytes:
        return self.cache.read(content_key(file_id, version), start, stop, size=size)


def file_context(vault: Vault, file_id: str, version: int) -> Context:
    return Context(KIND_FILE, vault.vault_id, bytes.fromhex(file_id), version)


def open_version(
    vault: Vault,
    entry: Entry,
    source: VersionSource | None = None,
    header: bytes | None = None,
) -> tuple[Envelope, ChunkCipher]:
    """Fetch and check a file version's envelope, payload header and map, from
    ``source`` (the store if None); ``header``: its first HEADER_SIZE bytes, if
    already read."""
    if entry.type != "f":
        raise IsADirectory("not a regular file")
    source = source or StoreSource(vault.store)
    env_raw = source.envelope(entry.id, entry.version)
    if header is None:
        header = source.read(entry.id, entry.version, 0, HEADER_SIZE, None)
    env, cipher = open_envelope(
        env_raw,
        header,
        vault.identity,
        context=file_context(vault, entry.id, entry.version),
        allowed_signers=vault.signers_for(entry.id),
    )
    if env.length != entry.size:
        raise AuthenticationError("file size in its directory does not match its envelope")
    if cipher.needs_map:
        cipher.load_map(
            source.read(entry.id, entry.version, HEADER_SIZE, HEADER_SIZE + cipher.map_size, None)
        )
    return env, cipher


# An upload another client has in flight (objects stored, its manifest switch still to
# come) looks like an orphan for this long (format.md 5.5).
IN_FLIGHT_SECONDS = 3600.0
_VERSION_HEX = re.compile(r"[0-9a-f]{16}")


def stored_sources(vault: Vault, file_id: str, version: int) -> list[int]:
    """The versions that a stored version of ``file_id`` names as its sources (2.6),
    whether or not a manifest names it yet; checked as any version is, but against
    the length its own envelope seals (no entry gives one)."""
    src = StoreSource(vault.store)
    _, cipher = open_envelope(
        src.envelope(file_id, version),
        src.read(file_id, version, 0, HEADER_SIZE, None),
        vault.identity,
        context=file_context(vault, file_id, version),
        allowed_signers=vault.signers_for(file_id),
    )
    if not cipher.needs_map:
        return []
    cipher.load_map(src.read(file_id, version, HEADER_SIZE, HEADER_SIZE + cipher.map_size, None))
    return [s.version for s in cipher.sources]


def sources_in_flight(vault: Vault, file_id: str, versions: list[int]) -> set[int] | None:
    """The versions that ``versions`` of ``file_id`` (uploads in flight: stored, named
    by no manifest yet) draw on, which must be kept (5.5). None if one of them cannot
    be read yet (its envelope still on its way): then any version may be a source."""
    out: set[int] = set()
    for version in versions:
        try:
            out.update(stored_sources(vault, file_id, version))
        except (IntegrityError, NoMatchingKeyError):
            return None  # not whole yet, or not ours to read: assume the worst
        except (AuthenticationError, FormatError):
            continue  # not signed by a writer of the file: it vouches for nothing
    return out


def kept_for_uploads(vault: Vault, file_id: str, settled: set[int]) -> set[int] | None:
    """Of the versions of ``file_id``, those an upload in flight draws on: the sources
    of every version stored less than IN_FLIGHT_SECONDS ago that is not in ``settled``
    (versions known to be committed, or being deleted). None: keep them all."""
    now = time.time()
    young = []
    for info in vault.store.list(f"c/{file_id}/"):
        tail = info.key.rsplit("/", 1)[1]
        if not _VERSION_HEX.fullmatch(tail):
            continue  # not a csfs object (fsck reports it)
        version = int(tail, 16)
        if version not in settled and info.mtime and now - info.mtime < IN_FLIGHT_SECONDS:
            young.append(version)
    return sources_in_flight(vault, file_id, young)


def sources(
    vault: Vault, entry: Entry, cipher: ChunkCipher, source: VersionSource | None = None
) -> SourceOpener | None:
    """What opens the earlier versions a delta version draws on (format.md 2.6),
    read from ``source`` (the store if None); None for a self-contained version."""
    if not cipher.delta:
        return None
    src = source or StoreSource(vault.store)

    def fetch_for(version: int) -> Fetch:
        def fetch(start: int, stop: int) -> bytes:
            # The source's size bounds read-ahead once its map is known.
            size = next((s.size for s in cipher.opened.values() if s.version == version), -1)
            return src.read(entry.id, version, start, stop, size if size > 0 else None)

        return fetch

    return SourceSet(cipher, fetch_for)


def read_range(
    vault: Vault,
    entry: Entry,
    cipher: ChunkCipher,
    offset: int,
    size: int,
    source: VersionSource | None = None,
) -> bytes:
    """Random access: decrypt only the chunks covering [offset, offset+size) of a
    version opened by `open_version` (from the same ``source``)."""
    src = source or StoreSource(vault.store)
    return cipher.read_range(
        lambda a, b: src.read(entry.id, entry.version, a, b, cipher.size),
        offset,
        size,
        sources(vault, entry, cipher, src),
    )


def read_file(vault: Vault, path_or_entry: str | Entry, dst: BinaryIO) -> Entry:
    """Decrypt a whole file from the store into ``dst``, streaming.

    On failure ``dst`` may hold a verified prefix: the caller discards it.
    """
    entry = vault.lookup(path_or_entry) if isinstance(path_or_entry, str) else path_or_entry
    if entry.type != "f":
        raise IsADirectory("not a regular file")
    if entry.version == 0:
        return entry
    ckey = content_key(entry.id, entry.version)
    try:
        if payload_size(entry.size) <= SMALL_FILE:
            # Small: one GET of the whole payload (its header included), one of the
            # envelope. Bounded by the largest payload of entry.size bytes (the
            # smallest chunks): a store that swapped in a huge object costs no memory.
            bound = max_payload_size(entry.size) + MAX_MAP_SIZE
            blob = vault.store.get(ckey, 0, bound + 1)
            if len(blob) > bound:
                raise AuthenticationError(_EXTENDED)
            _, cipher = open_version(vault, entry, header=blob[:HEADER_SIZE])
            decrypt_opened(
                io.BytesIO(blob[HEADER_SIZE + cipher.map_size :]),
                dst,
                cipher,
                sources(vault, entry, cipher),
            )
            return entry
        _, cipher = open_version(vault, entry)
        with tempfile.TemporaryDirectory(dir=vault.tmp_dir) as tmp:
            local = os.path.join(tmp, "payload")
            if vault.store.get_to_file(ckey, local, end=cipher.size + 1).size != cipher.size:
                raise AuthenticationError(_EXTENDED)
            with open(local, "rb") as f:
                f.seek(HEADER_SIZE + cipher.map_size)  # the map was read by open_version
                decrypt_opened(f, dst, cipher, sources(vault, entry, cipher))
    except NotFound:
        raise IntegrityError(_MISSING) from None
    return entry


def upload_version(
    vault: Vault,
    file_id: str,
    src: BinaryIO,
    recipients_from: DirectoryManifest,
    version: int | None = None,
) -> tuple[int, int]:
    """Encrypt ``src`` as a new version of ``file_id``; upload ciphertext, then envelope.

    Returns (version, plaintext length). The manifest is not touched.
    """
    vault.check_writable(recipients_from.dir_id)
    version = version or new_version()
    context = file_context(vault, file_id, version)
    recipients = vault.recipients_for(recipients_from, file_id)
    ckey = content_key(file_id, version)
    if _known_size(src) <= SMALL_FILE:
        buf = io.BytesIO()
        env = encrypt_stream(src, buf, recipients, vault.identity, context=context)
        vault.store.put(ckey, buf.getvalue(), if_none_match=True)
    else:
        # Large or of unknown size: encrypt in a thread while the parts upload.
        env = _encrypt_uploading(vault, src, ckey, recipients, context)
    vault.store.put(envelope_key(file_id, version), env.encode(), if_none_match=True)
    assert env.length is not None  # the writer knows it
    return version, env.length


def _encrypt_uploading(
    vault: Vault, src: BinaryIO, key: str, recipients: list[Recipient], context: Context
) -> Envelope:
    """Encrypt ``src`` and upload the ciphertext at once, overlapping the two."""
    sink = _PartSink()
    result: list[Envelope] = []

    def produce() -> None:
        try:
            result.append(encrypt_stream(src, sink, recipients, vault.identity, context=context))  # type: ignore[arg-type]
            sink.finish()
        except BaseException as exc:
            sink.fail(exc)

    producer = threading.Thread(target=produce, name="csfs-encrypt", daemon=True)
    producer.start()
    try:
        vault.store.put_parts(key, sink.parts(), if_none_match=True)
    finally:
        sink.cancel()
        producer.join()
    return result[0]


def conflict_copy(vault: Vault, parent_id: str, name: str, new: Entry) -> Entry:
    """Keep a losing version as ``name (conflict ...)`` under a node id of its own.

    The version's objects are bound to their node id, so the copy is
    re-encrypted under the new one; conflicts are rare, and this keeps every
    node id unique in the tree.
    """
    parent, _ = vault.load_dir(parent_id)
    node = new_id()
    version, length = reencrypt_version(vault, new, parent, node)
    copy = replace(new, id=node, version=version, size=length)

    def add(m: DirectoryManifest) -> Entry:
        m.entries[conflict_name(name, m.entries, vault.identity)] = copy
        return copy

    return vault.update_dir(parent_id, add)


def reencrypt_version(
    vault: Vault, entry: Entry, recipients_from: DirectoryManifest, node_id: str | None = None
) -> tuple[int, int]:
    """Upload ``entry``'s bytes again as a new version (of ``node_id``, if given) under
    a fresh key; returns (version, length) as upload_version does.

    The decryption feeds the encryption through a pipe: the plaintext never
    touches the local disk, and memory stays bounded whatever the file's size.
    """
    rfd, wfd = os.pipe()
    failed: list[BaseException] = []
    with open(rfd, "rb") as src:
        with open(wfd, "wb") as dst:

            def pump() -> None:
                try:
                    read_file(vault, entry, dst)
                except BaseException as exc:  # re-raised below
                    failed.append(exc)
                finally:
                    with contextlib.suppress(OSError):
                        dst.close()

            reader = threading.Thread(target=pump, name="csfs-reencrypt", daemon=True)
            reader.start()
            try:
                version, length = upload_version(vault, node_id or entry.id, src, recipients_from)
            finally:
                src.close()  # a failed upload: the reader gets EPIPE and stops
                reader.join()
    if failed:
        # What was uploaded is cut short: never committed, collected by fsck.
        raise failed[0]
    if length != entry.size:
        raise IntegrityError("a file's length differs from its manifest entry")
    return version, length


def write_file(
    vault: Vault,
    path: str,
    src: BinaryIO,
    *,
    mode: int | None = None,
    mtime_ns: int | None = None,
) -> Entry:
    """Write ``src`` as the new content of ``path`` (created if missing)."""
    parent_id, name = vault.parent_of(path)
    parent, _ = vault.load_dir(parent_id)
    base = parent.entries.get(name)
    if base is not None and base.type == "d":
        raise IsADirectory(f"is a directory: {path}")
    file_id = base.id if base is not None and base.type == "f" else new_id()
    version, length = upload_version(vault, file_id, src, parent)
    if mode is None:
        mode = base.mode if base is not None and base.type == "f" else 0o644
    new = Entry(
        file_id,
        "f",
        mode=mode,
        size=length,
        mtime_ns=mtime_ns or time.time_ns(),
        version=version,
    )
    return vault.commit_file(parent_id, name, new, base)


class _PartSink:
    """A write-only file that hands fixed-size parts to an uploading consumer."""

    PART = 8 << 20
    DEPTH = 4  # parts waiting: bounds memory while the upload is slower than encryption

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=self.DEPTH)
        self.buf = bytearray()
        self.cancelled = threading.Event()

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise UsageError("upload cancelled")

    def write(self, data: bytes | memoryview) -> int:
        self.buf += data
        while len(self.buf) >= self.PART:
            self._put(bytes(self.buf[: self.PART]))
            del self.buf[: self.PART]
        return len(data)

    def finish(self) -> None:
        if self.buf:
            self._put(bytes(self.buf))
        self._put(None)

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(UsageError):
            self._put(exc)

    def cancel(self) -> None:
        self.cancelled.set()

    def parts(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _known_size(src: BinaryIO) -> int:
    """Bytes left in ``src`` if that can be known cheaply, else a size that counts as large."""
    try:
        pos = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(pos)
        return end - pos
    except (OSError, ValueError, AttributeError):
        return SMALL_FILE + 1
