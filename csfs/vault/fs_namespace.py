"""Namespace changes in a mount session (csfs.vault.filesystem): make, remove and
rename entries, each one conditional switch of a manifest when the store answers,
or a queued change (applied later, as conditionally) while it does not."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from csfs.errors import (
    AlreadyExists,
    CrossShare,
    DirectoryNotEmpty,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotSupported,
    TransientStoreError,
    UsageError,
)
from csfs.vault.attributes import NOTHING, SAW_NOTHING_MS, Attributes
from csfs.vault.crashpoint import crash_point
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.session import committing
from csfs.vault.upload_queue import NamespaceOp
from csfs.vault.vault import split_path

EXCHANGE_WAIT = 60.0  # seconds an exchange waits for the files' queued versions


class Namespace(Attributes):
    """Folders, links, unlink and rename, online or queued."""

    # libfuse renames an open file that is unlinked to this prefix and unlinks that
    # name on the last release. Here that rename is the unlink: the name leaves the
    # folder at once (POSIX), and the open file answers under its hidden name.
    HIDDEN = ".fuse_hidden"

    @committing
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

    @committing
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

    @committing
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

    @committing
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
            saw = self._seen_at(dst_parent, dst_name, stored)
            if saw is not None and saw[0] == stored.id and (
                stored.version in self.queue.own_versions(stored.id)
            ):
                # What was seen there is a version of ours still queued, which this
                # rename drops (below): it replaces what the store holds of that file.
                saw = (stored.id, stored.version)
            replaces = None if saw is None else list(saw)
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
                saw = self._seen_at(dst_parent, dst_name, stored)
                expect = None if saw is None else Entry(saw[0], "f", version=saw[1])
            if target_created is not None:
                expect = None if replaces is None else Entry(replaces[0], "f", version=replaces[1])
            entry = self._move(old, new, src, target, expect, noreplace=noreplace)
            if stored is not None and stored.id != entry.id:
                self._forget_file(stored)
        crash_point("renamed")
        with self.lock:
            was = self.seen.pop((src_parent, src_name), None)
            self.seen.pop((dst_parent, dst_name), None)
            if was is not None and was[0] != NOTHING:
                self.seen[(dst_parent, dst_name)] = was
        parent_id, name = dst_parent, dst_name
        if entry.type == "f":
            now = time.time_ns()
            self.queue.update(entry.id, parent_id=parent_id, name=name, ctime_ns=now)
            with self.lock:
                of = self.open_files.get(entry.id)
                if of is not None:
                    of.parent_id, of.name, of.ctime_ns = parent_id, name, now

    def exchange(self, old: str, new: str) -> None:
        """renameat2(RENAME_EXCHANGE) within one folder: one switch of names the store
        holds, so versions of either file still queued here are committed first."""
        self._writable()
        if self.vault.parent_of(old)[0] != self.vault.parent_of(new)[0]:
            raise UsageError("names are exchanged only within one folder")  # EINVAL
        for path in (old, new):
            _, _, e = self._raw_entry(path)
            if e is None:
                raise NotFound(f"no such file or directory: {path}")
            if e.type == "f" and not self.queue.wait(e.id, timeout=EXCHANGE_WAIT):
                raise TransientStoreError("a file being exchanged could not be stored yet")
        with self.vault.commit_lock:
            parent_id, name_a, a = self._raw_entry(old)
            _, name_b, b = self._raw_entry(new)
            with self.lock:
                made_here = {(parent_id, name_a), (parent_id, name_b)} & set(self.created)
            if made_here or self.queue.pending_ops() or not self._online():
                raise TransientStoreError("names are exchanged only while the store answers")
            self.vault.exchange(old, new)
            with self.lock:
                seen_a = self.seen.pop((parent_id, name_a), None)
                seen_b = self.seen.pop((parent_id, name_b), None)
                if seen_a is not None:
                    self.seen[(parent_id, name_b)] = seen_a
                if seen_b is not None:
                    self.seen[(parent_id, name_a)] = seen_b
            now = time.time_ns()
            for e, name in ((a, name_b), (b, name_a)):
                if e is None or e.type != "f":
                    continue
                self.queue.update(e.id, name=name, ctime_ns=now)  # a version sealed since
                with self.lock:
                    of = self.open_files.get(e.id)
                if of is not None:
                    with of.lock:
                        of.name, of.ctime_ns = name, now

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

    def _seen_at(self, parent_id: str, name: str, stored: Entry) -> tuple[str, int] | None:
        """What a rename over ``name`` replaces: the file a program here last opened
        or wrote there; None if a program was told just before that nothing is there
        (what another client made there meanwhile is kept); else the stored entry
        (it was not read, only named)."""
        with self.lock:
            seen = self.seen.get((parent_id, name))
        if seen is not None and seen[0] == NOTHING:
            if time.monotonic() * 1000 - seen[1] < SAW_NOTHING_MS:
                return None
            seen = None
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

    @committing
    def symlink(self, target: str, path: str, owner: tuple[int, int] | None = None) -> None:
        self._writable()
        _, meta = self._new_owner(path, 0o777, owner, folder=False)
        self.vault.symlink(target, path, **meta)

    def link(self, target: str, path: str) -> None:
        raise NotSupported("hard links are not supported")

    # -- namespace changes queued while the store is away -------------------------------

    def _overlay_dir(
        self, dir_id: str, base: Callable[[], DirectoryManifest]
    ) -> DirectoryManifest | None:
        """A folder with the queued changes that touch it applied; None if none does."""
        ops = [
            op
            for op in self.queue.pending_ops()
            if dir_id in (op.parent_id, op.dst_parent_id)
            or (op.kind in ("mkdir", "dirattr") and op.node_id == dir_id)
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
            if op.kind == "dirattr":
                m.set_fields(op.manifest)
                continue
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
            elif op.kind == "dirattr":
                fields = op.manifest
                v.update_dir(
                    op.node_id, lambda m: m.set_fields(fields), force=True, touch=False
                )
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
