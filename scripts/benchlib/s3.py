"""`bench s3`: csfs put/get/ls against boto3, on one moto S3 server."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from bench import BenchError, MiB, check_space, human, make_random_file

from benchlib.env import Env, bench_env
from benchlib.files import make_small_files, verify_same, verify_tree
from benchlib.report import Ratio, Report


def startup_rows(env: Env, rep: Report) -> tuple[float, float]:
    """Fixed cost of each Python tool (median of 3 after a warm-up).

    csfs: `csfs ls /` on the S3 vault = start-up, boto3 import, key load, vault open
    (GET header, GET root manifest). boto3: import boto3 + client, no request.
    """
    import statistics

    cs, bs = [], []
    for _ in range(4):
        cs.append(env.run([env.csfs, "ls", "/"]))
        bs.append(env.py("boto_startup"))
    c, b = statistics.median(cs[1:]), statistics.median(bs[1:])
    rep.row("start-up", "csfs", "csfs ls / (empty vault)", c, note="median of 3")
    rep.row("start-up", "boto3", "python: import boto3 + client", b, note="median of 3")
    return c, b


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
        t_bput = env.py("boto_upload", str(src), raw, "big.bin")
        rep.row("big file", "boto3", "upload_file", t_bput, nbytes=size)
        t_cget = env.run([csfs, "get", "/big.bin", out_c])
        rep.row("big file", "csfs", "get", t_cget, nbytes=size)
        verify_same(src, out_c, "csfs get")
        out_c.unlink()
        t_bget = env.py("boto_download", str(out_b), raw, "big.bin")
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
        t_bput = env.py("boto_tree_up", str(small), raw, "small/")
        rep.row("small files", "boto3", "upload_file x16 threads", t_bput, files=nfiles)
        got = tmp / "small.csfs"
        t_cget = env.run([csfs, "get", "-r", "/small", got])
        rep.row("small files", "csfs", "get -r", t_cget, files=nfiles)
        verify_tree(small, got, "csfs get -r")
        got_b = tmp / "small.boto3"
        t_bget = env.py("boto_tree_down", str(got_b), raw, "small/")
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
