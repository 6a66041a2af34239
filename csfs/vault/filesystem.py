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
import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from cachetools import LRUCache

from csfs.crypto import Recipient, parse_envelope
from csfs.crypto.envelope import Context, rewrap_envelope
from csfs.crypto.scratch import SCRATCH_CHUNK, ScratchFile
from csfs.crypto.sealed import StreamSealer, open_envelope, seal_sparse
from csfs.crypto.stream import (
    HEADER_SIZE,
    MAX_PLAINTEXT,
    MAX_SOURCES,
    TAG_SIZE,
    ChunkCipher,
    Fetch,
    SourceRef,
    SourceSet,
    chunk_count,
    padme,
)
from csfs.errors import (
    AlreadyExists,
    AuthenticationError,
    BadHandle,
    CrossShare,
    DirectoryNotEmpty,
    FileTooBig,
    IsADirectory,
    NoMatchingKeyError,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnlyMount,
    TransientStoreError,
    UsageError,
    XattrMissing,
)
from csfs.vault.cache import ObjectCache
from csfs.vault.crashpoint import crash_point
from csfs.vault.layout import content_key, envelope_key, new_id, new_version
from csfs.vault.manifest import DirectoryManifest, Entry, check_xattr_name, check_xattrs
from csfs.vault.upload_queue import NamespaceOp, Record, UploadQueue, with_content
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
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    rdev: int = 0
    nlink: int = 1
    allocated: int | None = None  # bytes that are not holes, when known (st_blocks)


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


def _check_size(end: int) -> None:
    """Refuse, before anything is written, a file the format cannot hold (docs/format.md 2.4)."""
    if end > MAX_PLAINTEXT:
        raise FileTooBig(f"a file ends at most at 2^48 bytes (asked: {end})")


def _committing(method: Callable[..., T]) -> Callable[..., T]:
    """Run a namespace change under the vault's commit lock (see Vault.commit_lock)."""

    @functools.wraps(method)
    def wrapper(self: FileSystem, *args: Any, **kwargs: Any) -> T:
        with self.vault.commit_lock:
            return method(self, *args, **kwargs)

    return wrapper


