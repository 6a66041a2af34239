"""The local side of `get` and `put`: writing a vault tree to disk, reading one from it.

Protects against a tree written by someone else (a write member, or the
store) that tries to make a download write outside its destination
(docs/design.md, downloads): every path component below the destination is
opened relative to its parent's descriptor with O_NOFOLLOW, so a symbolic
link is never followed, whether this run made it, an earlier download did, or
two names alias one local name. A folder is never replaced and never replaces
anything; modes are masked by the umask and lose setuid, setgid and sticky.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from csfs.errors import AlreadyExists, FormatError, UsageError
from csfs.vault.manifest import Entry, check_name, shown_name

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_PREFIX = ".csfs-tmp-"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def local_mode(mode: int, umask: int) -> int:
    """What a downloaded file or folder gets: permission bits only, masked by the umask."""
    return mode & 0o777 & ~umask


def _set_time(fd: int, mtime_ns: int) -> None:
    # A time the platform cannot hold (a writer chose it) leaves the file's own time.
    with contextlib.suppress(OverflowError):
        os.utime(fd, ns=(mtime_ns, mtime_ns))


def _kind(st_mode: int) -> str:
    if stat.S_ISDIR(st_mode):
        return "a folder"
    if stat.S_ISLNK(st_mode):
        return "a symbolic link"
    if stat.S_ISREG(st_mode):
        return "a file"
    return "a special file"


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@dataclass
class Destination:
    """A download destination folder, held open; ``shown`` is the path the user named."""

    fd: int
    shown: str
    created: bool  # this run made it: removed again if the download fails

    def path(self, parts: list[str]) -> str:
        return os.path.join(self.shown, *(shown_name(p) for p in parts))

    @contextlib.contextmanager
    def folder(self, parts: list[str]) -> Iterator[int]:
        """A descriptor on the folder ``parts`` below the destination, reached without
        following any symbolic link."""
        fd = os.open(".", DIR_FLAGS, dir_fd=self.fd)
        try:
            for i, name in enumerate(parts):
                try:
                    nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    st = _lstat_at(fd, name)
                    if st is not None and not stat.S_ISDIR(st.st_mode):
                        raise AlreadyExists(
                            f"{self.path(parts[: i + 1])} is {_kind(st.st_mode)}, not a folder; "
                            "not followed"
                        ) from None
                    raise OSError(exc.errno, exc.strerror, self.path(parts[: i + 1])) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def make_folder(self, parts: list[str]) -> None:
        """Create the folder (owner-only until its mode is set) or reuse a real one."""
        with self.folder(parts[:-1]) as parent:
            name = parts[-1]
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
                return
            except FileExistsError:
                pass
            st = _lstat_at(parent, name)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise AlreadyExists(
                    f"{self.path(parts)} exists and is {_kind(st.st_mode)}, not a folder; "
                    "not replaced"
                )
        with self.folder(parts) as fd:
            # An earlier download may have left it read-only: writable until set_folder.
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o700 != 0o700:
                os.fchmod(fd, mode | 0o700)

    def set_folder(self, parts: list[str], mode: int, mtime_ns: int) -> None:
        with self.folder(parts) as fd:
            os.fchmod(fd, mode)
            _set_time(fd, mtime_ns)

    def _replaceable(self, parent: int, parts: list[str], overwrite: bool) -> None:
        st = _lstat_at(parent, parts[-1])
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise AlreadyExists(f"{self.path(parts)} exists and is a folder; not replaced")
        if not overwrite:
            raise AlreadyExists(
                f"{self.path(parts)} already exists", hint="use --force to replace it"
            )

    def place_link(self, parts: list[str], target: str, *, overwrite: bool) -> None:
        """A symbolic link at ``parts``; replaces a file or link (never a folder), never
        follows one."""
        if not target or "\0" in target:
            raise FormatError(f"{self.path(parts)}: the vault holds a symbolic link with no target")
        with self.folder(parts[:-1]) as parent:
            name = parts[-1]
            st = _lstat_at(parent, name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                if os.readlink(name, dir_fd=parent) == target:
                    return
            self._replaceable(parent, parts, overwrite)
            tmp = TMP_PREFIX + secrets.token_hex(8)
            os.symlink(target, tmp, dir_fd=parent)
            try:
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=parent)
                raise

    def write_file(
        self,
        parts: list[str],
        entry: Entry,
        fill: Callable[[BinaryIO], object],
        *,
        umask: int,
        overwrite: bool,
    ) -> None:
        """Write through a temp file in the target folder, then rename: no partial
        plaintext under the final name, and the temp file removed on any failure."""
        with self.folder(parts[:-1]) as parent:
            self._replaceable(parent, parts, overwrite)
            tmp = TMP_PREFIX + secrets.token_hex(8)
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fchmod(f.fileno(), local_mode(entry.mode, umask))
                    _set_time(f.fileno(), entry.mtime_ns)
                self._replaceable(parent, parts, overwrite)
                os.replace(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=parent)
                raise

    def close(self, *, failed: bool) -> None:
        os.close(self.fd)
        if failed and self.created:
            # Only what this run made; rmtree never follows a symbolic link.
            shutil.rmtree(self.shown, ignore_errors=True)


def open_destination(local: str, *, tree: bool) -> tuple[Destination, list[str]]:
    """The folder a download writes into, and the name(s) below it it writes.

    For a tree, ``local`` itself becomes the top folder (created if missing, with
    missing parents, like `mkdir -p`), and is not followed if it is a symbolic
    link: `csfs get` names it by appending the vault name to a folder the user
    gave. For one file, ``local``'s folder must exist. The folders above are
    the user's and are taken as given; nothing below is followed.
    """
    shown = os.path.abspath(local)
    parent, name = os.path.split(shown.rstrip("/") or "/")
    created = False
    if tree:
        if not os.path.lexists(shown):
            os.makedirs(parent, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(shown, 0o700)
                created = True
        try:
            fd = os.open(shown, DIR_FLAGS)
        except OSError:
            st = os.lstat(shown) if os.path.lexists(shown) else None
            if st is None or stat.S_ISDIR(st.st_mode):
                raise
            raise AlreadyExists(
                f"{local} exists and is {_kind(st.st_mode)}, not a folder; not replaced"
            ) from None
        return Destination(fd, shown, created), []
    if not name:
        raise UsageError(f"not a file name: {local}")
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"no such local folder: {parent}") from None
    return Destination(fd, parent, False), [name]


# -- reading a local tree for `put -r` ----------------------------------------------------


@dataclass
class LocalItem:
    parts: list[str]  # below the local top folder
    type: str  # "f", "d" or "l"
    st: os.stat_result
    target: str = ""


def check_local_name(name: str, path: str) -> str:
    """A local name as a vault name: strict UTF-8, no surrogateescape round trip."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"file name is not valid UTF-8: {shown_name(path)}",
            hint="rename it; vault names are UTF-8 (docs/format.md 5.3)",
        ) from None
    return check_name(name)


def scan_local_tree(top: str) -> list[LocalItem]:
    """Everything below ``top``, parents before children, checked before any upload:
    names are UTF-8, and each item is a regular file, a folder or a symbolic link
    (stored as a link, never followed)."""
    out: list[LocalItem] = []
    todo: list[list[str]] = [[]]
    while todo:
        parts = todo.pop()
        folder = os.path.join(top, *parts)
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it)
        for name in names:
            path = os.path.join(folder, name)
            check_local_name(name, path)
            st = os.lstat(path)
            child = [*parts, name]
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                try:
                    target.encode("utf-8")
                except UnicodeEncodeError:
                    raise UsageError(
                        f"symbolic link target is not valid UTF-8: {shown_name(path)}"
                    ) from None
                out.append(LocalItem(child, "l", st, target))
            elif stat.S_ISDIR(st.st_mode):
                out.append(LocalItem(child, "d", st))
                todo.append(child)
            elif stat.S_ISREG(st.st_mode):
                out.append(LocalItem(child, "f", st))
            else:
                raise UsageError(
                    f"not a regular file, folder or symbolic link: {shown_name(path)}",
                    hint="remove it or copy the folder without it",
                )
    return out
