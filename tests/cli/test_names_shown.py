"""A name someone else chose is printed escaped: it cannot forge output lines or
drive the terminal (ESC sequences, bidi overrides) in ls, ls -l, shares or errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vault.conftest import assert_one_line_error, run_csfs

EVIL = "a\nb\x1b[31m\x07\x7f\u202e\x9bc"
EVIL_SHOWN = "a\\nb\\x1b[31m\\x07\\x7f\\u202e\\x9bc"
RAW = ("\x1b", "\x07", "\x7f", "\u202e", "\x9b")


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**cli_env, "CSFS_STORE": str(tmp_path / "store")}


def ok(env: dict[str, str], *args: str) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout + r.stderr


def assert_escaped(out: str) -> None:
    assert not any(c in out for c in RAW), repr(out)
    assert EVIL_SHOWN in out, repr(out)


def test_listing_and_errors_escape_names(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "init")
    (tmp_path / "f").write_bytes(b"x")
    ok(env, "put", str(tmp_path / "f"), "/" + EVIL)
    ok(env, "mkdir", "/d" + EVIL)

    out = ok(env, "ls", "/")
    assert_escaped(out)
    # One name, one line: the newline inside the name does not make a second entry.
    assert sorted(out.splitlines()) == sorted([EVIL_SHOWN, "d" + EVIL_SHOWN + "/"])
    long = ok(env, "ls", "-l", "/")
    assert_escaped(long)
    assert len(long.splitlines()) == 2
    assert_escaped(ok(env, "ls", "/" + EVIL))  # a file listed by its own path

    # An error that quotes the name quotes it escaped.
    r = run_csfs("cat", "/" + EVIL + "/below", env=env)
    assert_one_line_error(r, 2)
    assert_escaped(r.stderr)
    r = run_csfs("mkdir", "/d" + EVIL, env=env)
    assert_one_line_error(r, 2)
    assert not any(c in r.stderr for c in RAW)


def test_backslash_is_escaped_too(env: dict[str, str], tmp_path: Path) -> None:
    """`a\\nb` (backslash, n) and `a<newline>b` must not print alike."""
    ok(env, "init")
    (tmp_path / "f").write_bytes(b"x")
    ok(env, "put", str(tmp_path / "f"), "/a\\nb")
    ok(env, "put", str(tmp_path / "f"), "/a\nb")
    assert sorted(ok(env, "ls").splitlines()) == ["a\\\\nb", "a\\nb"]


def test_symlink_target_escaped(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "init")
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to(EVIL)
    ok(env, "put", "-r", str(src), "/")
    assert_escaped(ok(env, "ls", "-l", "/src"))


def test_shares_escape_paths(tmp_path: Path, cli_env: dict[str, str]) -> None:
    from tests.cli.test_sharing_cli import _user, pub

    store = str(tmp_path / "store")
    alice = _user(tmp_path, "alice", store)
    bob = _user(tmp_path, "bob", store)
    bob["CSFS_TRUST_OWNER"] = pub(alice)
    ok(alice, "init", "--name", "alice")
    ok(alice, "mkdir", "/" + EVIL)
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    assert_escaped(ok(alice, "share", "/" + EVIL, "--with", "bob"))
    assert_escaped(ok(alice, "shares"))
    assert_escaped(ok(bob, "shares"))
    assert_escaped(ok(bob, "ls", "/Shared/alice"))
    assert_escaped(ok(alice, "unshare", "/" + EVIL, "--with", "bob"))


def test_usage_errors_escape_arguments(env: dict[str, str]) -> None:
    """click's own usage errors quote what was typed (or pasted, or globbed)."""
    for args in (["ls", "/", EVIL], [EVIL], ["ls", "--x" + EVIL]):
        r = run_csfs(*args, env=env)
        assert r.returncode == 2, r.stderr
        assert_escaped(r.stderr)
