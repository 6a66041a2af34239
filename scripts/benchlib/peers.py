"""The tools csfs is compared with (rclone crypt, s3fs), the page-cache drop, and
the py-spy profiler of the mount daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import tool

from benchlib.env import Env


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class Peers:
    """Availability of gocryptfs, rclone, s3fs: a reason when missing."""

    def __init__(self) -> None:
        import shutil

        self.missing: dict[str, str] = {}
        for name in ("gocryptfs", "rclone", "s3fs"):
            if not shutil.which(name):
                self.missing[name] = f"{name} is not installed"
        if not os.path.exists("/dev/fuse"):
            for name in ("csfs", "gocryptfs", "rclone", "s3fs"):
                self.missing[name] = "/dev/fuse is missing"


class Rclone:
    """An s3 remote on moto wrapped by a crypt remote; mounts with --vfs-cache-mode full."""

    def __init__(self, env: Env, bucket: str) -> None:
        self.env = env
        self.bucket = bucket
        self.conf = env.tmp / "rclone.conf"
        pw = subprocess.run(["rclone", "obscure", "pw"], check=True, capture_output=True,
                            text=True).stdout.strip()
        self.conf.write_text(textwrap.dedent(f"""\
            [s3]
            type = s3
            provider = Other
            access_key_id = testing
            secret_access_key = testing
            endpoint = {env.endpoint}
            region = us-east-1
            force_path_style = true

            [crypt]
            type = crypt
            remote = s3:{bucket}
            password = {pw}
            """))
        self.envvars = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.n = 0

    def cli(self, *args: str) -> float:
        return self.env.run(["env", "-u", "AWS_CA_BUNDLE", "rclone", "--config", str(self.conf),
                             *args])

    def mount(self, mnt: Path) -> subprocess.Popen[bytes]:
        self.n += 1
        cache = self.env.tmp / f"rclone-cache-{self.n}"
        log = self.env.tmp / f"rclone-{self.n}.log"
        mnt.mkdir(parents=True, exist_ok=True)
        p = self.env.spawn(["rclone", "--config", str(self.conf), "mount", "crypt:", str(mnt),
                            "--vfs-cache-mode", "full", "--s3-no-head", "--cache-dir",
                            str(cache)], log, env=self.envvars)
        self.env.mounts.append(mnt)
        self.env.wait_mounted(mnt, p, log)
        return p


class S3fs:
    def __init__(self, env: Env, bucket: str) -> None:
        self.env = env
        self.bucket = bucket
        self.passwd = env.tmp / "s3fs.passwd"
        self.passwd.write_text("testing:testing\n")
        self.passwd.chmod(0o600)

    def mount(self, mnt: Path) -> subprocess.Popen[bytes]:
        log = self.env.tmp / "s3fs.log"
        mnt.mkdir(parents=True, exist_ok=True)
        p = self.env.spawn(["s3fs", self.bucket, str(mnt), "-f", "-o",
                            f"passwd_file={self.passwd},url={self.env.endpoint},"
                            "use_path_request_style,endpoint=us-east-1"], log)
        self.env.mounts.append(mnt)
        self.env.wait_mounted(mnt, p, log)
        return p


class Profiler:
    """py-spy record of a pid while a workload runs; prints the top self-time frames."""

    def __init__(self, env: Env, enabled: bool) -> None:
        self.env = env
        self.enabled = enabled
        self.summaries: list[str] = []

    @contextmanager
    def record(self, pid: int, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        raw = self.env.tmp / f"profile-{name}.txt"
        out_dir = Path(os.environ.get("CSFS_BENCH_PROFILE_DIR", "/tmp"))
        name = name.replace(" ", "-")
        p = subprocess.Popen([tool("py-spy"), "record", "--pid", str(pid), "--format", "raw",
                              "--rate", "200", "--gil", "-o", str(raw)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let py-spy attach
        try:
            yield
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if raw.exists():
                keep = out_dir / f"csfs-bench-profile-{name}.txt"
                keep.write_bytes(raw.read_bytes())
                self.summaries.append(summarize_profile(raw, name, keep))


def summarize_profile(raw: Path, name: str, kept: Path, top: int = 15) -> str:
    """Self and inclusive time per function from py-spy's collapsed-stack output."""
    from collections import Counter

    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f and not f.startswith("thread (")
                  and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_t[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"py-spy profile of the csfs daemon during {name}: {total} samples "
             f"(--gil: only the thread holding the GIL, i.e. Python CPU time; "
             f"collapsed stacks in {kept})", "  top self time:"]
    for f, c in self_t.most_common(top):
        lines.append(f"    {100 * c / max(total, 1):5.1f}%  {f}")
    lines.append("  top inclusive time:")
    for f, c in incl.most_common(top):
        lines.append(f"    {100 * c / max(total, 1):5.1f}%  {f}")
    return "\n".join(lines)
