"""Helpers for the mount tests: the CLI as a subprocess, mounts, daemons, raw store access."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

CSFS = os.path.join(os.path.dirname(sys.executable), "csfs")
FUSERMOUNT = shutil.which("fusermount3")

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or FUSERMOUNT is None,
    reason="needs /dev/fuse and fusermount3 (Debian package fuse3) for real FUSE mounts",
)


def run(args: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 120,
        input: bytes | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(args, env=env, capture_output=True, timeout=timeout, input=input, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout.decode(errors='replace')}"
                             f"\n{r.stderr.decode(errors='replace')}")
    return r


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def poll(fn, timeout: float = 10):  # type: ignore[no-untyped-def]
    """fn()'s first truthy result within ``timeout`` seconds (OSError counts as not yet),
    else None: for changes another mount sees only after its TTL."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if got := fn():
                return got
        except OSError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def pids_holding(path: str) -> list[int]:
    """Pids of processes with an open descriptor on ``path``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(os.path.join(fd_dir, fd)) == path:
                        found.append(int(pid))
                        break
        except OSError:
            continue
    return found


class Vault:
    """Keys + an initialised vault on one backend, and the CLI environment to reach it."""

    def __init__(self, root: str, backend: str, moto: Any = None) -> None:
        self.root = root
        self.backend = backend
        self.moto = moto
        base = dict(moto.env) if moto is not None else dict(os.environ)
        self.env = {**base, "CSFS_PASSPHRASE": "pw",
                    "XDG_STATE_HOME": os.path.join(root, "state"),
                    "XDG_CACHE_HOME": os.path.join(root, "cache"),
                    "XDG_CONFIG_HOME": os.path.join(root, "config"),
                    "XDG_RUNTIME_DIR": os.path.join(root, "run")}
        os.makedirs(self.env["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
        keys = os.path.join(root, "keys")
        self.cli("keygen", "--dir", keys)
        self.env["CSFS_KEY"] = os.path.join(keys, "recipient_private_key.pem")
        if backend == "local":
            self.store = os.path.join(root, "store")
        else:
            from tests.servers import make_bucket
            self.bucket = make_bucket(moto.endpoint_url, "csfs-fuse-" + os.urandom(6).hex())
            self.store = f"s3://{self.bucket}"
        self.env["CSFS_STORE"] = self.store
        self.cli("init", "--name", "alice")
        self.mounts: list[Mount] = []

    def user(self, name: str, *keygen: str) -> Vault:
        """Another user of the same store: own key (``keygen`` options), state, pins
        and cache, trusting this vault's owner. Mounts made through it are cleaned up
        with this vault's."""
        other = Vault.__new__(Vault)
        other.root = os.path.join(self.root, name)
        other.backend, other.moto = self.backend, self.moto
        other.store, other.mounts = self.store, self.mounts
        if self.backend != "local":
            other.bucket = self.bucket
        other.env = {**self.env, **{k: os.path.join(other.root, k.lower()) for k in (
            "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")}}
        os.makedirs(other.env["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
        keys = os.path.join(other.root, "keys")
        other.cli("keygen", "--dir", keys, *keygen)
        other.env["CSFS_KEY"] = os.path.join(keys, "recipient_private_key.pem")
        other.env["CSFS_TRUST_OWNER"] = self.public_key
        return other

    @property
    def public_key(self) -> str:
        return self.env["CSFS_KEY"].replace("_private_key.pem", "_public_key.pem")

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return run([CSFS, *args], self.env, check=check, timeout=timeout, input=input)

    def cat(self, vault_path: str) -> bytes:
        """The file's content as the store has it, read by another process (`csfs cat`)."""
        return self.cli("cat", vault_path).stdout

    def mount(self, name: str = "mnt", *, cache_dir: str | None = None, ttl: float = 1,
              cache_size: str | None = None, extra: tuple[str, ...] = ()) -> Mount:
        m = Mount(self, os.path.join(self.root, name),
                  cache_dir or os.path.join(self.root, f"cache-{name}"), ttl, cache_size, extra)
        m.mount()
        self.mounts.append(m)
        return m

    def cleanup(self) -> None:
        for m in self.mounts:
            m.teardown()

    # -- raw store access, for tampering and inspection --------------------------------

    def _s3(self) -> Any:
        from tests.servers import DUMMY_ENV, _admin_client
        return _admin_client(self.moto.endpoint_url, DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                             DUMMY_ENV["AWS_SECRET_ACCESS_KEY"])

    def list_keys(self, prefix: str = "") -> list[str]:
        if self.backend == "local":
            out = []
            for d, _, files in os.walk(self.store):
                for f in files:
                    rel = os.path.relpath(os.path.join(d, f), self.store).replace(os.sep, "/")
                    if rel.startswith(prefix) and not f.startswith("."):
                        out.append(rel)
            return sorted(out)
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def get_raw(self, key: str) -> bytes:
        if self.backend == "local":
            with open(os.path.join(self.store, *key.split("/")), "rb") as f:
                return f.read()
        return bytes(self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put_raw(self, key: str, data: bytes) -> None:
        if self.backend == "local":
            path = os.path.join(self.store, *key.split("/"))
            os.chmod(path, 0o600)
            with open(path, "wb") as f:
                f.write(data)
            return
        self._s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    @contextlib.contextmanager
    def uploads_blocked(self) -> Iterator[None]:
        """Make every store write hang: SIGSTOP the moto server, or hold the local store lock."""
        if self.backend == "local":
            import fcntl
            fd = os.open(os.path.join(self.store, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                os.close(fd)
        else:
            pid = self.moto.process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                yield
            finally:
                os.kill(pid, signal.SIGCONT)


class Mount:
    def __init__(self, vault: Vault, path: str, cache_dir: str, ttl: float,
                 cache_size: str | None, extra: tuple[str, ...]) -> None:
        self.vault = vault
        self.path = path
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.cache_size = cache_size
        self.extra = extra
        os.makedirs(path, exist_ok=True)

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return self.vault.cli(*args, **kw)

    def mount(self) -> None:
        args = ["mount", self.path, "--cache-dir", self.cache_dir, "--ttl", str(self.ttl)]
        if self.cache_size:
            args += ["--cache-size", self.cache_size]
        self.cli(*args, *self.extra, timeout=60)
        assert os.path.ismount(self.path)

    def sync(self, timeout: float = 60) -> None:
        self.cli("sync", self.path, "--timeout", str(timeout), timeout=timeout + 30)

    def status(self) -> str:
        return self.cli("status", self.path).stdout.decode()

    def umount(self) -> None:
        self.cli("umount", self.path, "--timeout", "60", timeout=120)
        assert not os.path.ismount(self.path)
        self.wait_daemon_gone()

    def remount(self) -> None:
        self.umount()
        self.mount()

    def daemon_pids(self) -> list[int]:
        return pids_holding(os.path.join(os.path.realpath(self.cache_dir), "lock"))

    def wait_daemon_gone(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.daemon_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 the daemon, then lazily detach the dead mount."""
        for pid in self.daemon_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait_daemon_gone()
        if os.path.ismount(self.path) or _is_dead_mount(self.path):
            subprocess.run([FUSERMOUNT, "-u", "-z", self.path], capture_output=True, check=False)

    def teardown(self) -> None:
        """Always leave nothing mounted and no daemon running."""
        if os.path.ismount(self.path):
            with contextlib.suppress(Exception):
                subprocess.run([CSFS, "umount", self.path, "--timeout", "20"], env=self.vault.env,
                               capture_output=True, timeout=40, check=False)
        if self.daemon_pids() or os.path.ismount(self.path) or _is_dead_mount(self.path):
            self.kill()


def _is_dead_mount(path: str) -> bool:
    try:
        os.stat(path)
        return False
    except OSError as e:
        return e.errno == 107  # ENOTCONN: the daemon died, the mount is still there


def tree_bytes(folder: str, *, apparent: bool = False) -> int:
    total = 0
    for d, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(d, f))
                total += st.st_size if apparent else st.st_blocks * 512
    return total
