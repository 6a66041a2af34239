"""Ordinary programs on a real mount: cp, mv, rm, rsync, tar, git, sqlite3, dd, mmap, ..."""

from __future__ import annotations

import errno
import mmap
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.fuse.helpers import Mount, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def sh(*args: str, cwd: str | None = None, env: dict[str, str] | None = None,
       input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, input=input,
                       timeout=120)
    assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout!r}\n{r.stderr!r}"
    return r


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root: Path, seed: int = 1) -> None:
    """A small tree: nested folders, empty and multi-chunk files, a symlink, odd modes, old mtimes."""
    rnd = random.Random(seed)
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    sizes = [0, 1, 100, 4096, 65535, 65536, 65537, 200_000, 1_100_000]
    for i, size in enumerate(sizes):
        folder = [root, root / "a", root / "a" / "b", root / "a" / "b" / "c"][i % 4]
        p = folder / f"f{i}.bin"
        p.write_bytes(rnd.randbytes(size))
        os.utime(p, ns=(1_500_000_000_000_000_000 + i * 1_000_000_000,) * 2)
    (root / "a" / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "a" / "script.sh", 0o755)
    (root / "a" / "secret.txt").write_text("private\n")
    os.chmod(root / "a" / "secret.txt", 0o600)
    os.symlink("b/c/f3.bin", root / "a" / "link")
    os.symlink("../dangling-target", root / "a" / "dangling")
    os.utime(root / "a" / "b" / "c", ns=(1_400_000_000_000_000_000,) * 2)


def test_cp_cmp_mv_rm(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3_000_000))
    sh("cp", str(src), mounted.p("big.bin"))
    sh("cmp", str(src), mounted.p("big.bin"))
    os.mkdir(mounted.p("sub"))
    sh("mv", mounted.p("big.bin"), mounted.p("sub", "moved.bin"))
    assert not os.path.exists(mounted.p("big.bin"))
    sh("cmp", str(src), mounted.p("sub", "moved.bin"))
    tree = Path(mounted.p("tree"))
    make_tree(tree)
    sh("rm", "-r", str(tree))
    assert not os.path.exists(tree)
    assert sorted(os.listdir(mounted.path)) == ["sub"]
    mounted.sync()
    assert mounted.vault.cat("sub/moved.bin") == src.read_bytes()
    listing = mounted.cli("ls", "/").stdout.decode()
    assert "sub" in listing and "tree" not in listing


