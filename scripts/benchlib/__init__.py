"""The `s3` and `mount` benchmarks of scripts/bench.py (bench.py holds the helpers).

Both start ONE moto S3 server (a subprocess on 127.0.0.1, see tests/servers.py)
and run every tool of the comparison against it in the same run.  Timed
commands are subprocesses (run_timed), so every tool pays for its own process
start-up: csfs and the boto3 baseline are both Python programs, and the
start-up of each is reported apart so that it can be subtracted by eye.

  report.py    rows, ratios, the printed table
  env.py       scratch tree, moto server, csfs key, mounts, clean-up
  files.py     inputs (random files, small-file trees, a source tarball) and checks
  peers.py     rclone crypt, s3fs, page-cache drop, the py-spy profiler
  programs/    the Python programs timed as subprocesses (boto3 baseline, write+fsync)
  s3.py        `bench s3`
  mount.py     `bench mount`: one function per workload
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import MiB

from benchlib.mount import cmd_mount
from benchlib.s3 import cmd_s3

GiB = 1 << 30


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
