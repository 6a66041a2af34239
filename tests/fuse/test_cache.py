"""The cache holds no plaintext, and stays within --cache-size."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fuse.helpers import Vault, requires_fuse, tree_bytes

pytestmark = [pytest.mark.mount, requires_fuse]

MARKER = b"PLAINTEXT-MARKER-7f3a9c"


def scan(folder: str, needle: bytes) -> list[str]:
    hits = []
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            try:
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def test_no_plaintext_in_cache(vault: Vault, tmp_path: Path) -> None:
    m = vault.mount()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"t{i}.txt").write_bytes((MARKER + b" line %d\n" % i) * (2000 * (i + 1)))
    subprocess.run(["cp", "-r", str(src), m.p("docs")], check=True)
    db = m.p("m.db")
    sql = "CREATE TABLE t(v TEXT); BEGIN;" + "".join(
        f"INSERT INTO t VALUES ('{MARKER.decode()} {i}');" for i in range(200)) + "COMMIT;"
    subprocess.run(["sqlite3", db], input=sql.encode(), check=True, capture_output=True)
    # A file still open, written at random offsets (lives in the encrypted scratch file).
    fd = os.open(m.p("open.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, MARKER * 5000, 0)
    os.pwrite(fd, MARKER * 100, 200_000)
    os.pwrite(fd, MARKER * 100, 10)
    # Read everything back so that the read cache is populated too.
    for n in os.listdir(m.p("docs")):
        with open(m.p("docs", n), "rb") as f:
            assert MARKER in f.read()
    assert os.listdir(os.path.join(m.cache_dir, "scratch")), "expected a scratch file in use"
    assert scan(m.cache_dir, MARKER) == []
    assert scan(os.path.join(vault.root, "cache"), MARKER) == []  # XDG cache home
    os.close(fd)
    m.sync()
    assert scan(m.cache_dir, MARKER) == []
    if vault.backend == "local":
        assert scan(vault.store, MARKER) == []


def test_cache_size_bound(tmp_path: Path, make_vault) -> None:  # type: ignore[no-untyped-def]
    vault = make_vault("local")
    src = tmp_path / "big"
    src.mkdir()
    sizes = [20 << 20, 20 << 20, 20 << 20, 20 << 20, 20 << 20, 10 << 20, 10 << 20]  # 140 MB
    for i, size in enumerate(sizes):
        with open(src / f"b{i}", "wb") as f:
            f.write(os.urandom(size))
    vault.cli("put", "-r", str(src), "/", timeout=300)
    limit = 32 << 20
    m = vault.mount(cache_size="32M")
    m.sync()  # nothing pinned
    assert "pending uploads: 0 files" in m.status()
    peak = 0
    for i in range(len(sizes)):
        with open(m.p("big", f"b{i}"), "rb") as f, open(src / f"b{i}", "rb") as g:
            while block := f.read(4 << 20):
                assert block == g.read(len(block))
                peak = max(peak, tree_bytes(m.cache_dir))
    slack = 4 << 20
    assert peak <= limit + slack, f"cache grew to {peak} bytes (limit {limit})"
    assert tree_bytes(m.cache_dir) <= limit + slack
    assert tree_bytes(m.cache_dir) > 8 << 20  # it does cache


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 20 MiB tmpfs for a cache folder (root only); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small-disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)], check=True)
    try:
        yield str(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_cache_disk_evicts_clean_entries(make_vault, small_disk: str) -> None:  # type: ignore[no-untyped-def]
    """A cache folder on a disk smaller than --cache-size: once uploaded, what is
    cached is evicted when the disk fills, and writes and reads go on."""
    vault = make_vault("local")
    m = vault.mount(cache_dir=os.path.join(small_disk, "cache"), cache_size="1G")
    want = {f"f{i}": os.urandom(3 << 20) for i in range(10)}  # 30 MiB through a 20 MiB disk
    for name, data in want.items():
        with open(m.p(name), "wb") as f:
            f.write(data)
        m.sync()
    for name, data in want.items():
        with open(m.p(name), "rb") as f:
            assert f.read() == data, name
    assert "errors: 0" in m.status()


def test_default_cache_size_fits_the_disk(make_vault, small_disk: str) -> None:  # type: ignore[no-untyped-def]
    vault = make_vault("local")
    cache = os.path.join(small_disk, "cache")
    m = vault.mount(cache_dir=cache)  # the default, 2G, is more than the disk holds
    limit = int(m.status().split("cache: ")[1].split(" of ")[1].split()[0])
    assert limit <= 20 << 20
    m.umount()
    r = vault.cli("mount", m.path, "--cache-dir", cache)
    assert b"csfs: warning: the disk of" in r.stderr
    assert b"Traceback" not in r.stderr