def test_rsync_round_trip(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = mounted.p("dst")
    sh("rsync", "-a", f"{src}/", f"{dst}/")
    out = tmp_path / "out"
    sh("rsync", "-a", f"{dst}/", f"{out}/")
    r = sh("rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/")
    assert r.stdout.decode().strip() == "", r.stdout.decode()
    sh("diff", "-r", "--no-dereference", str(src), str(out))
    r = sh("rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", f"{src}/", f"{out}/")
    assert r.stdout.decode().strip() == "", r.stdout.decode()
    # And once more after a remount: the same answer from the store, not from memory.
    mounted.remount()
    r = sh("rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/")
    assert r.stdout.decode().strip() == "", r.stdout.decode()


def test_tar_round_trip(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, seed=2)
    archive = tmp_path / "t.tar"
    sh("tar", "cf", str(archive), "-C", str(src), ".")
    os.mkdir(mounted.p("x"))
    sh("tar", "xf", str(archive), "-C", mounted.p("x"))
    sh("diff", "-r", "--no-dereference", str(src), mounted.p("x"))
    # tar c inside the mount, extract outside
    sh("tar", "cf", mounted.p("again.tar"), "-C", mounted.p("x"), ".")
    out = tmp_path / "out"
    out.mkdir()
    sh("tar", "xf", mounted.p("again.tar"), "-C", str(out))
    sh("diff", "-r", "--no-dereference", str(src), str(out))


def test_mtime_only_utimens(mounted: Mount, tmp_path: Path) -> None:
    f = mounted.p("f")
    write(f, b"abc")
    sh("touch", "-m", "-d", "@1500000000", f)
    assert os.stat(f).st_mtime == 1500000000
    src = tmp_path / "src"
    src.mkdir()
    (src / "g").write_bytes(b"xyz")
    os.utime(src / "g", ns=(1_400_000_000_000_000_000,) * 2)
    sh("tar", "cf", str(tmp_path / "t.tar"), "-C", str(src), ".")
    sh("tar", "xf", str(tmp_path / "t.tar"), "-C", mounted.path)  # sets mtime via futimens
    assert os.stat(mounted.p("g")).st_mtime_ns == 1_400_000_000_000_000_000


def test_append_and_truncate(mounted: Mount) -> None:
    p = mounted.p("log.txt")
    sh("sh", "-c", f"echo one > '{p}'")
    for word in ("two", "three"):
        mounted.sync()  # see test_sequential_rewrites_no_spurious_conflict
        sh("sh", "-c", f"echo {word} >> '{p}'")
    assert read(p) == b"one\ntwo\nthree\n"
    base = os.urandom(200_000)
    q = mounted.p("t.bin")
    write(q, base)
    mounted.sync()
    sh("truncate", "-s", "70000", q)
    assert read(q) == base[:70000]
    mounted.sync()
    sh("truncate", "-s", "150000", q)
    mounted.sync()
    assert os.path.getsize(q) == 150000
    assert read(q) == base[:70000] + bytes(80000)
    sh("sh", "-c", f"printf tail >> '{q}'")
    expect = base[:70000] + bytes(80000) + b"tail"
    assert read(q) == expect
    mounted.remount()
    assert read(p) == b"one\ntwo\nthree\n"
    assert read(q) == expect


def test_editor_style_save(mounted: Mount) -> None:
    doc = mounted.p("doc.txt")
    write(doc, b"version 1\n" * 1000)
    os.chmod(doc, 0o640)
    # What editors do: write a temp file, fsync it, rename it over the original.
    tmp = mounted.p(".doc.txt.swp")
    with open(tmp, "wb") as f:
        f.write(b"version 2\n" * 1500)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o640)
    sh("mv", tmp, doc)
    assert read(doc) == b"version 2\n" * 1500
    assert sorted(os.listdir(mounted.path)) == ["doc.txt"]
    mounted.remount()
    assert read(doc) == b"version 2\n" * 1500
    assert sorted(os.listdir(mounted.path)) == ["doc.txt"]
    assert os.stat(doc).st_mode & 0o777 == 0o640


