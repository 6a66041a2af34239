"""POSIX attributes in a mount session (csfs.vault.filesystem): stat results,
mode bits, owners and times (as Linux sets them), and extended attributes
(user.* only, in the entry: docs/format.md 5.3)."""

from __future__ import annotations

import posixpath
import stat
import time
from dataclasses import dataclass, replace
from typing import Any

from csfs.errors import (
    AlreadyExists,
    CsfsError,
    NoMatchingKeyError,
    NotFound,
    NotPermitted,
    NotSupported,
    TransientStoreError,
    UsageError,
    XattrMissing,
)
from csfs.vault.manifest import DirectoryManifest, Entry, check_xattr_name, check_xattrs
from csfs.vault.open_file import FileContent, OpenFile
from csfs.vault.session import committing
from csfs.vault.upload_queue import NamespaceOp
from csfs.vault.vault import split_path

# What a folder's own manifest holds of its attributes (format.md 5.3): times, and the
# root's mode and owner.
MANIFEST_FIELDS = {"mode", "mtime_ns", "atime_ns", "ctime_ns", "uid", "gid"}


# In FileSystem.seen: a program here was told that nothing is at the name (the
# version slot holds when, in ms of time.monotonic). It counts for a rename over the
# name for SAW_NOTHING_MS: a program's check-then-rename is quick.
NOTHING = ""
SAW_NOTHING_MS = 60_000


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


@dataclass(frozen=True)
class Caller:
    """Who makes a request: uid and the groups it belongs to (primary and supplementary)."""

    uid: int
    groups: frozenset[int]


NODE_TYPES = {stat.S_IFIFO: "p", stat.S_IFSOCK: "s", stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
FILE_TYPES = {"d": stat.S_IFDIR, "l": stat.S_IFLNK, "f": stat.S_IFREG} | {
    v: k for k, v in NODE_TYPES.items()
}
# Entry fields that a queued upload record carries to its commit.
RECORD_FIELDS = frozenset({"mode", "mtime_ns", "ctime_ns", "atime_ns"})


def mode_bits(attr: Attr) -> int:
    return FILE_TYPES[attr.type] | (attr.mode & 0o7777)


class Attributes(FileContent):
    """Attributes of paths and open files, and their changes (queued with a file's
    upload when it has one, so that tar and rsync cost no round trip)."""

    # -- reading attributes -------------------------------------------------------------

    def getattr(self, path: str) -> Attr:
        with self.lock:
            gone = self.hidden.get(path)
        if gone is not None:
            return self._open_attr(gone)
        try:
            e = self.lookup(path)
        except NotFound:
            self._saw_nothing(path)
            raise
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

    def _saw_nothing(self, path: str) -> None:
        """A program here was told that ``path`` does not exist: a rename it makes
        over that name soon after replaces nothing (fs_namespace._seen_at)."""
        try:
            parent_id, name, _ = self._raw_entry(path)
        except CsfsError:
            return  # no parent folder either: nothing to remember
        with self.lock:
            self.seen[(parent_id, name)] = (NOTHING, int(time.monotonic() * 1000))

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

    # -- changing attributes ------------------------------------------------------------

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

    @committing
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._writable()
        self._setattr(path, fh=fh, mode=mode & 0o7777, ctime_ns=time.time_ns())

    @committing
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

    @committing
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
        folder = self.vault.lookup(path)
        with self.lock:
            self.touched.pop(folder.id, None)
        self._set_manifest(folder.id, changes)

    def _set_manifest(self, dir_id: str, changes: dict[str, Any]) -> None:
        """Set fields of a folder's own manifest (its times; the root's mode and
        owner): one switch, or a queued change while the store is away."""
        if self._online():
            try:
                self.vault.update_dir(
                    dir_id, lambda m: m.set_fields(changes), force=True, touch=False
                )
                return
            except TransientStoreError:
                self.vault.went_offline()
        self.queue.add_op(NamespaceOp(0, "dirattr", dir_id, "", "", manifest=dict(changes)))

    # -- extended attributes (user.* only, in the entry: format.md 5.3) -----------------

    def getxattr(self, path: str, name: str) -> bytes:
        value = self._xattr_entry(path).xattr_dict().get(name)
        if value is None:
            raise XattrMissing(f"no extended attribute {name[:40]!r}")
        return value

    def listxattr(self, path: str) -> list[str]:
        return [n for n, _ in self._xattr_entry(path).xattrs]

    @committing
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

    @committing
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
        if not split_path(path):
            # The root has no entry: its mode, owner and times are in its manifest.
            if set(changes) - MANIFEST_FIELDS:
                raise NotSupported("the vault root keeps only its mode, owner and times")
            self._set_manifest(self.vault.root_id, changes)
            return self.vault.root_entry()
        if self._online():
            try:
                return self.vault.setattr(path, **changes)
            except TransientStoreError:
                self.vault.went_offline()
        parent_id, name = self.vault.parent_of(path)
        new = replace(e, **changes)
        self.queue.add_op(
            NamespaceOp(0, "setattr", e.id, parent_id, name, new.to_json(), fields=sorted(changes))
        )
        return new

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
