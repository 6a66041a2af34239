"""The vault commands as a user runs them: a subprocess per command, local folder and moto."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vault.conftest import assert_one_line_error, make_tree, run_csfs


@pytest.fixture
def env(backend: str, request: pytest.FixtureRequest, cli_env: dict[str, str],
        tmp_path: Path) -> dict[str, str]:
    if backend == "local":
        return {**cli_env, "CSFS_STORE": str(tmp_path / "store")}
    return dict(request.getfixturevalue("moto_cli_env"))


def ok(*args: str, env: dict[str, str]) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


def test_workflow(env: dict[str, str], tmp_path: Path) -> None:
    # missing vault: a clear error and a hint, exit 8 (NotFound)
    r = run_csfs("ls", env=env)
    assert_one_line_error(r, 8)
    assert "no csfs vault" in r.stderr and "csfs init" in r.stderr
    ok("init", env=env)
    assert_one_line_error(run_csfs("init", env=env))  # never over an existing vault

    src = tmp_path / "src"
    make_tree(str(src), {"hello.txt": b"hello world\n", "sub/data.bin": os.urandom(70_000),
                         "sub/deeper/z.txt": b"z"}, dirs=("emptydir",),
              links={"sub/link": "../hello.txt"})
    ok("put", "-r", str(src), "/docs/", env=env)
    listing = ok("ls", "-l", "/docs/src", env=env).splitlines()
    by_name = {ln.split()[-1] if "->" not in ln else ln.split()[-3]: ln for ln in listing}
    assert sorted(by_name) == ["emptydir", "hello.txt", "sub"]
    assert by_name["hello.txt"].startswith("-rw") and " 12 " in by_name["hello.txt"]
    assert by_name["sub"].startswith("d")
    assert "link -> ../hello.txt" in ok("ls", "-l", "/docs/src/sub", env=env)
    assert ok("ls", "/docs/src", env=env).split() == ["emptydir/", "hello.txt", "sub/"]
    assert ok("cat", "/docs/src/hello.txt", env=env) == "hello world\n"

    out = tmp_path / "out"
    ok("get", "-r", "/docs/src", str(out), env=env)
    assert (out / "hello.txt").read_bytes() == b"hello world\n"
    assert (out / "sub/data.bin").read_bytes() == (src / "sub/data.bin").read_bytes()
    assert os.readlink(out / "sub/link") == "../hello.txt"
    assert (out / "emptydir").is_dir() and not os.listdir(out / "emptydir")
    # a single file into an existing local directory keeps its name
    ok("get", "/docs/src/sub/deeper/z.txt", str(tmp_path), env=env)
    assert (tmp_path / "z.txt").read_bytes() == b"z"

    ok("mkdir", "/m", env=env)
    ok("mkdir", "-p", "/m/n/o", env=env)
    assert_one_line_error(run_csfs("mkdir", "/m", env=env), 2)
    ok("mv", "/docs/src/hello.txt", "/m/", env=env)
    ok("mv", "/m/hello.txt", "/m/n/renamed.txt", env=env)
    assert ok("cat", "/m/n/renamed.txt", env=env) == "hello world\n"
    assert "hello.txt" not in ok("ls", "/docs/src", env=env)

    # rm: a directory needs -r; -r removes it; the objects become orphans
    r = run_csfs("rm", "/m", env=env)
    assert_one_line_error(r, 2)
    assert "rm -r" in r.stderr
    ok("rm", "-r", "/m", env=env)
    ok("rm", "-f", "/does-not-exist", env=env)
    assert ok("ls", env=env).split() == ["docs/"]

    r = run_csfs("fsck", env=env)
    assert r.returncode == 0, r.stderr
    assert "orphan m/" in r.stdout and "0 problems" in r.stderr
    r = run_csfs("fsck", "--repair", env=env)  # all young: kept, as uploads could be in flight
    assert r.returncode == 0 and "(deleted)" not in r.stdout and "younger than --grace" in r.stdout
    r = run_csfs("fsck", "--repair", "--grace", "0", env=env)
    assert r.returncode == 0 and "(deleted)" in r.stdout, r.stderr
    r = run_csfs("fsck", "--grace", "0", env=env)
    assert r.returncode == 0 and "0 problems, 0 orphans" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("backend", ["local"])  # backend-independent; keep the suite fast
def test_common_mistakes(env: dict[str, str], tmp_path: Path) -> None:
    ok("init", env=env)
    ok("mkdir", "/d", env=env)
    (tmp_path / "f.txt").write_bytes(b"f")
    ok("put", str(tmp_path / "f.txt"), "/d/f.txt", env=env)

    out = tmp_path / "missing.out"
    assert_one_line_error(run_csfs("get", "/nope.txt", str(out), env=env), 8)
    assert not out.exists()
    assert_one_line_error(run_csfs("get", "/d", str(tmp_path / "dcopy"), env=env), 2)  # needs -r
    assert not (tmp_path / "dcopy").exists()
    assert_one_line_error(run_csfs("cat", "/d", env=env), 2)
    assert_one_line_error(run_csfs("rm", "/nope", env=env), 8)
    assert_one_line_error(run_csfs("put", str(tmp_path), "/x", env=env), 2)  # dir without -r
    assert_one_line_error(run_csfs("put", str(tmp_path / "nope"), "/x", env=env), 2)
    assert_one_line_error(run_csfs("mv", "/d", "/d/inner", env=env), 2)
    assert_one_line_error(run_csfs("ls", "/d/f.txt/x", env=env), 2)
    assert ok("cat", "/d/f.txt", env=env) == "f"


@pytest.mark.parametrize("backend", ["local"])
def test_passphrase_key(env: dict[str, str], tmp_path: Path) -> None:
    """An encrypted key with CSFS_PASSPHRASE, as the brief's users run it."""
    from csfs.crypto import generate_identity, save_identity

    key, _ = save_identity(generate_identity(), str(tmp_path / "pk"), "pw", b"s3cret-pass")
    penv = {**env, "CSFS_KEY": key, "CSFS_PASSPHRASE": "s3cret-pass"}
    ok("init", env=penv)
    (tmp_path / "a").write_bytes(b"abc")
    ok("put", str(tmp_path / "a"), "/a", env=penv)
    assert ok("cat", "/a", env=penv) == "abc"
    assert_one_line_error(run_csfs("cat", "/a", env={**penv, "CSFS_PASSPHRASE": "wrong"}), 6)
