"""`bench mount`: the csfs mount against gocryptfs, boto3, rclone crypt and s3fs.

One function per workload, in WORKLOADS order; what they share is a MountRun.
A workload that fails is reported and the next one runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, MiB, check_space, human, make_random_file

from benchlib.env import Env, bench_env
from benchlib.files import (
    make_small_files,
    make_source_tarball,
    verify_same,
    verify_tree,
    vm_kib,
)
from benchlib.peers import Peers, Profiler, Rclone, S3fs, drop_caches
from benchlib.report import Ratio, Report


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
        run_mount_workloads(env, rep, peers, prof, size, s3size, nfiles, nls, rss_size,
                            args.untar_files)
    rep.print()
    for s in prof.summaries:
        print("\n" + s)
    return 1 if rep.failures else 0


@dataclass
class MountRun:
    """What the workloads share: the run's tools and sizes, the one S3 vault (its
    store URL, mount point and source file), the raw bucket of the boto3 baseline,
    and the rclone remote once the durable-write workload has made it."""

    env: Env
    rep: Report
    peers: Peers
    prof: Profiler
    size: int
    s3size: int
    nfiles: int
    nls: int
    rss_size: int
    untar_files: int
    sstore: str
    raw: str
    smnt: Path
    ssrc: Path
    rmnt: Path
    rcl: Rclone | None = None
    ncache: int = 0

    def mount_s3(self) -> int:
        """Mount the S3 vault with a fresh, empty cache."""
        self.ncache += 1
        cache = self.env.tmp / f"cache-s3-{self.ncache}"
        return self.env.csfs_mount(self.smnt, self.sstore, cache, "--cache-size", "4G")


def local_write_read(run: MountRun) -> None:
    """Local store: a big sequential write and a warm read, csfs vs gocryptfs."""
    env = run.env
    rep = run.rep
    peers = run.peers
    prof = run.prof
    tmp = run.env.tmp
    csfs = run.env.csfs
    size = run.size
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


def s3_durable_write(run: MountRun) -> None:
    """S3: a durable write (write + fsync), csfs vs boto3 and rclone; makes the rclone remote
    the later workloads use."""
    env = run.env
    rep = run.rep
    peers = run.peers
    s3size = run.s3size
    raw = run.raw
    smnt = run.smnt
    ssrc = run.ssrc
    print(f"S3: {human(s3size)} write+fsync, cold read", file=sys.stderr)
    make_random_file(ssrc, s3size)
    run.mount_s3()
    t_cs = env.py("write_fsync", str(ssrc), str(smnt / "s3.bin"))
    rep.row("durable write", "csfs", f"write+fsync {human(s3size)}", t_cs, nbytes=s3size,
            note="fsync returns once uploaded")
    _, stored = env.count_objects("csfs-mount")
    if stored < s3size:
        raise BenchError(f"after fsync the csfs bucket holds {stored} bytes < {s3size}")
    t_bs = env.py("boto_upload", str(ssrc), raw, "s3.bin")
    rep.row("durable write", "boto3", f"upload_file {human(s3size)}", t_bs, nbytes=s3size)

    t_rs = None
    if "rclone" not in peers.missing:
        try:
            run.rcl = Rclone(env, env.bucket("rclone"))
            rp = run.rcl.mount(run.rmnt)
        except (BenchError, subprocess.CalledProcessError) as err:
            rep.skip("rclone", f"mount failed: {err}")
            run.rcl = None
        else:
            start = time.perf_counter()
            env.py("write_fsync", str(ssrc), str(run.rmnt / "s3.bin"))
            env.wait_objects("rclone", "", 1, s3size)
            t_rs = time.perf_counter() - start
            rep.row("durable write", "rclone", "write+fsync, until in bucket", t_rs,
                    nbytes=s3size, note="default --vfs-write-back 5s")
            env.unmount(run.rmnt, rp)
    rep.ratios.append(Ratio(f"{human(s3size)} durable write time: csfs / boto3", t_cs / t_bs,
                            "<= 1.15"))
    rep.ratios.append(Ratio(f"{human(s3size)} durable write: rclone time / csfs time",
                            t_rs / t_cs if t_rs else None, ">= 3"))
    env.csfs_umount(smnt)


def s3_cold_read(run: MountRun) -> None:
    """S3: a cold read of the durable write's file, csfs vs boto3 and rclone."""
    env = run.env
    rep = run.rep
    prof = run.prof
    tmp = run.env.tmp
    s3size = run.s3size
    raw = run.raw
    smnt = run.smnt
    ssrc = run.ssrc
    drop_caches()
    pid = run.mount_s3()
    with prof.record(pid, f"{human(s3size)} cold read (S3)"):
        t_cc = dd_read(env, smnt / "s3.bin")
    rep.row("cold read", "csfs", f"dd {human(s3size)}, empty cache", t_cc, nbytes=s3size)
    verify_same(ssrc, smnt / "s3.bin", "csfs cold read")
    env.csfs_umount(smnt)
    got = tmp / "s3.boto3"
    t_bc = env.py("boto_download", str(got), raw, "s3.bin")
    rep.row("cold read", "boto3", f"download_file {human(s3size)}", t_bc, nbytes=s3size)
    verify_same(ssrc, got, "boto3 download")
    got.unlink()
    t_rc = None
    if run.rcl is not None:
        drop_caches()
        rp = run.rcl.mount(run.rmnt)
        t_rc = dd_read(env, run.rmnt / "s3.bin")
        rep.row("cold read", "rclone", f"dd {human(s3size)}, empty cache", t_rc, nbytes=s3size)
        verify_same(ssrc, run.rmnt / "s3.bin", "rclone read")
        env.unmount(run.rmnt, rp)
    rep.ratios.append(Ratio(f"{human(s3size)} cold read throughput: csfs / boto3",
                            t_bc / t_cc, ">= 0.9"))
    rep.ratios.append(Ratio(f"{human(s3size)} cold read throughput: csfs / rclone",
                            t_rc / t_cc if t_rc else None, ">= 1"))


