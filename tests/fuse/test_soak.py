"""A seeded run of random rewrites, appends, pwrites, truncates, renames and unlinks.

A longer run of this kind found a race in the upload queue (a spurious "(conflict
...)" copy); tests/vault/test_upload_queue.py reproduces that one deterministically.
This run checks every listing and read as it goes, then the store's state after a
remount with an empty cache.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

NAMES = [f"f{i}" for i in range(8)]


def run_ops(root: str, seed: int, steps: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    ref: dict[str, bytes] = {}
    for step in range(steps):
        name = rnd.choice(NAMES)
        p = os.path.join(root, name)
        op = rnd.random()
        if op < 0.35:
            data = rnd.randbytes(rnd.choice([0, 1, 100, 5000, 70000]))
            with open(p, "wb") as f:
                f.write(data)
            ref[name] = data
        elif name not in ref:
            continue
        elif op < 0.55:
            data = rnd.randbytes(rnd.randint(1, 9000))
            with open(p, "ab") as f:
                f.write(data)
            ref[name] += data
        elif op < 0.7:
            off, data = rnd.randint(0, len(ref[name])), rnd.randbytes(rnd.randint(1, 70000))
            fd = os.open(p, os.O_WRONLY)
            os.pwrite(fd, data, off)
            os.close(fd)
            b = bytearray(ref[name].ljust(off + len(data), b"\0"))
            b[off : off + len(data)] = data
            ref[name] = bytes(b)
        elif op < 0.78:
            other = rnd.choice(NAMES)
            os.rename(p, os.path.join(root, other))
            ref[other] = ref.pop(name)
        elif op < 0.84:
            os.unlink(p)
            del ref[name]
        elif op < 0.9:
            length = rnd.randint(0, len(ref[name]) + 1000)
            os.truncate(p, length)
            ref[name] = ref[name][:length].ljust(length, b"\0")
        else:
            with open(p, "rb") as f:
                assert f.read() == ref[name], (step, name)
        assert sorted(os.listdir(root)) == sorted(ref), step
    return ref


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_rewrites(make_vault: Callable[[str], Vault], seed: int) -> None:
    vault = make_vault("local")
    m = vault.mount()
    ref = run_ops(m.path, seed, 1500)
    m.sync()
    m.umount()
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    assert sorted(os.listdir(fresh.path)) == sorted(ref)
    for name, data in ref.items():
        with open(fresh.p(name), "rb") as f:
            assert f.read() == data, name
