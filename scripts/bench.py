#!/usr/bin/env python3
"""csfs benchmarks. Run through scripts/bench, which installs age and the venv first.

Subcommands (one function each, registered in build_parser):
  crypto   csfs encrypt/decrypt vs age and cp on one big file in tmpfs.
  s3       csfs put/get/ls vs boto3, one moto S3 server (scripts/benchlib/s3.py).
  mount    the csfs mount vs gocryptfs, boto3, rclone crypt and s3fs
           (scripts/benchlib/mount.py).
  share    share/unshare cost on a folder of N files; a member's mount vs the owner's
           (scripts/bench_share.py).

Each timed command runs as its own subprocess; wall time comes from
perf_counter around it, peak RSS from the command's ru_maxrss (wait4 rusage,
read through GNU time; see run_timed).
Exit status: 0 whatever the numbers, 1 if a correctness check or a command
failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


class BenchError(Exception):
    """A command failed or produced wrong output: the benchmark is invalid."""


# ---------------------------------------------------------------- helpers


def parse_size(text: str) -> int:
    """'1G', '512M', '64k', '1GiB', '1000000' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 1G, 256M, 4096)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    size = int(float(m.group(1)) * scale)
    if size <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return size


def human(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def tool(name: str) -> str:
    """Path of an executable: the venv's bin first (csfs, py-spy), then PATH."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found; run through scripts/bench, which installs it")
    return found


@dataclass
class Sample:
    seconds: float
    maxrss_kib: int


@dataclass
class Series:
    """Repeated timings of one command."""

    tool: str
    operation: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def min(self) -> float:
        return min(s.seconds for s in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024


_current_child: subprocess.Popen[bytes] | None = None

# Peak RSS: the ru_maxrss that os.wait4 reports for a direct child is floored at
# this Python's own RSS, because Linux exec records the pre-exec (forked or
# vforked) address space in the high-water mark. GNU time forks the command from
# a ~2 MiB process and reports the command's own ru_maxrss (wait4), so use it.
GNU_TIME = "/usr/bin/time"


def run_timed(argv: Sequence[str], log: Path) -> Sample:
    """Run argv to completion; wall time and the child's peak RSS. Raises on failure."""
    global _current_child
    rss_file = log.with_suffix(".rss")
    use_time = os.access(GNU_TIME, os.X_OK)
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv] if use_time else list(argv)
    with open(log, "wb") as out:
        start = time.perf_counter()
        # Own process group, so that kill_current_child also reaches time's child.
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                process_group=0)
        _current_child = proc
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    _current_child = None
    if proc.returncode != 0:
        output = log.read_text(errors="replace").strip()
        raise BenchError(f"exit {proc.returncode}: {' '.join(argv)}\n{output}")
    maxrss = int(rss_file.read_text().split()[-1]) if use_time else usage.ru_maxrss
    return Sample(elapsed, maxrss)


def kill_current_child() -> None:
    proc = _current_child
    if proc is not None and proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@contextmanager
