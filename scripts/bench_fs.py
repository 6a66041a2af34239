"""The `s3` and `mount` benchmarks of scripts/bench.py (kept apart: bench.py holds the helpers).

Both start ONE moto S3 server (a subprocess on 127.0.0.1, see tests/servers.py)
and run every tool of the comparison against it in the same run.  Timed
commands are subprocesses (run_timed), so every tool pays for its own process
start-up: csfs and the boto3 baseline are both Python programs, and the
start-up of each is reported apart so that it can be subtracted by eye.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    BenchError,
    MiB,
    check_space,
    human,
    kill_current_child,
    make_random_file,
    run_timed,
    same_content,
    tool,
)

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
GiB = 1 << 30

# ---------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    tool: str
    operation: str
    seconds: float
    amount: str = ""  # what was moved: "256 MiB", "500 files"
    rate: str = ""  # "MB/s" or "files/s" figure, formatted
    note: str = ""


@dataclass
class Ratio:
    name: str
    value: float | None  # None: a peer was skipped
    target: str  # "<= 1.15", ">= 3"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "SKIP"
        op, num = self.target.split()
        ok = self.value <= float(num) if op == "<=" else (
            self.value >= float(num) if op == ">=" else self.value < float(num))
        return "PASS" if ok else "MISS"


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row(self, section: str, tool_: str, op: str, seconds: float, *, nbytes: int = 0,
            files: int = 0, note: str = "") -> Row:
        if nbytes:
            amount, rate = human(nbytes), f"{nbytes / 1e6 / seconds:.0f} MB/s"
        elif files:
            amount, rate = f"{files} files", f"{files / seconds:.0f} files/s"
        else:
            amount = rate = ""
        r = Row(section, tool_, op, seconds, amount, rate, note)
        self.rows.append(r)
        print(f"  {section:<14} {tool_:<10} {op:<28} {seconds:8.3f} s  {rate} {note}",
              file=sys.stderr, flush=True)
        return r

    def fail(self, workload: str, reason: str) -> None:
        msg = f"FAILED {workload}: {reason}"
        self.failures.append(msg)
        print(msg, flush=True)

    def skip(self, peer: str, reason: str) -> None:
        msg = f"SKIPPED {peer}: {reason}"
        self.skipped.append(msg)
        print(msg, flush=True)

    def print(self) -> None:
        print(f"\n{self.title}\n")
        h = (f"{'workload':<14} {'tool':<10} {'operation':<30} {'seconds':>9} {'amount':>11} "
             f"{'rate':>14}  note")
        print(h)
        print("-" * len(h))
        last = None
        for r in self.rows:
            sec = r.section if r.section != last else ""
            last = r.section
            print(f"{sec:<14} {r.tool:<10} {r.operation:<30} {r.seconds:>9.3f} {r.amount:>11} "
                  f"{r.rate:>14}  {r.note}")
        print(f"\n{'ratio':<58} {'value':>7} {'target':>9}  result")
        for q in self.ratios:
            v = "-" if q.value is None else f"{q.value:.2f}"
            print(f"{q.name:<58} {v:>7} {q.target:>9}  {q.verdict}"
                  + (f"  ({q.note})" if q.note else ""))
        for s in self.skipped:
            print(s)
        for s in self.failures:
            print(s)
        if self.notes:
            print()
            for n in self.notes:
                print(textwrap.fill(n, 100, subsequent_indent="  "))


# ---------------------------------------------------------------- environment


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

    def py(self, code: str, *args: str) -> float:
        """A timed Python subprocess (the same interpreter as csfs: comparable start-up)."""
        script = self.tmp / "snippet.py"
        script.write_text(textwrap.dedent(code))
        return self.run([self.python, str(script), *args])

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


def make_small_files(folder: Path, count: int, size: int = 4 * KiB) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def tree_digest(folder: Path) -> str:
    """Names, sizes and contents of every file under folder, as one hash."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder)).encode()
        if p.is_symlink():
            h.update(b"L" + rel + os.readlink(p).encode())
        elif p.is_file():
            h.update(b"F" + rel + p.read_bytes())
        elif p.is_dir():
            h.update(b"D" + rel)
    return h.hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def verify_same(a: Path, b: Path, what: str) -> None:
    if not same_content(a, b):
        raise BenchError(f"{what}: {b} differs from {a}")