def s3_small_files(run: MountRun) -> None:
    """S3: many small files, durable, csfs vs rclone."""
    env = run.env
    rep = run.rep
    tmp = run.env.tmp
    csfs = run.env.csfs
    nfiles = run.nfiles
    smnt = run.smnt
    print(f"S3: {nfiles} small files", file=sys.stderr)
    small = tmp / "small"
    make_small_files(small, nfiles)
    run.mount_s3()
    t_cf = env.sh(f'cp -r "{small}" "{smnt}/small" && "{csfs}" sync "{smnt}"')
    rep.row("small files", "csfs", "cp -r + csfs sync", t_cf, files=nfiles)
    verify_tree(small, smnt / "small", "csfs small files")
    t_rf = None
    if run.rcl is not None:
        rp = run.rcl.mount(run.rmnt)
        before, _ = env.count_objects("rclone")
        start = time.perf_counter()
        env.sh(f'cp -r "{small}" "{run.rmnt}/small"')
        env.wait_objects("rclone", "", before + nfiles)
        t_rf = time.perf_counter() - start
        rep.row("small files", "rclone", "cp -r, until in bucket", t_rf, files=nfiles)
        verify_tree(small, run.rmnt / "small", "rclone small files")
        env.unmount(run.rmnt, rp)
    rep.ratios.append(Ratio(f"{nfiles} small files durable rate: csfs / rclone",
                            t_rf / t_cf if t_rf else None, ">= 2"))
    env.csfs_umount(smnt)


