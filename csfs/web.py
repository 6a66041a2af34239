"""Serving the browser reader (web/, built into web/dist by scripts/build-web).

The reader is static files; all cryptography runs in the browser. This module
only finds the built files, builds them in a source checkout when they are
missing, and serves them on a loopback address.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from csfs.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
BUILD_SCRIPT = REPO / "scripts" / "build-web"


def dist_dir(build: bool = True) -> Path:
    """The built reader; runs scripts/build-web first when it is missing (and the
    checkout has the sources and npm)."""
    dist = WEB / "dist"
    if (dist / "index.html").is_file():
        return dist
    if build and BUILD_SCRIPT.is_file() and shutil.which("npm"):
        result = subprocess.run(  # noqa: S603 - our own script, no shell
            [str(BUILD_SCRIPT)], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and (dist / "index.html").is_file():
            return dist
        raise UsageError(
            "building the web reader failed: " + (result.stderr.strip().splitlines() or ["?"])[-1]
        )
    raise UsageError(
        "the web reader is not built", hint="run scripts/build-web in a csfs source checkout"
    )


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; `mounts` maps URL prefixes to other folders (the tests serve
    the vectors this way). No directory listings, no caching of stale bundles."""

    mounts: ClassVar[dict[str, Path]] = {}
    extensions_map = {  # noqa: RUF012 - the stdlib declares it as a class attribute
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".vec": "application/octet-stream",
        ".pem": "text/plain",
    }

    def translate_path(self, path: str) -> str:
        for prefix, root in self.mounts.items():
            if path.startswith(prefix):
                # super() resolves against self.directory and refuses "..".
                saved, self.directory = self.directory, str(root)
                try:
                    return super().translate_path(path[len(prefix) - 1 :])
                finally:
                    self.directory = saved
        return super().translate_path(path)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404)
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the library never prints


def make_server(
    directory: Path, port: int = 0, host: str = "127.0.0.1", mounts: dict[str, Path] | None = None
) -> http.server.ThreadingHTTPServer:
    """A server for `directory` on host:port (port 0: a free one); the caller runs
    serve_forever() and reads the port from server.server_address."""
    handler = type("ReaderHandler", (_Handler,), {"mounts": dict(mounts or {})})
    return http.server.ThreadingHTTPServer(
        (host, port), functools.partial(handler, directory=str(directory))
    )
