"""FUSE operations -> file system calls. No crypto and no boto3 here.

Errors map onto errno in one place (:func:`errno_for`). An exception in a
handler becomes an errno for that one call; it never takes the mount down.
Tampered data is reported as EIO and logged.

The log is a file on the local disk, and no file name may reach the local disk
(docs/design.md): it names files by their random node ids, and takes paths out
of error messages, unless the mount was started with ``--log-paths``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy as fuse

from csfs.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationError,
    BadHandle,
    ContentionError,
    CrossShare,
    CsfsError,
    DirectoryNotEmpty,
    FileTooBig,
    FormatError,
    IsADirectory,
    NameTooLong,
    NoMatchingKeyError,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnlyMount,
    UsageError,
    XattrMissing,
    XattrNoSpace,
    XattrTooBig,
    XattrUnsupported,
)
from csfs.vault.attributes import Attr, Caller, mode_bits
from csfs.vault.filesystem import FileSystem
from csfs.vault.manifest import XATTR_PREFIX

log = logging.getLogger("csfs.fuse")
RENAME_NOREPLACE = 1  # <linux/fs.h>
RENAME_EXCHANGE = 2

F = TypeVar("F", bound=Callable[..., Any])
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

_ERRNO: list[tuple[type[BaseException], int]] = [
    (NotFound, errno.ENOENT),
    (AlreadyExists, errno.EEXIST),
    (NotADirectory, errno.ENOTDIR),
    (IsADirectory, errno.EISDIR),
    (DirectoryNotEmpty, errno.ENOTEMPTY),
    (NotSupported, errno.EPERM),
    (NotPermitted, errno.EPERM),
    (NameTooLong, errno.ENAMETOOLONG),
    (FileTooBig, errno.EFBIG),
    (XattrMissing, errno.ENODATA),
    (XattrTooBig, errno.E2BIG),
    (XattrNoSpace, errno.ENOSPC),
    (XattrUnsupported, errno.ENOTSUP),
    (AccessDenied, errno.EACCES),
    (CrossShare, errno.EXDEV),
    (ReadOnlyMount, errno.EROFS),  # before UsageError, their base
    (BadHandle, errno.EBADF),
    (UsageError, errno.EINVAL),
    (NoMatchingKeyError, errno.EACCES),
    (AuthenticationError, errno.EIO),
    (FormatError, errno.EIO),
    # Given up against other writers: EIO, so that it is logged and kept for `csfs status`.
    (ContentionError, errno.EIO),
    (FileNotFoundError, errno.ENOENT),
]


XATTR_CREATE = 1
XATTR_REPLACE = 2


def _id_or_keep(value: int) -> int:
    """chown's uid/gid: -1 (also as an unsigned 32-bit value) keeps the current one."""
    return -1 if value in (-1, 0xFFFFFFFF) else value


def _time(value: int, now: int) -> int | None:
    """utimensat's special values: UTIME_OMIT leaves the time, UTIME_NOW takes the clock."""
    if value == UTIME_OMIT:
        return None
    return now if value == UTIME_NOW else value


