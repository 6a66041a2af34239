"""Paths: resolving a vault path to its entry, listing a folder, the path of a
folder as this client knows it, and walking a tree. Reads only; every change is in
namespace.py."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from csfs.errors import IntegrityError, NotADirectory, NotFound, UsageError
from csfs.vault.core import VaultCore
from csfs.vault.manifest import Entry, check_name


def split_path(path: str) -> list[str]:
    """'/a/b' -> ['a', 'b']; the vault path syntax is POSIX, always absolute."""
    norm = posixpath.normpath("/" + path.strip())
    return [check_name(p) for p in norm.split("/") if p]


class Paths(VaultCore):
    """Path lookup through the manifests (with the changes queued offline shown)."""

    # -- paths --------------------------------------------------------------------

    def root_entry(self) -> Entry:
        manifest = self.view_dir(self.root_id)  # with changes queued offline
        return Entry(
            self.root_id,
            "d",
            mode=manifest.mode,
            mtime_ns=manifest.mtime_ns,
            ctime_ns=manifest.ctime_ns,
            atime_ns=manifest.atime_ns,
            uid=manifest.uid,
            gid=manifest.gid,
        )

    def lookup(self, path: str) -> Entry:
        parts = split_path(path)
        entry = self.root_entry()
        above = {entry.id}  # the folders on this path: one met again is a cycle
        for i, name in enumerate(parts):
            if entry.type != "d":
                raise NotADirectory(f"not a directory: /{'/'.join(parts[:i])}")
            manifest = self.view_dir(entry.id)
            found = manifest.entries.get(name)
            if found is None:
                raise NotFound(f"no such file or directory: /{'/'.join(parts[: i + 1])}")
            if found.type == "d":
                if found.id in above:
                    raise IntegrityError(cycle_message("/" + "/".join(parts[: i + 1])))
                above.add(found.id)
            entry = found
        return entry

    def parent_of(self, path: str) -> tuple[str, str]:
        """(directory id of the parent, final name) for a path that is not the root."""
        parts = split_path(path)
        if not parts:
            raise UsageError("the vault root cannot be changed this way")
        parent = self.lookup("/" + "/".join(parts[:-1]))
        if parent.type != "d":
            raise NotADirectory(f"not a directory: /{'/'.join(parts[:-1])}")
        return parent.id, parts[-1]

    def listdir(self, path: str = "/") -> dict[str, Entry]:
        entry = self.lookup(path)
        if entry.type != "d":
            raise NotADirectory(f"not a directory: {path}")
        return dict(self.view_dir(entry.id).entries)

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except NotFound:
            return False
        return True

    def path_of(self, dir_id: str) -> str | None:
        """The path of a directory as this client knows it (for messages); None if unknown."""
        parts: list[str] = []
        node = dir_id
        for _ in range(256):
            if node in (self.root_id, self.header.root_id):
                return "/" + "/".join(reversed(parts))
            with self._lock:
                parents = sorted(self._parents.get(node, ()))
            if not parents:
                self._discover(node)
                with self._lock:
                    parents = sorted(self._parents.get(node, ()))
            if not parents:
                return None
            listing = self.load_dir(parents[0])[0].entries
            names = [n for n, e in listing.items() if e.id == node]
            if not names:
                return None
            parts.append(names[0])
            node = parents[0]
        return None

    # -- trees ------------------------------------------------------------------------

    def walk(
        self, path: str = "/", entry: Entry | None = None, *, fresh: bool = False
    ) -> Iterator[tuple[str, Entry]]:
        """Every (path, entry) under ``path``, depth first, parents before children;
        ``fresh`` re-reads every manifest instead of trusting the TTL cache."""
        stack = [(path, entry or self.lookup(path))]
        expanded: set[str] = set()  # a node listed twice, or a cycle, is entered once
        while stack:
            path, entry = stack.pop()
            yield path, entry
            if entry.type == "d" and entry.id not in expanded:
                expanded.add(entry.id)
                manifest = self.load_dir(entry.id, fresh=fresh)[0]
                for name, child in sorted(manifest.entries.items(), reverse=True):
                    stack.append((posixpath.join(path, name), child))


def cycle_message(path: str) -> str:
    return f"directory cycle in the vault: {path} leads back to a folder above it"
