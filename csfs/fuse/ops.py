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
    CrossShare,
    CsfsError,
    DirectoryNotEmpty,
    FormatError,
    IsADirectory,
    NoMatchingKeyError,
    NotADirectory,
    NotFound,
    NotSupported,
    UsageError,
)
from csfs.vault.filesystem import Attr, FileSystem, mode_bits

log = logging.getLogger("csfs.fuse")
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
    (AccessDenied, errno.EACCES),
    (CrossShare, errno.EXDEV),
    (UsageError, errno.EINVAL),
    (NoMatchingKeyError, errno.EACCES),
    (AuthenticationError, errno.EIO),
    (FormatError, errno.EIO),
    (PermissionError, errno.EROFS),
    (FileNotFoundError, errno.ENOENT),
]


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
                self.fs._note_error(f"{func.__name__} {args[:1]}: {msg}")
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
        self.uid = os.getuid()
        self.gid = os.getgid()

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
            "st_nlink": 2 if a.type == "d" else 1,
            "st_size": len(a.target.encode()) if a.type == "l" else a.size,
            "st_mtime": a.mtime_ns,
            "st_ctime": a.mtime_ns,
            "st_atime": a.mtime_ns,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_blocks": (a.size + 511) // 512,
            "st_blksize": 65536,
        }

    @translated
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        return self._stat(self.fs.getattr(path))

    @translated
    def readdir(self, path: str, fh: int) -> list[Any]:
        return [".", "..", *((n, self._stat(a), 0) for n, a in self.fs.readdir(path))]

    @translated
    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    @translated
    def mkdir(self, path: str, mode: int) -> int:
        self.fs.mkdir(path, mode)
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
    def rename(self, old: str, new: str) -> int:
        self.fs.rename(old, new)
        return 0

    @translated
    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, link target).
        self.fs.symlink(source, target)
        return 0

    @translated
    def link(self, target: str, source: str) -> int:
        self.fs.link(source, target)
        return 0

    @translated
    def chmod(self, path: str, mode: int) -> int:
        self.fs.chmod(path, stat.S_IMODE(mode))
        return 0

    @translated
    def chown(self, path: str, uid: int, gid: int) -> int:
        if uid not in (-1, self.uid, 0xFFFFFFFF) or gid not in (-1, self.gid, 0xFFFFFFFF):
            raise fuse.FuseOSError(errno.EPERM)
        return 0

    @translated
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        mtime = time.time_ns() if times is None else times[1]
        if mtime == UTIME_OMIT:
            return 0
        if mtime == UTIME_NOW:
            mtime = time.time_ns()
        self.fs.utimens(path, mtime)
        return 0

    @translated
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self.fs.create(path, stat.S_IMODE(mode))

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

    # xattrs answer at once so that `ls -l` costs no extra round trips.
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        raise fuse.FuseOSError(errno.ENODATA)

    def listxattr(self, path: str) -> list[str]:
        return []

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        raise fuse.FuseOSError(errno.ENOTSUP)

    def removexattr(self, path: str, name: str) -> int:
        raise fuse.FuseOSError(errno.ENOTSUP)

    def destroy(self, path: str) -> None:
        self.fs.close()
