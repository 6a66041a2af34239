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
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time

from cachetools import LRUCache

from csfs.crypto import ChunkCipher, Recipient, parse_envelope, rewrap_envelope
from csfs.errors import (
    AlreadyExists,
    IsADirectory,
    NoMatchingKeyError,
    NotFound,
    NotSupported,
    TransientStoreError,
)
from csfs.vault.attributes import NODE_TYPES, Attr, Caller, mode_bits
from csfs.vault.cache import ObjectCache
from csfs.vault.fs_namespace import Namespace
from csfs.vault.layout import content_key, envelope_key, new_id
from csfs.vault.manifest import Entry
from csfs.vault.open_file import OpenFile, check_size
from csfs.vault.session import committing
from csfs.vault.upload_queue import Record, UploadQueue
from csfs.vault.vault import Vault
from csfs.vault.versions import CacheSource

__all__ = ["Attr", "Caller", "FileSystem", "mode_bits"]


class FileSystem(Namespace):
    """The POSIX view of one vault for one mount: paths, handles, open files and
    their attributes, as the FUSE layer asks for them.

    Owns the open files and their encrypted scratch data, the file handles, the
    ciphertext cache and the upload queue that carries closed versions to the
    store, and the recent errors `csfs status` shows.

    Never writes plaintext to the local disk, never changes the vault when the
    mount is read-only, never maps errors to errno (the FUSE layer's table does)
    and never talks to FUSE itself: it takes paths and bytes and returns them.

    Its layers, each a base class in a module of its own: the session's shared state
    and lookups (session.py), an open file's bytes (open_file.py), attributes
    (attributes.py) and namespace changes (fs_namespace.py); this facade holds the
    handles and what a close hands to the upload queue.
    """

    def __init__(
        self, vault: Vault, cache_dir: str, cache_size: int, *, read_only: bool = False
    ) -> None:
        self.vault = vault
        self.read_only = read_only
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        self.cache = ObjectCache(cache_dir, vault.store, cache_size)
        self.source = CacheSource(self.cache)  # versions are read through the cache
        self.scratch_dir = os.path.join(cache_dir, "scratch")
        shutil.rmtree(self.scratch_dir, ignore_errors=True)  # keys died with the last process
        os.makedirs(self.scratch_dir, mode=0o700)
        self.errors: list[str] = []
        # Folders whose content changed here ahead of their manifest (a file created
        # but not committed yet): dir id -> time of that change.
        self.touched: dict[str, int] = {}
        # For each queued version, a digest of the readers it was sealed for: the
        # uploader re-wraps it if its directory's readers are others by then.
        self.sealed_dir = os.path.join(cache_dir, "sealed")
        os.makedirs(self.sealed_dir, mode=0o700, exist_ok=True)
        self.queue = UploadQueue(
            vault,
            self.cache,
            cache_dir,
            before_upload=self._recheck_readers,
            apply_op=self._apply_op,
        )
        vault.overlay = self._overlay_dir
        with self.queue.lock:
            live = {f"{r.file_id}.{r.version:x}" for r in self.queue.records.values()}
        for name in set(os.listdir(self.sealed_dir)) - live:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.sealed_dir, name))
        self.lock = threading.RLock()
        self.open_files: dict[str, OpenFile] = {}
        self.handles: dict[int, OpenFile] = {}
        self.next_fh = 1
        self.ciphers: LRUCache[tuple[str, int], ChunkCipher] = LRUCache(maxsize=1024)
        # Plaintext bytes that are not holes, per (file, version) sealed or opened here.
        self.allocated: LRUCache[tuple[str, int], int] = LRUCache(maxsize=65536)
        # Chunks a version's payload stores itself (not inherited), per (file, version)
        # sealed or opened here: what a delta's sources hold (format.md 2.6).
        self.stored_chunks: LRUCache[tuple[str, int], int] = LRUCache(maxsize=65536)
        self.allocated_lock = threading.Lock()  # a leaf lock: taken under any other
        # Files created here whose first version is not committed yet: (dir id, name) ->
        # entry. Creating a file costs no round trip; the uploader commits it with its
        # content, many files per manifest switch.
        self.created: dict[tuple[str, str], Entry] = {}
        # The file each name held when this mount last opened it for a program, or wrote
        # it: (dir id, name) -> (node id, version). A rename over the name replaces that
        # one; another version found there is kept as a conflict copy, even if a refresh
        # of the manifest brought it here before the rename (no program here read it).
        self.seen: LRUCache[tuple[str, str], tuple[str, int]] = LRUCache(maxsize=65536)
        self.queue.on_commit = self._committed
        self.queue.metadata_for = self._metadata_for
        self.queue.folder_time = lambda dir_id: self.touched.get(dir_id)
        # Who owns entries written without an owner (older code): the mounting user.
        self.owner = (os.getuid(), os.getgid())
        self.hidden: dict[str, OpenFile] = {}  # hidden path -> the unlinked open file

    def _committed(self, records: list[Record]) -> None:
        """Called by the uploader, under the commit lock, once records are in manifests."""
        for r in records:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._readers_file(r.file_id, r.version))
        with self.lock:
            for r in records:
                e = self.created.get((r.parent_id, r.name))
                if e is not None and e.id == r.file_id:
                    del self.created[(r.parent_id, r.name)]

    def _metadata_for(self, file_id: str) -> Entry | None:
        """The entry a not yet committed file was made with (owner, xattrs)."""
        with self.lock:
            for e in self.created.values():
                if e.id == file_id:
                    return e
        return None

    # -- handles ------------------------------------------------------------------------

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
            self.seen[(parent_id, name)] = (of.file_id, of.base_version)
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = of
        return of, fh

    @committing
    def create(self, path: str, mode: int, owner: tuple[int, int] | None = None) -> int:
        self._writable()
        parent_id, name, cur = self._raw_entry(path)
        self.vault.check_writable(parent_id)
        if cur is not None and cur.type == "d":
            raise IsADirectory(f"is a directory: {path}")
        mode, meta = self._new_owner(path, mode & 0o7777, owner, folder=False)
        now = time.time_ns()
        entry = Entry(new_id(), "f", mode=mode, mtime_ns=now, **meta)
        with self.lock:
            # The kernel checked O_EXCL against what it saw. If another client made
            # the name meanwhile, the commit keeps both (a conflict copy).
            self.created[(parent_id, name)] = entry
            self.touched[parent_id] = now
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

    @committing
    def mknod(
        self, path: str, mode: int, rdev: int, owner: tuple[int, int] | None = None
    ) -> None:
        """A FIFO, socket or device node: an entry with no content (format.md 5.3)."""
        self._writable()
        if stat.S_ISREG(mode):  # mknod(2) of a regular file: an empty one
            self.release(self.create(path, stat.S_IMODE(mode), owner))
            return
        kind = NODE_TYPES.get(stat.S_IFMT(mode))
        if kind is None:
            raise NotSupported("only FIFOs, sockets and device nodes are made by mknod")
        parent_id, _, cur = self._raw_entry(path)
        self.vault.check_writable(parent_id)
        if cur is not None:
            raise AlreadyExists(f"already exists: {path}")
        perm, meta = self._new_owner(path, stat.S_IMODE(mode), owner, folder=False)
        rdev = rdev if kind in ("c", "b") else 0
        self.vault.make_node(path, Entry(new_id(), kind, mode=perm, rdev=rdev, **meta))

    # -- reading and writing ------------------------------------------------------------

    def read(self, fh: int, offset: int, size: int) -> bytes:
        of = self._handle(fh)
        with of.lock:
            if of.state == "stream":
                self._to_scratch(of)
            if of.state == "scratch":
                return self._scratch_read(of, offset, size)
            version, length = of.base_version, of.base_size
            end = min(offset + size, of.size)
        # A sealed version never changes: read it without holding the file's lock,
        # so that the kernel's parallel read-ahead requests run side by side.
        return self.read_version(of.file_id, version, length, offset, end - offset)

    def write(self, fh: int, offset: int, data: bytes) -> int:
        self._writable()
        check_size(offset + len(data))
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
            of.mtime_ns = of.ctime_ns = time.time_ns()
            of.dirty = True
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._writable()
        check_size(length)
        if fh is not None:
            of = self._handle(fh)
            with of.lock:
                self._truncate(of, length)
            return
        assert path is not None
        with self.lock:
            gone = self.hidden.get(path)
        if gone is not None:
            with gone.lock:
                self._truncate(gone, length)
            return
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

    # -- sealing ------------------------------------------------------------------------

    def flush(self, fh: int) -> None:
        of = self._handle(fh)
        with of.lock:
            if of.dirty:
                self._seal(of)

    def _seal(self, of: OpenFile) -> None:
        """Close the current version: payload and envelope into the cache, then queue it.

        Nothing here asks the store: the recipients are those of the directory as last
        seen, however old, so a close() succeeds while the store is down. The uploader
        checks them again (and re-wraps) before the version reaches the store.
        """
        parent = self.vault.known_dir(of.parent_id)
        recipients = self.vault.recipients_for(parent, of.file_id, known=True)
        env = self._seal_payload(of, recipients)
        self._note_readers(of.file_id, of.version, recipients)
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
            ctime_ns=of.ctime_ns,
            atime_ns=of.atime_ns,
        )
        self.queue.enqueue(rec)
        if of.name:
            with self.lock:
                self.seen[(of.parent_id, of.name)] = (of.file_id, of.version)
        # The new version is the base of whatever comes next on this handle.
        self._discard(of)
        of.base_version = of.version
        of.base_size = of.base_limit = of.size
        of.dirty = False

    def _readers_file(self, file_id: str, version: int) -> str:
        return os.path.join(self.sealed_dir, f"{file_id}.{version:x}")

    def _note_readers(self, file_id: str, version: int, recipients: list[Recipient]) -> None:
        def write() -> None:
            with open(self._readers_file(file_id, version), "w") as f:
                f.write(_readers_digest(recipients))

        self.cache.roomy(write)

    def _recheck_readers(self, rec: Record) -> None:
        """Before a version leaves: wrap it to the readers its directory has now.

        It was sealed for the readers last known, perhaps long ago (offline, or a
        share or unshare since): a change becomes a re-wrap here, never a reader
        that should not read it, or one that cannot. An unknown digest (lost in a
        crash) counts as a change."""
        parent = None if self.vault.offline else self.vault.load_dir(rec.parent_id)[0]
        recipients = None if parent is None else self.vault.recipients_for(parent, rec.file_id)
        if recipients is None or self.vault.offline:
            # What is known may be old: check against the store, once it answers.
            raise TransientStoreError("the store is unreachable")
        path = self._readers_file(rec.file_id, rec.version)
        digest = _readers_digest(recipients)
        try:
            with open(path) as f:
                sealed = f.read()
        except FileNotFoundError:
            sealed = ""
        if sealed != digest:
            ekey = envelope_key(rec.file_id, rec.version)
            env = parse_envelope(self.cache.get_small(ekey))
            try:
                raw = rewrap_envelope(env, self.vault.identity, recipients, self.vault.identity)
            except NoMatchingKeyError:
                return  # sealed without our own key: we can only upload it as it is
            self.cache.put_local(ekey, raw.encode(), pinned=True)
            try:
                # Uploaded before a crash, wrapped to the old readers: replace it.
                _, etag = self.vault.envelope_with_etag(rec.file_id, rec.version)
                self.vault.replace_envelope(rec.file_id, rec.version, raw.encode(), etag)
            except NotFound:
                pass
            self._note_readers(rec.file_id, rec.version, recipients)

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
        st["offline_since"] = self.vault.offline_since
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
                    f.write(
                        self.read_version(rec.file_id, rec.version, rec.size, offset, 1 << 20)
                    )
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


def _readers_digest(recipients: list[Recipient]) -> str:
    return hashlib.sha256(b"\n".join(sorted(r.to_pem() for r in recipients))).hexdigest()
