"""Test servers shared by every test package: moto's S3 server in a subprocess.

A subprocess (rather than moto's in-process ThreadedMotoServer) keeps the
server's threads and mocks out of the test process, and behaves like a real
endpoint for CLI subprocesses too.  Credentials are dummies, so a developer's
real AWS credentials can never reach it.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


_MOTO_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_server.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """A running ``python -m moto.server``; use as a context manager or call stop()."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        # For subprocesses (the CLI): dummy credentials plus the endpoint.
        self.env = {
            **os.environ,
            **DUMMY_ENV,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "CSFS_S3_PATH_STYLE": "1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1):  # noqa: S310 - http://127.0.0.1
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is up
    except OSError:
        return False


def start_moto_server(timeout: float = 30.0) -> MotoServer:
    """Start moto's S3 server on a free port and wait until it answers HTTP."""
    for _ in range(3):  # the free port can be taken before moto binds it
        port = _free_port()
        process = subprocess.Popen(
            # moto's server, with conditional writes made atomic as S3's are.
            [sys.executable, _MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **DUMMY_ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = MotoServer(process, port)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(server.endpoint_url):
                return server
            time.sleep(0.05)
        server.stop()
    raise RuntimeError("moto server did not start (is moto[server] installed?)")


def make_bucket(
    endpoint: str,
    name: str,
    *,
    access_key: str = DUMMY_ENV["AWS_ACCESS_KEY_ID"],
    secret_key: str = DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
) -> str:
    """Create bucket ``name`` on the S3 server at ``endpoint`` and return the name."""
    _admin_client(endpoint, access_key, secret_key).create_bucket(Bucket=name)
    return name


@functools.cache
def _admin_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    # Cached: building a boto3 client costs a few hundred milliseconds.
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
