"""Path-level file system semantics over a vault, for the FUSE layer.

Open decrypts, close encrypts. Reads decrypt only the chunks asked for, from
the ciphertext cache. Writes of a new file front to back are encrypted once,
straight into the payload to upload; any other write goes to an encrypted
scratch file (key in memory only). `flush` (close) seals a new version into
the durable upload queue; `fsync` also waits until it is in the store. No
plaintext is ever written to the local disk.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from cachetools import LRUCache

from csfs.crypto.envelope import Context
from csfs.crypto.scratch import SCRATCH_CHUNK, ScratchFile
from csfs.crypto.sealed import StreamSealer, open_envelope
from csfs.crypto.stream import HEADER_SIZE, TAG_SIZE, ChunkCipher
from csfs.errors import (
    AuthenticationError,
    CrossShare,
    DirectoryNotEmpty,
    IsADirectory,
    NotFound,
    NotSupported,
    UsageError,
)
from csfs.vault.cache import ObjectCache
from csfs.vault.crashpoint import crash_point
from csfs.vault.layout import content_key, envelope_key, new_id, new_version
from csfs.vault.manifest import Entry
from csfs.vault.upload_queue import Record, UploadQueue
from csfs.vault.vault import Vault, split_path

C = SCRATCH_CHUNK
T = TypeVar("T")


@dataclass
class Attr:
    type: str
    mode: int
    size: int
    mtime_ns: int
    target: str = ""


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
        self.state = "clean"  # clean | stream | scratch
        self.sealer: StreamSealer | None = None
        self.sealer_path = ""
        self.version = 0
        self.scratch: ScratchFile | None = None
        self.dirty = False
        self.refs = 0
        self.lock = threading.RLock()


def _committing(method: Callable[..., T]) -> Callable[..., T]:
    """Run a namespace change under the vault's commit lock (see Vault.commit_lock)."""

    @functools.wraps(method)
    def wrapper(self: FileSystem, *args: Any) -> T:
        with self.vault.commit_lock:
            return method(self, *args)

    return wrapper


