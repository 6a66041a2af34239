"""Helpers for the POSIX conformance suite (test_posix.py): syscalls Python's os module
lacks (renameat2, utimensat with UTIME_OMIT) and running one call as another uid."""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
OTHER_UID, OTHER_GID = 1000, 1000
THIRD_UID, THIRD_GID = 1001, 1001


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check(ret: int, *paths: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *paths[:1])


def renameat2(old: str, new: str, flags: int) -> None:
    """renameat2(2) through glibc (2.28+), so the kernel sees the flags unchanged."""
    _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_uint]
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), old)


def utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int],
              *, nofollow: bool = False) -> None:
    """utimensat(2) with (seconds, nanoseconds) pairs; nanoseconds may be UTIME_NOW/UTIME_OMIT."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    flags = 0x100 if nofollow else 0  # AT_SYMLINK_NOFOLLOW
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags), path)


def as_user(fn: Callable[[], Any], uid: int = OTHER_UID, gid: int = OTHER_GID,
            timeout: float = 30) -> Any:
    """fn() run in a forked child with uid/gid dropped (no supplementary groups).
    Returns its result, or raises the OSError it raised (same errno) in the caller."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out: tuple[str, Any] = ("ok", fn())
        except OSError as e:
            out = ("err", (e.errno, e.strerror, e.filename))
        except BaseException as e:  # reported to the parent as text
            out = ("exc", repr(e))
        with os.fdopen(w, "wb") as out_file:
            out_file.write(pickle.dumps(out))
        os._exit(0)
    os.close(w)

    def stuck(signum: int, frame: Any) -> None:
        os.kill(pid, signal.SIGKILL)
        raise TimeoutError(f"child as uid {uid} did not finish in {timeout}s")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(int(timeout))
    try:
        with os.fdopen(r, "rb") as in_file:
            data = in_file.read()
        os.waitpid(pid, 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    kind, value = pickle.loads(data)  # noqa: S301 - written by our own child
    if kind == "err":
        raise OSError(*value)
    if kind == "exc":
        raise AssertionError(f"child as uid {uid} raised {value}")
    return value


def run_with_timeout(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Python ``code`` in a fresh interpreter; a hang past ``timeout`` is an AssertionError,
    not a stuck suite. The exit code is the errno of an OSError (0 on success)."""
    wrapped = ("import os, sys\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
               + "except OSError as e:\n    sys.exit(e.errno)\n")
    try:
        return subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout}s (a hang): {code!r}") from None
