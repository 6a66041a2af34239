"""One conformance suite for every Store backend (local folder, S3 on moto, S3 on Ceph RGW).

Backend-specific behaviour belongs in test_local.py / test_s3.py; everything a
layer above may rely on is tested here, against every backend alike.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csfs.errors import NotFound, PreconditionFailed, StoreError, TransientStoreError
from csfs.store.base import ObjectInfo, Store
from csfs.store.retry import RetryStore
from csfs.store.stats import StatsStore

MIB = 1 << 20

# The stacks layers above really use: open_store wraps every backend in RetryStore,
# and the benchmarks count through StatsStore on top of that. A wrapper that broke
# the contract (an ETag, a range, a race's single winner) fails here.
def _bare(inner: Store) -> Store:
    return inner


def _counted(inner: Store) -> Store:
    return StatsStore(RetryStore(inner))


STACKS: dict[str, Callable[[Store], Store]] = {
    "bare": _bare,
    "RetryStore": RetryStore,
    "StatsStore(RetryStore)": _counted,
}


@pytest.fixture(params=list(STACKS))
def store(request: pytest.FixtureRequest, backend_store: Store) -> Store:
    """Each backend (tests/store/conftest.py), bare and in each production stack."""
    return STACKS[request.param](backend_store)


def _big_file(tmp_path: Path, size: int = 20 * MIB) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = os.path.join(tmp_path, "big.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, data


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MIB], ids=["empty", "1B", "1MiB"])
def test_put_get_round_trip(store: Store, size: int) -> None:
    data = os.urandom(size)
    etag = store.put("objects/blob", data)
    assert store.get("objects/blob") == data
    assert store.head("objects/blob") == ObjectInfo("objects/blob", size, etag)
    assert '"' not in etag


def test_put_file_and_get_to_file_20mib(store: Store, tmp_path: Path) -> None:
    """Large enough to take the multipart and parallel-download paths on S3."""
    path, data = _big_file(tmp_path)
    etag = store.put_file("big/one", path)
    assert store.head("big/one") == ObjectInfo("big/one", len(data), etag)
    assert store.get("big/one", 10 * MIB, 10 * MIB + 5) == data[10 * MIB : 10 * MIB + 5]

    out = os.path.join(tmp_path, "out.bin")
    with open(out, "wb") as f:
        f.write(b"previous contents are replaced")
    info = store.get_to_file("big/one", out)
    assert info == ObjectInfo("big/one", len(data), etag)
    with open(out, "rb") as f:
        assert f.read() == data
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_put_file_small(store: Store, tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "small.bin")
    with open(path, "wb") as f:
        f.write(b"small")
    etag = store.put_file("small", path)
    assert store.get_with_etag("small") == (b"small", etag)


def test_get_to_file_small_and_empty(store: Store, tmp_path: Path) -> None:
    for data in (b"", b"x" * 1000):
        etag = store.put("k", data)
        out = os.path.join(tmp_path, "out")
        assert store.get_to_file("k", out) == ObjectInfo("k", len(data), etag)
        with open(out, "rb") as f:
            assert f.read() == data


def test_all_allowed_key_characters(store: Store) -> None:
    key = "AZ-az_09.x/..y/.hidden/z-"
    store.put(key, b"ok")
    assert store.get(key) == b"ok"
    assert [i.key for i in store.list()] == [key]


# -- ranges ---------------------------------------------------------------------


def test_get_ranges(store: Store) -> None:
    data = bytes(range(256)) * 4
    store.put("r", data)
    assert store.get("r", 0, 10) == data[:10]  # start
    assert store.get("r", 100, 200) == data[100:200]  # middle
    assert store.get("r", 1000) == data[1000:]  # to the end
    assert store.get("r", 1000, 5000) == data[1000:]  # end past the end
    assert store.get("r", 1023, 1024) == data[1023:]  # last byte
    assert store.get("r", 1024) == b""  # start at the end
    assert store.get("r", 2000, 3000) == b""  # start past the end
    assert store.get("r", 7, 7) == b""  # empty range
    assert store.get("r", 9, 3) == b""
    with pytest.raises(ValueError):
        store.get("r", -1)


def test_get_range_of_empty_object(store: Store) -> None:
    store.put("empty", b"")
    assert store.get("empty", 0, 10) == b""
    assert store.get("empty", 5) == b""


# -- list -----------------------------------------------------------------------

KEYS = ["a-b", "a.c", "a/b", "a/c/d", "a/c/e", "a0", "ab", "b/x", "bb"]


def test_list_sorted_and_by_prefix(store: Store) -> None:
    for i, key in enumerate(reversed(KEYS)):
        store.put(key, b"x" * i)
    listed = list(store.list())
    assert [i.key for i in listed] == sorted(KEYS)  # byte order, like S3
    assert all(info == store.head(info.key) for info in listed)

    def keys(prefix: str) -> list[str]:
        return [i.key for i in store.list(prefix)]

    assert keys("a/") == ["a/b", "a/c/d", "a/c/e"]
    assert keys("a") == ["a-b", "a.c", "a/b", "a/c/d", "a/c/e", "a0", "ab"]
    assert keys("a/c") == ["a/c/d", "a/c/e"]
    assert keys("a/c/e") == ["a/c/e"]
    assert keys("b") == ["b/x", "bb"]
    assert keys("zz") == []
    assert keys("a/c/d/") == []


def test_list_empty_store(store: Store) -> None:
    assert list(store.list()) == []
    assert list(store.list("nothing/")) == []


def test_list_paginates(store: Store) -> None:
    """More keys than one S3 page (1000)."""
    keys = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b""), keys))
    store.put("other", b"")
    assert [i.key for i in store.list("many/")] == keys
    assert len(list(store.list())) == 1101


def test_deleted_folder_can_become_an_object(store: Store) -> None:
    """S3 has no folders; the local backend must not leave any behind either."""
    store.put("a/b/c", b"1")
    store.delete("a/b/c")
    store.put("a", b"2")
    assert [i.key for i in store.list()] == ["a"]


# -- delete and missing objects ---------------------------------------------------


def test_delete_is_idempotent(store: Store) -> None:
    store.put("d/k", b"data")
    store.delete("d/k")
    store.delete("d/k")
    store.delete("never/existed")
    with pytest.raises(NotFound):
        store.head("d/k")
    assert list(store.list()) == []


def test_missing_objects_raise_not_found(store: Store, tmp_path: Path) -> None:
    store.put("present/x", b"x")
    for key in ("missing", "present", "present/x/y"):
        with pytest.raises(NotFound):
            store.get(key)
        with pytest.raises(NotFound):
            store.get(key, 1, 5)
        with pytest.raises(NotFound):
            store.head(key)
        with pytest.raises(NotFound):
            store.get_with_etag(key)
        with pytest.raises(NotFound):
            store.get_to_file(key, os.path.join(tmp_path, "out"))
    assert not os.path.exists(os.path.join(tmp_path, "out"))


# -- conditional writes -------------------------------------------------------------


def test_if_none_match(store: Store) -> None:
    etag = store.put("lock", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("lock", b"second", if_none_match=True)
    assert store.get_with_etag("lock") == (b"first", etag)


def test_put_file_if_none_match(store: Store, tmp_path: Path) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"file")
    etag = store.put_file("obj", path, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_file("obj", path, if_none_match=True)
    assert store.head("obj").etag == etag


def test_if_match(store: Store) -> None:
    old = store.put("manifest", b"v1")
    new = store.put("manifest", b"v2", if_match=old)
    assert new != old
    assert store.get_with_etag("manifest") == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        store.put("manifest", b"v3", if_match=old)  # stale
    assert store.get("manifest") == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put("absent", b"v1", if_match=new)  # absent counts as changed
    with pytest.raises(NotFound):
        store.head("absent")


def test_if_match_accepts_quoted_etag(store: Store) -> None:
    """Callers may hold an ETag in HTTP's quoted form; RGW refuses it on the wire."""
    etag = store.put("k", b"v1")
    assert store.put("k", b"v2", if_match=f'"{etag}"') != etag