def verify_tree(a: Path, b: Path, what: str) -> None:
    if tree_digest(a) != tree_digest(b):
        raise BenchError(f"{what}: the tree {b} differs from {a}")


BOTO_HEADER = """
import sys, os, boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
"""
BOTO_UPLOAD = BOTO_HEADER + "s3.upload_file(sys.argv[1], sys.argv[2], sys.argv[3])\n"
BOTO_DOWNLOAD = BOTO_HEADER + "s3.download_file(sys.argv[2], sys.argv[3], sys.argv[1])\n"
BOTO_STARTUP = BOTO_HEADER
BOTO_TREE_UP = BOTO_HEADER + """
from concurrent.futures import ThreadPoolExecutor
src, bucket, prefix = sys.argv[1:4]
names = sorted(os.listdir(src))
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda n: s3.upload_file(os.path.join(src, n), bucket, prefix + n), names))
"""
BOTO_TREE_DOWN = BOTO_HEADER + """
from concurrent.futures import ThreadPoolExecutor
dst, bucket, prefix = sys.argv[1:4]
os.makedirs(dst, exist_ok=True)
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
        Prefix=prefix) for o in page.get("Contents", [])]
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda k: s3.download_file(bucket, k, os.path.join(dst, k[len(prefix):])),
                  keys))
"""


def startup_rows(env: Env, rep: Report) -> tuple[float, float]:
    """Fixed cost of each Python tool (median of 3 after a warm-up).

    csfs: `csfs ls /` on the S3 vault = start-up, boto3 import, key load, vault open
    (GET header, GET root manifest). boto3: import boto3 + client, no request.
    """
    import statistics

    cs, bs = [], []
    for _ in range(4):
        cs.append(env.run([env.csfs, "ls", "/"]))
        bs.append(env.py(BOTO_STARTUP))
    c, b = statistics.median(cs[1:]), statistics.median(bs[1:])
    rep.row("start-up", "csfs", "csfs ls / (empty vault)", c, note="median of 3")
    rep.row("start-up", "boto3", "python: import boto3 + client", b, note="median of 3")
    return c, b


# ---------------------------------------------------------------- s3