class FileSystem:
    """The POSIX view of one vault for one mount: paths, handles, open files and
    their attributes, as the FUSE layer asks for them.

    Owns the open files and their encrypted scratch data, the file handles, the
    ciphertext cache and the upload queue that carries closed versions to the
    store, and the recent errors `csfs status` shows.

    Never writes plaintext to the local disk, never changes the vault when the
    mount is read-only, never maps errors to errno (the FUSE layer's table does)
    and never talks to FUSE itself: it takes paths and bytes and returns them.
    """

    # libfuse renames an open file that is unlinked to this prefix and unlinks that
    # name on the last release. Here that rename is the unlink: the name leaves the
    # folder at once (POSIX), and the open file answers under its hidden name.
    HIDDEN = ".fuse_hidden"

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

    def note_error(self, msg: str) -> None:
        with self.lock:
            self.errors = [*self.errors[-50:], f"{time.strftime('%H:%M:%S')} {msg}"]

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyMount("read-only mount")

    # -- lookups -----------------------------------------------------------------------

    def _overlay(self, entry: Entry) -> Entry:
        if entry.type != "f":
            return entry
        with self.lock:
            of = self.open_files.get(entry.id)
        if of is not None and (of.dirty or of.base_version != entry.version):
            return replace(
                entry,
                size=of.size,
                mtime_ns=of.mtime_ns,
                version=of.base_version,
                mode=of.mode,
                ctime_ns=of.ctime_ns or entry.ctime_ns,
                atime_ns=of.atime_ns or entry.atime_ns,
            )
        rec = self.queue.pending(entry.id)
        return entry if rec is None else with_content(entry, rec)

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
        return self.vault.view_dir(parent_id).entries.get(name)

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

    def lookup(self, path: str) -> Entry:
        if split_path(path):
            # A file created here and not committed yet hides what it will replace.
            parent_id, name = self.vault.parent_of(path)
            with self.lock:
                created = self.created.get((parent_id, name))
            if created is not None:
                return self._overlay(created)
        return self._overlay(self.vault.lookup(path))  # (it refuses a directory cycle)

    def getattr(self, path: str) -> Attr:
        with self.lock:
            gone = self.hidden.get(path)
        if gone is not None:
            return self._open_attr(gone)
        e = self.lookup(path)
        if e.type == "d" and not split_path(path):
            e = self.vault.root_entry()
        if not self.vault.is_owner:
            where = e.id if e.type == "d" else self.vault.parent_of(path)[0]
            e = self._read_only(e, where)
        if e.type == "d":
            try:
                return self._attr(e, self.vault.view_dir(e.id))
            except NoMatchingKeyError:
                pass  # a folder this key cannot open: what its entry says
        return self._attr(e)

    def fgetattr(self, fh: int) -> Attr:
        """Attributes through an open handle: what it serves, even once unlinked."""
        return self._open_attr(self._handle(fh))

    def _open_attr(self, of: OpenFile) -> Attr:
        with of.lock:
            e = replace(
                of.entry,
                mode=of.mode,
                size=of.size,
                mtime_ns=of.mtime_ns,
                ctime_ns=of.ctime_ns or of.entry.ctime_ns,
                atime_ns=of.atime_ns or of.entry.atime_ns,
            )
            allocated = self._open_allocated(of)
        a = self._attr(e, nlink=1 if of.name else 0)
        return a if allocated is None else replace(a, allocated=allocated)

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

    def _attr(
        self, e: Entry, folder: DirectoryManifest | None = None, nlink: int = 1
    ) -> Attr:
        """POSIX attributes of an entry; a folder's times and link count come from
        its own manifest when given (every change of its content switches that)."""
        mtime, atime, ctime = e.mtime_ns, e.atime_ns, e.ctime_ns
        if folder is not None:
            touched = self.touched.get(folder.dir_id, 0)
            mtime = max(folder.mtime_ns, touched)
            atime = folder.atime_ns
            ctime = max(folder.ctime_ns or folder.mtime_ns, e.ctime_ns or 0, touched)
            nlink = 2 + sum(1 for c in folder.entries.values() if c.type == "d")
        elif e.type == "d":
            nlink = 2
        return Attr(
            e.type,
            e.mode,
            e.size,
            mtime,
            e.target,
            uid=self.owner[0] if e.uid is None else e.uid,
            gid=self.owner[1] if e.gid is None else e.gid,
            atime_ns=mtime if atime is None else atime,
            ctime_ns=mtime if ctime is None else max(ctime, 0),
            rdev=e.rdev,
            nlink=nlink,
            allocated=self._allocated_entry(e) if e.type == "f" else None,
        )

    def _allocated_entry(self, e: Entry) -> int | None:
        """Bytes of a file that are not holes: an open file's edits, else its version's."""
        of = self.open_files.get(e.id)  # no lock: callers may hold a file's lock
        if of is not None and of.dirty:
            allocated = self._open_allocated(of)
            if allocated is not None:
                return allocated
        return self._allocated_of(e.id, e.version)

    def readlink(self, path: str) -> str:
        e = self.vault.lookup(path)
        if e.type != "l":
            raise UsageError("not a symbolic link")
        return e.target

    # -- namespace ---------------------------------------------------------------------

    def _new_owner(
        self, path: str, mode: int, owner: tuple[int, int] | None, *, folder: bool
    ) -> tuple[int, dict[str, Any]]:
        """Mode and owner fields of a new entry made by ``owner`` (the caller's uid, gid).

        In a setgid folder the new entry takes the folder's group, and a new folder
        keeps the setgid bit (Linux inode_init_owner)."""
        if owner is None:
            return mode, {}
        uid, gid = owner
        parent = self._attr(self.lookup(posixpath.dirname(posixpath.normpath("/" + path))))
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if folder:
                mode |= stat.S_ISGID
        now = time.time_ns()
        return mode, {"uid": uid, "gid": gid, "ctime_ns": now, "atime_ns": now}

    @_committing
    def mkdir(self, path: str, mode: int, owner: tuple[int, int] | None = None) -> None:
        self._writable()
        mode, meta = self._new_owner(path, mode & 0o7777, owner, folder=True)
        if self._online():
            try:
                self.vault.mkdir(path, mode, **meta)
                return
            except TransientStoreError:
                self.vault.went_offline()
        parent_id, name, cur = self._raw_entry(path)
        if cur is not None:
            raise AlreadyExists(f"already exists: {path}")
        self.vault.check_writable(parent_id)
        child = self.vault.new_directory(self.vault.known_dir(parent_id), mode, put=False)
        entry = Entry(child.dir_id, "d", mode=mode, mtime_ns=child.mtime_ns, **meta)
        self.queue.add_op(
            NamespaceOp(
                0, "mkdir", entry.id, parent_id, name, entry.to_json(), readers=child.readers
            )
        )

    @_committing
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

    @_committing
    def rmdir(self, path: str) -> None:
        self._writable()
        dir_id = self.vault.lookup(path).id
        with self.lock:
            if any(parent == dir_id for parent, _ in self.created):
                raise DirectoryNotEmpty(f"directory not empty: {path}")
        # Only the folder seen here: one another client put at the name meanwhile stays.
        if self._online():
            try:
                self.vault.remove(path, expect_dir=True, expect=(dir_id, None))
                return
            except TransientStoreError:
                self.vault.went_offline()
        parent_id, name, cur = self._raw_entry(path)
        if cur is None or cur.id != dir_id:
            raise NotFound(f"no such file or directory: {path}")
        if cur.type != "d":
            raise NotADirectory(f"not a directory: {path}")
        if self.vault.view_dir(dir_id).entries:
            raise DirectoryNotEmpty(f"directory not empty: {path}")
        self.queue.add_op(NamespaceOp(0, "remove", dir_id, parent_id, name))

    @_committing
    def unlink(self, path: str) -> None:
        self._writable()
        with self.lock:
            if self.hidden.pop(path, None) is not None:
                return  # unlinked already, when libfuse hid it
        _, _, seen = self._raw_entry(path)
        if seen is None:
            raise NotFound(f"no such file or directory: {path}")
        self._unlink(path, seen, seen.version)

    def _unlink(self, path: str, seen: Entry, version: int | None) -> None:
        """Remove the node ``seen`` (at ``version``, if known) from ``path``. If
        another client put something else there meanwhile, that is newer than this
        unlink and stays: a removal by name would delete it (a soak loss)."""
        parent_id, name = self.vault.parent_of(path)
        with self.lock:
            created = self.created.get((parent_id, name))
            if created is not None and created.id == seen.id:
                del self.created[(parent_id, name)]
            else:
                created = None
        if created is not None:
            self.touched[parent_id] = time.time_ns()
            self._forget_file(created)
            self._drop_replaced(parent_id, name, created.id)
            return
        if seen.type == "d":
            raise IsADirectory(f"is a directory: {path}", hint="use rm -r")
        removed: Entry | None = None
        if self._online():
            try:
                removed = self.vault.remove(
                    path,
                    expect_dir=False,
                    expect=(seen.id, version),
                    own_versions=self.queue.own_versions,
                )
                queued = False
            except TransientStoreError:
                self.vault.went_offline()
                queued = True
        else:
            queued = True
        if queued:
            self.queue.add_op(NamespaceOp(0, "remove", seen.id, parent_id, name, version=version))
        # Not removed: another client's file (or version) held the name by then. This
        # one is gone from the name either way, but what it has queued is kept.
        self._forget_file(seen, queued_too=queued or removed is not None)

    def _drop_replaced(self, parent_id: str, name: str, file_id: str) -> None:
        """A not yet committed file renamed over ``name`` leaves it (unlink, rename):
        what it was to replace there is now removed, unless another client changed it."""
        replaced = self.queue.replacing_of(file_id)
        self.queue.renamed(file_id, parent_id, name, None)
        if replaced is None:
            return
        if self._online():
            try:
                self.vault.remove_if(parent_id, name, replaced[0], replaced[1])
                return
            except TransientStoreError:
                self.vault.went_offline()
        self.queue.add_op(
            NamespaceOp(0, "remove", replaced[0], parent_id, name, version=replaced[1])
        )

    def _forget_file(self, removed: Entry, *, queued_too: bool = True) -> None:
        """``queued_too``: its queued versions are dropped as well (not when the name
        held another file by then: those versions are no one's to drop, and commit
        beside it as a conflict copy)."""
        if removed.type != "f":
            return
        # Still-open handles keep working on their own data (POSIX); nothing will be committed.
        if queued_too:
            self.queue.update(removed.id, deleted=True)
        with self.lock:
            of = self.open_files.get(removed.id)
            if of is not None:
                of.name = ""
                of.ctime_ns = time.time_ns()  # its link count dropped to 0

    @_committing
    def rename(self, old: str, new: str, *, noreplace: bool = False) -> None:
        """One manifest switch in the store's view, conditional on what it replaces.

        ``noreplace`` (renameat2's RENAME_NOREPLACE) fails if anything is at ``new``,
        here or, at the switch, in the store.

        A file not yet committed is renamed in its queued record; what it replaces
        stays in the store until the record's commit replaces it (so no crash leaves
        neither). A committed file is moved by one switch that names the entry it
        replaces; one changed meanwhile by another client is kept as a conflict copy.
        """
        self._writable()
        if posixpath.basename(new).startswith(self.HIDDEN) and self._hide(old, new):
            return
        src_parent, src_name, src = self._raw_entry(old)
        dst_parent, dst_name, target = self._raw_entry(new)
        if src is None:
            raise NotFound(f"no such file or directory: {old}")
        if noreplace and target is not None:
            raise AlreadyExists(f"already exists: {new}")
        if self.vault.share_roots_of(src_parent) != self.vault.share_roots_of(dst_parent):
            raise CrossShare(f"cannot move {old} across a share boundary", hint="copy it instead")
        if target is not None and target.type == "d":
            if src.type != "d":
                raise IsADirectory(f"is a directory: {new}")
            # A folder replaces only an empty folder (the vault checks its manifest;
            # files made here but not committed yet count too).
            with self.lock:
                if any(parent == target.id for parent, _ in self.created):
                    raise DirectoryNotEmpty(f"directory not empty: {new}")
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
            replaces = list(self._seen_at(dst_parent, dst_name, stored))
        if moving is not None:
            self._drop_replaced(src_parent, src_name, moving.id)
            now = time.time_ns()
            with self.lock:
                del self.created[(src_parent, src_name)]
                self.created[(dst_parent, dst_name)] = replace(moving, ctime_ns=now)
                self.touched[src_parent] = self.touched[dst_parent] = now
            entry = moving
            self.queue.renamed(moving.id, dst_parent, dst_name, replaces)
            if target_created is None and stored is not None and stored.type == "f":
                self._forget_file(stored)  # its queued versions, if any, are replaced too
        else:
            expect = stored
            if stored is not None and stored.type == "f":
                seen_id, seen_version = self._seen_at(dst_parent, dst_name, stored)
                expect = Entry(seen_id, "f", version=seen_version)
            if target_created is not None:
                expect = None if replaces is None else Entry(replaces[0], "f", version=replaces[1])
            entry = self._move(old, new, src, target, expect, noreplace=noreplace)
            if stored is not None and stored.id != entry.id:
                self._forget_file(stored)
        crash_point("renamed")
        with self.lock:
            was = self.seen.pop((src_parent, src_name), None)
            self.seen.pop((dst_parent, dst_name), None)
            if was is not None:
                self.seen[(dst_parent, dst_name)] = was
        parent_id, name = dst_parent, dst_name
        if entry.type == "f":
            now = time.time_ns()
            self.queue.update(entry.id, parent_id=parent_id, name=name, ctime_ns=now)
            with self.lock:
                of = self.open_files.get(entry.id)
                if of is not None:
                    of.parent_id, of.name, of.ctime_ns = parent_id, name, now

    def _move(
        self,
        old: str,
        new: str,
        src: Entry,
        target: Entry | None,
        expect: Entry | None,
        *,
        noreplace: bool,
    ) -> Entry:
        """Move a committed entry: one conditional switch, or a queued change."""
        now = time.time_ns()
        if self._online():
            try:
                return self.vault.rename(
                    old,
                    new,
                    replace_existing=not noreplace,
                    expect=expect,
                    own_versions=self.queue.own_versions,
                    ctime_ns=now,
                )
            except TransientStoreError:
                self.vault.went_offline()
        src_parent, src_name = self.vault.parent_of(old)
        dst_parent, dst_name = self.vault.parent_of(new)
        if src.type == "d" and split_path(new)[: len(split_path(old))] == split_path(old):
            raise UsageError(f"cannot move {old} into itself")
        if target is not None and target.type == "d" and self.vault.view_dir(target.id).entries:
            raise DirectoryNotEmpty(f"cannot replace directory {new}")
        if target is not None and target.type != "d" and src.type == "d":
            raise NotADirectory(f"cannot replace non-directory {new} with a directory")
        moved = replace(src, ctime_ns=now)
        replaces = None if expect is None or expect.type != "f" else [expect.id, expect.version]
        self.queue.add_op(
            NamespaceOp(
                0,
                "rename",
                src.id,
                src_parent,
                src_name,
                moved.to_json(),
                dst_parent_id=dst_parent,
                dst_name=dst_name,
                replaces=replaces,
            )
        )
        if src.type == "d":
            self.vault.note_parent(src.id, dst_parent)
        return moved

    def _seen_at(self, parent_id: str, name: str, stored: Entry) -> tuple[str, int]:
        """What a rename over ``name`` replaces: the file a program here last opened
        or wrote there; the stored entry if none did (it was not read, only named)."""
        with self.lock:
            seen = self.seen.get((parent_id, name))
        return seen if seen is not None else (stored.id, stored.version)

    def _hide(self, old: str, new: str) -> bool:
        """libfuse hides an open file that is unlinked: unlink it here for good.

        The file is the one open here under that name, not whatever the name holds
        by now: another client's file put there since stays (and a rename over the
        name that follows keeps it as a conflict copy)."""
        parent_id, name, raw = self._raw_entry(old)
        with self.lock:
            here = [
                o for o in self.open_files.values() if (o.parent_id, o.name) == (parent_id, name)
            ]
            # Two open here under one name (one replaced by another client meanwhile):
            # libfuse hides the name's node, which is what the name holds now.
            of = next((o for o in here if raw is not None and o.file_id == raw.id), None)
            of = of or (here[0] if here else None)
            seen = self.seen.get((parent_id, name))
        if of is None:
            return False
        with of.lock:
            entry = of.entry
        version = seen[1] if seen is not None and seen[0] == of.file_id else of.base_version
        try:
            self._unlink(old, replace(entry, id=of.file_id, type="f"), version)
        except NotFound:
            self._forget_file(replace(entry, id=of.file_id, type="f"))  # gone already
        with self.lock:
            self.hidden[new] = of
        return True

    @_committing
    def symlink(self, target: str, path: str, owner: tuple[int, int] | None = None) -> None:
        self._writable()
        _, meta = self._new_owner(path, 0o777, owner, folder=False)
        self.vault.symlink(target, path, **meta)

    def link(self, target: str, path: str) -> None:
        raise NotSupported("hard links are not supported")

    def _detached(self, path: str | None, fh: int | None) -> OpenFile | None:
        """The open file that an attribute change through ``fh`` (or of libfuse's
        hidden name) goes to alone: unlinked, or no longer what ``path`` names."""
        with self.lock:
            of = self.handles.get(fh) if fh is not None else None
            gone = self.hidden.get(path) if path is not None else None
        if gone is not None or of is None:
            return gone
        if not of.name or path is None:
            return of
        try:
            _, _, raw = self._raw_entry(path)
        except (NotFound, UsageError):
            return of
        return of if raw is None or raw.id != of.file_id else None

    @_committing
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._writable()
        self._setattr(path, fh=fh, mode=mode & 0o7777, ctime_ns=time.time_ns())

    @_committing
    def chown(
        self,
        path: str | None,
        uid: int,
        gid: int,
        caller: Caller | None = None,
        fh: int | None = None,
    ) -> None:
        """Change owner and group (-1: keep); who may is checked as Linux does (chown(2))."""
        self._writable()
        of = self._detached(path, fh)
        a = self._open_attr(of) if of is not None else self.getattr(str(path))
        new_uid = a.uid if uid < 0 else uid
        new_gid = a.gid if gid < 0 else gid
        if caller is not None and caller.uid != 0:
            if caller.uid != a.uid or new_uid != a.uid:
                raise NotPermitted("only root may give a file away")
            if new_gid != a.gid and new_gid not in caller.groups:
                raise NotPermitted("the owner may only pick a group it belongs to")
        mode = a.mode
        if a.type != "d" and a.type != "l":
            # Linux clears setuid, and setgid with group execute, on every chown.
            mode &= ~stat.S_ISUID
            if mode & stat.S_IXGRP:
                mode &= ~stat.S_ISGID
        changes: dict[str, Any] = {"ctime_ns": time.time_ns()}
        # Only what changes: chown of the vault root to its present owner (tar -x of
        # ".") succeeds, though the root's manifest keeps no owner.
        for key, value, now in (("uid", new_uid, a.uid), ("gid", new_gid, a.gid)):
            if value != now:
                changes[key] = value
        if mode != a.mode:
            changes["mode"] = mode
        self._setattr(path, fh=fh, **changes)

    @_committing
    def utimens(
        self, path: str | None, atime_ns: int | None, mtime_ns: int | None, fh: int | None = None
    ) -> None:
        """Set either time or both (None: leave it, UTIME_OMIT); ctime becomes now."""
        self._writable()
        changes: dict[str, Any] = {"ctime_ns": time.time_ns()}
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        if self._detached(path, fh) is not None:
            self._setattr(path, fh=fh, **changes)
            return
        assert path is not None
        if self.lookup(path).type == "d":
            self._folder_times(path, changes)
        else:
            self._setattr(path, **changes)

    def _folder_times(self, path: str, changes: dict[str, Any]) -> None:
        """A folder's times live in its own manifest (every change of its content
        switches that manifest anyway); its entry keeps mode, owner and xattrs."""
        if not split_path(path):
            self.vault.setattr(path, **changes)
            return
        folder = self.vault.lookup(path)

        def change(m: DirectoryManifest) -> None:
            for key, value in changes.items():
                setattr(m, key, value)

        self.vault.update_dir(folder.id, change, force=True, touch=False)
        with self.lock:
            self.touched.pop(folder.id, None)

    # -- extended attributes (user.* only, in the entry: format.md 5.3) ----------------

    def getxattr(self, path: str, name: str) -> bytes:
        value = self._xattr_entry(path).xattr_dict().get(name)
        if value is None:
            raise XattrMissing(f"no extended attribute {name[:40]!r}")
        return value

    def listxattr(self, path: str) -> list[str]:
        return [n for n, _ in self._xattr_entry(path).xattrs]

    @_committing
    def setxattr(
        self, path: str, name: str, value: bytes, *, only_new: bool, only_existing: bool
    ) -> None:
        self._writable()
        check_xattr_name(name)
        current = self._xattr_entry(path).xattr_dict()
        if only_new and name in current:
            raise AlreadyExists(f"extended attribute exists: {name[:40]!r}")
        if only_existing and name not in current:
            raise XattrMissing(f"no extended attribute {name[:40]!r}")
        current[name] = bytes(value)
        xattrs = check_xattrs(list(current.items()))
        self._setattr(path, xattrs=xattrs, ctime_ns=time.time_ns())

    @_committing
    def removexattr(self, path: str, name: str) -> None:
        self._writable()
        current = self._xattr_entry(path).xattr_dict()
        if current.pop(name, None) is None:
            check_xattr_name(name)
            raise XattrMissing(f"no extended attribute {name[:40]!r}")
        self._setattr(path, xattrs=tuple(sorted(current.items())), ctime_ns=time.time_ns())

    def _xattr_entry(self, path: str) -> Entry:
        """The entry holding a path's xattrs: the cached manifest, no store round trip."""
        return self.lookup(path)

    def _setattr(self, path: str | None, fh: int | None = None, **changes: Any) -> None:
        """Mode, owner, times, xattrs. A file whose upload is still queued takes mode and
        times with its commit (no round trip: tar and rsync set them after each close)."""
        detached = self._detached(path, fh)
        if detached is not None:
            self._update_open(detached.file_id, **changes)  # nothing of it is in a folder
            return
        assert path is not None
        if split_path(path):
            self.vault.check_writable(self.vault.parent_of(path)[0])
        e = self._set_created(path, **changes)
        if e is None:
            e = self.vault.lookup(path)
            queued = set(changes) <= RECORD_FIELDS and e.type == "f"
            if not queued or not self.queue.update(e.id, **changes):
                e = self._set_stored(path, e, changes)
        self._update_open(e.id, **changes)

    def _set_stored(self, path: str, e: Entry, changes: dict[str, Any]) -> Entry:
        if self._online() or not split_path(path):  # the root's manifest: online only
            try:
                return self.vault.setattr(path, **changes)
            except TransientStoreError:
                if not split_path(path):
                    raise
                self.vault.went_offline()
        parent_id, name = self.vault.parent_of(path)
        new = replace(e, **changes)
        self.queue.add_op(
            NamespaceOp(0, "setattr", e.id, parent_id, name, new.to_json(), fields=sorted(changes))
        )
        return new

    # -- namespace changes queued while the store is away -------------------------------

    def _online(self) -> bool:
        """Whether a namespace change goes to the store now. While it is unreachable,
        and then until the changes queued meanwhile have reached it (they stay in
        order), changes are queued."""
        return not self.vault.offline and not self.queue.pending_ops()

    def _overlay_dir(
        self, dir_id: str, base: Callable[[], DirectoryManifest]
    ) -> DirectoryManifest | None:
        """A folder with the queued changes that touch it applied; None if none does."""
        ops = [
            op
            for op in self.queue.pending_ops()
            if dir_id in (op.parent_id, op.dst_parent_id)
            or (op.kind == "mkdir" and op.node_id == dir_id)
        ]
        if not ops:
            return None
        made = next((op for op in ops if op.kind == "mkdir" and op.node_id == dir_id), None)
        if made is not None and made.entry is not None:
            e = Entry.from_json(made.entry)
            m = DirectoryManifest(
                dir_id, version=0, readers=list(made.readers), mtime_ns=e.mtime_ns, mode=e.mode
            )
        else:
            m = base().copy()
        for op in ops:
            cur = m.entries.get(op.name) if op.parent_id == dir_id else None
            mine = cur is not None and cur.id == op.node_id
            if op.kind == "mkdir" and op.parent_id == dir_id and op.entry is not None:
                m.entries[op.name] = Entry.from_json(op.entry)
            elif op.kind == "remove" and mine:
                del m.entries[op.name]
            elif op.kind == "setattr" and mine and op.entry is not None:
                m.entries[op.name] = Entry.from_json(op.entry)
            elif op.kind == "rename":
                if mine:
                    del m.entries[op.name]
                if op.dst_parent_id == dir_id and op.entry is not None:
                    m.entries[op.dst_name] = Entry.from_json(op.entry)
        return m

    def _apply_op(self, op: NamespaceOp) -> None:
        """Apply a queued namespace change to the store (the uploader, under the commit
        lock), as conditionally as its online form: what changed meanwhile elsewhere
        is kept (a conflict copy, or the entry left as it is), never lost."""
        v = self.vault
        with v.store_view():
            if op.kind == "mkdir" and op.entry is not None:
                v.add_directory(op.parent_id, op.name, Entry.from_json(op.entry))
            elif op.kind == "remove":
                v.remove_if(op.parent_id, op.name, op.node_id, op.version, self.queue.own_versions)
            elif op.kind == "setattr" and op.entry is not None:
                new = Entry.from_json(op.entry)
                changes = {k: getattr(new, k) for k in op.fields}
                v.set_entry(op.parent_id, op.name, op.node_id, changes)
            elif op.kind == "rename" and op.entry is not None:
                cur = v.load_dir(op.parent_id)[0].entries.get(op.name)
                if cur is None or cur.id != op.node_id:
                    return  # moved or removed elsewhere meanwhile: nothing of ours to move
                there = v.load_dir(op.dst_parent_id)[0].entries.get(op.dst_name)
                if there is not None and there.id == op.node_id:
                    # An online attempt added it there before failing: the source goes
                    # only if it holds no other version than the target (else both stay).
                    def drop(m: DirectoryManifest, was: Entry = there) -> None:
                        now = m.entries.get(op.name)
                        if now is not None and now.id == was.id and now.version == was.version:
                            del m.entries[op.name]

                    v.update_dir(op.parent_id, drop)
                    return
                src_dir, dst_dir = v.path_of(op.parent_id), v.path_of(op.dst_parent_id)
                if src_dir is None or dst_dir is None:
                    raise NotFound("the folder of a queued rename is gone")
                was = op.replaces
                expect = None if was is None else Entry(was[0], "f", version=was[1])
                v.rename(
                    posixpath.join(src_dir, op.name),
                    posixpath.join(dst_dir, op.dst_name),
                    expect=expect,
                    own_versions=self.queue.own_versions,
                    ctime_ns=Entry.from_json(op.entry).ctime_ns,
                )

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
        carried = {k: v for k, v in changes.items() if k in RECORD_FIELDS}
        other = {k: v for k, v in changes.items() if k not in RECORD_FIELDS}
        if carried:
            self.queue.update(file_id, **carried)
        with self.lock:
            of = self.open_files.get(file_id)
        if of is not None:
            with of.lock:
                for k, v in carried.items():
                    setattr(of, k, v)
                of.entry = replace(of.entry, **other)

    def _metadata_for(self, file_id: str) -> Entry | None:
        """The entry a not yet committed file was made with (owner, xattrs)."""
        with self.lock:
            for e in self.created.values():
                if e.id == file_id:
                    return e
        return None

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
            self.seen[(parent_id, name)] = (of.file_id, of.base_version)
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = of
        return of, fh

    def _handle(self, fh: int) -> OpenFile:
        with self.lock:
            of = self.handles.get(fh)
        if of is None:
            raise BadHandle("bad file handle")
        return of

    @_committing
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
        with self.lock:  # cachetools caches are not thread-safe: a racing eviction raised
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
            if cipher.needs_map:
                ckey = content_key(file_id, version)
                cipher.load_map(self.cache.read(ckey, HEADER_SIZE, HEADER_SIZE + cipher.map_size))
            with self.lock:
                self.ciphers[key] = cipher
            self._note_allocated(key, cipher.allocated())
            with self.allocated_lock:
                self.stored_chunks[key] = cipher.stored()
        return cipher

    def read_version(self, file_id: str, version: int, offset: int, size: int) -> bytes:
        """Plaintext [offset, offset+size) of a version, decrypting only those chunks."""
        if version == 0 or size <= 0:
            return b""
        try:
            return self._read_version(file_id, version, offset, size)
        except AuthenticationError:
            # A damaged cache entry must not pass for tampering in the store: refetch once.
            with self.lock:
                cipher = self.ciphers.pop((file_id, version), None)
            for ref in cipher.sources if cipher is not None else []:
                self.cache.drop(content_key(file_id, ref.version))
            self.cache.drop(content_key(file_id, version))
            self.cache.drop(envelope_key(file_id, version))
            return self._read_version(file_id, version, offset, size)

    def _read_version(self, file_id: str, version: int, offset: int, size: int) -> bytes:
        cipher = self._cipher(file_id, version)
        key = content_key(file_id, version)
        return cipher.read_range(
            lambda a, b: self.cache.read(key, a, b, size=cipher.size),
            offset,
            size,
            self._sources(file_id, cipher) if cipher.delta else None,
        )

    def _sources(self, file_id: str, cipher: ChunkCipher) -> SourceSet:
        """Opens a delta version's sources (format.md 2.6) through the cache."""

        def fetch_for(version: int) -> Fetch:
            key = content_key(file_id, version)

            def fetch(start: int, stop: int) -> bytes:
                # The source's size bounds read-ahead once its map is known.
                size = next((s.size for s in cipher.opened.values() if s.version == version), -1)
                return self.cache.read(key, start, stop, size=size if size > 0 else None)

            return fetch

        return SourceSet(cipher, fetch_for)

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
        f = self.cache.open_new(of.sealer_path)
        of.sealer = StreamSealer(f, self._context(of))  # type: ignore[arg-type]
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
                        piece = bytes(buf[:C])
                        self.cache.roomy(functools.partial(scratch.write_chunk, index, piece))
                        index += 1
                        del buf[:C]
                buf += sealer.pending_tail()
                while buf:
                    piece = bytes(buf[:C])
                    whole = piece + bytes(C - len(piece))
                    self.cache.roomy(functools.partial(scratch.write_chunk, index, whole))
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
        _check_size(offset + len(data))
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

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._writable()
        _check_size(length)
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

    # -- sealing -----------------------------------------------------------------------

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
                    f,  # type: ignore[arg-type]
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
            f = of.sealer.file  # type: ignore[attr-defined]
            env = of.sealer.finish(recipients, self.vault.identity)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            of.sealer = None
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

    def _present_chunks(self, of: OpenFile) -> list[int]:
        """Chunks that may hold data: written here, or kept from the base version and
        not a hole there. Every other chunk reads as zeros."""
        assert of.scratch is not None
        present = set(of.scratch.present)
        if of.base_version and of.base_limit > 0:
            base_chunks = -(-of.base_limit // C)
            cipher = self._cipher(of.file_id, of.base_version)
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
        base = self._cipher(of.file_id, of.base_version)
        if base.chunk_size != C:
            return {}
        base_ref = SourceRef(
            of.base_version, base.length, base.keys.header_hash, base.keys.content_key
        )
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


def _readers_digest(recipients: list[Recipient]) -> str:
    return hashlib.sha256(b"\n".join(sorted(r.to_pem() for r in recipients))).hexdigest()


NODE_TYPES = {stat.S_IFIFO: "p", stat.S_IFSOCK: "s", stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
FILE_TYPES = {"d": stat.S_IFDIR, "l": stat.S_IFLNK, "f": stat.S_IFREG} | {
    v: k for k, v in NODE_TYPES.items()
}
# Entry fields that a queued upload record carries to its commit.
RECORD_FIELDS = frozenset({"mode", "mtime_ns", "ctime_ns", "atime_ns"})


@dataclass(frozen=True)
class Caller:
    """Who makes a request: uid and the groups it belongs to (primary and supplementary)."""

    uid: int
    groups: frozenset[int]


def mode_bits(attr: Attr) -> int:
    return FILE_TYPES[attr.type] | (attr.mode & 0o7777)