def cold_ls(run: MountRun) -> None:
    """Cold ls -l of a big directory."""
    env = run.env
    rep = run.rep
    peers = run.peers
    tmp = run.env.tmp
    csfs = run.env.csfs
    nls = run.nls
    smnt = run.smnt
    print(f"S3: cold ls -l of {nls} files", file=sys.stderr)
    lsdir = tmp / "lsdir"
    make_small_files(lsdir, nls, 16)
    run.mount_s3()
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

    run.mount_s3()
    t_cl = timed_ls(smnt, "csfs")
    rep.row("cold ls -l", "csfs", "fresh mount, ls -l", t_cl, files=nls)
    env.csfs_umount(smnt)
    t_rl = t_sl = None
    if run.rcl is not None:
        t = run.rcl.cli("copy", str(lsdir), "crypt:lsdir", "--transfers", "16")
        rep.row("cold ls -l", "rclone", f"setup: rclone copy {nls} files", t, files=nls)
        rp = run.rcl.mount(run.rmnt)
        t_rl = timed_ls(run.rmnt, "rclone")
        rep.row("cold ls -l", "rclone", "fresh mount, ls -l", t_rl, files=nls)
        env.unmount(run.rmnt, rp)
    if "s3fs" not in peers.missing:
        s3b = env.bucket("s3fs")
        env.py("boto_tree_up", str(lsdir), s3b, "lsdir/")
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


def untar(run: MountRun) -> None:
    """Untar of a source tree."""
    env = run.env
    rep = run.rep
    tmp = run.env.tmp
    csfs = run.env.csfs
    untar_files = run.untar_files
    smnt = run.smnt
    tarball, nmembers = make_source_tarball(tmp, untar_files)
    print(f"S3: untar {nmembers} files", file=sys.stderr)
    ref = tmp / "untar-ref"
    ref.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(ref)], check=True)
    run.mount_s3()
    (smnt / "untar").mkdir()
    t_u = env.sh(f'tar -xf "{tarball}" -C "{smnt}/untar" && "{csfs}" sync "{smnt}"')
    rep.row("untar", "csfs", f"tar -x {nmembers} files + sync", t_u, files=nmembers,
            note=f"{human(tarball.stat().st_size)} tar, S3 store")
    verify_tree(ref, smnt / "untar", "csfs untar")
    env.csfs_umount(smnt)
    subprocess.run(["rm", "-rf", str(ref), str(tarball)])


def peak_rss(run: MountRun) -> None:
    """Peak RSS of the daemon while writing a big file."""
    env = run.env
    rep = run.rep
    tmp = run.env.tmp
    csfs = run.env.csfs
    rss_size = run.rss_size
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


WORKLOADS: list[tuple[str, Callable[[MountRun], None]]] = [
    ('local sequential write and warm read', local_write_read),
    ('S3: write + fsync, durable', s3_durable_write),
    ('S3: cold read', s3_cold_read),
    ('S3: many small files, durable', s3_small_files),
    ('cold ls -l of a big directory', cold_ls),
    ('untar of a source tree', untar),
    ('peak RSS of the daemon while writing a big file', peak_rss),
]


def run_mount_workloads(env: Env, rep: Report, peers: Peers, prof: Profiler, size: int,
                        s3size: int, nfiles: int, nls: int, rss_size: int,
                        untar_files: int) -> None:
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

    # Shared by the S3 workloads: one vault bucket, one raw bucket, one source file.
    sstore = "s3://" + env.bucket("csfs-mount")
    raw = env.bucket("raw")
    env.csfs_init(sstore)
    run = MountRun(env, rep, peers, prof, size, s3size, nfiles, nls, rss_size, untar_files,
                   sstore, raw, env.tmp / "mnt-csfs-s3", env.tmp / "s3.bin", env.tmp / "mnt-rclone")
    for title, workload in WORKLOADS:
        try:
            workload(run)
        except (BenchError, OSError, subprocess.CalledProcessError) as err:
            rep.fail(title, str(err))
            env.unmount_all()
        if title.startswith("S3: cold read"):
            run.ssrc.unlink(missing_ok=True)
