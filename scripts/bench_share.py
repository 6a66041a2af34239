"""`scripts/bench share`: the cost of sharing, and a reader's mount against the owner's.

Part 1 runs the library in-process against the moto server, through a
counting store wrapper, so that each operation's requests and uploaded bytes
are exact: share, unshare, and unshare --reencrypt of a folder of N small
files. It also checks, object by object, that sharing rewrote no content.

Part 2 mounts one vault twice, as the owner and as a member it shares with,
each with a fresh cache, and times cold and warm sequential reads of the
same file through each mount (dd, one subprocess per read).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import BenchError, human, run_timed
from bench_fs import Env, bench_env, dd_read, drop_caches, make_small_files

MiB = 1 << 20


def _library_part(env: Env, nfiles: int) -> list[tuple[str, float, dict[str, int], int, int, int]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from csfs.crypto import generate_identity
    from csfs.crypto.keys import public_key_file
    from csfs.store import open_store
    from csfs.store.stats import StatsStore
    from csfs.vault import Vault, sharing, transfer

    store = StatsStore(open_store("s3://" + env.bucket("csfs-share"), endpoint_url=env.endpoint,
                                  path_style=True))
    alice, bob = generate_identity(), generate_identity()
    v = Vault.create(store, alice, state_dir=str(env.tmp / "lib-state"),
                     config_dir=str(env.tmp / "lib-config"), name="alice")
    src = env.tmp / "share-src"
    per = max(1, nfiles // 10)
    for i in range(10):
        make_small_files(src / f"d{i}", per if i < 9 else nfiles - 9 * per)
    transfer.put_tree(v, str(src), "/team")
    sharing.add_member(v, public_key_file(bob), "bob")

    rows = []

    def measure(label: str, fn: Any) -> Any:
        before = {i.key: i.etag for i in store.inner.list("c/")}
        store.reset()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        stats = store.reset()
        after = {i.key: i.etag for i in store.inner.list("c/")}
        rewritten = sum(1 for k, e in after.items() if before.get(k) != e)
        rows.append((label, seconds, stats.requests, stats.bytes_out, rewritten,
                     getattr(result, "bytes_rewritten", 0)))
        return result

    measure(f"share /team ({nfiles} files)", lambda: sharing.share(v, "/team", "bob"))
    if rows[-1][4]:
        raise BenchError(f"sharing rewrote {rows[-1][4]} content objects")
    measure("unshare", lambda: sharing.unshare(v, "/team", "bob"))
    measure("share --write", lambda: sharing.share(v, "/team", "bob", write=True))
    measure("unshare --reencrypt", lambda: sharing.unshare(v, "/team", "bob", reencrypt=True))
    return rows


def _as(env_vars: dict[str, str], argv: list[str]) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in env_vars.items()), *argv]


def _mount_part(env: Env, size: int, repeat: int) -> dict[str, list[float]]:
    csfs = env.csfs
    store = "s3://" + env.bucket("csfs-reader")
    env.run([csfs, "init", "--store", store, "--name", "alice"])
    src = env.tmp / "big.bin"
    with open(src, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    env.run([csfs, "mkdir", "--store", store, "/team"])
    env.run([csfs, "put", "--store", store, str(src), "/team/big.bin"])
    bob_home = env.tmp / "bob"
    bob = {f"XDG_{k}_HOME": str(bob_home / k.lower()) for k in ("CONFIG", "STATE", "CACHE")}
    bob_keys = bob_home / "keys"
    run_timed(_as(bob, [csfs, "keygen", "--dir", str(bob_keys), "--no-passphrase"]), env.log)
    bob["CSFS_KEY"] = str(bob_keys / "recipient_private_key.pem")
    bob["CSFS_TRUST_OWNER"] = str(env.key).replace("_private_key", "_public_key")
    env.run([csfs, "member", "add", "--store", store, str(bob_keys / "recipient_public_key.pem"),
             "--name", "bob"])
    env.run([csfs, "share", "--store", store, "/team", "--with", "bob"])

    out: dict[str, list[float]] = {k: [] for k in ("owner cold", "owner warm", "bob cold",
                                                   "bob warm")}
    for i in range(repeat):
        for who, extra, rel in (("owner", {}, "team/big.bin"),
                                ("bob", bob, "Shared/alice/team/big.bin")):
            mnt = env.tmp / f"mnt-{who}-{i}"
            mnt.mkdir()
            cache = env.tmp / f"cache-{who}-{i}"
            env.mounts.append(mnt)
            run_timed(_as(extra, [csfs, "mount", str(mnt), "--store", store, "--cache-dir",
                                  str(cache), "--ttl", "1"]), env.log)
            drop_caches()
            out[f"{who} cold"].append(dd_read(env, mnt / rel))
            drop_caches()
            out[f"{who} warm"].append(dd_read(env, mnt / rel))
            run_timed(_as(extra, [csfs, "umount", str(mnt)]), env.log)
            env.mounts.remove(mnt)
    return out


def cmd_share(args: argparse.Namespace) -> int:
    with bench_env(args.dir, "csfs-bench-share-") as env:
        rows = _library_part(env, args.files)
        reads = _mount_part(env, args.size, args.repeat)
    print(f"\ncsfs bench share: one moto S3 server on 127.0.0.1; {args.files} x 4 KiB files "
          f"in 10 folders; reader mount: {human(args.size)} file, {args.repeat} runs\n")
    print(f"{'operation':<30} {'seconds':>8} {'requests':>9} {'uploaded':>10} "
          f"{'content rewritten':>18}  requests by kind")
    for label, seconds, requests, up, rewritten, reenc in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(requests.items()))
        content = f"{rewritten} obj" + (f" / {human(reenc)}" if reenc else "")
        print(f"{label:<30} {seconds:>8.2f} {sum(requests.values()):>9} {human(up):>10} "
              f"{content:>18}  {kinds}")
    print(f"\n{'mount read':<14} {'median s':>9} {'MB/s':>8}   runs")
    med = {k: statistics.median(v) for k, v in reads.items()}
    for k, v in reads.items():
        print(f"{k:<14} {med[k]:>9.2f} {args.size / med[k] / 1e6:>8.0f}   "
              + " ".join(f"{x:.2f}" for x in v))
    for kind in ("cold", "warm"):
        print(f"bob / owner {kind} read time: {med['bob ' + kind] / med['owner ' + kind]:.2f}x "
              "(target 1.0)")
    return 0


def register(sub: Any, parse_size: Any) -> None:
    p = sub.add_parser("share", help="share/unshare cost on N files; a reader's mount vs owner's")
    p.add_argument("--files", type=int, default=1000, help="files in the shared folder (1000)")
    p.add_argument("--size", type=parse_size, default=256 * MiB,
                   help="file read through both mounts (default 256M)")
    p.add_argument("--repeat", type=int, default=3, help="mount read runs (default 3)")
    p.add_argument("--dir", default="/dev/shm", help="scratch folder (default /dev/shm)")
    p.set_defaults(func=cmd_share)