def cmd_s3(args: argparse.Namespace) -> int:
    size, nfiles, nls = args.size, args.files, args.ls_files
    rep = Report(f"csfs bench s3: one moto S3 server on 127.0.0.1; {human(size)} file, "
                 f"{nfiles} x 4 KiB files, ls of {nls} files")
    with bench_env(args.dir, "csfs-bench-s3-") as env:
        check_space(env.tmp, 4 * size + 64 * MiB)
        tmp = env.tmp
        csfs = env.csfs
        store = "s3://" + env.bucket("csfs-vault")
        raw = env.bucket("raw")
        os.environ["CSFS_STORE"] = store
        env.csfs_init(store)
        rep.notes.append(
            "Every timed command is its own subprocess, start-up included (csfs CLI and the "
            "boto3 script are both Python; their start-up is listed under start-up, not "
            "subtracted).")

        c_start, b_start = startup_rows(env, rep)

        # -- one big file
        print(f"big file: {human(size)}", file=sys.stderr)
        src = tmp / "big.bin"
        make_random_file(src, size)
        out_c, out_b = tmp / "big.csfs", tmp / "big.boto3"
        t_cput = env.run([csfs, "put", src, "/big.bin"])
        rep.row("big file", "csfs", "put", t_cput, nbytes=size)
        t_bput = env.py(BOTO_UPLOAD, str(src), raw, "big.bin")
        rep.row("big file", "boto3", "upload_file", t_bput, nbytes=size)
        t_cget = env.run([csfs, "get", "/big.bin", out_c])
        rep.row("big file", "csfs", "get", t_cget, nbytes=size)
        verify_same(src, out_c, "csfs get")
        out_c.unlink()
        t_bget = env.py(BOTO_DOWNLOAD, str(out_b), raw, "big.bin")
        rep.row("big file", "boto3", "download_file", t_bget, nbytes=size)
        verify_same(src, out_b, "boto3 download")
        out_b.unlink()
        src.unlink()
        rep.ratios += [
            Ratio("big put: csfs / boto3 time", t_cput / t_bput, "<= 1.15"),
            Ratio("big get: csfs / boto3 time", t_cget / t_bget, "<= 1.15"),
            Ratio("big put: same, start-up subtracted", (t_cput - c_start) / (t_bput - b_start),
                  "<= 1.15", "informational"),
            Ratio("big get: same, start-up subtracted", (t_cget - c_start) / (t_bget - b_start),
                  "<= 1.15", "informational"),
        ]

        # -- many small files
        print(f"small files: {nfiles} x 4 KiB", file=sys.stderr)
        small = tmp / "small"
        make_small_files(small, nfiles)
        t = env.run([csfs, "put", "-r", small, "/small"])
        rep.row("small files", "csfs", "put -r", t, files=nfiles)
        t_cput = t
        t_bput = env.py(BOTO_TREE_UP, str(small), raw, "small/")
        rep.row("small files", "boto3", "upload_file x16 threads", t_bput, files=nfiles)
        got = tmp / "small.csfs"
        t_cget = env.run([csfs, "get", "-r", "/small", got])
        rep.row("small files", "csfs", "get -r", t_cget, files=nfiles)
        verify_tree(small, got, "csfs get -r")
        got_b = tmp / "small.boto3"
        t_bget = env.py(BOTO_TREE_DOWN, str(got_b), raw, "small/")
        rep.row("small files", "boto3", "download_file x16 threads", t_bget, files=nfiles)
        verify_tree(small, got_b, "boto3 tree download")
        rep.ratios += [
            Ratio("small put -r: csfs / boto3 time", t_cput / t_bput, "<= 1.15"),
            Ratio("small get -r: csfs / boto3 time", t_cget / t_bget, "<= 1.15"),
        ]

        # -- ls -l of a big directory
        print(f"ls: {nls} files", file=sys.stderr)
        lsdir = tmp / "lsdir"
        make_small_files(lsdir, nls, 16)
        t = env.run([csfs, "put", "-r", lsdir, "/lsdir"])
        rep.row("ls -l", "csfs", f"put -r ({nls} x 16 B, setup)", t, files=nls)
        t_ls = env.run([csfs, "ls", "-l", "/lsdir"])
        lines = [ln for ln in env.log.read_text().splitlines() if ln.strip()]
        if len(lines) != nls:
            raise BenchError(f"csfs ls -l /lsdir printed {len(lines)} lines, expected {nls}")
        rep.row("ls -l", "csfs", "CLI ls -l /lsdir", t_ls, files=nls)
        opened, listed, t_lib = count_ls_requests(env, store, "/lsdir", nls)
        rep.row("ls -l", "csfs", "library open+listdir", t_lib, files=nls,
                note=f"requests: open {opened.total_requests} {dict(opened.requests)}, "
                     f"ls {listed.total_requests} {dict(listed.requests)}")
        rep.ratios.append(Ratio(
            f"ls -l /lsdir: store requests after open (of {nls} files)",
            listed.total_requests, "<= 2",
            "root manifest (path lookup) + the directory's manifest"))
        rep.ratios.append(Ratio("ls -l /lsdir: store requests incl. Vault.open",
                                opened.total_requests + listed.total_requests, "<= 3",
                                "+1 GET of the vault header"))
    rep.print()
    return 0