def _groups_of(pid: int) -> list[int]:
    """Supplementary groups of a process, for chgrp by a file's owner (chown(2))."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return [int(g) for g in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def errno_for(exc: BaseException) -> int:
    for cls, code in _ERRNO:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def translated(func: F) -> F:
    @functools.wraps(func)
    def wrapper(self: CsfsOperations, *args: Any) -> Any:
        try:
            return func(self, *args)
        except fuse.FuseOSError:
            raise
        except Exception as exc:
            code = errno_for(exc)
            if code == errno.EIO:
                msg = exc.message if isinstance(exc, CsfsError) else repr(exc)
                if self.log_paths:
                    log.error(
                        "%s %s: %s",
                        func.__name__,
                        args[:1],
                        msg,
                        exc_info=not isinstance(exc, CsfsError),
                    )
                else:
                    log.error(
                        "%s %s: %s%s",
                        func.__name__,
                        self._node_ref(func.__name__, args),
                        _without_paths(msg, args),
                        "" if isinstance(exc, CsfsError) else _frames(exc),
                    )
                # Kept in memory for `csfs status`, which the user asks for: paths help there.
                self.fs.note_error(f"{func.__name__} {args[:1]}: {msg}")
            elif code not in (errno.ENOENT,) and self.log_paths:
                log.debug("%s %s: errno %d", func.__name__, args[:1], code)
            raise fuse.FuseOSError(code) from None

    return wrapper  # type: ignore[return-value]


_HANDLE_OPS = frozenset({"read", "write", "flush", "release", "fsync"})


def _without_paths(msg: str, args: tuple[Any, ...]) -> str:
    """``msg`` with every path argument, each folder above it, and each of their
    names quoted on its own (as messages quote a bare name), replaced."""
    paths = {a for a in args if isinstance(a, str) and a.startswith("/") and a != "/"}
    names = {repr(part) for path in paths for part in path.split("/") if part}
    for path in list(paths):
        while (path := os.path.dirname(path)) != "/":
            paths.add(path)
    for path in sorted(paths, key=len, reverse=True):
        msg = msg.replace(path, "<path>")
    for name in sorted(names, key=len, reverse=True):
        msg = msg.replace(name, "<name>")
    return msg


def _frames(exc: BaseException) -> str:
    """Where an unexpected exception came from, without its message (it may hold a name)."""
    where = "".join(traceback.format_tb(exc.__traceback__))
    return f" ({type(exc).__name__}; run with --log-paths for its message)\n{where}"


class CsfsOperations(fuse.Operations):
    use_ns = True

    def __init__(self, fs: FileSystem, *, log_paths: bool = False) -> None:
        self.fs = fs
        self.log_paths = log_paths

    def _node_ref(self, op: str, args: tuple[Any, ...]) -> str:
        """The node an operation was about, by id: what the log may name."""
        fh = args[-1] if op in _HANDLE_OPS else args[2] if op == "truncate" else None
        if isinstance(fh, int):
            with self.fs.lock:
                of = self.fs.handles.get(fh)
            if of is not None:
                return f"node {of.file_id}"
        path = args[0] if args and isinstance(args[0], str) else None
        if path is None:
            return "node ?"
        # The node itself may be what failed to load: then say which folder it is in.
        with contextlib.suppress(Exception):
            return f"node {self.fs.lookup(path).id}"
        with contextlib.suppress(Exception):
            return f"in folder {self.fs.vault.parent_of(path)[0]}"
        return "node ?"

    def _stat(self, a: Attr) -> dict[str, Any]:
        return {
            "st_mode": mode_bits(a),
            "st_nlink": a.nlink,
            "st_size": len(a.target.encode()) if a.type == "l" else a.size,
            "st_mtime": a.mtime_ns,
            "st_ctime": a.ctime_ns,
            "st_atime": a.atime_ns,
            "st_uid": a.uid,
            "st_gid": a.gid,
            "st_rdev": a.rdev,
            "st_blocks": ((a.size if a.allocated is None else a.allocated) + 511) // 512,
            "st_blksize": 65536,
        }

    @staticmethod
    def _owner() -> tuple[int, int]:
        """The uid and gid of the process making this request (it owns what it makes)."""
        uid, gid, _ = fuse.fuse_get_context()
        return uid, gid

    @staticmethod
    def _caller() -> Caller:
        uid, gid, pid = fuse.fuse_get_context()
        return Caller(uid, frozenset({gid, *_groups_of(pid)}))

    @translated
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if path is None and fh is not None:
            # An open file whose name is gone (hard_remove): served by its handle.
            return self._stat(self.fs.fgetattr(fh))
        assert path is not None
        return self._stat(self.fs.getattr(path))

    @translated
    def readdir(self, path: str, fh: int) -> list[Any]:
        return [".", "..", *((n, self._stat(a), 0) for n, a in self.fs.readdir(path))]

    @translated
    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    @translated
    def mkdir(self, path: str, mode: int) -> int:
        self.fs.mkdir(path, mode, self._owner())
        return 0

    @translated
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.fs.mknod(path, mode, dev, self._owner())
        return 0

    @translated
    def rmdir(self, path: str) -> int:
        self.fs.rmdir(path)
        return 0

    @translated
    def unlink(self, path: str) -> int:
        self.fs.unlink(path)
        return 0

    @translated
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        # renameat2 flags (FlagPassingFUSE hands them on; plain mfusepy drops them).
        # RENAME_WHITEOUT, and both flags at once, are refused, never turned into a
        # plain rename that would replace the target.
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
            RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise OSError(errno.EINVAL, "renameat2 flag not supported")
        if flags & RENAME_EXCHANGE:
            self.fs.exchange(old, new)
        else:
            self.fs.rename(old, new, noreplace=bool(flags & RENAME_NOREPLACE))
        return 0

    @translated
    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, link target).
        self.fs.symlink(source, target, self._owner())
        return 0

    @translated
    def link(self, target: str, source: str) -> int:
        self.fs.link(source, target)
        return 0

    @translated
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        self.fs.chmod(path, stat.S_IMODE(mode), fh=fh)
        return 0

    @translated
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        self.fs.chown(path, _id_or_keep(uid), _id_or_keep(gid), self._caller(), fh=fh)
        return 0

    @translated
    def utimens(
        self, path: str | None, times: tuple[int, int] | None = None, fh: int | None = None
    ) -> int:
        now = time.time_ns()
        atime, mtime = (now, now) if times is None else (_time(times[0], now), _time(times[1], now))
        if atime is not None or mtime is not None:
            self.fs.utimens(path, atime, mtime, fh=fh)
        return 0

    @translated
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self.fs.create(path, stat.S_IMODE(mode), self._owner())

    @translated
    def open(self, path: str, flags: int) -> int:
        return self.fs.open(path, flags)

    @translated
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.fs.read(fh, offset, size)

    @translated
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self.fs.write(fh, offset, data)

    @translated
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.fs.truncate(path, length, fh)
        return 0

    @translated
    def flush(self, path: str, fh: int) -> int:
        self.fs.flush(fh)
        return 0

    @translated
    def release(self, path: str, fh: int) -> int:
        self.fs.release(fh)
        return 0

    @translated
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.fs.fsync(fh)
        return 0

    @translated
    def statfs(self, path: str) -> dict[str, int]:
        # The store has no fixed size: report a large, honest-looking free space.
        blocks = (1 << 50) // 4096
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 32,
            "f_ffree": 1 << 32,
            "f_namemax": 255,
        }

    @translated
    def access(self, path: str, amode: int) -> int:
        self.fs.getattr(path)
        return 0

    # xattrs are answered from the cached manifest, so `ls -l` costs no extra round trips.
    @translated
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if not name.startswith(XATTR_PREFIX):
            raise fuse.FuseOSError(errno.ENODATA)  # security.*, system.*: never stored
        return self.fs.getxattr(path, name)

    @translated
    def listxattr(self, path: str) -> list[str]:
        return self.fs.listxattr(path)

    @translated
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.fs.setxattr(
            path,
            name,
            value,
            only_new=bool(options & XATTR_CREATE),
            only_existing=bool(options & XATTR_REPLACE),
        )
        return 0

    @translated
    def removexattr(self, path: str, name: str) -> int:
        self.fs.removexattr(path, name)
        return 0

    def destroy(self, path: str) -> None:
        self.fs.close()
