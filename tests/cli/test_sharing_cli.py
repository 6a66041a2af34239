"""The sharing commands as users run them: two key pairs and the README's walkthrough."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.vault.conftest import assert_one_line_error, run_csfs


def _user(tmp: Path, name: str, store: str, *keygen: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CSFS_"))}
    home = tmp / name
    env.update({"CSFS_PASSPHRASE": f"pw-{name}", "CSFS_STORE": store,
                "CSFS_KEY": str(home / "keys" / f"{name}_private_key.pem"),
                "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data")})
    r = run_csfs("keygen", "--dir", str(home / "keys"), "--name", name, *keygen, env=env)
    assert r.returncode == 0, r.stderr
    return env


def ok(env: dict[str, str], *args: str) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout + r.stderr


def pub(env: dict[str, str]) -> str:
    return env["CSFS_KEY"].replace("_private_key.pem", "_public_key.pem")


@pytest.fixture
def people(tmp_path: Path) -> tuple[dict[str, str], dict[str, str], Path]:
    store = str(tmp_path / "store")
    alice = _user(tmp_path, "alice", store)
    bob = _user(tmp_path, "bob", store, "--curve", "p256")
    bob["CSFS_TRUST_OWNER"] = pub(alice)
    ok(alice, "init", "--name", "alice")
    (tmp_path / "report.txt").write_text("quarterly numbers\n")
    ok(alice, "mkdir", "/projects")
    ok(alice, "put", str(tmp_path / "report.txt"), "/projects/report.txt")
    ok(alice, "put", str(tmp_path / "report.txt"), "/mine.txt")
    return alice, bob, tmp_path


def test_walkthrough(people: tuple[dict[str, str], dict[str, str], Path]) -> None:
    alice, bob, tmp = people
    out = ok(alice, "member", "add", pub(bob), "--name", "bob")
    assert re.search(r"member bob: SHA256:[\w-]{43}", out)
    listing = ok(alice, "member", "ls")
    assert "alice" in listing and "owner" in listing and "bob" in listing and "p256" in listing
    assert "read-only" in ok(alice, "share", "/projects", "--with", "bob")
    assert "-> bob" in ok(alice, "shares")
    assert "<- alice" in ok(bob, "shares")
    assert ok(bob, "ls", "/Shared/alice") == "projects/\n"
    assert ok(bob, "cat", "/Shared/alice/projects/report.txt") == "quarterly numbers\n"
    # Read-only: exit 12, one line. Only the owner administers: exit 12 too.
    r = run_csfs("put", str(tmp / "report.txt"), "/Shared/alice/projects/x.txt", env=bob)
    assert_one_line_error(r, 12)
    assert_one_line_error(run_csfs("share", "/Shared/alice/projects", "--with", "bob",
                                   env=bob), 12)
    assert_one_line_error(run_csfs("fsck", "--repair", env=bob), 12)
    log = ok(alice, "log")
    assert "chain intact" in log and "share folder" in log and "member-add bob" in log
    out = ok(alice, "unshare", "/projects", "--with", "bob", "--reencrypt")
    assert "1 files re-encrypted" in out and re.search(r"[1-9]\d* bytes rewritten", out)
    assert ok(bob, "ls", "/Shared/alice") == ""
    ok(alice, "member", "rm", "bob")
    assert "bob" not in ok(alice, "member", "ls")
    assert ok(alice, "fsck").count("0 problems") == 1


def test_bad_input_gives_one_line(people: tuple[dict[str, str], dict[str, str], Path]) -> None:
    alice, bob, tmp = people
    unsigned = tmp / "unsigned.pem"
    text = Path(pub(bob)).read_text()
    unsigned.write_text(text[: text.index("-----BEGIN CSFS KEY SIGNATURE")])
    assert_one_line_error(run_csfs("member", "add", str(unsigned), "--name", "bob",
                                   env=alice), 6)
    assert_one_line_error(run_csfs("member", "add", pub(bob), "--name", "no spaces",
                                   env=alice), 2)
    assert_one_line_error(run_csfs("share", "/projects", "--with", "nobody", env=alice), 8)
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    # A file can be shared, read-only.
    assert_one_line_error(run_csfs("share", "/mine.txt", "--with", "bob", "--write",
                                   env=alice), 2)
    ok(alice, "share", "/mine.txt", "--with", "bob")
    assert ok(bob, "cat", "/Shared/alice/mine.txt") == "quarterly numbers\n"
    assert_one_line_error(run_csfs("put", str(tmp / "report.txt"), "/Shared/alice/mine.txt",
                                   env=bob), 12)
    # A re-exported public key (csfs pubkey) is the same key: fine, no change.
    exported = tmp / "bob-again.pem"
    ok(bob, "pubkey", "-o", str(exported))
    assert "member bob" in ok(alice, "member", "add", str(exported), "--name", "bob")


def test_log_tampering_is_reported(people: tuple[dict[str, str], dict[str, str], Path]) -> None:
    alice, bob, tmp = people
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    ok(alice, "share", "/projects", "--with", "bob")
    ok(bob, "ls", "/Shared/alice")  # bob's client remembers the head
    last = tmp / "store" / "a" / f"{3:016x}"
    os.chmod(last, 0o600)
    last.unlink()
    r = run_csfs("ls", "/Shared/alice", env=bob)
    assert_one_line_error(r, 4)
    assert "rolled back" in r.stderr
