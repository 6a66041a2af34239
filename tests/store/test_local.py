"""Local-folder specifics: crash safety, cross-process conditions, permissions, URLs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from csfs.errors import NotFound, PreconditionFailed, StoreError
from csfs.store import open_store
from csfs.store.local import LocalStore
from csfs.store.retry import RetryStore


def test_folder_and_files_are_private(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "new" / "store"))
    store.put("a/b", b"secret-ish")
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(store.root, "a")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(store.root, "a", "b")).st_mode) == 0o600
    assert store.url == "file://" + str(tmp_path / "new" / "store")


def test_leftover_temp_files_are_invisible(tmp_path: Path) -> None:
    """What a crash between write and rename leaves behind is never an object."""
    store = LocalStore(str(tmp_path))
    etag = store.put("k", b"committed")
    (tmp_path / ".tmp-k1x2y3").write_bytes(b"half of the next vers")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".tmp-old").write_bytes(b"junk")
    assert [i.key for i in store.list()] == ["k"]
    assert store.get_with_etag("k") == (b"committed", etag)
    with pytest.raises(ValueError):
        store.get(".tmp-k1x2y3")


_WRITER = """
import sys
from csfs.store.local import LocalStore
store = LocalStore(sys.argv[1])
size = 4 << 20
i = 0
while True:
    i += 1
    store.put("obj", bytes([i % 251]) * size)
    if i == 1:
        print("ready", flush=True)
"""


def test_kill_9_never_leaves_a_partial_object(tmp_path: Path) -> None:
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = LocalStore(str(tmp_path)).get("obj")
        assert len(data) == 4 << 20
        assert data == data[:1] * len(data), "a torn object became visible"
        assert [i.key for i in LocalStore(str(tmp_path)).list()] == ["obj"]


def test_folder_object_clash_is_a_store_error(tmp_path: Path) -> None:
    """A folder cannot also be a file, unlike S3 where "a" and "a/b" may coexist."""
    store = LocalStore(str(tmp_path))
    store.put("a/b", b"1")
    with pytest.raises(StoreError, match="clashes"):
        store.put("a", b"2")
    store.put("c", b"3")
    with pytest.raises(StoreError, match="clashes"):
        store.put("c/d", b"4")
    assert [i.key for i in store.list()] == ["a/b", "c"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def _racer(root: str, key: str, index: int, barrier: Any, mode: str, etag: str) -> str:
    barrier.wait()
    store = LocalStore(root)
    try:
        if mode == "create":
            store.put(key, b"process %d" % index, if_none_match=True)
        else:
            store.put(key, b"process %d" % index, if_match=etag)
    except PreconditionFailed:
        return "lost"
    return "won"


@pytest.mark.parametrize("mode", ["create", "replace"])
def test_conditions_hold_across_processes(tmp_path: Path, mode: str) -> None:
    processes = 6
    etag = LocalStore(str(tmp_path)).put("base", b"base")
    key = "new" if mode == "create" else "base"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            results = pool.starmap(
                _racer,
                [(str(tmp_path), key, i, barrier, mode, etag) for i in range(processes)],
            )
    assert sorted(results) == ["lost"] * (processes - 1) + ["won"]
    winner = results.index("won")
    assert LocalStore(str(tmp_path)).get(key) == b"process %d" % winner


def test_open_store_local_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (f"file://{tmp_path}/a", str(tmp_path / "b")):
        store = open_store(url)
        assert isinstance(store, RetryStore)
        assert isinstance(store.inner, LocalStore)
    assert open_store(f"file://{tmp_path}/a").url == f"file://{tmp_path}/a"
    monkeypatch.chdir(tmp_path)
    store = open_store("relative/store")
    assert store.url == f"file://{tmp_path}/relative/store"
    # Opening and reading create nothing (a mistyped path leaves no folders behind);
    # the first write makes the folder chain, mode 0700.
    with pytest.raises(NotFound):
        store.get("k")
    assert list(store.list()) == []
    store.delete("k")
    assert not (tmp_path / "relative").exists()
    store.put("k", b"v")
    assert (tmp_path / "relative" / "store").is_dir()
    assert (tmp_path / "relative" / "store").stat().st_mode & 0o777 == 0o700
    assert store.get("k") == b"v"


@pytest.mark.parametrize(
    "url", ["", "ftp://host/x", "file://host/path", "http://example.com/b", "s3://"]
)
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_a_file_is_not_a_store_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(StoreError):
        LocalStore(str(tmp_path / "f"))