def test_get_with_etag_matches_head(store: Store) -> None:
    etag = store.put("k", b"contents")
    assert store.get_with_etag("k") == (b"contents", etag)
    assert store.head("k").etag == etag


def test_bounded_reads_stop_at_end(store: Store, tmp_path: Path) -> None:
    """``end`` bounds what a caller receives, whatever the object's size: readers
    that know an object's largest valid size never hold more (format.md 5)."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    etag = store.put("big", data)
    assert store.get_with_etag("big", end=10) == (data[:10], etag)
    assert store.get_with_etag("big", end=len(data) + 5) == (data, etag)
    out = os.path.join(tmp_path, "out")
    info = store.get_to_file("big", out, end=1000)
    assert (info.size, info.etag) == (len(data), etag)  # the whole object's size
    with open(out, "rb") as f:
        assert f.read() == data[:1000]
    empty = store.put("empty", b"")
    assert store.get_with_etag("empty", end=1) == (b"", empty)
    assert store.get_to_file("empty", out, end=1).size == 0


def test_get_with_etag_is_consistent_under_rewrites(store: Store) -> None:
    """The etag returned always belongs to the bytes returned."""
    written: dict[str, bytes] = {store.put("hot", b"0" * 100): b"0" * 100}
    seen: list[tuple[bytes, str]] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(1, 40):
                data = str(i).encode() * (100 + i)
                written[store.put("hot", data)] = data
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.append(store.get_with_etag("hot"))
    thread.join()
    assert seen
    for data, etag in seen:
        assert written[etag] == data


def _race(writers: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt(i)`` on ``writers`` threads released together; return results or errors."""
    barrier = threading.Barrier(writers)
    results: list[object] = [None] * writers

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("writers", [2, 8])
def test_if_none_match_race_has_one_winner(store: Store, writers: int) -> None:
    for round_ in range(5):
        key = f"race/{round_}"

        def create(i: int, key: str = key) -> str:
            return store.put(key, b"writer %d" % i, if_none_match=True)

        results = _race(writers, create)
        winners = [i for i, r in enumerate(results) if isinstance(r, str)]
        assert len(winners) == 1, results
        losers = [r for r in results if isinstance(r, PreconditionFailed)]
        assert len(losers) == writers - 1, results
        assert store.get_with_etag(key) == (b"writer %d" % winners[0], results[winners[0]])


