"""Durability at the edges, below FUSE: the file system layer over real S3 (moto)
behind the fault proxy (tests/faultproxy.py). Mount-level tests are in
tests/fuse/test_offline.py."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csfs.crypto import generate_identity
from csfs.store import open_store
from csfs.vault import Vault
from csfs.vault.filesystem import FileSystem
from tests.faultproxy import FaultProxy


@pytest.fixture
def proxied(fault_proxy: FaultProxy, s3_bucket: str, tmp_path: Path) -> Iterator[
        tuple[FaultProxy, str, Path]]:
    me = generate_identity()
    url = f"s3://{s3_bucket}"
    Vault.create(open_store(url, endpoint_url=fault_proxy.endpoint_url, path_style=True), me,
                 state_dir=str(tmp_path / "state"))
    yield fault_proxy, url, tmp_path
    fault_proxy.restore()


def _fs(proxy: FaultProxy, url: str, tmp: Path, cache: str, ttl: float = 1.0,
        identity=None) -> FileSystem:  # type: ignore[no-untyped-def]
    store = open_store(url, endpoint_url=proxy.endpoint_url, path_style=True)
    vault = Vault.open(store, identity, state_dir=str(tmp / "state"), ttl=ttl)
    return FileSystem(vault, str(tmp / cache), 256 << 20)


def test_parallel_first_reads_of_one_file_on_a_slow_store(fault_proxy: FaultProxy,
                                                           s3_bucket: str,
                                                           tmp_path: Path) -> None:
    """The kernel sends read-ahead requests of one file in parallel; on a fresh mount
    over a slow store every one of them fetches the file's envelope. None may fail."""
    me = generate_identity()
    url = f"s3://{s3_bucket}"
    store = open_store(url, endpoint_url=fault_proxy.endpoint_url, path_style=True)
    v = Vault.create(store, me, state_dir=str(tmp_path / "state"))
    files = {f"/f{i}": os.urandom(300_000 + i) for i in range(6)}
    for path, data in files.items():
        v.write_file(path, __import__("io").BytesIO(data))
    fault_proxy.slow(0.2)
    failures: list[BaseException] = []
    for round_ in range(2):
        fs = FileSystem(Vault.open(store, me, state_dir=str(tmp_path / "state"), ttl=60),
                        str(tmp_path / f"cache{round_}"), 256 << 20)
        try:
            fhs = {p: fs.open(p, os.O_RDONLY) for p in files}

            def read(path: str, offset: int) -> None:
                try:
                    got = fs.read(fhs[path], offset, 65536)
                    assert got == files[path][offset : offset + 65536]
                except BaseException as exc:  # noqa: BLE001 - collected and reported
                    failures.append(exc)

            threads = [threading.Thread(target=read, args=(p, off))
                       for p in files for off in range(0, 300_000, 65536)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for fh in fhs.values():
                fs.release(fh)
        finally:
            fs.close()
    assert not failures, failures[:3]


def test_version_sealed_offline_is_rewrapped_to_readers_added_meanwhile(
        fault_proxy: FaultProxy, s3_bucket: str, tmp_path: Path) -> None:
    """Alice's mount seals a file while the store is down, for the readers it last
    knew; meanwhile (from another machine) she shares the folder with Bob. The
    version that reaches the store must be readable by Bob: re-wrapped at upload."""
    from csfs.crypto.keys import public_key_file
    from csfs.vault import sharing
    from tests.vault.conftest import read_bytes

    alice, bob = generate_identity(), generate_identity()
    url = f"s3://{s3_bucket}"
    direct = open_store(url, endpoint_url=fault_proxy.endpoint_url.replace(
        str(fault_proxy.port), str(fault_proxy.upstream[1])), path_style=True)
    a2 = Vault.create(direct, alice, state_dir=str(tmp_path / "a2"), name="alice")
    a2.mkdir("/proj")
    sharing.add_member(a2, public_key_file(bob), "bob")
    proxied = open_store(url, endpoint_url=fault_proxy.endpoint_url, path_style=True)
    fs = FileSystem(Vault.open(proxied, alice, state_dir=str(tmp_path / "a1"), ttl=1),
                    str(tmp_path / "cache"), 64 << 20)
    try:
        assert fs.readdir("/proj") == []
        fault_proxy.outage()
        time.sleep(1.5)  # past the TTL
        data = os.urandom(100_000)
        fh = fs.create("/proj/offline.txt", 0o644)
        fs.write(fh, 0, data)
        fs.release(fh)  # sealed for Alice alone, the readers last known
        sharing.share(a2, "/proj", "bob")
        fault_proxy.restore()
        assert fs.sync(timeout=60)
    finally:
        fs.close()
    b = Vault.open(direct, bob, state_dir=str(tmp_path / "bob"),
                   trusted_owners={alice.recipient.verify_key_bytes})
    assert read_bytes(b, "/Shared/alice/proj/offline.txt") == data


def test_parallel_reads_of_many_files_share_the_cipher_cache_safely(tmp_path: Path) -> None:
    """Readers of more files than the cipher cache holds, at once (a git fsck of a big
    repository): an eviction racing a lookup must not fail a read. The cache is made
    small here so that evictions are frequent (the mount's holds 1024)."""
    import sys

    from cachetools import LRUCache

    me = generate_identity()
    store = open_store(str(tmp_path / "store"))
    v = Vault.create(store, me, state_dir=str(tmp_path / "state"))
    files = {f"/f{i}": os.urandom(100 + i) for i in range(24)}
    for path, data in files.items():
        v.write_file(path, __import__("io").BytesIO(data))
    fs = FileSystem(Vault.open(store, me, state_dir=str(tmp_path / "state"), ttl=60),
                    str(tmp_path / "cache"), 64 << 20)
    fs.ciphers = LRUCache(maxsize=4)
    fhs = {p: fs.open(p, os.O_RDONLY) for p in files}
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        import random
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                p = rng.choice(list(files))
                assert fs.read(fhs[p], 0, 4096) == files[p]
        except BaseException as exc:  # noqa: BLE001 - collected and reported
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded machine does
    try:
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        for fh in fhs.values():
            fs.release(fh)
        fs.close()
    assert not failures, failures[:3]


def test_namespace_changes_queued_offline_lose_no_other_clients_change(
        fault_proxy: FaultProxy, s3_bucket: str, tmp_path: Path) -> None:
    """Changes queued offline reach the store as conditionally as online ones: what
    another client changed meanwhile is kept (a conflict copy, or left in place)."""
    from tests.vault.conftest import read_bytes, write_bytes

    me = generate_identity()
    url = f"s3://{s3_bucket}"
    direct = open_store(url, endpoint_url=fault_proxy.endpoint_url.replace(
        str(fault_proxy.port), str(fault_proxy.upstream[1])), path_style=True)
    other = Vault.create(direct, me, state_dir=str(tmp_path / "other"))
    for name in ("doc", "x", "gone", "moved"):
        write_bytes(other, "/" + name, name.encode())
    fs = _fs(fault_proxy, url, tmp_path, "cache", identity=me)
    try:
        assert sorted(n for n, _ in fs.readdir("/")) == ["doc", "gone", "moved", "x"]
        fault_proxy.outage()
        time.sleep(1.5)  # past the TTL
        fs.rename("/x", "/doc")  # over the doc this mount saw
        fs.unlink("/gone")
        fs.mkdir("/d", 0o755)
        fs.rename("/moved", "/d/moved")
        fs.chmod("/d/moved", 0o600)
        assert sorted(n for n, _ in fs.readdir("/")) == ["d", "doc"]
        # Meanwhile, on another machine:
        write_bytes(other, "/doc", b"doc, newer")
        write_bytes(other, "/gone", b"gone, newer")
        write_bytes(other, "/d", b"a file named d")
        fault_proxy.restore()
        assert fs.sync(timeout=60)
    finally:
        fs.close()
    check = Vault.open(direct, me, state_dir=str(tmp_path / "check"))
    names = check.listdir("/")
    contents = {n: read_bytes(check, "/" + n) for n, e in names.items() if e.type == "f"}
    assert contents.pop("doc") == b"x"
    assert contents.pop("gone") == b"gone, newer"  # the unlink named an older version
    assert contents.pop("d") == b"a file named d"
    assert list(contents.values()) == [b"doc, newer"]  # a conflict copy
    folders = [n for n, e in names.items() if e.type == "d"]
    assert len(folders) == 1 and folders[0].startswith("d (conflict"), names
    moved = check.lookup(f"/{folders[0]}/moved")
    assert moved.mode == 0o600
    assert read_bytes(check, f"/{folders[0]}/moved") == b"moved"


class FailingSecondSwitch:
    """A store whose manifest switches fail as a reset connection would, from the
    ``left``-th on until ``left`` is set back to -1 (to stop a move across folders
    between its two switches, and keep its retry waiting)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.left = -1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kw: object) -> str:
        if key.startswith("m/") and self.left >= 0:
            self.left = max(self.left - 1, 0)
            if self.left == 0:
                from csfs.errors import TransientStoreError
                raise TransientStoreError("connection reset (injected)")
        return self.inner.put(key, data, **kw)  # type: ignore[attr-defined, no-any-return]


def test_move_half_done_before_an_outage_keeps_a_version_written_at_the_target(
        tmp_path: Path) -> None:
    """A move across folders adds the entry at the target, then fails to remove it at
    the source (the store went away): it is queued and applied again later. If the
    other client wrote a new version at the target meanwhile, applying the move
    again must not put the source's older entry over it."""
    from tests.vault.conftest import read_bytes, write_bytes

    me = generate_identity()
    inner = open_store(str(tmp_path / "store"))
    other = Vault.create(inner, me, state_dir=str(tmp_path / "other"))
    other.mkdir("/d")
    write_bytes(other, "/f", b"old")
    store = FailingSecondSwitch(inner)
    fs = FileSystem(Vault.open(store, me, state_dir=str(tmp_path / "state"), ttl=1),  # type: ignore[arg-type]
                    str(tmp_path / "cache"), 64 << 20)
    try:
        assert sorted(n for n, _ in fs.readdir("/")) == ["d", "f"]
        store.left = 2
        fs.rename("/f", "/d/f")  # added in /d, then the removal from / fails: queued
        assert sorted(n for n, _ in fs.readdir("/")) == ["d"]
        check = Vault.open(inner, me, state_dir=str(tmp_path / "check"))
        assert sorted(check.listdir("/d")) == ["f"]
        write_bytes(check, "/d/f", b"newer, at the target")
        store.left = -1  # the store is back
        assert fs.sync(timeout=30)
    finally:
        fs.close()
    check = Vault.open(inner, me, state_dir=str(tmp_path / "check2"))
    assert read_bytes(check, "/d/f") == b"newer, at the target"
