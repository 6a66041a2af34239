"""Several writers on one store: nothing is lost, real conflicts become copies.

Two Vault objects share a store and an identity but have separate state
directories, as two machines of one user would. A long manifest TTL makes
each client work from a stale copy of the directory, so the conditional PUT
really loses and the merge path really runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from csfs.crypto import Identity
from csfs.errors import UsageError
from csfs.store import Store
from csfs.vault import Vault
from tests.vault.conftest import read_bytes, write_bytes


@pytest.fixture
def two(vault: Vault, reopen: Callable[..., Vault]) -> tuple[Vault, Vault]:
    vault.mkdir("/shared")
    a = reopen(ttl=3600)
    b = reopen(ttl=3600)
    # both clients cache the (empty) directory before either writes
    assert a.listdir("/shared") == {} and b.listdir("/shared") == {}
    return a, b


def test_different_files_merge(two: tuple[Vault, Vault], reopen: Callable[..., Vault]) -> None:
    a, b = two
    write_bytes(a, "/shared/from-a", b"A")
    write_bytes(b, "/shared/from-b", b"B")  # b's copy is stale: its If-Match loses, it merges
    a.mkdir("/shared/dir-a")  # a is now stale too
    b.setattr("/shared/from-a", mode=0o600)
    c = reopen()
    ls = c.listdir("/shared")
    assert sorted(ls) == ["dir-a", "from-a", "from-b"]
    assert ls["from-a"].mode == 0o600
    assert read_bytes(c, "/shared/from-a") == b"A"
    assert read_bytes(c, "/shared/from-b") == b"B"


def test_same_file_keeps_both_versions(two: tuple[Vault, Vault], vault: Vault,
                                       reopen: Callable[..., Vault]) -> None:
    a, b = two
    write_bytes(a, "/shared/doc.txt", b"written by a")
    write_bytes(b, "/shared/doc.txt", b"written by b")  # b never saw a's version
    c = reopen()
    ls = c.listdir("/shared")
    assert len(ls) == 2, ls
    conflict = [n for n in ls if "(conflict" in n]
    assert len(conflict) == 1 and conflict[0].endswith(".txt")
    assert read_bytes(c, "/shared/doc.txt") == b"written by a"  # the winner keeps the name
    assert read_bytes(c, f"/shared/{conflict[0]}") == b"written by b"


def test_same_existing_file_overwritten_by_both(vault: Vault, reopen: Callable[..., Vault]) -> None:
    write_bytes(vault, "/f", b"base")
    a, b = reopen(ttl=3600), reopen(ttl=3600)
    assert a.lookup("/f").version == b.lookup("/f").version
    write_bytes(a, "/f", b"a-edit")
    write_bytes(b, "/f", b"b-edit")
    c = reopen()
    contents = {read_bytes(c, "/" + n) for n in c.listdir("/")}
    assert contents == {b"a-edit", b"b-edit"}
    assert read_bytes(c, "/f") == b"a-edit"


def test_sequential_writes_do_not_conflict(vault: Vault, reopen: Callable[..., Vault]) -> None:
    """A client that sees the latest version overwrites in place: no spurious copy."""
    write_bytes(vault, "/f", b"1")
    other = reopen(ttl=0.0001)
    write_bytes(other, "/f", b"2")
    assert list(reopen().listdir("/")) == ["f"]
    assert read_bytes(reopen(), "/f") == b"2"


def test_threads_race_mkdir(vault: Vault, reopen: Callable[..., Vault]) -> None:
    clients = [vault] + [reopen(ttl=3600) for _ in range(3)]
    for c in clients:
        c.listdir("/")
    barrier = threading.Barrier(8)
    results: list[object] = []

    def go(i: int) -> None:
        c = clients[i % len(clients)]
        barrier.wait()
        try:
            results.append(c.mkdir("/same").id)
        except UsageError as exc:  # the loser may also be told it exists
            assert "already exists" in exc.message
            results.append("exists")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(go, range(8)))
    ls = reopen().listdir("/")
    assert list(ls) == ["same"] and ls["same"].type == "d"
    ids = {r for r in results if r != "exists"}
    assert ids == {ls["same"].id}  # every success names the one directory that exists


@pytest.mark.parametrize("shared", [
    pytest.param(True, id="one-vault-object"),
    pytest.param(False, id="vault-per-thread"),
])
def test_many_threads_write_one_directory(moto_store: Store, identity: Identity, tmp_path: object,
                                          shared: bool) -> None:
    root = Vault.create(moto_store, identity, state_dir=f"{tmp_path}/s0")
    root.mkdir("/inbox")
    clients = [root if shared else
               Vault.open(moto_store, identity, state_dir=f"{tmp_path}/s{i + 1}")
               for i in range(8)]
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        for j in range(10):
            write_bytes(clients[i], f"/inbox/t{i}-f{j}", f"{i}:{j}".encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    check = Vault.open(moto_store, identity, state_dir=f"{tmp_path}/check")
    ls = check.listdir("/inbox")
    assert sorted(ls) == sorted(f"t{i}-f{j}" for i in range(8) for j in range(10))
    for name in (f"t{i}-f9" for i in range(8)):
        i = name[1 : name.index("-")]
        assert read_bytes(check, f"/inbox/{name}") == f"{i}:9".encode()


class _SlowManifestReads:
    """Fault injection (timing only): a real store whose manifest reads, in one named
    thread, return their bytes only after ``release`` is set, as a slow GET would."""

    def __init__(self, inner: Store, thread_name: str) -> None:
        self.inner = inner
        self.url = inner.url
        self.thread_name = thread_name
        self.fetched = threading.Event()
        self.release = threading.Event()

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        result = self.inner.get_with_etag(key, end=end)
        if threading.current_thread().name == self.thread_name and key.startswith("m/"):
            self.fetched.set()
            assert self.release.wait(30)
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_slow_read_racing_own_commit_is_not_a_replay(store: Store, identity: Identity,
                                                     state_dir: str) -> None:
    slow = _SlowManifestReads(store, "slow-reader")
    v = Vault.create(slow, identity, state_dir=state_dir)  # type: ignore[arg-type]
    v.listdir("/")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            v.load_dir(v.header.root_id, fresh=True)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=reader, name="slow-reader")
    t.start()
    assert slow.fetched.wait(30)  # the reader holds version 1
    v.mkdir("/made-meanwhile")  # this thread commits version 2
    slow.release.set()
    t.join(30)
    assert not errors, errors
