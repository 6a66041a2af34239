"""The store is optional at close time: a mount over a store that goes away keeps
every closed file, serves what it has cached, and uploads once the store is back.

Real mounts over moto S3 behind the fault proxy (tests/faultproxy.py), which the
mount daemon reaches through AWS_ENDPOINT_URL."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy
from tests.fuse.helpers import Mount, Vault, read_file, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def _write(path: str, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:  # close() must return 0: the version is in the queue
        f.write(data)


def test_store_outage_loses_no_closed_file(make_vault: Callable[[str], Vault],
                                           fault_proxy: FaultProxy) -> None:
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    os.mkdir(m.p("d"))
    want = {"a": os.urandom(70_000), "b": os.urandom(5000), "d/c": os.urandom(300_000)}
    for name, data in want.items():
        _write(m.p(name), data)
    m.sync()
    for name, data in want.items():
        assert read_file(m.p(name)) == data  # cached from here on

    fault_proxy.outage()
    time.sleep(2)  # past the TTL: every cached manifest and the access state are stale
    ops = acked = 0
    t0 = time.monotonic()
    # Reads and listings are served from the cache, stale.
    assert sorted(os.listdir(m.path)) == ["a", "b", "d"]
    assert os.listdir(m.p("d")) == ["c"]
    assert read_file(m.p("d/c")) == want["d/c"]
    ops += 3
    # Overwrite, append, create (in two folders), rename of a new file: every close() is 0.
    want["a"] = os.urandom(100_000)
    _write(m.p("a"), want["a"])
    _write(m.p("b"), b"more", "ab")
    want["b"] += b"more"
    want["new"] = os.urandom(2_000_000)
    _write(m.p("new.tmp"), want["new"])
    os.rename(m.p("new.tmp"), m.p("new"))
    want["d/e"] = b"e" * 10
    _write(m.p("d/e"), want["d/e"])
    ops += 5
    acked += 4
    for name in ("a", "b", "new", "d/e"):
        assert read_file(m.p(name)) == want[name]
        ops += 1
    assert os.stat(m.p("new")).st_size == 2_000_000
    status = m.status()
    assert "store: offline since" in status, status
    assert "pending uploads: 4 files" in status, status
    offline_ops_s = time.monotonic() - t0

    fault_proxy.restore()
    t1 = time.monotonic()
    m.sync(timeout=60)
    drained_s = time.monotonic() - t1
    assert drained_s < 15, f"uploads began {drained_s:.1f} s after the store came back"
    assert "store: online" in m.status()

    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    lost = [name for name, data in want.items() if read_file(fresh.p(name)) != data]
    print(f"\noffline: {ops} operations in {offline_ops_s:.1f} s, {acked} closes acknowledged, "
          f"faults injected {fault_proxy.counts['faults']}, drained {drained_s:.1f} s after "
          f"the store came back, lost {len(lost)}")
    assert not lost
    assert sorted(os.listdir(fresh.path)) == ["a", "b", "d", "new"]


def test_close_during_outage_seals_without_the_store(make_vault: Callable[[str], Vault],
                                                     fault_proxy: FaultProxy) -> None:
    """Files opened while the store answered, written and closed after it went away
    and the TTL expired: close() needs nothing from the store (no manifest GET, no
    access-log LIST), and the bytes reach the store once it is back."""
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    _write(m.p("old"), b"old version")
    m.sync()
    fds = {"old": os.open(m.p("old"), os.O_WRONLY | os.O_TRUNC),
           "created": os.open(m.p("created"), os.O_WRONLY | os.O_CREAT, 0o644)}
    want = {name: os.urandom(200_000) for name in fds}
    fault_proxy.outage()
    time.sleep(2)  # past the TTL
    for name, fd in fds.items():
        os.write(fd, want[name])
        os.close(fd)  # raised EIO before: the seal asked the store, and the bytes were dropped
    fault_proxy.restore()
    m.sync(timeout=60)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    for name, data in want.items():
        assert read_file(fresh.p(name)) == data, name


def test_git_fsck_through_a_fresh_mount_on_a_slow_store(make_vault: Callable[[str], Vault],
                                                         fault_proxy: FaultProxy,
                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    """git fsck reads a pack with parallel read-ahead; on a fresh mount over a slow
    store those first reads raced each other in the cache and one failed (ENOENT)."""
    import subprocess
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=60)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}

    def git(*args: str, cwd: str) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                       timeout=300)

    repo = m.p("repo")
    os.mkdir(repo)
    git("init", "-q", "-b", "main", cwd=repo)
    for i in range(6):
        with open(os.path.join(repo, f"blob{i}"), "wb") as f:
            f.write(os.urandom(400_000))
        git("add", ".", cwd=repo)
        git("commit", "-q", "-m", f"c{i}", cwd=repo)
    git("gc", "-q", cwd=repo)
    m.sync()
    fault_proxy.slow(0.1)
    pack_dir = os.path.join("repo", ".git", "objects", "pack")
    packs = [os.path.join(pack_dir, n) for n in os.listdir(m.p(pack_dir))]
    want = {p: read_file(m.p(p)) for p in packs}
    for round_ in range(2):
        fresh = vault.mount(f"fresh{round_}", cache_dir=os.path.join(vault.root, f"fc{round_}"),
                            ttl=60)
        # Several readers of each pack at once, as git's threads and the kernel's
        # read-ahead are: every first read of a file fetches its envelope.
        failures: list[BaseException] = []
        for p, data in want.items():
            start = threading.Barrier(8)

            def read(i: int, path: str = fresh.p(p), data: bytes = data,
                     start: threading.Barrier = start) -> None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        start.wait()
                        at = i * len(data) // 8
                        assert os.pread(fd, 65536, at) == data[at:at + 65536]
                    finally:
                        os.close(fd)
                except BaseException as exc:  # noqa: BLE001 - collected and reported
                    failures.append(exc)

            threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        git("fsck", "--strict", cwd=fresh.p("repo"))
        fresh.umount()


def test_workload_under_store_faults_loses_nothing(make_vault: Callable[[str], Vault],
                                                   fault_proxy: FaultProxy) -> None:
    """Creates, overwrites, appends and reads through a mount while the store answers
    503, resets connections, drops replies to requests it carried out, goes away for
    seconds and answers slowly. Every close() returns 0; after the store recovers
    every acknowledged byte is in it."""
    import random
    rng = random.Random(1234)  # a fixed plan: the same faults at the same steps each run
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    os.mkdir(m.p("w"))
    want: dict[str, bytes] = {}
    ops = acked = 0
    faults = [lambda: fault_proxy.errors(3), lambda: fault_proxy.resets(3),
              lambda: fault_proxy.drops(2), lambda: fault_proxy.outage(3),
              lambda: fault_proxy.slow(0.2), fault_proxy.restore]
    for step in range(80):
        if step % 5 == 0:
            rng.choice(faults)()
        name = f"w/f{rng.randrange(20)}"
        action = rng.choice(["write", "write", "append", "read"])
        if action == "read" and name in want:
            assert read_file(m.p(name)) == want[name], name
        elif action == "append" and name in want:
            extra = os.urandom(rng.choice([10, 70_000]))
            _write(m.p(name), extra, "ab")
            want[name] += extra
            acked += 1
        else:
            data = os.urandom(rng.choice([0, 100, 65_536, 300_000, 1_500_000]))
            _write(m.p(name), data)
            want[name] = data
            acked += 1
        ops += 1
        if step % 20 == 19:
            time.sleep(1.2)  # let the TTL lapse now and then: manifests are fetched again
    fault_proxy.restore()
    m.sync(timeout=120)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    lost = [n for n, data in want.items() if read_file(fresh.p(n)) != data]
    print(f"\nworkload: {ops} operations, {acked} closes acknowledged, "
          f"{fault_proxy.counts['faults']} faults injected over "
          f"{fault_proxy.counts['requests']} requests, lost {len(lost)}")
    assert not lost, [(n, len(want[n]), os.path.getsize(fresh.p(n)), os.listdir(fresh.p("w")),
                       m.status()) for n in lost]
    assert sorted(os.listdir(fresh.p("w"))) == sorted(n.split("/")[1] for n in want)


def _tree(root: str) -> dict[str, object]:
    """Every path under ``root``: a folder's mode, a file's mode and content."""
    out: dict[str, object] = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root) + "/"] = oct(os.stat(p).st_mode & 0o7777)
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = (oct(os.stat(p).st_mode & 0o7777), read_file(p))
    return out


def _namespace_changes_offline(m: Mount) -> dict[str, object]:
    """mkdir, create inside, rename (in a folder, across, over a name, of a folder),
    unlink, rmdir, chmod and utime while the store is away; returns the expected tree."""
    os.mkdir(m.p("new"), 0o755)
    _write(m.p("new/inside"), b"made offline")
    os.rename(m.p("mv"), m.p("new/moved"))  # a stored file into a folder made offline
    os.rename(m.p("old"), m.p("renamed"))  # a stored folder, with its content
    os.rename(m.p("src"), m.p("dst"))  # a stored file over another
    os.unlink(m.p("gone"))
    os.rmdir(m.p("empty"))
    os.chmod(m.p("keep"), 0o600)
    os.utime(m.p("keep"), ns=(1_000_000_000, 2_000_000_000))
    os.mkdir(m.p("new/sub"), 0o700)
    os.rename(m.p("new/inside"), m.p("new/sub/inside"))
    want = {"dst": ("0o644", b"src"), "keep": ("0o600", b"keep"), "new/": "0o755",
            "new/moved": ("0o644", b"mv"), "new/sub/": "0o700",
            "new/sub/inside": ("0o644", b"made offline"), "renamed/": "0o755",
            "renamed/f": ("0o644", b"f")}
    assert _tree(m.path) == want  # the mount shows its own changes at once
    assert os.stat(m.p("keep")).st_mtime_ns == 2_000_000_000
    return want


def _stored_before_outage(m: Mount) -> None:
    os.mkdir(m.p("old"), 0o755)
    os.mkdir(m.p("empty"))
    for name in ("old/f", "gone", "keep", "mv", "src", "dst"):
        _write(m.p(name), name.split("/")[-1].encode())
    m.sync()
    _tree(m.path)  # every folder and file seen and cached


def test_namespace_changes_during_outage_reach_the_store(make_vault: Callable[[str], Vault],
                                                         fault_proxy: FaultProxy) -> None:
    """mkdir, rmdir, unlink, rename and chmod of entries the store holds returned EIO
    while the store was away; they go into the queue and reach it once it is back."""
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    _stored_before_outage(m)
    fault_proxy.outage()
    time.sleep(2)  # past the TTL
    want = _namespace_changes_offline(m)
    status = m.status()
    assert "store: offline since" in status, status
    assert "pending changes: 9 " in status, status
    fault_proxy.restore()
    m.sync(timeout=60)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    assert _tree(fresh.path) == want
    assert os.stat(fresh.p("keep")).st_mtime_ns == 2_000_000_000


def test_namespace_changes_queued_offline_survive_kill_9(make_vault: Callable[[str], Vault],
                                                         fault_proxy: FaultProxy) -> None:
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    _stored_before_outage(m)
    fault_proxy.outage()
    time.sleep(2)
    want = _namespace_changes_offline(m)
    m.kill()
    fault_proxy.restore()
    m.mount()  # the same cache: the queued changes drain
    m.sync(timeout=60)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    assert _tree(fresh.path) == want


def test_folder_and_root_attributes_set_during_outage_reach_the_store(
        make_vault: Callable[[str], Vault], fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """utimens of a folder (tar sets them after extracting) and chmod/utimens of the
    vault root returned EIO while the store was away; they are queued like the rest."""
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    _stored_before_outage(m)
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f.txt").write_bytes(b"inside")
    os.utime(src / "d" / "e", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    os.utime(src / "d", ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(src), "d"], check=True)
    fault_proxy.outage()
    time.sleep(2)  # past the TTL
    os.utime(m.p("old"), ns=(3_000_000_000, 4_000_000_000))
    r = subprocess.run(["tar", "-xf", str(archive), "-C", m.path], capture_output=True)
    assert r.returncode == 0, r.stderr
    os.chmod(m.path, 0o750)  # after tar: its new folder changed the root's mtime
    os.utime(m.path, ns=(5_000_000_000, 6_000_000_000))
    assert os.stat(m.p("old")).st_mtime_ns == 4_000_000_000  # shown at once
    assert os.stat(m.p("d")).st_mtime_ns == 1_400_000_000_000_000_000
    assert os.stat(m.path).st_mode & 0o777 == 0o750
    assert os.stat(m.path).st_mtime_ns == 6_000_000_000
    fault_proxy.restore()
    m.sync(timeout=60)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    assert os.stat(fresh.p("old")).st_mtime_ns == 4_000_000_000
    assert os.stat(fresh.p("old")).st_atime_ns == 3_000_000_000
    assert os.stat(fresh.p("d")).st_mtime_ns == 1_400_000_000_000_000_000
    assert os.stat(fresh.p("d", "e")).st_mtime_ns == 1_500_000_000_000_000_000
    assert open(fresh.p("d", "e", "f.txt"), "rb").read() == b"inside"
    assert os.stat(fresh.path).st_mode & 0o777 == 0o750
    assert os.stat(fresh.path).st_mtime_ns == 6_000_000_000