def test_if_match_race_has_one_winner(store: Store) -> None:
    # Many rounds: a store that checks the ETag and then writes, without holding the
    # key in between, lets two writers win now and then (moto did, about once in a
    # hundred rounds; each manifest switch of csfs relies on exactly one winner).
    writers = 8
    for round_ in range(200):
        base = store.put("m", b"base %d" % round_)
        results = _race(writers, lambda i, b=base: store.put("m", b"writer %d" % i, if_match=b))
        winners = [i for i, r in enumerate(results) if isinstance(r, str)]
        assert len(winners) == 1, (round_, results)
        # Every loser fails: PreconditionFailed, or (Ceph RGW under this much contention
        # answers some with a 500 "UnknownError") a transient error that the retry
        # wrapper retries into PreconditionFailed. Never a second success.
        losers = (PreconditionFailed, TransientStoreError)
        assert sum(isinstance(r, losers) for r in results) == writers - 1, results
        assert store.get("m") == b"writer %d" % winners[0]


# -- keys -------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/abs",
    "trailing/",
    "a//b",
    ".",
    "..",
    "./a",
    "a/./b",
    "a/../b",
    "sp ace",
    "back\\slash",
    "nul\x00",
    "caf\u00e9",
    "star*",
    ".tmp-reserved",
    "d/.tmp-reserved",
    ".lock",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected(store: Store, key: str, tmp_path: Path) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b"x"),
        lambda: store.put_file(key, __file__),
        lambda: store.get(key),
        lambda: store.get(key, 3, 3),
        lambda: store.get_with_etag(key),
        lambda: store.get_to_file(key, os.path.join(tmp_path, "out")),
        lambda: store.head(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("prefix", ["/a", "a//", "../", "a b", "./"])
def test_invalid_prefixes_are_rejected(store: Store, prefix: str) -> None:
    with pytest.raises(ValueError):
        store.list(prefix)


# -- wrappers keep the contract ---------------------------------------------------------


def test_wrapped_store_round_trip(store: Store) -> None:
    wrapped = StatsStore(RetryStore(store))
    assert wrapped.url == store.url
    etag = wrapped.put("w/k", b"abc", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        wrapped.put("w/k", b"abc", if_none_match=True)
    assert wrapped.get("w/k", 1) == b"bc"
    assert wrapped.get_with_etag("w/k") == (b"abc", etag)
    assert [i.key for i in wrapped.list("w/")] == ["w/k"]
    wrapped.delete("w/k")
    with pytest.raises(NotFound):
        wrapped.head("w/k")
    with pytest.raises(ValueError):
        wrapped.list("/bad")
    stats = wrapped.snapshot()
    assert stats.requests == {
        "put": 2,
        "get": 1,
        "get_with_etag": 1,
        "list": 1,
        "delete": 1,
        "head": 1,
    }
    assert stats.bytes_out == 6
    assert stats.bytes_in == 5


# -- retry wrapper (a fake inner store injects the faults) -----------------------------


class FlakyStore:
    """Fails each operation ``failures`` times with TransientStoreError, then delegates."""

    url = "fake://flaky"

    def __init__(self, failures: int, data: bytes = b"payload") -> None:
        self.failures = failures
        self.calls = 0
        self.data = data

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientStoreError(f"injected failure {self.calls}")

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._maybe_fail()
        return self.data[start:end]

    def head(self, key: str) -> ObjectInfo:
        self._maybe_fail()
        return ObjectInfo(key, len(self.data), "etag")


def _retry(inner: object, attempts: int = 4) -> tuple[RetryStore, list[float]]:
    sleeps: list[float] = []
    store = RetryStore(
        inner,  # type: ignore[arg-type]  # a partial fake
        attempts=attempts,
        base_delay=0.1,
        max_delay=0.3,
        sleep=sleeps.append,
        jitter=lambda: 1.0,
    )
    return store, sleeps


def test_retry_recovers_from_transient_errors() -> None:
    inner = FlakyStore(failures=2)
    store, sleeps = _retry(inner)
    assert store.get("k", 1, 4) == b"ayl"
    assert inner.calls == 3
    assert sleeps == [0.1, 0.2]  # exponential


def test_retry_gives_up_after_the_bound() -> None:
    inner = FlakyStore(failures=100)
    store, sleeps = _retry(inner, attempts=5)
    with pytest.raises(TransientStoreError, match="injected failure 5"):
        store.head("k")
    assert inner.calls == 5
    assert sleeps == [0.1, 0.2, 0.3, 0.3]  # capped


def test_retry_does_not_retry_permanent_errors() -> None:
    class Missing(FlakyStore):
        def head(self, key: str) -> ObjectInfo:
            self.calls += 1
            raise NotFound(key)

    inner = Missing(failures=0)
    store, sleeps = _retry(inner)
    with pytest.raises(NotFound):
        store.head("k")
    assert inner.calls == 1
    assert sleeps == []


def test_retry_list_resumes_after_last_key() -> None:
    class FlakyList(FlakyStore):
        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            self.calls += 1
            for i in range(5):
                if self.calls == 1 and i == 3:
                    raise TransientStoreError("cut off")
                yield ObjectInfo(f"k{i}", 0, "e")

    store, _ = _retry(FlakyList(failures=0))
    assert [i.key for i in store.list()] == ["k0", "k1", "k2", "k3", "k4"]


def test_retry_put_whose_first_attempt_landed() -> None:
    """A conditional put whose lost response is retried must not report a conflict."""

    class LostResponse(FlakyStore):
        stored: bytes | None = None

        def put(self, key: str, data: bytes, **conditions: object) -> str:
            self.calls += 1
            if self.stored is not None:
                raise PreconditionFailed("exists")
            self.stored = data
            raise TransientStoreError("connection reset after the write")

        def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
            assert self.stored is not None
            return self.stored, "etag-of-stored"

    store, _ = _retry(LostResponse(failures=0))
    assert store.put("k", b"mine", if_none_match=True) == "etag-of-stored"


def test_stats_counts_failed_calls(tmp_path: Path) -> None:
    stats = StatsStore(FlakyStore(failures=1))  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        stats.get("k")
    assert stats.get("k") == b"payload"
    snapshot = stats.reset()
    assert snapshot.requests == {"get": 2}
    assert snapshot.total_requests == 2
    assert snapshot.bytes_in == 7
    assert stats.snapshot().total_requests == 0


def test_put_parts_round_trip(store: Store) -> None:
    """Streaming upload: several 5 MiB parts and a short tail, as the vault sends them."""
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), b"tail"]
    store.put_parts("parts/many", iter(parts), if_none_match=True)
    assert store.get("parts/many") == b"".join(parts)
    with pytest.raises(PreconditionFailed):
        store.put_parts("parts/many", iter([b"x"]), if_none_match=True)
    store.put_parts("parts/one", iter([b"just one"]))
    assert store.get("parts/one") == b"just one"


def test_put_parts_failure_leaves_nothing(store: Store) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(5 << 20)
        yield os.urandom(5 << 20)
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError):
        store.put_parts("parts/broken", broken())
    with pytest.raises(NotFound):
        store.head("parts/broken")


def test_objects_report_their_age(store: Store) -> None:
    """fsck's grace period relies on the store telling when an object was written."""
    import time

    store.put("age/x", b"1")
    assert abs(time.time() - store.head("age/x").mtime) < 600
    (listed,) = list(store.list("age/"))
    assert abs(time.time() - listed.mtime) < 600