def count_ls_requests(env: Env, store_url: str, path: str, expect: int) -> tuple[Any, Any, float]:
    """In-process: StatsStore around the real S3 store, Vault.open, then lookup + listdir."""
    from csfs.cli.options import unlock
    from csfs.store import open_store
    from csfs.store.stats import StatsStore
    from csfs.vault import Vault

    identity = unlock(str(env.key), None)
    start = time.perf_counter()
    stats = StatsStore(open_store(store_url, endpoint_url=env.endpoint))
    vault = Vault.open(stats, identity)  # type: ignore[arg-type]
    opened = stats.reset()
    entry = vault.lookup(path)
    entries = vault.listdir(path) if entry.type == "d" else {}
    n = sum(1 for e in entries.values() if e.size >= 0 and e.mtime_ns)
    elapsed = time.perf_counter() - start
    listed = stats.reset()
    vault.close()
    if n != expect:
        raise BenchError(f"library listdir {path}: {n} entries, expected {expect}")
    return opened, listed, elapsed


# ---------------------------------------------------------------- mount


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


WRITE_FSYNC = """
import os, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f, open(dst, "wb") as g:
    while chunk := f.read(1 << 20):
        g.write(chunk)
    g.flush()
    os.fsync(g.fileno())
"""


def dd_write(env: Env, src: Path | str, dst: Path) -> float:
    return env.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "status=none"])


def dd_read(env: Env, src: Path) -> float:
    return env.run(["dd", f"if={src}", "of=/dev/null", "bs=1M", "status=none"])


def cmd_mount(args: argparse.Namespace) -> int:
    size, s3size, nfiles, nls = args.size, args.s3_size, args.files, args.ls_files
    rss_size = args.rss_size
    rep = Report(f"csfs bench mount: one moto S3 server on 127.0.0.1; local {human(size)}, "
                 f"S3 {human(s3size)}, {nfiles} x 4 KiB, ls of {nls}, RSS at {human(rss_size)}")
    peers = Peers()
    if "csfs" in peers.missing:
        raise BenchError(peers.missing["csfs"])
    with bench_env(args.dir, "csfs-bench-mount-") as env:
        check_space(env.tmp, max(4 * size, 2 * rss_size) + 6 * s3size + 256 * MiB)
        prof = Profiler(env, args.profile)
        try:
            run_mount_workloads(env, rep, peers, prof, size, s3size, nfiles, nls, rss_size,
                                args.untar_files)
        finally:
            pass
    rep.print()
    for s in prof.summaries:
        print("\n" + s)
    return 1 if rep.failures else 0


