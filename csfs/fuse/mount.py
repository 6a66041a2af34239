"""Running a mount: FUSE options, daemonising once ready, the control channel, unmounting."""

from __future__ import annotations

import contextlib
import fcntl
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


class _Ops(CsfsOperations):
    """Adds the readiness signal: libfuse calls init once the mount is live."""

    def __init__(self, fs: FileSystem, ready: Callable[[], None]) -> None:
        super().__init__(fs)
        self._ready = ready

    def init(self, path: str) -> None:
        self._ready()


def lock_cache_dir(cache_dir: str) -> int:
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"cache folder {cache_dir} is in use by another mount",
            hint="pass --cache-dir to give this mount its own",
        ) from None
    return fd


def run_mount(
    make_fs: Callable[[], FileSystem],
    mountpoint: str,
    *,
    foreground: bool,
    read_only: bool,
    options: list[str],
    log_file: str,
) -> None:
    """Mount and serve until unmounted. In the background, return once the mount is ready."""
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise UsageError(f"{mountpoint} is already a mount point")
    if foreground:
        _serve(make_fs, mountpoint, read_only, options, log_file, lambda msg: None, True)
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            msg = pipe.read().decode(errors="replace")
        if msg != "ready":
            os.waitpid(pid, 0)
            raise StoreError(
                msg.strip() or "the mount daemon exited before the mount was ready",
                hint=f"see {log_file}",
            )
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
        _serve(make_fs, mountpoint, read_only, options, log_file, report, False)
        status = 0
    except BaseException as exc:
        report(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    finally:
        os._exit(status)


def _serve(
    make_fs: Callable[[], FileSystem],
    mountpoint: str,
    read_only: bool,
    options: list[str],
    log_file: str,
    report: Callable[[str], None],
    foreground: bool,
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
            return {"ok": True, **fs.status()}
        if cmd == "quarantine-export":
            try:
                size = fs.export_quarantined(str(req.get("id")), str(req.get("dest")))
            except CsfsError as exc:
                return {"ok": False, "error": exc.message, "hint": exc.hint}
            except OSError as exc:
                return {"ok": False, "error": f"cannot write {req.get('dest')}: {exc.strerror}"}
            return {"ok": True, "size": size}
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
        fuse.FUSE(_Ops(fs, ready), mountpoint, foreground=True, nothreads=False, **opts)
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
