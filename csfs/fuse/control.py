"""A small control channel to a running mount: `csfs sync`, `status`, `umount`.

One Unix socket per mount point (mode 0600, in a private runtime folder),
one JSON request and one JSON reply per connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from csfs.errors import UsageError

SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included


def runtime_dir(*, fallback: bool = False) -> str:
    xdg = None if fallback else os.environ.get("XDG_RUNTIME_DIR")
    base = xdg or f"/tmp/csfs-{os.getuid()}"  # noqa: S108 - private 0700
    path = os.path.join(base, "csfs") if xdg else base
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def socket_path(mountpoint: str) -> str:
    digest = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:20]
    path = os.path.join(runtime_dir(), f"{digest}.sock")
    if len(path.encode()) > SUN_PATH_MAX:
        # A deep XDG_RUNTIME_DIR cannot hold a socket; both ends fall back alike.
        path = os.path.join(runtime_dir(fallback=True), f"{digest}.sock")
    return path


class ControlServer:
    def __init__(
        self, mountpoint: str, handler: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        self.path = socket_path(mountpoint)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(8)
        self.handler = handler
        self.thread = threading.Thread(target=self._serve, name="csfs-control", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                reply = self.handler(json.loads(_read_line(conn)))
            except Exception as exc:
                reply = {"ok": False, "error": str(exc)}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(
    mountpoint: str, command: str, timeout: float | None = None, **args: Any
) -> dict[str, Any]:
    path = socket_path(mountpoint)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise UsageError(
            f"no csfs mount at {mountpoint}", hint="is it mounted? (csfs mount STORE MOUNTPOINT)"
        ) from None
    with sock:
        sock.sendall(json.dumps({"cmd": command, **args}).encode() + b"\n")
        data = _read_line(sock)
    reply: dict[str, Any] = json.loads(data) if data else {"ok": False, "error": "no reply"}
    return reply


def _read_line(sock: socket.socket) -> bytes:
    """One newline-terminated message (or what came before the peer closed)."""
    data = b""
    while not data.endswith(b"\n"):
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data