def run_mount_workloads(env: Env, rep: Report, peers: Peers, prof: Profiler, size: int,
                        s3size: int, nfiles: int, nls: int, rss_size: int,
                        untar_files: int) -> None:
    tmp = env.tmp
    csfs = env.csfs
    dropped = drop_caches()
    rep.notes.append(
        "Warm reads: the kernel page cache is dropped (echo 3 > /proc/sys/vm/drop_caches) "
        "before each timed read, so csfs reads from its ciphertext cache and gocryptfs from its "
        "cipher dir, both in /dev/shm." if dropped else
        "Warm reads: drop_caches is NOT permitted here, so the kernel page cache may serve "
        "part of the timed reads.")
    for name, why in peers.missing.items():
        rep.skip(name, why)
    rep.notes.append(
        "durable write: csfs = python write + os.fsync (csfs's fsync returns once the "
        "version is in the store); boto3 = upload_file in a fresh python; rclone = write + "
        "fsync + wait until the object is listed in the bucket (rclone uploads after its "
        "default --vfs-write-back 5s). Every S3 tool talks to the same moto server.")

    # Shared by the S3 sections: one vault bucket, one raw bucket, one source file.
    sstore = "s3://" + env.bucket("csfs-mount")
    raw = env.bucket("raw")
    env.csfs_init(sstore)
    smnt = tmp / "mnt-csfs-s3"
    ssrc = tmp / "s3.bin"
    ncache = [0]

    def mount_s3() -> int:
        ncache[0] += 1
        return env.csfs_mount(smnt, sstore, tmp / f"cache-s3-{ncache[0]}", "--cache-size", "4G")

    def section_0() -> None:
        nonlocal rcl, rmnt
        # local: 1 GiB write and warm read, csfs vs gocryptfs
        print(f"local: {human(size)} sequential write / warm read", file=sys.stderr)
        src = tmp / "big.bin"
        make_random_file(src, size)
        lstore = tmp / "local-store"
        env.csfs_init(str(lstore))
        cmnt, ccache = tmp / "mnt-csfs-local", tmp / "cache-local"
        pid = env.csfs_mount(cmnt, str(lstore), ccache, "--cache-size", "4G")
        with prof.record(pid, f"{human(size)} write (local store)"):
            t_cw = dd_write(env, src, cmnt / "big.bin")
        rep.row("seq write", "csfs", f"dd bs=1M {human(size)} (local)", t_cw, nbytes=size)
        env.run([csfs, "sync", cmnt])  # background upload into the local store: out of the way
        verify_same(src, cmnt / "big.bin", "csfs local write")  # also the first read
        drop_caches()
        t_cr = dd_read(env, cmnt / "big.bin")
        rep.row("warm read", "csfs", f"dd bs=1M {human(size)} (cache)", t_cr, nbytes=size)

        t_gw = t_gr = None
        if "gocryptfs" not in peers.missing:
            gcipher, gmnt = tmp / "gocryptfs-cipher", tmp / "mnt-gocryptfs"
            gcipher.mkdir()
            gmnt.mkdir()
            try:
                env.run(["gocryptfs", "-q", "-init", "-extpass", "echo pw", gcipher])
                env.mounts.append(gmnt)
                env.run(["gocryptfs", "-q", "-extpass", "echo pw", gcipher, gmnt])
            except BenchError as err:
                rep.skip("gocryptfs", f"mount failed: {err}")
            else:
                t_gw = dd_write(env, src, gmnt / "big.bin")
                rep.row("seq write", "gocryptfs", f"dd bs=1M {human(size)}", t_gw, nbytes=size)
                verify_same(src, gmnt / "big.bin", "gocryptfs write")
                drop_caches()
                t_gr = dd_read(env, gmnt / "big.bin")
                rep.row("warm read", "gocryptfs", f"dd bs=1M {human(size)}", t_gr, nbytes=size)
                env.unmount(gmnt)
                subprocess.run(["rm", "-rf", str(gcipher)])
        rep.ratios.append(Ratio(f"{human(size)} write throughput: csfs / gocryptfs",
                                t_gw / t_cw if t_gw else None, ">= 1.2"))
        rep.ratios.append(Ratio(f"{human(size)} warm read throughput: csfs / gocryptfs",
                                t_gr / t_cr if t_gr else None, ">= 1.2"))
        env.csfs_umount(cmnt)
        subprocess.run(["rm", "-rf", str(lstore), str(ccache)])
        src.unlink()

    def section_1() -> None:
        nonlocal rcl, rmnt
        # S3: 256 MiB write + fsync, durable
        print(f"S3: {human(s3size)} write+fsync, cold read", file=sys.stderr)
        make_random_file(ssrc, s3size)
        mount_s3()
        t_cs = env.py(WRITE_FSYNC, str(ssrc), str(smnt / "s3.bin"))
        rep.row("durable write", "csfs", f"write+fsync {human(s3size)}", t_cs, nbytes=s3size,
                note="fsync returns once uploaded")
        _, stored = env.count_objects("csfs-mount")
        if stored < s3size:
            raise BenchError(f"after fsync the csfs bucket holds {stored} bytes < {s3size}")
        t_bs = env.py(BOTO_UPLOAD, str(ssrc), raw, "s3.bin")
        rep.row("durable write", "boto3", f"upload_file {human(s3size)}", t_bs, nbytes=s3size)

        t_rs = None
        if "rclone" not in peers.missing:
            try:
                rcl = Rclone(env, env.bucket("rclone"))
                rp = rcl.mount(rmnt)
            except (BenchError, subprocess.CalledProcessError) as err:
                rep.skip("rclone", f"mount failed: {err}")
                rcl = None
            else:
                start = time.perf_counter()
                env.py(WRITE_FSYNC, str(ssrc), str(rmnt / "s3.bin"))
                env.wait_objects("rclone", "", 1, s3size)
                t_rs = time.perf_counter() - start
                rep.row("durable write", "rclone", "write+fsync, until in bucket", t_rs,
                        nbytes=s3size, note="default --vfs-write-back 5s")
                env.unmount(rmnt, rp)
        rep.ratios.append(Ratio(f"{human(s3size)} durable write time: csfs / boto3", t_cs / t_bs,
                                "<= 1.15"))
        rep.ratios.append(Ratio(f"{human(s3size)} durable write: rclone time / csfs time",
                                t_rs / t_cs if t_rs else None, ">= 3"))
        env.csfs_umount(smnt)

    def section_2() -> None:
        nonlocal rcl, rmnt
        # S3: cold read
        drop_caches()
        pid = mount_s3()
        with prof.record(pid, f"{human(s3size)} cold read (S3)"):
            t_cc = dd_read(env, smnt / "s3.bin")
        rep.row("cold read", "csfs", f"dd {human(s3size)}, empty cache", t_cc, nbytes=s3size)
        verify_same(ssrc, smnt / "s3.bin", "csfs cold read")
        env.csfs_umount(smnt)
        got = tmp / "s3.boto3"
        t_bc = env.py(BOTO_DOWNLOAD, str(got), raw, "s3.bin")
        rep.row("cold read", "boto3", f"download_file {human(s3size)}", t_bc, nbytes=s3size)
        verify_same(ssrc, got, "boto3 download")
        got.unlink()
        t_rc = None
        if rcl is not None:
            drop_caches()
            rp = rcl.mount(rmnt)
            t_rc = dd_read(env, rmnt / "s3.bin")
            rep.row("cold read", "rclone", f"dd {human(s3size)}, empty cache", t_rc, nbytes=s3size)
            verify_same(ssrc, rmnt / "s3.bin", "rclone read")
            env.unmount(rmnt, rp)
        rep.ratios.append(Ratio(f"{human(s3size)} cold read throughput: csfs / boto3",
                                t_bc / t_cc, ">= 0.9"))
        rep.ratios.append(Ratio(f"{human(s3size)} cold read throughput: csfs / rclone",
                                t_rc / t_cc if t_rc else None, ">= 1"))

    def section_3() -> None:
        nonlocal rcl, rmnt
        # S3: many small files, durable
        print(f"S3: {nfiles} small files", file=sys.stderr)
        small = tmp / "small"
        make_small_files(small, nfiles)
        mount_s3()
        t_cf = env.sh(f'cp -r "{small}" "{smnt}/small" && "{csfs}" sync "{smnt}"')
        rep.row("small files", "csfs", "cp -r + csfs sync", t_cf, files=nfiles)
        verify_tree(small, smnt / "small", "csfs small files")
        t_rf = None
        if rcl is not None:
            rp = rcl.mount(rmnt)
            before, _ = env.count_objects("rclone")
            start = time.perf_counter()
            env.sh(f'cp -r "{small}" "{rmnt}/small"')
            env.wait_objects("rclone", "", before + nfiles)
            t_rf = time.perf_counter() - start
            rep.row("small files", "rclone", "cp -r, until in bucket", t_rf, files=nfiles)
            verify_tree(small, rmnt / "small", "rclone small files")
            env.unmount(rmnt, rp)
        rep.ratios.append(Ratio(f"{nfiles} small files durable rate: csfs / rclone",
                                t_rf / t_cf if t_rf else None, ">= 2"))
        env.csfs_umount(smnt)

    def section_4() -> None:
        nonlocal rcl, rmnt
        # cold ls -l of a big directory
        print(f"S3: cold ls -l of {nls} files", file=sys.stderr)
        lsdir = tmp / "lsdir"
        make_small_files(lsdir, nls, 16)
        mount_s3()
        t = env.sh(f'cp -r "{lsdir}" "{smnt}/lsdir" && "{csfs}" sync "{smnt}"')
        rep.row("cold ls -l", "csfs", f"setup: cp -r {nls} files + sync", t, files=nls)
        env.csfs_umount(smnt)
        drop_caches()

        def timed_ls(mnt: Path, who: str) -> float:
            t = env.sh(f'ls -l "{mnt}/lsdir" > "{tmp}/ls.out"')
            n = sum(1 for ln in (tmp / "ls.out").read_text().splitlines()
                    if not ln.startswith("total"))
            if n != nls:
                raise BenchError(f"{who}: ls -l listed {n} entries, expected {nls}")
            return t

        mount_s3()
        t_cl = timed_ls(smnt, "csfs")
        rep.row("cold ls -l", "csfs", "fresh mount, ls -l", t_cl, files=nls)
        env.csfs_umount(smnt)
        t_rl = t_sl = None
        if rcl is not None:
            t = rcl.cli("copy", str(lsdir), "crypt:lsdir", "--transfers", "16")
            rep.row("cold ls -l", "rclone", f"setup: rclone copy {nls} files", t, files=nls)
            rp = rcl.mount(rmnt)
            t_rl = timed_ls(rmnt, "rclone")
            rep.row("cold ls -l", "rclone", "fresh mount, ls -l", t_rl, files=nls)
            env.unmount(rmnt, rp)
        if "s3fs" not in peers.missing:
            s3b = env.bucket("s3fs")
            env.py(BOTO_TREE_UP, str(lsdir), s3b, "lsdir/")
            env.s3.put_object(Bucket=s3b, Key="lsdir/", Body=b"")
            s3f = S3fs(env, s3b)
            fmnt = tmp / "mnt-s3fs"
            try:
                fp = s3f.mount(fmnt)
            except BenchError as err:
                rep.skip("s3fs", f"mount failed: {err}")
            else:
                try:
                    t_sl = timed_ls(fmnt, "s3fs")
                    rep.row("cold ls -l", "s3fs", "fresh mount, ls -l", t_sl, files=nls)
                except BenchError as err:
                    rep.skip("s3fs", f"ls failed: {err}")
                env.unmount(fmnt, fp)
        rep.ratios.append(Ratio(f"cold ls -l of {nls}: csfs / rclone time",
                                t_cl / t_rl if t_rl else None, "<= 0.1"))
        rep.ratios.append(Ratio(f"cold ls -l of {nls}: csfs / s3fs time",
                                t_cl / t_sl if t_sl else None, "<= 0.1"))

    def section_5() -> None:
        nonlocal rcl, rmnt
        # untar of a source tree
        tarball, nmembers = make_source_tarball(tmp, untar_files)
        print(f"S3: untar {nmembers} files", file=sys.stderr)
        ref = tmp / "untar-ref"
        ref.mkdir()
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(ref)], check=True)
        mount_s3()
        (smnt / "untar").mkdir()
        t_u = env.sh(f'tar -xf "{tarball}" -C "{smnt}/untar" && "{csfs}" sync "{smnt}"')
        rep.row("untar", "csfs", f"tar -x {nmembers} files + sync", t_u, files=nmembers,
                note=f"{human(tarball.stat().st_size)} tar, S3 store")
        verify_tree(ref, smnt / "untar", "csfs untar")
        env.csfs_umount(smnt)
        subprocess.run(["rm", "-rf", str(ref), str(tarball)])

    def section_6() -> None:
        nonlocal rcl, rmnt
        # peak RSS of the daemon while writing a big file
        print(f"RSS: write {human(rss_size)} into a local-store mount", file=sys.stderr)
        lstore = tmp / "rss-store"
        env.csfs_init(str(lstore))
        rmnt2 = tmp / "mnt-csfs-rss"
        pid = env.csfs_mount(rmnt2, str(lstore), tmp / "cache-rss", "--cache-size", "1G")
        peak = [0]
        stop = [False]

        def sample() -> None:
            while not stop[0]:
                peak[0] = max(peak[0], vm_kib(pid, "VmHWM"))
                time.sleep(0.1)

        import threading

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t_w = env.run(["dd", "if=/dev/zero", f"of={rmnt2}/big.bin", "bs=1M",
                       f"count={rss_size // MiB}", "status=none"])
        env.run([csfs, "sync", rmnt2])
        t_all = t_w
        stop[0] = True
        th.join()
        peak[0] = max(peak[0], vm_kib(pid, "VmHWM"))
        rep.row("peak RSS", "csfs", f"dd {human(rss_size)} zeros (local)", t_all,
                nbytes=rss_size, note=f"daemon VmHWM {peak[0] / 1024:.0f} MiB (incl. upload)")
        st = os.stat(rmnt2 / "big.bin")
        if st.st_size != rss_size:
            raise BenchError(f"RSS file has {st.st_size} bytes, expected {rss_size}")
        env.csfs_umount(rmnt2)
        rep.ratios.append(Ratio(f"daemon peak RSS MiB writing {human(rss_size)}",
                                peak[0] / 1024, "< 200"))
        subprocess.run(["rm", "-rf", str(lstore), str(tmp / "cache-rss")])

    rcl: Rclone | None = None
    rmnt = tmp / "mnt-rclone"
    sections = [
        ('local sequential write and warm read', section_0),
        ('S3: write + fsync, durable', section_1),
        ('S3: cold read', section_2),
        ('S3: many small files, durable', section_3),
        ('cold ls -l of a big directory', section_4),
        ('untar of a source tree', section_5),
        ('peak RSS of the daemon while writing a big file', section_6),
    ]
    for title, fn in sections:
        try:
            fn()
        except (BenchError, OSError, subprocess.CalledProcessError) as err:
            rep.fail(title, str(err))
            env.unmount_all()
        if title.startswith("S3: cold read"):
            ssrc.unlink(missing_ok=True)