def scratch_dir(parent: str, prefix: str) -> Iterator[Path]:
    """A temporary folder removed at the end, on errors, Ctrl-C and SIGTERM."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        kill_current_child()
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, old)


def make_random_file(path: Path, size: int) -> None:
    chunk = 16 * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def same_content(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def check_space(folder: Path, needed: int) -> None:
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise BenchError(f"{folder}: {human(free)} free, the benchmark needs about {human(needed)}")


# ---------------------------------------------------------------- crypto


def cmd_crypto(args: argparse.Namespace) -> int:
    size: int = args.size
    csfs, age, age_keygen = tool("csfs"), tool("age"), tool("age-keygen")

    with scratch_dir(args.dir, "csfs-bench-") as tmp:
        check_space(tmp, 6 * size + 16 * MiB)
        log = tmp / "last.log"
        src, copy = tmp / "input.bin", tmp / "copy.bin"
        c_out, c_env, c_plain = tmp / "csfs.enc", tmp / "csfs.enc.key", tmp / "csfs.plain"
        a_out, a_plain = tmp / "age.enc", tmp / "age.plain"
        keys = tmp / "keys"

        print(f"bench crypto: {human(size)} random file in {tmp}, {args.repeat} timed rounds",
              file=sys.stderr)
        make_random_file(src, size)
        run_timed([csfs, "keygen", "--dir", str(keys), "--no-passphrase"], log)
        pub, priv = keys / "recipient_public_key.pem", keys / "recipient_private_key.pem"
        age_key = keys / "age.key"
        run_timed([age_keygen, "-o", str(age_key)], log)
        age_pub = subprocess.run([age_keygen, "-y", str(age_key)], check=True,
                                 capture_output=True, text=True).stdout.strip()

        # (series, argv, files deleted before the run, (output, expected) to verify after)
        steps: list[tuple[Series, list[str], tuple[Path, ...], tuple[Path, Path] | None]] = [
            (Series("csfs", "encrypt"),
             [csfs, "encrypt", str(src), "-r", str(pub), "-o", str(c_out), "-f"],
             (c_out, c_env), None),
            (Series("age", "encrypt"),
             [age, "-r", age_pub, "-o", str(a_out), str(src)],
             (a_out,), None),
            (Series("cp", "copy"),
             ["cp", str(src), str(copy)],
             (copy,), None),
            (Series("csfs", "decrypt"),
             [csfs, "decrypt", str(c_out), "-k", str(priv), "-o", str(c_plain), "-f"],
             (c_plain,), (c_plain, src)),
            (Series("age", "decrypt"),
             [age, "-d", "-i", str(age_key), "-o", str(a_plain), str(a_out)],
             (a_plain,), (a_plain, src)),
        ]

        for rnd in range(args.repeat + 1):  # round 0 is the untimed warm-up
            label = "warm-up" if rnd == 0 else f"round {rnd}/{args.repeat}"
            print(f"  {label}", file=sys.stderr)
            for series, argv, stale, verify in steps:
                remove(*stale)
                sample = run_timed(argv, log)
                if verify is not None:
                    out, expected = verify
                    if not same_content(out, expected):
                        raise BenchError(f"{series.tool} {series.operation}: "
                                         f"{out.name} differs from the input")
                if rnd > 0:
                    series.samples.append(sample)
                remove(*(verify[:1] if verify else ()))  # decrypted copies: free the memory

        startup = Series("csfs", "--version")
        run_timed([csfs, "--version"], log)
        for _ in range(3):
            startup.samples.append(run_timed([csfs, "--version"], log))

    rows = [s for s, *_ in steps]
    by_key = {(s.tool, s.operation): s for s in rows}
    print_crypto_report(size, args.repeat, rows, startup, by_key)
    return 0


def print_crypto_report(size: int, repeat: int, rows: list[Series], startup: Series,
                        by: dict[tuple[str, str], Series]) -> None:
    print(f"\ncsfs bench crypto: {human(size)}, median/min of {repeat} interleaved runs "
          f"after one warm-up round\n")
    header = (f"{'tool':<6} {'operation':<10} {'median s':>9} {'min s':>8} {'MB/s':>8} "
              f"{'peak RSS MiB':>13}")
    print(header)
    print("-" * len(header))
    for s in rows:
        print(f"{s.tool:<6} {s.operation:<10} {s.median:>9.3f} {s.min:>8.3f} "
              f"{size / 1e6 / s.median:>8.0f} {s.peak_rss_mib:>13.1f}")
    print(f"\npython startup (csfs --version, median of 3): {startup.median:.3f} s, "
          f"peak RSS {startup.peak_rss_mib:.1f} MiB")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    ratios = [
        ("csfs encrypt / age encrypt", by["csfs", "encrypt"], by["age", "encrypt"], 0.5),
        ("csfs decrypt / age decrypt", by["csfs", "decrypt"], by["age", "decrypt"], 0.5),
        ("csfs encrypt / cp", by["csfs", "encrypt"], by["cp", "copy"], 1.5),
        ("csfs decrypt / cp", by["csfs", "decrypt"], by["cp", "copy"], 1.5),
    ]
    print(f"\n{'time ratio (median)':<28} {'ratio':>6} {'target':>8}  result")
    for name, a, b, target in ratios:
        r = a.median / b.median
        print(f"{name:<28} {r:>6.2f} {'<= ' + format(target, 'g'):>8}  {verdict(r <= target)}")
    print(f"\n{'peak RSS':<28} {'MiB':>6} {'target':>8}  result")
    for op in ("encrypt", "decrypt"):
        rss = by["csfs", op].peak_rss_mib
        print(f"{'csfs ' + op:<28} {rss:>6.1f} {'< 64':>8}  {verdict(rss < 64)}")


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crypto", help="csfs encrypt/decrypt vs age and cp on one file")
    p.add_argument("--size", type=parse_size, default=1 << 30,
                   help="size of the random input file, e.g. 1G, 256M (default 1G)")
    p.add_argument("--dir", default="/dev/shm",
                   help="where the temporary files go (default /dev/shm, a tmpfs)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs of each command (default 3)")
    p.set_defaults(func=cmd_crypto)

    # s3 and mount live in scripts/benchlib/, which imports the helpers above.
    sys.modules.setdefault("bench", sys.modules[__name__])
    import benchlib

    benchlib.register(sub, parse_size)
    import bench_share

    bench_share.register(sub, parse_size)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "repeat", 1) < 1:
        print("bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except BenchError as err:
        print(f"\nbench: FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted, temporary files removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
