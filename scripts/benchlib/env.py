"""The scratch tree, the moto server, the csfs key, and the clean-up of every run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import BenchError, kill_current_child, run_timed, tool

from benchlib.programs import program_path

ROOT = Path(__file__).resolve().parent.parent.parent


def load_servers() -> Any:
    sys.path.insert(0, str(ROOT))
    from tests import servers  # moto launcher shared with the tests

    return servers


class Env:
    """A scratch tree, the moto server, the csfs key, and everything to clean up."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / "last.log"
        self.csfs = tool("csfs")
        self.python = sys.executable
        self.servers = load_servers()
        print("starting moto S3 server ...", file=sys.stderr, flush=True)
        self.moto = self.servers.start_moto_server()
        self.endpoint = self.moto.endpoint_url
        self.mounts: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        # Every subprocess inherits this: dummy credentials, the endpoint, an isolated home.
        for k in ("CONFIG", "DATA", "CACHE", "STATE"):
            d = tmp / "xdg" / k.lower()
            d.mkdir(parents=True)
            os.environ[f"XDG_{k}_HOME"] = str(d)
        os.environ.update(self.servers.DUMMY_ENV)
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        os.environ["CSFS_S3_PATH_STYLE"] = "1"
        os.environ.pop("CSFS_PASSPHRASE", None)
        keys = tmp / "keys"
        self.run([self.csfs, "keygen", "--dir", str(keys), "--no-passphrase"])
        self.key = keys / "recipient_private_key.pem"
        os.environ["CSFS_KEY"] = str(self.key)
        self._client: Any = None

    # -- running -------------------------------------------------------------------

    def run(self, argv: list[str]) -> float:
        return run_timed([str(a) for a in argv], self.log).seconds

    def sh(self, script: str) -> float:
        return self.run(["sh", "-ec", script])

    def py(self, program: str, *args: str) -> float:
        """A timed Python subprocess running one of benchlib/programs (the same
        interpreter as csfs: comparable start-up)."""
        return self.run([self.python, str(program_path(program)), *args])

    # -- S3 ------------------------------------------------------------------------

    @property
    def s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
        return self._client

    def bucket(self, name: str) -> str:
        return str(self.servers.make_bucket(self.endpoint, name))

    def count_objects(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        n = total = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                        Prefix=prefix):
            for o in page.get("Contents", []):
                n += 1
                total += o["Size"]
        return n, total

    def wait_objects(self, bucket: str, prefix: str, count: int, min_bytes: int = 0,
                     timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n, total = self.count_objects(bucket, prefix)
            if n >= count and total >= min_bytes:
                return
            time.sleep(0.05)
        raise BenchError(f"{count} objects never appeared in s3://{bucket}/{prefix}")

    # -- csfs ------------------------------------------------------------------------

    def csfs_init(self, store: str) -> None:
        self.run([self.csfs, "init", "--store", store])

    def csfs_mount(self, mnt: Path, store: str, cache: Path, *extra: str) -> int:
        mnt.mkdir(parents=True, exist_ok=True)
        self.mounts.append(mnt)
        self.run([self.csfs, "mount", str(mnt), "--store", store, "--cache-dir", str(cache),
                  "--ttl", "1", *extra])
        return self.daemon_pid(mnt)

    def daemon_pid(self, mnt: Path) -> int:
        """The forked `csfs mount` daemon serving mnt (its argv is the parent's)."""
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mount" in argv and str(mnt).encode() in argv and any(
                    a.endswith(b"csfs") for a in argv[:2]):
                return int(d.name)
        raise BenchError(f"no csfs mount daemon found for {mnt}")

    def csfs_umount(self, mnt: Path) -> None:
        self.run([self.csfs, "umount", str(mnt)])
        self.mounts.remove(mnt)

    # -- generic mounts ---------------------------------------------------------------

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=out, env=env, process_group=0)
        self.procs.append(p)
        return p

    def wait_mounted(self, mnt: Path, proc: subprocess.Popen[bytes] | None, log: Path,
                     timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.ismount(mnt):
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise BenchError(f"{mnt} did not mount: {tail}")

    def unmount(self, mnt: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
        if is_mounted(mnt):
            r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if mnt in self.mounts:
            self.mounts.remove(mnt)

    def unmount_all(self) -> None:
        """After a failed workload: unmount everything (pending csfs uploads are dropped)."""
        for mnt in list(self.mounts):
            self.unmount(mnt)
        for p in self.procs:
            if p.poll() is None:
                with_kill(p)

    def cleanup(self) -> None:
        kill_current_child()
        for mnt in list(self.mounts):
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    with_kill(p)
        self.moto.stop()


def is_mounted(mnt: Path) -> bool:
    """From /proc/mounts: os.path.ismount is False for a FUSE mount whose root gives EIO."""
    target = os.path.realpath(mnt).encode()
    with open("/proc/mounts", "rb") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


def with_kill(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass


@contextmanager
def bench_env(parent: str, prefix: str) -> Iterator[Env]:
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    env: Env | None = None
    try:
        env = Env(tmp)
        yield env
    finally:
        if env is not None:
            env.cleanup()
            keep_logs(tmp)
        else:
            kill_current_child()
        # Never rm -rf through a live mount.
        for _ in range(3):
            live = [m for m in tmp.glob("mnt-*") if is_mounted(m)] if tmp.exists() else []
            if not live:
                break
            for m in live:
                subprocess.run(["fusermount3", "-u", "-z", str(m)], capture_output=True)
            time.sleep(0.5)
        else:
            print(f"bench: {tmp} still has mounts; left in place", file=sys.stderr)
            tmp = Path("/nonexistent")
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], capture_output=True)
        signal.signal(signal.SIGTERM, old)


def keep_logs(tmp: Path) -> None:
    """Copy the mount daemons' logs out of the scratch tree before it goes."""
    logs = sorted(tmp.glob("cache-*/mount.log")) + sorted(tmp.glob("rclone-*.log")) + sorted(
        tmp.glob("s3fs.log"))
    if not logs:
        return
    dest = Path("/tmp") / f"{tmp.name}-logs"
    dest.mkdir(exist_ok=True)
    for log in logs:
        name = log.parent.name + ".log" if log.name == "mount.log" else log.name
        (dest / name).write_bytes(log.read_bytes())
    print(f"bench: mount logs kept in {dest}", file=sys.stderr)