def vm_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def make_source_tarball(tmp: Path, limit: int) -> tuple[Path, int]:
    """A tar of up to `limit` regular files from the venv's site-packages (real source)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    tarball = tmp / "src.tar"
    n = 0
    with tarfile.open(tarball, "w") as tar:
        for pkg in sorted(site.iterdir()):
            if n >= limit:
                break
            for p in sorted(pkg.rglob("*")) if pkg.is_dir() else [pkg]:
                if n >= limit:
                    break
                if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                    tar.add(p, arcname=str(p.relative_to(site)), recursive=False)
                    n += 1
    return tarball, n


# ---------------------------------------------------------------- parser


def register(sub: Any, parse_size: Callable[[str], int]) -> None:
    p = sub.add_parser("s3", help="csfs put/get/ls vs boto3 on one moto S3 server")
    p.add_argument("--size", type=parse_size, default=256 * MiB,
                   help="size of the big random file (default 256M)")
    p.add_argument("--files", type=int, default=500, help="number of 4 KiB files (default 500)")
    p.add_argument("--ls-files", type=int, default=2000,
                   help="files in the directory listed by ls -l (default 2000)")
    p.add_argument("--dir", default="/dev/shm", help="scratch folder (default /dev/shm)")
    p.set_defaults(func=cmd_s3)

    p = sub.add_parser("mount", help="csfs mount vs gocryptfs, boto3, rclone crypt, s3fs")
    p.add_argument("--size", type=parse_size, default=GiB,
                   help="local sequential write/read size (default 1G)")
    p.add_argument("--s3-size", type=parse_size, default=256 * MiB,
                   help="size of the S3 durable write and cold read (default 256M)")
    p.add_argument("--files", type=int, default=500, help="number of 4 KiB files (default 500)")
    p.add_argument("--ls-files", type=int, default=2000,
                   help="files in the directory listed by ls -l (default 2000)")
    p.add_argument("--untar-files", type=int, default=3000,
                   help="files in the source tarball (default 3000)")
    p.add_argument("--rss-size", type=parse_size, default=4 * GiB,
                   help="file written while sampling the daemon's peak RSS (default 4G)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy record the daemon during the local write and the cold read")
    p.add_argument("--dir", default="/dev/shm", help="scratch folder (default /dev/shm)")
    p.set_defaults(func=cmd_mount)
