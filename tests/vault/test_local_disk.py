# ruff: noqa: F811  (the users fixture is imported from the sharing tests)
"""What a member's and an owner's own disk holds after using a shared vault: no
file or folder name and no plaintext outside the user's key (docs/design.md: only
ciphertext on the local disk). An attacker who reads the user's home directory
(a backup, a stolen laptop without the key's passphrase) learns no names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from csfs.vault import sharing
from tests.vault.conftest import assert_one_line_error, run_csfs
from tests.vault.test_sharing import BOB, Users, users  # noqa: F401  (fixture)

SECRETS = ("topsecretfolder", "innerdocument", "deepsubfolder", "ownerprivatefile",
           "CONTENTMARKER4242")


def _user(tmp: Path, name: str, store: str, *keygen: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CSFS_", "XDG_"))}
    home = tmp / "homes" / name
    env.update({"HOME": str(home), "CSFS_PASSPHRASE": f"pw-{name}", "CSFS_STORE": store,
                "CSFS_KEY": str(home / "keys" / f"{name}_private_key.pem"),
                "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache")})
    r = run_csfs("keygen", "--dir", str(home / "keys"), "--name", name, *keygen, env=env)
    assert r.returncode == 0, r.stderr
    return env


def ok(env: dict[str, str], *args: str) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def hits(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_no_names_or_plaintext_in_either_users_home(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    alice = _user(tmp_path, "alice", store)
    bob = _user(tmp_path, "bob", store)
    bob["CSFS_TRUST_OWNER"] = alice["CSFS_KEY"].replace("_private_key", "_public_key")
    src = tmp_path / "src.txt"  # outside both homes: the user's own plaintext
    src.write_text("CONTENTMARKER4242 quarterly numbers\n")
    ok(alice, "init", "--name", "alice")
    ok(alice, "mkdir", "/topsecretfolder")
    ok(alice, "mkdir", "/topsecretfolder/deepsubfolder")
    ok(alice, "put", str(src), "/topsecretfolder/deepsubfolder/innerdocument")
    ok(alice, "put", str(src), "/ownerprivatefile")
    ok(alice, "member", "add", bob["CSFS_KEY"].replace("_private_key", "_public_key"),
       "--name", "bob")
    ok(alice, "share", "/topsecretfolder", "--with", "bob", "--write")
    assert ok(bob, "ls", "/Shared/alice") == "topsecretfolder/\n"
    path = "/Shared/alice/topsecretfolder/deepsubfolder/innerdocument"
    assert "CONTENTMARKER4242" in ok(bob, "cat", path)
    ok(bob, "fsck")
    assert "topsecretfolder" in ok(bob, "shares")
    ok(alice, "ls", "/topsecretfolder")
    ok(alice, "fsck")
    ok(alice, "shares")
    assert hits(tmp_path / "homes") == []


def test_second_key_of_the_same_user_must_trust_the_owner(tmp_path: Path) -> None:
    """One OS user, two keys: bob trusted alice's vault with his work key. The store
    then serves the vault to his other key (say, a key he keeps for another team):
    that key has never been told whom to trust, so it must be asked, not ride on
    the first key's decision."""
    store = str(tmp_path / "store")
    alice = _user(tmp_path, "alice", store)
    bob = _user(tmp_path, "bob", store)
    other = dict(bob)
    keys = Path(bob["HOME"]) / "keys"
    r = run_csfs("keygen", "--dir", str(keys), "--name", "bobother", env=bob)
    assert r.returncode == 0, r.stderr
    other["CSFS_KEY"] = str(keys / "bobother_private_key.pem")
    ok(alice, "init", "--name", "alice")
    ok(alice, "member", "add", bob["CSFS_KEY"].replace("_private_key", "_public_key"),
       "--name", "bob")
    ok(alice, "member", "add", other["CSFS_KEY"].replace("_private_key", "_public_key"),
       "--name", "bobother")
    bob["CSFS_TRUST_OWNER"] = alice["CSFS_KEY"].replace("_private_key", "_public_key")
    ok(bob, "ls", "/")
    assert_one_line_error(run_csfs("ls", "/", env=other), 4)
    other["CSFS_TRUST_OWNER"] = bob["CSFS_TRUST_OWNER"]
    ok(other, "ls", "/")
    del other["CSFS_TRUST_OWNER"]
    ok(other, "ls", "/")  # trusted once, remembered for this key


def test_a_state_file_with_names_in_clear_is_rewritten_sealed(users: Users) -> None:
    """A state file written before notices were sealed holds folder names in clear;
    the next command keeps the shares and leaves no name in the file."""
    users.a.mkdir("/migrationcheckfolder")
    sharing.share(users.a, "/migrationcheckfolder", BOB)
    b = users.open("bob")
    b.close()
    (path,) = (users.tmp / "bob" / "state").rglob("*.json")
    data = json.loads(path.read_text())
    saved = data["access"][users.bob.recipient.fingerprint]
    del saved["sealed_notices"]
    saved["notices"] = [n.to_json() for n in b.access.notices.values()]
    path.write_text(json.dumps(data))  # as the previous version wrote it
    assert b"migrationcheckfolder" in path.read_bytes()
    b = users.open("bob")
    assert "migrationcheckfolder" in {n.shown for n in b.access.notices.values()}
    b.close()
    assert b"migrationcheckfolder" not in path.read_bytes()
    b = users.open("bob")
    assert "migrationcheckfolder" in {n.shown for n in b.access.notices.values()}
