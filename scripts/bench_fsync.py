#!/usr/bin/env python3
"""fsync amplification: store bytes written per transaction of a sqlite database on a mount.

Run: PYTHONPATH=. .venv/bin/python scripts/bench_fsync.py [--transactions 1000] [--mode delete,wal]
     [--prefill MIB]

For each journal mode: a fresh vault on a local-folder store, a mount, the sqlite3
CLI running one INSERT per transaction (each commit fsyncs), then a sync. The
local store never deletes a version by itself, so the bytes of the file versions
it holds (``c/`` payloads and ``k/`` envelopes) are what the mount uploaded.
``--prefill`` first fills the database with that many MiB of random rows (not
counted), so that the cost of re-uploading a whole file shows.
Prints one line per mode: versions, store bytes, bytes per transaction.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

CSFS = os.path.join(os.path.dirname(sys.executable), "csfs")


def _run(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, env=env, check=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


def store_versions(store: str) -> tuple[int, int]:
    """(file versions, bytes of their payloads and envelopes) held by a local store."""
    versions, total = 0, 0
    for prefix in ("c", "k"):
        for d, _, files in os.walk(os.path.join(store, prefix)):
            for f in files:
                if f.startswith("."):
                    continue
                total += os.path.getsize(os.path.join(d, f))
                versions += prefix == "c"
    return versions, total


def bench(mode: str, transactions: int, root: str, prefill: int = 0) -> None:
    env = {
        **os.environ,
        "CSFS_PASSPHRASE": "pw",
        "XDG_STATE_HOME": os.path.join(root, "state"),
        "XDG_CACHE_HOME": os.path.join(root, "cache"),
        "XDG_CONFIG_HOME": os.path.join(root, "config"),
        "XDG_RUNTIME_DIR": os.path.join(root, "run"),
        "CSFS_STORE": os.path.join(root, "store"),
        "CSFS_KEY": os.path.join(root, "keys", "recipient_private_key.pem"),
    }
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    _run([CSFS, "keygen", "--dir", os.path.join(root, "keys")], env)
    _run([CSFS, "init", "--name", "bench"], env)
    mnt = os.path.join(root, "mnt")
    os.makedirs(mnt)
    _run([CSFS, "mount", mnt, "--cache-dir", os.path.join(root, "mcache")], env, timeout=60)
    try:
        db = os.path.join(mnt, "bench.db")
        setup = f"PRAGMA journal_mode={mode};\nCREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n"
        if prefill:
            # Random bytes: zeros would be stored as holes and cost nothing.
            setup += "CREATE TABLE fill (b BLOB);\nBEGIN;\n" + (
                "INSERT INTO fill VALUES (randomblob(65536));\n" * (16 * prefill)
            ) + "COMMIT;\n"
        _run(["sqlite3", db], env, input=setup.encode())
        _run([CSFS, "sync", mnt, "--timeout", "120"], env, timeout=180)
        v0, b0 = store_versions(env["CSFS_STORE"])
        # Integers and a constant only: nothing from outside reaches the SQL text.
        row = "INSERT INTO t (v) VALUES ('row {} " + "x" * 50 + "');\n"
        sql = f"PRAGMA journal_mode={mode};\n" + "".join(
            row.format(i) for i in range(transactions)
        )
        t = time.monotonic()
        _run(["sqlite3", db], env, input=sql.encode(), timeout=3600)
        _run([CSFS, "sync", mnt, "--timeout", "600"], env, timeout=700)
        took = time.monotonic() - t
        size = sum(
            os.path.getsize(os.path.join(mnt, f)) for f in os.listdir(mnt) if f.startswith("bench")
        )
        v1, b1 = store_versions(env["CSFS_STORE"])
    finally:
        subprocess.run([CSFS, "umount", mnt, "--timeout", "60"], env=env, capture_output=True,
                       timeout=120, check=False)
    print(
        f"journal_mode={mode}{f' prefill={prefill}MiB' if prefill else ''}: {transactions} transactions in {took:.1f}s; database files "
        f"{size} bytes; store gained {v1 - v0} versions, {b1 - b0} bytes = "
        f"{(b1 - b0) / transactions:.0f} bytes per transaction"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--mode", default="delete,wal", help="sqlite journal modes, comma list")
    parser.add_argument("--prefill", type=int, default=0, help="MiB of random rows first")
    args = parser.parse_args()
    for mode in args.mode.split(","):
        root = tempfile.mkdtemp(prefix="csfs-bench-fsync-")
        try:
            bench(mode, args.transactions, root, args.prefill)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
