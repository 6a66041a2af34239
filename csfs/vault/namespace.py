"""The namespace changes (mkdir, symlink and nodes, setattr, remove, rename, and
their conditional forms the upload queue applies), each one conditional manifest
switch or, across folders, two in a crash-safe order (docs/format.md 5.5). Paths
are resolved in paths.py."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from csfs.errors import (
    AlreadyExists,
    ContentionError,
    CrossShare,
    CsfsError,
    DirectoryNotEmpty,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotSupported,
    PreconditionFailed,
    UsageError,
)
from csfs.vault.crashpoint import crash_point
from csfs.vault.layout import manifest_key, new_id
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import MAX_RETRIES, conflict_name, still_holds
from csfs.vault.paths import Paths, split_path


class Unset:
    """The type of UNSET: an argument not given (where None means something)."""


UNSET = Unset()


class Namespace(Paths):
    """Path lookup and the namespace changes, each a conditional manifest switch.

    Never replaces what another writer put at a name since the caller looked
    (it becomes a conflict copy or stays), and never moves a node across a share
    boundary (its versions are wrapped to the readers where it is).
    """

    def new_directory(
        self, parent: DirectoryManifest, mode: int, dir_id: str | None = None, *, put: bool = True
    ) -> DirectoryManifest:
        """A new empty folder's manifest (put in the store unless ``put`` is False:
        a folder made offline). With ``dir_id``: that id (a queued mkdir, applied
        again after a crash: the manifest may be in the store already)."""
        self.check_writable(parent.dir_id)
        dir_id = dir_id or new_id()
        self.note_parent(dir_id, parent.dir_id)
        readers = self._log_checked(dir_id, parent.readers)
        child = DirectoryManifest(
            dir_id, version=1, readers=readers, mtime_ns=time.time_ns(), mode=mode
        )
        if put:
            with contextlib.suppress(PreconditionFailed):
                # Only ours: a random 128-bit id. Taken already by an earlier attempt.
                self.store.put(
                    manifest_key(dir_id),
                    child.seal(self.vault_id, self.identity),
                    if_none_match=True,
                )
        return child

    # -- directories and links ----------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False, **meta: Any) -> Entry:
        """``meta``: further Entry fields of the new directory (owner, for example)."""
        parts = split_path(path)
        if parents:
            for i in range(1, len(parts)):
                sub = "/" + "/".join(parts[:i])
                if not self.exists(sub):
                    self.mkdir(sub, mode)
        parent_id, name = self.parent_of(path)
        parent, _ = self.load_dir(parent_id)
        if name in parent.entries:
            if parents and parent.entries[name].type == "d":
                return parent.entries[name]
            raise AlreadyExists(f"already exists: {path}")
        entry = Entry(
            self.new_directory(parent, mode).dir_id,
            "d",
            mode=mode,
            mtime_ns=time.time_ns(),
            **meta,
        )

        def add(m: DirectoryManifest) -> Entry:
            if name in m.entries:
                # Another client made it first: keep theirs; ours is an empty orphan.
                if m.entries[name].type == "d":
                    return m.entries[name]
                raise AlreadyExists(f"already exists: {path}")
            m.entries[name] = entry
            return entry

        return self.update_dir(parent_id, add)

    def symlink(self, target: str, path: str, **meta: Any) -> Entry:
        return self.make_node(path, Entry(new_id(), "l", mode=0o777, target=target, **meta))

    def make_node(self, path: str, entry: Entry) -> Entry:
        """Add a content-less entry (symlink, FIFO, socket, device) under a new name."""
        parent_id, name = self.parent_of(path)
        entry = replace(entry, mtime_ns=time.time_ns())

        def add(m: DirectoryManifest) -> Entry:
            if name in m.entries:
                raise AlreadyExists(f"already exists: {path}")
            m.entries[name] = entry
            return entry

        return self.update_dir(parent_id, add)

    def setattr(self, path: str, **changes: Any) -> Entry:
        """Change Entry fields other than id, type and content (mode, owner, times, xattrs)."""
        if not split_path(path):
            # The root has no entry in a parent: its manifest holds its mode and times.
            if set(changes) - {"mode", "mtime_ns", "atime_ns", "ctime_ns", "uid", "gid"}:
                raise NotSupported("the vault root keeps only its mode, owner and times")

            self.update_dir(self.root_id, lambda m: m.set_fields(changes), touch=False)
            return self.root_entry()
        parent_id, name = self.parent_of(path)

        def change(m: DirectoryManifest) -> Entry:
            cur = m.entries.get(name)
            if cur is None:
                raise NotFound(f"no such file or directory: {path}")
            new = replace(cur, **changes)
            m.entries[name] = new
            return new

        # An entry's attributes are not the folder's content: its times stay (POSIX).
        return self.update_dir(parent_id, change, touch=False)

    def remove(
        self,
        path: str,
        *,
        recursive: bool = False,
        expect_dir: bool | None = None,
        expect: tuple[str, int | None] | None = None,
        own_versions: Callable[[str], set[int]] | None = None,
    ) -> Entry | None:
        """Remove ``path``; the removed entry. With ``expect`` (the node id and, if
        known, version the caller saw there) it removes only that: if the name holds
        another node by the switch, or a version of it the caller did not see (and
        ``own_versions(id)`` does not name), that is newer than the removal and stays;
        None then."""
        parent_id, name = self.parent_of(path)
        seen = self.lookup(path)
        folder = seen.type == "d" and expect_dir is not False
        folder = folder and (expect is None or seen.id == expect[0])
        if folder and recursive:
            try:
                self._mark_removed(seen.id, parent_id, name, path, empty=False)
            except CsfsError:
                # Unreadable (damaged, forged): rm -r still removes the entry, and
                # fsck collects what it held.
                folder = False
        elif folder:
            # Step 1 of a folder's removal (format.md 5.5): its manifest, marked.
            self._mark_removed(seen.id, parent_id, name, path)
        if folder:
            crash_point("rmdir-marked")

        def drop(m: DirectoryManifest) -> Entry | None:
            cur = m.entries.get(name)
            if cur is None:
                raise NotFound(f"no such file or directory: {path}")
            if expect is not None and not still_holds(cur, *expect, own_versions):
                return None
            if expect_dir is True and cur.type != "d":
                raise NotADirectory(f"not a directory: {path}")
            if expect_dir is False and cur.type == "d":
                raise IsADirectory(f"is a directory: {path}", hint="use rm -r")
            if cur.type == "d" and not recursive and cur.id != seen.id:
                # Another folder took the name since it was looked up (not marked).
                raise ContentionError(f"{path} was replaced meanwhile; try again")
            del m.entries[name]
            return cur

        # The objects of what was removed become orphans; `csfs fsck --repair` collects them.
        try:
            removed = self.update_dir(parent_id, drop)
        except BaseException:
            if folder:
                self._unmark_removed(seen.id)
            raise
        if folder:
            crash_point("rmdir-unlisted")
            self._after_removal(seen.id, removed, parent_id, name)
        return removed

    def _mark_removed(
        self, dir_id: str, parent_id: str, name: str, path: str, *, empty: bool = True
    ) -> None:
        """Mark a folder's manifest removed, conditional on the version read; with
        ``empty`` (not rm -r), on its being empty: a name another client added
        meanwhile makes the rmdir fail."""

        def mark(m: DirectoryManifest) -> None:
            if empty and m.entries:
                raise DirectoryNotEmpty(f"directory not empty: {path}", hint="use rm -r")
            m.removed = (parent_id, name)

        self.update_dir(dir_id, mark)

    def _unmark_removed(self, dir_id: str) -> None:
        """The folder stays (its removal failed): clear the mark again."""

        def unmark(m: DirectoryManifest) -> None:
            m.removed = None

        self.update_dir(dir_id, unmark)

    def _after_removal(
        self, dir_id: str, removed: Entry | None, parent_id: str, name: str
    ) -> None:
        """Step 3 (format.md 5.5): read the folder again; a writer that added a name
        since the mark took the mark off, and the folder goes back into its parent."""
        if removed is None or removed.id != dir_id:
            self._unmark_removed(dir_id)  # the name held another node: ours stays
            return
        now, _ = self.load_dir(dir_id, fresh=True)
        if now.removed is None:
            self.relist(dir_id, now.mode, parent_id, name)

    def rename(
        self,
        src: str,
        dst: str,
        *,
        replace_existing: bool = True,
        expect: Entry | Unset | None = UNSET,
        own_versions: Callable[[str], set[int]] | None = None,
        ctime_ns: int | None = None,
    ) -> Entry:
        """Move ``src`` to ``dst``. With ``expect`` (what the caller saw at ``dst``,
        None for nothing), replacing is conditional like a write: a file that another
        client put at ``dst`` meanwhile is kept there as a conflict copy, not lost.
        ``own_versions(id)`` names versions the caller itself may have committed
        since it looked (its upload queue). ``ctime_ns``: also set the moved entry's
        change time (POSIX: a rename changes it)."""
        src_parent, src_name = self.parent_of(src)
        dst_parent, dst_name = self.parent_of(dst)
        entry = self.lookup(src)
        if (src_parent, src_name) == (dst_parent, dst_name):
            return entry  # rename(2) of a path onto itself: nothing to do
        if ctime_ns is not None:
            entry = replace(entry, ctime_ns=ctime_ns)
        if self.share_roots_of(src_parent) != self.share_roots_of(dst_parent):
            # Its objects are wrapped to the readers where it is: moved across a share
            # boundary it would stay readable to the old readers and not to the new.
            # EXDEV makes mv copy (new versions, wrapped right) and delete.
            raise CrossShare(f"cannot move {src} across a share boundary", hint="copy it instead")
        if entry.type == "d":
            dst_parts = split_path(dst)
            if dst_parts[: len(split_path(src))] == split_path(src):
                raise UsageError(f"cannot move {src} into itself")

        def unexpected(cur: Entry) -> bool:
            if isinstance(expect, Unset) or cur.type != "f" or entry.type != "f":
                return False
            return (
                expect is None
                or cur.type != expect.type
                or not still_holds(cur, expect.id, expect.version, own_versions)
            )

        # A folder replaced by this rename is removed as an rmdir is (format.md 5.5):
        # marked first, so that a name another client adds to it meanwhile is kept.
        try:
            target = self.lookup(dst)
        except NotFound:
            target = None
        doomed = None
        if (
            replace_existing
            and target is not None
            and target.type == "d"
            and entry.type == "d"
            and target.id != entry.id
        ):
            dst_parent_id, _ = self.parent_of(dst)
            self._mark_removed(target.id, dst_parent_id, dst_name, dst)
            doomed = target.id

        def place(m: DirectoryManifest, moving: Entry) -> None:
            cur = m.entries.get(dst_name)
            if cur is not None and cur.id != moving.id:
                if not replace_existing:
                    raise AlreadyExists(f"already exists: {dst}")
                if cur.type == "d" and (moving.type != "d" or cur.id != doomed):
                    raise DirectoryNotEmpty(f"cannot replace directory {dst}")
                if cur.type != "d" and moving.type == "d":
                    raise NotADirectory(f"cannot replace non-directory {dst} with a directory")
                if unexpected(cur):
                    # Changed by another client since the caller looked: keep it.
                    m.entries[conflict_name(dst_name, m.entries, self.identity)] = cur
            m.entries[dst_name] = moving

        if src_parent == dst_parent:

            def move(m: DirectoryManifest) -> Entry:
                cur = m.entries.get(src_name)
                if cur is None:
                    raise NotFound(f"no such file or directory: {src}")
                del m.entries[src_name]
                if ctime_ns is not None:
                    cur = replace(cur, ctime_ns=ctime_ns)
                place(m, cur)
                return cur

            switch = functools.partial(self.update_dir, src_parent, move)
        else:
            moved = entry

            def add(m: DirectoryManifest) -> Entry:
                place(m, moved)
                return moved

            switch = functools.partial(self.update_dir, dst_parent, add)
        try:
            placed = switch()
        except BaseException:
            if doomed is not None:
                self._unmark_removed(doomed)
            raise
        if doomed is not None:
            self._after_removal(doomed, Entry(doomed, "d"), dst_parent, dst_name)
        if src_parent == dst_parent:
            return placed
        return self._drop_moved(src_parent, src_name, dst_parent, dst_name, placed, ctime_ns)

    def exchange(self, path_a: str, path_b: str) -> None:
        """Swap the entries of two names in one folder (renameat2's RENAME_EXCHANGE):
        one manifest switch, made only while the names still hold the nodes looked up
        (another client's change meanwhile makes it fail, and nothing moves)."""
        parent_a, name_a = self.parent_of(path_a)
        parent_b, name_b = self.parent_of(path_b)
        if parent_a != parent_b:
            # Two manifests cannot switch at once: a crash between would lose a name.
            raise UsageError("names are exchanged only within one folder")
        a, b = self.lookup(path_a), self.lookup(path_b)
        if a.id == b.id:
            return

        def swap(m: DirectoryManifest) -> None:
            cur_a, cur_b = m.entries.get(name_a), m.entries.get(name_b)
            if cur_a is None or cur_b is None:
                raise NotFound(f"no such file or directory: {path_a if cur_a is None else path_b}")
            if cur_a.id != a.id or cur_b.id != b.id:
                raise ContentionError("another client changed a name being exchanged; try again")
            now = time.time_ns()
            m.entries[name_a] = replace(cur_b, ctime_ns=now)
            m.entries[name_b] = replace(cur_a, ctime_ns=now)

        self.update_dir(parent_a, swap)

    def _drop_moved(
        self,
        src_parent: str,
        src_name: str,
        dst_parent: str,
        dst_name: str,
        moved: Entry,
        ctime_ns: int | None,
    ) -> Entry:
        """The second step of a move across directories: it was added to the target
        first, so a crash in between leaves the node in both places (fsck reports
        it), never in neither."""
        crash_point("renamed-across")

        def drop(m: DirectoryManifest) -> Entry | None:
            cur = m.entries.get(src_name)
            if cur is None or cur.id != moved.id:
                return None
            if replace(cur, ctime_ns=moved.ctime_ns) != moved:
                # Changed by another client since ``entry`` was read (a newer version,
                # a chmod): the destination takes that first, or it would be lost.
                return cur
            del m.entries[src_name]
            return None

        for _ in range(MAX_RETRIES):
            newer = self.update_dir(src_parent, drop)
            if newer is None:
                return moved
            if ctime_ns is not None:
                newer = replace(newer, ctime_ns=ctime_ns)

            def carry(m: DirectoryManifest, old: Entry = moved, new: Entry = newer) -> bool:
                cur = m.entries.get(dst_name)
                if cur is None or cur.id != old.id:
                    return False  # the destination changed meanwhile: ``new`` stays at src
                m.entries[dst_name] = new
                return True

            if not self.update_dir(dst_parent, carry):
                return moved
            moved = newer
        raise ContentionError("gave up after repeated concurrent changes to a moved file")

    def remove_if(
        self,
        dir_id: str,
        name: str,
        node_id: str,
        version: int | None,
        own_versions: Callable[[str], set[int]] | None = None,
    ) -> None:
        """Remove ``name`` only if it still holds that node at that version (None:
        any; ``own_versions(id)``: also those): a newer one written meanwhile by
        another client stays. A folder is removed only while empty, in the three
        steps of format.md 5.5."""
        seen = self.load_dir(dir_id)[0].entries.get(name)
        folder = seen is not None and seen.type == "d" and seen.id == node_id
        if folder:
            try:
                self._mark_removed(node_id, dir_id, name, name)
            except DirectoryNotEmpty:
                raise DirectoryNotEmpty(
                    f"another client put files in {name!r} meanwhile"
                ) from None

        def drop(m: DirectoryManifest) -> Entry | None:
            cur = m.entries.get(name)
            if cur is None or not still_holds(cur, node_id, version, own_versions):
                return None
            if cur.type == "d" and not folder:
                raise ContentionError(f"the folder {name!r} changed meanwhile; try again")
            del m.entries[name]
            return cur

        try:
            removed = self.update_dir(dir_id, drop)
        except BaseException:
            if folder:
                self._unmark_removed(node_id)
            raise
        if folder:
            self._after_removal(node_id, removed, dir_id, name)

    def add_directory(self, dir_id: str, name: str, entry: Entry) -> None:
        """Put a folder made offline (``entry.id``) into ``dir_id`` under ``name``, or,
        if another client took the name meanwhile, under a conflict name."""
        parent, _ = self.load_dir(dir_id)
        self.new_directory(parent, entry.mode, entry.id)

        def add(m: DirectoryManifest) -> None:
            if any(e.id == entry.id for e in m.entries.values()):
                return  # added already (applied again after a crash)
            at = name if name not in m.entries else conflict_name(name, m.entries, self.identity)
            m.entries[at] = entry

        self.update_dir(dir_id, add)

    def set_entry(self, dir_id: str, name: str, node_id: str, changes: dict[str, Any]) -> None:
        """Change fields of the entry ``name`` if it still holds ``node_id``."""

        def change(m: DirectoryManifest) -> None:
            cur = m.entries.get(name)
            if cur is not None and cur.id == node_id:
                m.entries[name] = replace(cur, **changes)

        self.update_dir(dir_id, change, touch=False)
