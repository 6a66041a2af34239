"""Running a mount: FUSE options, daemonising once ready, the control channel, unmounting."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import mfusepy as fuse

from csfs.errors import CsfsError, StoreError, UsageError
from csfs.fuse.control import ControlServer, request, socket_path
from csfs.fuse.ops import CsfsOperations
from csfs.vault.filesystem import FileSystem

log = logging.getLogger("csfs.fuse")


def fuse_major() -> int:
    """3 when mfusepy loaded libfuse3 (1 MiB writes), 2 for libfuse2 (needs big_writes)."""
    return 3 if getattr(fuse, "fuse_version_major", 3) == 3 else 2


def fuse_options(read_only: bool, extra: list[str]) -> dict[str, Any]:
    # No hard_remove: with it libfuse answers fstat of an unlinked open file ESTALE.
    # Its .fuse_hidden* renames are unlinks to the file system (FileSystem.HIDDEN).
    opts: dict[str, Any] = {"fsname": "csfs", "default_permissions": True}
    if fuse_major() == 2:
        opts["big_writes"] = True
    if read_only:
        opts["ro"] = True
    for item in extra:
        for part in item.split(","):
            if not part:
                continue
            k, eq, v = part.partition("=")
            opts[k] = v if eq else True
    return opts


class FlagPassingFUSE(fuse.FUSE):
    """mfusepy with what libfuse 3 passes kept. Its rename drops renameat2's flags,
    so RENAME_EXCHANGE would arrive as a plain rename (one file lost); its truncate
    drops the file handle, so an ftruncate became a truncate of whatever the path
    names now (after another client's save over that name, a different file); its
    chmod, chown and utimens drop it too (fchmod of an unlinked open file: ENOENT)."""

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return int(self.ftruncate(path, length, fip))

    def _path_fh(self, path: bytes | None, fip: Any) -> tuple[str | None, int | None]:
        name = None if path is None else path.decode(self.encoding, self.errors)
        return name, (int(fip.contents.fh) if fip else None)

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        name, fh = self._path_fh(path, fip)
        return int(self.operations.chmod(name, mode, fh))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        # -1 (keep) arrives as the unsigned maximum
        uid = -1 if uid == 2**32 - 1 else uid
        gid = -1 if gid == 2**32 - 1 else gid
        name, fh = self._path_fh(path, fip)
        return int(self.operations.chown(name, uid, gid, fh))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        name, fh = self._path_fh(path, fip)
        times = None
        if buf:
            times = (
                fuse.time_of_timespec(buf.contents.actime, use_ns=self.use_ns),
                fuse.time_of_timespec(buf.contents.modtime, use_ns=self.use_ns),
            )
        return int(self.operations.utimens(name, times, fh))

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return int(
            self.operations.rename(
                old.decode(self.encoding, self.errors),
                new.decode(self.encoding, self.errors),
                flags,
            )
        )


class _Ops(CsfsOperations):
    """Adds the readiness signal: libfuse calls init once the mount is live."""

    def __init__(self, fs: FileSystem, ready: Callable[[], None], *, log_paths: bool) -> None:
        super().__init__(fs, log_paths=log_paths)
        self._ready = ready

    def init(self, path: str) -> None:
        self._ready()


def lock_cache_dir(cache_dir: str, mountpoint: str) -> int:
    """Lock the cache folder for one mount; the lock file names the mount point that
    holds it, so that a second mount can say which one is in the way."""
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise UsageError(
            f"the csfs mount at {holder or 'another mount point'} already uses "
            f"cache folder {cache_dir}",
            hint="unmount it first (`csfs umount`), or pass --cache-dir to give this mount "
            "its own",
        ) from None
    where = os.path.abspath(mountpoint).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, where, 0)
    return fd


def _csfs_mount_of(mountpoint: str) -> str | None:
    """The store a live csfs mount at ``mountpoint`` serves, or None if it is no csfs mount."""
    try:
        reply = request(mountpoint, "status", timeout=5)
    except (CsfsError, OSError, ValueError):
        return None
    return str(reply.get("store") or "a csfs store") if reply.get("ok") else None


def check_mountpoint(mountpoint: str) -> None:
    """A clear error for a mount point that cannot take a new mount."""
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        store = _csfs_mount_of(mountpoint)
        if store is not None:
            raise UsageError(
                f"{mountpoint} is already a csfs mount (of {store})",
                hint=f"use it, or unmount it first with `csfs umount {mountpoint}`",
            )
        raise UsageError(
            f"{mountpoint} is already in use as a mount point (not by csfs)",
            hint="pick an empty folder that nothing is mounted on",
        )


def run_mount(
    make_fs: Callable[[], FileSystem],
    mountpoint: str,
    *,
    foreground: bool,
    read_only: bool,
    options: list[str],
    log_file: str,
    log_paths: bool = False,
) -> None:
    """Mount and serve until unmounted. In the background, return once the mount is ready.

    The log names files by node id; ``log_paths`` (a debugging aid) writes their
    paths into it in clear."""
    check_mountpoint(mountpoint)
    if foreground:
        _serve(
            make_fs, mountpoint, read_only, options, log_file, lambda msg: None, True, log_paths
        )
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            msg = pipe.read().decode(errors="replace")
        if msg != "ready":
            os.waitpid(pid, 0)
            raise _daemon_error(msg, log_file)
        return
    os.close(r)
    os.setsid()
    status = 1
    writer = os.fdopen(w, "wb", buffering=0)

    def report(msg: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            writer.write(msg.encode())
            writer.close()

    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _serve(make_fs, mountpoint, read_only, options, log_file, report, False, log_paths)
        status = 0
    except BaseException as exc:
        # The whole error crosses the pipe: its hint and exit code matter to the user.
        failure = {
            "message": getattr(exc, "message", None) or str(exc) or type(exc).__name__,
            "hint": exc.hint if isinstance(exc, CsfsError) else None,
            "exit_code": exc.exit_code if isinstance(exc, CsfsError) else StoreError.exit_code,
        }
        report(json.dumps(failure))
    finally:
        os._exit(status)


def _daemon_error(msg: str, log_file: str) -> CsfsError:
    """The error the mount daemon reported before it was ready, as the CLI shows it."""
    try:
        failure = json.loads(msg)
        err = StoreError(str(failure["message"]), hint=failure.get("hint") or f"see {log_file}")
        err.exit_code = int(failure["exit_code"])
    except (ValueError, TypeError, KeyError):
        return StoreError(
            msg.strip() or "the mount daemon exited before the mount was ready",
            hint=f"see {log_file}",
        )
    return err



def _serve(
    make_fs: Callable[[], FileSystem],
    mountpoint: str,
    read_only: bool,
    options: list[str],
    log_file: str,
    report: Callable[[str], None],
    foreground: bool,
    log_paths: bool,
) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(log_file)]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    fs = make_fs()

    def control(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "sync":
            done = fs.sync(timeout=req.get("wait"))
            return {"ok": done, "error": None if done else "timed out", **fs.status()}
        if cmd == "status":
            return {"ok": True, **fs.status(), "store": fs.vault.store.url}
        if cmd == "quarantine-export":
            try:
                size = fs.export_quarantined(str(req.get("id")), str(req.get("dest")))
            except CsfsError as exc:
                return {"ok": False, "error": exc.message, "hint": exc.hint}
            except OSError as exc:
                return {"ok": False, "error": f"cannot write {req.get('dest')}: {exc.strerror}"}
            return {"ok": True, "size": size}
        if cmd == "quarantine-drop":
            try:
                fs.queue.drop_quarantined(str(req.get("id")))
            except CsfsError as exc:
                return {"ok": False, "error": exc.message, "hint": exc.hint}
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    server = ControlServer(mountpoint, control)
    ready_sent = False

    def ready() -> None:
        nonlocal ready_sent
        if not ready_sent:
            ready_sent = True
            log.info("mounted %s at %s", fs.vault.store.url, mountpoint)
            report("ready")

    opts = fuse_options(read_only, options)
    try:
        ops = _Ops(fs, ready, log_paths=log_paths)
        FlagPassingFUSE(ops, mountpoint, foreground=True, nothreads=False, **opts)
    except RuntimeError as exc:
        # mfusepy raises RuntimeError(code) when fuse_main fails, e.g. on a bad -o option.
        given = ",".join(k if v is True else f"{k}={v}" for k, v in opts.items())
        raise UsageError(
            f"FUSE refused to mount {mountpoint} (libfuse error {exc}) with options {given}",
            hint="check the -o options; see the mount log for libfuse's own message",
        ) from None
    finally:
        server.close()
        log.info("unmounted %s", mountpoint)
    if not ready_sent:
        raise StoreError("FUSE could not mount (is /dev/fuse available and fuse3 installed?)")


def unmount(mountpoint: str, *, timeout: float = 3600) -> None:
    """Drain the upload queue, then unmount and wait for the daemon to finish."""
    reply = request(mountpoint, "sync", timeout=timeout + 5, wait=timeout)
    if not reply.get("ok"):
        raise StoreError(
            f"uploads did not finish: {reply.get('error')}",
            hint="run `csfs status` to see what is pending",
        )
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise UsageError(
            f"could not unmount {mountpoint}: {result.stderr.strip()}",
            hint="close programs using the mount, then retry",
        )
    deadline = time.monotonic() + 60
    while os.path.exists(socket_path(mountpoint)) and time.monotonic() < deadline:
        time.sleep(0.05)