class FileSystem:
    def __init__(
        self, vault: Vault, cache_dir: str, cache_size: int, *, read_only: bool = False
    ) -> None:
        self.vault = vault
        self.read_only = read_only
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        self.cache = ObjectCache(cache_dir, vault.store, cache_size)
        self.scratch_dir = os.path.join(cache_dir, "scratch")
        shutil.rmtree(self.scratch_dir, ignore_errors=True)  # keys died with the last process
        os.makedirs(self.scratch_dir, mode=0o700)
        self.errors: list[str] = []
        self.queue = UploadQueue(vault, self.cache, cache_dir)  # its errors: see status()
        self.lock = threading.RLock()
        self.open_files: dict[str, OpenFile] = {}
        self.handles: dict[int, OpenFile] = {}
        self.next_fh = 1
        self.ciphers: LRUCache[tuple[str, int], ChunkCipher] = LRUCache(maxsize=1024)
        # Files created here whose first version is not committed yet: (dir id, name) ->
        # entry. Creating a file costs no round trip; the uploader commits it with its
        # content, many files per manifest switch.
        self.created: dict[tuple[str, str], Entry] = {}
        self.queue.on_commit = self._committed

    def _note_error(self, msg: str) -> None:
        with self.lock:
            self.errors = [*self.errors[-50:], f"{time.strftime('%H:%M:%S')} {msg}"]

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError("read-only mount")

    # -- lookups -----------------------------------------------------------------------

    def _overlay(self, entry: Entry) -> Entry:
        if entry.type != "f":
            return entry
        with self.lock:
            of = self.open_files.get(entry.id)
        if of is not None and (of.dirty or of.base_version != entry.version):
            return replace(
                entry, size=of.size, mtime_ns=of.mtime_ns, version=of.base_version, mode=of.mode
            )
        rec = self.queue.pending(entry.id)
        if rec is not None:
            return replace(
                entry, size=rec.size, mtime_ns=rec.mtime_ns, version=rec.version, mode=rec.mode
            )
        return entry

    def _raw_entry(self, path: str) -> tuple[str, str, Entry | None]:
        """(parent id, name, entry) of a path that is not the root; entry None if absent.

        A file created here and not committed yet comes first: renamed over a name,
        it hides the entry it replaces until its commit replaces that in the store."""
        parent_id, name = self.vault.parent_of(path)
        with self.lock:
            raw = self.created.get((parent_id, name))
        if raw is None:
            raw = self._stored_entry(parent_id, name)
        return parent_id, name, raw

    def _stored_entry(self, parent_id: str, name: str) -> Entry | None:
        manifest, _ = self.vault.load_dir(parent_id)
        return manifest.entries.get(name)

    def _committed(self, records: list[Record]) -> None:
        """Called by the uploader, under the commit lock, once records are in manifests."""
        with self.lock:
            for r in records:
                e = self.created.get((r.parent_id, r.name))
                if e is not None and e.id == r.file_id:
                    del self.created[(r.parent_id, r.name)]

    def lookup(self, path: str) -> Entry:
        if not split_path(path):
            return self._overlay(self.vault.lookup(path))
        _, _, raw = self._raw_entry(path)
        if raw is None:
            raise NotFound(f"no such file or directory: {path}")
        return self._overlay(raw)

    def getattr(self, path: str) -> Attr:
        e = self.lookup(path)
        if e.type == "d" and not split_path(path):
            e = self.vault.root_entry()
        if not self.vault.is_owner:
            where = e.id if e.type == "d" else self.vault.parent_of(path)[0]
            e = self._read_only(e, where)
        return Attr(e.type, e.mode, e.size, e.mtime_ns, e.target)

    def _read_only(self, e: Entry, dir_id: str) -> Entry:
        """Show what this key may not change without write bits, as a read-only share is."""
        if e.type == "l" or self.vault.may_write(dir_id):
            return e
        return replace(e, mode=e.mode & ~0o222)

    def readdir(self, path: str) -> list[tuple[str, Attr]]:
        entries = self.vault.listdir(path)
        dir_id = self.vault.lookup(path).id
        with self.lock:
            for (parent, name), e in self.created.items():
                if parent == dir_id:
                    entries[name] = e
        out = []
        for n, e in entries.items():
            e = self._overlay(e)
            if not self.vault.is_owner:
                e = self._read_only(e, e.id if e.type == "d" else dir_id)
            out.append((n, self._attr(e)))
        return out

    @staticmethod
    def _attr(e: Entry) -> Attr:
        return Attr(e.type, e.mode, e.size, e.mtime_ns, e.target)

    def readlink(self, path: str) -> str:
        e = self.vault.lookup(path)
        if e.type != "l":
            raise UsageError("not a symbolic link")
        return e.target

    # -- namespace ---------------------------------------------------------------------

    @_committing
    def mkdir(self, path: str, mode: int) -> None:
        self._writable()
        self.vault.mkdir(path, mode & 0o7777)

    @_committing
    def rmdir(self, path: str) -> None:
        self._writable()
        dir_id = self.vault.lookup(path).id
        with self.lock:
            if any(parent == dir_id for parent, _ in self.created):
                raise DirectoryNotEmpty(f"directory not empty: {path}")
        self.vault.remove(path, expect_dir=True)

    @_committing
    def unlink(self, path: str) -> None:
        self._writable()
        parent_id, name, _ = self._raw_entry(path)
        with self.lock:
            created = self.created.pop((parent_id, name), None)
        if created is not None:
            self._forget_file(created)
            self._drop_replaced(parent_id, name, created.id)
            return
        removed = self.vault.remove(path, expect_dir=False)
        self._forget_file(removed)

    def _drop_replaced(self, parent_id: str, name: str, file_id: str) -> None:
        """A not yet committed file renamed over ``name`` leaves it (unlink, rename):
        what it was to replace there is now removed, unless another client changed it."""
        replaced = self.queue.replacing_of(file_id)
        self.queue.renamed(file_id, parent_id, name, None)
        if replaced is not None:
            self.vault.remove_if(parent_id, name, replaced[0], replaced[1])

    def _forget_file(self, removed: Entry) -> None:
        if removed.type != "f":
            return
        # Still-open handles keep working on their own data (POSIX); nothing will be committed.
        self.queue.update(removed.id, deleted=True)
        with self.lock:
            of = self.open_files.get(removed.id)
            if of is not None:
                of.name = ""

    @_committing
    def rename(self, old: str, new: str) -> None:
        """One manifest switch in the store's view, conditional on what it replaces.

        A file not yet committed is renamed in its queued record; what it replaces
        stays in the store until the record's commit replaces it (so no crash leaves
        neither). A committed file is moved by one switch that names the entry it
        replaces; one changed meanwhile by another client is kept as a conflict copy.
        """
        self._writable()
        src_parent, src_name, src = self._raw_entry(old)
        dst_parent, dst_name, target = self._raw_entry(new)
        if src is None:
            raise NotFound(f"no such file or directory: {old}")
        if self.vault.share_roots_of(src_parent) != self.vault.share_roots_of(dst_parent):
            raise CrossShare(f"cannot move {old} across a share boundary", hint="copy it instead")
        if target is not None and target.type == "d":
            raise IsADirectory(f"is a directory: {new}")
        if target is not None and target.id == src.id:
            return  # the same file under both names: nothing to do
        stored = self._stored_entry(dst_parent, dst_name)
        with self.lock:
            moving = self.created.get((src_parent, src_name))
            target_created = self.created.get((dst_parent, dst_name))
        replaces: list[Any] | None = None
        if target_created is not None:
            # A file of ours at the target, not yet committed: forgotten; what it
            # would have replaced in the store is now what this rename replaces.
            replaces = self.queue.replacing_of(target_created.id)
            with self.lock:
                del self.created[(dst_parent, dst_name)]
            self.queue.renamed(target_created.id, dst_parent, dst_name, None)
            self._forget_file(target_created)
        elif stored is not None and stored.type == "f":
            replaces = [stored.id, stored.version]
        if moving is not None:
            self._drop_replaced(src_parent, src_name, moving.id)
            with self.lock:
                del self.created[(src_parent, src_name)]
                self.created[(dst_parent, dst_name)] = moving
            entry = moving
            self.queue.renamed(moving.id, dst_parent, dst_name, replaces)
            if target_created is None and stored is not None and stored.type == "f":
                self._forget_file(stored)  # its queued versions, if any, are replaced too
        else:
            expect = stored
            if target_created is not None:
                expect = None if replaces is None else Entry(replaces[0], "f", version=replaces[1])
            entry = self.vault.rename(
                old, new, expect=expect, own_versions=self.queue.own_versions
            )
            if stored is not None and stored.id != entry.id:
                self._forget_file(stored)
        crash_point("renamed")
        parent_id, name = dst_parent, dst_name
        if entry.type == "f":
            self.queue.update(entry.id, parent_id=parent_id, name=name)
            with self.lock:
                of = self.open_files.get(entry.id)
                if of is not None:
                    of.parent_id, of.name = parent_id, name

    @_committing
    def symlink(self, target: str, path: str) -> None:
        self._writable()
        self.vault.symlink(target, path)

    def link(self, target: str, path: str) -> None:
        raise NotSupported("hard links are not supported")

    @_committing
    def chmod(self, path: str, mode: int) -> None:
        self._writable()
        self._setattr(path, mode=mode & 0o7777)

    @_committing
    def utimens(self, path: str, mtime_ns: int) -> None:
        self._writable()
        self._setattr(path, mtime_ns=mtime_ns)

    def _setattr(self, path: str, **changes: Any) -> None:
        """Mode and times. A file whose upload is still queued takes them with its
        commit (no round trip: tar and rsync set them right after each close)."""
        if split_path(path):
            self.vault.check_writable(self.vault.parent_of(path)[0])
        e = self._set_created(path, **changes)
        if e is None:
            e = self.vault.lookup(path)
            if e.type != "f" or not self.queue.update(e.id, **changes):
                e = self.vault.setattr(path, **changes)
        self._update_open(e.id, **changes)

    def _set_created(self, path: str, **changes: Any) -> Entry | None:
        """Apply attribute changes to a file not yet in its manifest; None if it is."""
        if not split_path(path):
            return None
        parent_id, name = self.vault.parent_of(path)
        with self.lock:
            e = self.created.get((parent_id, name))
            if e is None:
                return None
            e = replace(e, **changes)
            self.created[(parent_id, name)] = e
            return e

    def _update_open(self, file_id: str, **changes: Any) -> None:
        self.queue.update(file_id, **changes)
        with self.lock:
            of = self.open_files.get(file_id)
        if of is not None:
            with of.lock:
                for k, v in changes.items():
                    setattr(of, k, v)

    # -- handles -----------------------------------------------------------------------

    def _open_file(self, path: str) -> tuple[OpenFile, int]:
        # Under the commit lock: the manifest entry and the pending upload must be
        # read as one state, or a commit in between makes the base version stale.
        with self.vault.commit_lock:
            return self._open_file_locked(path)

    def _open_file_locked(self, path: str) -> tuple[OpenFile, int]:
        parent_id, name, raw = self._raw_entry(path)
        if raw is None:
            raise NotFound(f"no such file: {path}")
        if raw.type != "f":
            raise IsADirectory(f"is a directory: {path}")
        with self.lock:
            of = self.open_files.get(raw.id)
            if of is None:
                of = OpenFile(raw.id, parent_id, name, self._overlay(raw))
                self.open_files[raw.id] = of
            of.refs += 1
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = of
        return of, fh

    def _handle(self, fh: int) -> OpenFile:
        with self.lock:
            of = self.handles.get(fh)
        if of is None:
            raise UsageError("bad file handle")
        return of

    @_committing
    def create(self, path: str, mode: int) -> int:
        self._writable()
        parent_id, name, cur = self._raw_entry(path)
        self.vault.check_writable(parent_id)
        if cur is not None and cur.type == "d":
            raise IsADirectory(f"is a directory: {path}")
        entry = Entry(new_id(), "f", mode=mode & 0o7777, mtime_ns=time.time_ns())
        with self.lock:
            # The kernel checked O_EXCL against what it saw. If another client made
            # the name meanwhile, the commit keeps both (a conflict copy).
            self.created[(parent_id, name)] = entry
        of, fh = self._open_file(path)
        with of.lock:
            self._start_stream(of)
        return fh

    def open(self, path: str, flags: int) -> int:
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if writing or flags & os.O_TRUNC:
            self._writable()
            self.vault.check_writable(self.vault.parent_of(path)[0])
        of, fh = self._open_file(path)
        if flags & os.O_TRUNC:
            with of.lock:
                if of.size or of.dirty:
                    self._truncate(of, 0)
        return fh

    def release(self, fh: int) -> None:
        of = self._handle(fh)
        try:
            self.flush(fh)
        finally:
            with self.lock:
                self.handles.pop(fh, None)
                of.refs -= 1
                last = of.refs == 0
                if last:
                    self.open_files.pop(of.file_id, None)
            if last:
                with of.lock:
                    self._discard(of)
                    self._commit_empty_name(of)

    def _commit_empty_name(self, of: OpenFile) -> None:
        """A file created here and closed without content still needs its name committed."""
        with self.lock:
            created = self.created.get((of.parent_id, of.name))
        if created is None or created.id != of.file_id or self.queue.pending(of.file_id):
            return
        self.queue.enqueue(
            Record(0, of.file_id, 0, 0, of.parent_id, of.name, 0, created.mode, created.mtime_ns)
        )

    def _discard(self, of: OpenFile) -> None:
        if of.scratch is not None:
            of.scratch.close()
            of.scratch = None
        if of.sealer is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(of.sealer_path)
            of.sealer = None
        of.state = "clean"

    # -- reading -----------------------------------------------------------------------

    def _cipher(self, file_id: str, version: int) -> ChunkCipher:
        key = (file_id, version)
        cipher = self.ciphers.get(key)
        if cipher is None:
            env = self.cache.get_small(envelope_key(file_id, version))
            header = self.cache.read(content_key(file_id, version), 0, HEADER_SIZE)
            _, cipher = open_envelope(
                env,
                header,
                self.vault.identity,
                context=self.vault.file_context(file_id, version),
                allowed_signers=self.vault.signers_for(file_id),
            )
            self.ciphers[key] = cipher
        return cipher

    def read_version(self, file_id: str, version: int, offset: int, size: int) -> bytes:
        """Plaintext [offset, offset+size) of a version, decrypting only those chunks."""
        if version == 0 or size <= 0:
            return b""
        try:
            return self._read_version(file_id, version, offset, size)
        except AuthenticationError:
            # A damaged cache entry must not pass for tampering in the store: refetch once.
            self.ciphers.pop((file_id, version), None)
            self.cache.drop(content_key(file_id, version))
            self.cache.drop(envelope_key(file_id, version))
            return self._read_version(file_id, version, offset, size)

    def _read_version(self, file_id: str, version: int, offset: int, size: int) -> bytes:
        cipher = self._cipher(file_id, version)
        key = content_key(file_id, version)
        return cipher.read_range(
            lambda a, b: self.cache.read(key, a, b, size=cipher.size), offset, size
        )

    def read(self, fh: int, offset: int, size: int) -> bytes:
        of = self._handle(fh)
        with of.lock:
            if of.state == "stream":
                self._to_scratch(of)
            if of.state == "scratch":
                return self._scratch_read(of, offset, size)
            version, end = of.base_version, min(offset + size, of.size)
        # A sealed version never changes: read it without holding the file's lock,
        # so that the kernel's parallel read-ahead requests run side by side.
        return self.read_version(of.file_id, version, offset, end - offset)

    # -- writing -----------------------------------------------------------------------

    def _context(self, of: OpenFile) -> Context:
        return self.vault.file_context(of.file_id, of.version)

    def _start_stream(self, of: OpenFile) -> None:
        """Begin a fresh version written front to back (a new or truncated file)."""
        self._discard(of)
        of.version = new_version()
        of.sealer_path = self.cache.path_for_new(content_key(of.file_id, of.version))
        f = open(of.sealer_path, "wb")
        of.sealer = StreamSealer(f, self._context(of))
        of.sealer.file = f  # type: ignore[attr-defined]
        of.state = "stream"
        of.size = 0
        of.base_limit = 0

    def _to_scratch(self, of: OpenFile) -> None:
        """Switch to random-access editing; keep what was streamed so far."""
        scratch = ScratchFile(os.path.join(self.scratch_dir, new_id()))
        if of.state == "stream" and of.sealer is not None:
            sealer = of.sealer
            f = sealer.file  # type: ignore[attr-defined]
            f.flush()
            cs = sealer.keys.header.chunk_size
            with open(of.sealer_path, "rb") as rf:
                buf = bytearray()
                index = 0
                for i in range(sealer.emitted_chunks()):
                    rf.seek(HEADER_SIZE + i * (cs + TAG_SIZE))
                    buf += sealer.chunk_plaintext(i, rf.read(cs + TAG_SIZE))
                    while len(buf) >= C:
                        scratch.write_chunk(index, bytes(buf[:C]))
                        index += 1
                        del buf[:C]
                buf += sealer.pending_tail()
                while buf:
                    piece = bytes(buf[:C])
                    scratch.write_chunk(index, piece + bytes(C - len(piece)))
                    index += 1
                    del buf[:C]
            f.close()
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
                of.file_id, of.base_version, start, min(C, of.base_limit - start)
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

    def write(self, fh: int, offset: int, data: bytes) -> int:
        self._writable()
        of = self._handle(fh)
        with of.lock:
            if of.state == "clean":
                if of.size == 0 and offset == 0:
                    self._start_stream(of)
                else:
                    self._to_scratch(of)
            if of.state == "stream" and offset != of.size:
                self._to_scratch(of)
            if of.state == "stream":
                assert of.sealer is not None
                of.sealer.write(data)
            else:
                self._scratch_write(of, offset, data)
            of.size = max(of.size, offset + len(data))
            of.mtime_ns = time.time_ns()
            of.dirty = True
        return len(data)

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
            of.scratch.write_chunk(index, bytes(chunk))
            pos += take

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._writable()
        if fh is not None:
            of = self._handle(fh)
            with of.lock:
                self._truncate(of, length)
            return
        assert path is not None
        # A truncate(2) of a file we have open (libfuse sends open(O_TRUNC) this way
        # too) edits that open file; it is sealed when its handle is flushed.
        _, _, raw = self._raw_entry(path)
        with self.lock:
            open_now = self.open_files.get(raw.id) if raw is not None else None
        if open_now is not None:
            with open_now.lock:
                self._truncate(open_now, length)
            return
        _, fh2 = self._open_file(path)
        try:
            of = self._handle(fh2)
            with of.lock:
                self._truncate(of, length)
        finally:
            self.release(fh2)

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
                    of.scratch.write_chunk(index, bytes(chunk))
                    of.scratch.drop_from(index + 1)
                else:
                    of.scratch.drop_from(index)
                of.base_limit = min(of.base_limit, length)
            of.size = length
        of.mtime_ns = time.time_ns()
        of.dirty = True

    # -- sealing -----------------------------------------------------------------------

    def flush(self, fh: int) -> None:
        of = self._handle(fh)
        with of.lock:
            if of.dirty:
                self._seal(of)

    def _seal(self, of: OpenFile) -> None:
        """Close the current version: payload and envelope into the cache, then queue it."""
        parent, _ = self.vault.load_dir(of.parent_id)
        recipients = self.vault.recipients_for(parent, of.file_id)
        if of.state != "stream":
            if of.state == "clean":
                self._to_scratch(of)
            scratch_of = of
            version = new_version()
            path = self.cache.path_for_new(content_key(of.file_id, version))
            with open(path, "wb") as f:
                sealer = StreamSealer(f, self.vault.file_context(of.file_id, version))
                for i in range(-(-scratch_of.size // C)):
                    chunk = self._chunk(scratch_of, i)
                    sealer.write(memoryview(chunk)[: min(C, scratch_of.size - i * C)])
                env = sealer.finish(recipients, self.vault.identity)
                f.flush()
                os.fsync(f.fileno())
            of.version = version
        else:
            assert of.sealer is not None
            f = of.sealer.file  # type: ignore[attr-defined]
            env = of.sealer.finish(recipients, self.vault.identity)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            of.sealer = None
        ckey = content_key(of.file_id, of.version)
        self.cache.adopt(ckey, pinned=True)
        self.cache.put_local(envelope_key(of.file_id, of.version), env.encode(), pinned=True)
        rec = Record(
            0,
            of.file_id,
            of.version,
            of.base_version,
            of.parent_id,
            of.name,
            of.size,
            of.mode,
            of.mtime_ns,
            deleted=not of.name,
        )
        self.queue.enqueue(rec)
        # The new version is the base of whatever comes next on this handle.
        self._discard(of)
        of.base_version = of.version
        of.base_size = of.base_limit = of.size
        of.dirty = False

    def fsync(self, fh: int) -> None:
        of = self._handle(fh)
        self.flush(fh)
        if not self.queue.wait(of.file_id, timeout=600):
            raise TimeoutError("the upload did not finish in 10 minutes")

    def sync(self, timeout: float | None = None) -> bool:
        return self.queue.wait(None, timeout=timeout)

    def status(self) -> dict[str, object]:
        st = self.queue.status()
        st["cache_bytes"] = self.cache.used()
        st["cache_limit"] = self.cache.limit
        pointers = [f"file share pointer not updated: {m}" for m in self.vault.pointer_errors]
        errors = [*st["errors"], *self.errors[-20:], *pointers]  # type: ignore[misc]
        st["errors"] = list(dict.fromkeys(errors))
        st["open_files"] = len(self.open_files)
        return st

    def export_quarantined(self, qid: str, dest: str) -> int:
        """Decrypt a quarantined version to the local file ``dest`` (written atomically,
        mode 0600); returns its size."""
        rec = self.queue.quarantined_record(qid)
        directory = os.path.dirname(os.path.abspath(dest))
        fd, tmp = tempfile.mkstemp(prefix=".csfs-tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                for offset in range(0, rec.size, 1 << 20):
                    f.write(self.read_version(rec.file_id, rec.version, offset, 1 << 20))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return rec.size

    def close(self) -> None:
        self.queue.stop()
        self.cache.close()
        self.vault.close()


def mode_bits(attr: Attr) -> int:
    kind = {"d": stat.S_IFDIR, "l": stat.S_IFLNK, "f": stat.S_IFREG}[attr.type]
    return kind | (attr.mode & 0o7777)