def test_git(mounted: Mount, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    repo = mounted.p("repo")
    os.mkdir(repo)
    sh("git", "init", "-q", "-b", "main", cwd=repo, env=env)
    for i in range(3):
        Path(repo, f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
        sh("git", "add", ".", cwd=repo, env=env)
        sh("git", "commit", "-q", "-m", f"commit {i}", cwd=repo, env=env)
    log = sh("git", "log", "--format=%s", cwd=repo, env=env).stdout.decode().split()
    assert log == ["commit", "2", "commit", "1", "commit", "0"]
    sh("git", "fsck", "--strict", cwd=repo, env=env)
    assert sh("git", "status", "--porcelain", cwd=repo, env=env).stdout == b""
    mounted.remount()
    sh("git", "fsck", "--strict", cwd=repo, env=env)
    assert sh("git", "log", "--oneline", cwd=repo, env=env).stdout.count(b"\n") == 3


def test_sqlite(mounted: Mount) -> None:
    db = mounted.p("data.db")
    sql = ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, blob BLOB);"]
    n = 0
    for _ in range(3):  # three big transactions: 1,800 rows
        sql.append("BEGIN;")
        for _ in range(600):
            n += 1
            sql.append(f"INSERT INTO t (v, blob) VALUES ('row {n}', randomblob({n % 700}));")
        sql.append("COMMIT;")
    for _ in range(200):  # and 200 autocommit inserts, each its own transaction (fsyncs)
        n += 1
        sql.append(f"INSERT INTO t (v, blob) VALUES ('row {n}', randomblob(300));")
    sh("sqlite3", db, input="\n".join(sql).encode())
    assert sh("sqlite3", db, "PRAGMA integrity_check;").stdout.strip() == b"ok"
    assert sh("sqlite3", db, "SELECT count(*) FROM t;").stdout.strip() == b"2000"
    sh("sqlite3", db, "DELETE FROM t WHERE id % 3 = 0; VACUUM;")
    assert sh("sqlite3", db, "SELECT count(*) FROM t;").stdout.strip() == b"1334"
    mounted.remount()
    assert sh("sqlite3", db, "PRAGMA integrity_check;").stdout.strip() == b"ok"
    assert sh("sqlite3", db, "SELECT count(*), max(id) FROM t;").stdout.strip() == b"1334|2000"
    assert [n for n in os.listdir(mounted.path)] == ["data.db"]  # the journal is gone


def test_metadata_links_df_ls(mounted: Mount) -> None:
    f = mounted.p("f.txt")
    write(f, b"x")
    sh("chmod", "0751", f)
    assert os.stat(f).st_mode & 0o7777 == 0o751
    sh("touch", "-d", "2001-02-03 04:05:06", f)
    want = os.stat(f).st_mtime
    assert time.gmtime(want)[:3] == (2001, 2, 3)
    os.symlink("f.txt", mounted.p("ln"))
    assert os.readlink(mounted.p("ln")) == "f.txt"
    assert read(mounted.p("ln")) == b"x"
    assert os.path.islink(mounted.p("ln"))
    with pytest.raises(OSError) as exc:
        os.link(f, mounted.p("hard"))
    assert exc.value.errno == errno.EPERM
    assert not os.path.exists(mounted.p("hard"))
    r = sh("df", "-P", mounted.path)
    assert b"csfs" in r.stdout
    st = os.statvfs(mounted.path)
    assert st.f_bavail > 0
    mounted.remount()
    assert os.stat(f).st_mtime == want
    assert os.stat(f).st_mode & 0o7777 == 0o751
    assert os.readlink(mounted.p("ln")) == "f.txt"


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_ls_l_300_files(mounted: Mount) -> None:
    d = mounted.p("many")
    os.mkdir(d)
    for i in range(300):
        write(os.path.join(d, f"n{i:03d}"), str(i).encode())
    r = sh("ls", "-l", d)
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("total")
    assert len(lines) == 301
    assert all(line.startswith("-rw") for line in lines[1:])
    mounted.remount()
    assert len(os.listdir(d)) == 300
    assert read(os.path.join(d, "n299")) == b"299"


def test_dd_seek_random_writes(mounted: Mount, tmp_path: Path) -> None:
    rnd = random.Random(7)
    base = rnd.randbytes(300_000)
    ref = tmp_path / "ref.bin"
    ref.write_bytes(base)
    target = mounted.p("dd.bin")
    write(target, base)
    patch = tmp_path / "patch"
    patch.write_bytes(rnd.randbytes(70_000))
    for bs, seek, count in [(1, 65530, 20), (4096, 3, 5), (512, 127, 300), (1000, 299, 3),
                            (65536, 4, 1), (7, 50_000, 11)]:
        for out in (str(ref), target):
            sh("dd", f"if={patch}", f"of={out}", f"bs={bs}", f"seek={seek}", f"count={count}",
               "conv=notrunc", "status=none")
        mounted.sync()  # back-to-back unsynced rewrites hit the spurious-conflict bug
        assert read(target) == ref.read_bytes(), (bs, seek, count)
    mounted.remount()
    assert read(target) == ref.read_bytes()


def test_mmap_read(mounted: Mount) -> None:
    data = os.urandom(1_000_000)
    p = mounted.p("m.bin")
    write(p, data)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert len(m) == len(data)
        assert m[:] == data
        assert m[65530:65550] == data[65530:65550]
    mounted.remount()
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[-100:] == data[-100:]
        assert m[:] == data


def test_sequential_rewrites_no_spurious_conflict(local_mounted: Mount) -> None:
    m = local_mounted
    base = os.urandom(200_000)
    for i in range(12):
        q = m.p(f"r{i}")
        write(q, base)
        sh("truncate", "-s", "70000", q)
        sh("truncate", "-s", "150000", q)
        sh("sh", "-c", f"printf tail >> '{q}'")
    m.sync()
    names = sorted(os.listdir(m.path))
    assert names == sorted(f"r{i}" for i in range(12)), names
    expect = base[:70000] + bytes(80000) + b"tail"
    for i in range(12):
        assert m.vault.cat(f"r{i}") == expect, i
