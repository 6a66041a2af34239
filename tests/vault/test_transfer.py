"""`csfs get` / `csfs put` against a malicious write member (docs/design.md, transfers).

Alice owns the vault and runs the real CLI (a subprocess). Bob is a member with
write access to /proj: he runs his own client, so he can sign any manifest he
likes for the folders he may write. Every attack here is something Bob writes;
the victim is Alice downloading with `csfs get -r`. The score kept is: a clear
one-line error (or a safe result), never a traceback, and no byte written
outside the destination Alice named.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import Identity, generate_identity
from csfs.crypto.keys import public_key_file
from csfs.errors import CsfsError, FormatError, UsageError
from csfs.store import open_store
from csfs.vault import DirectoryManifest, Entry, Vault, split_path
from csfs.vault.layout import manifest_key, new_id
from csfs.vault.manifest import check_name
from tests.vault.conftest import assert_one_line_error, run_csfs, write_bytes

SHARED = "/Shared/alice/proj"
E_ACUTE = "\u00e9"  # é: UTF-8 bytes c3 a9
SURROGATES = "\udcc3\udca9"  # what surrogateescape turns into the same two bytes


@dataclass
class Team:
    env: dict[str, str]
    tmp: Path
    bob: Vault
    outside: Path  # a folder Alice never asked to write to

    def alice(self, *args: str) -> Any:
        return run_csfs(*args, env=self.env)

    def ok(self, *args: str) -> str:
        r = self.alice(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
        return str(r.stdout)

    def outside_bytes(self) -> int:
        total = 0
        for root, dirs, files in os.walk(self.outside):
            total += len(dirs) + sum(os.lstat(os.path.join(root, f)).st_size + 1 for f in files)
        return total


@pytest.fixture
def team(cli_env: dict[str, str], identity: Identity, tmp_path: Path) -> Iterator[Team]:
    env = {**cli_env, "CSFS_STORE": str(tmp_path / "store")}
    bob_id: Identity = generate_identity()
    (tmp_path / "bob.pem").write_bytes(public_key_file(bob_id))
    for args in (("init", "--name", "alice"), ("mkdir", "/proj"),
                 ("member", "add", str(tmp_path / "bob.pem"), "--name", "bob"),
                 ("share", "/proj", "--with", "bob", "--write")):
        r = run_csfs(*args, env=env)
        assert r.returncode == 0, (args, r.stderr)
    bob = Vault.open(open_store(str(tmp_path / "store")), bob_id,
                     state_dir=str(tmp_path / "bob" / "state"),
                     config_dir=str(tmp_path / "bob" / "config"), ttl=0.0,
                     trusted_owners={identity.recipient.verify_key_bytes})
    outside = tmp_path / "outside"
    outside.mkdir()
    yield Team(env, tmp_path, bob, outside)
    bob.close()


def plant(bob: Vault, path: str, change: dict[str, Entry | None]) -> None:
    """Bob's own client: rewrite a manifest he may write, with names the library would
    never produce, JSON-escaped as any JSON writer may (`\\udcc3` and so on)."""
    dir_id = bob.lookup(path).id
    cur, etag = bob.load_dir(dir_id, fresh=True)
    new = cur.copy()
    for name, entry in change.items():
        if entry is None:
            new.entries.pop(name, None)
        else:
            new.entries[name] = entry
    new.version = cur.version + 1

    class Escaped(DirectoryManifest):
        def encode_plain(self) -> bytes:
            body = json.loads(DirectoryManifest.encode_plain(cur))  # the real field set
            body["entries"] = {n: e.to_json() for n, e in self.entries.items()}
            return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    forged = Escaped(**{f: getattr(new, f) for f in (
        "dir_id", "version", "entries", "readers", "writers", "mtime_ns", "mode")})
    bob.store.put(manifest_key(dir_id), forged.seal(bob.vault_id, bob.identity), if_match=etag)
    with contextlib.suppress(CsfsError):  # Bob's own client may refuse to read it back
        bob.load_dir(dir_id, fresh=True)


# -- 1. names that are the same bytes on disk; symlinks followed on a re-sync ---------


def test_surrogate_name_alias_cannot_write_through_a_symlink(team: Team) -> None:
    bob = team.bob
    bob.mkdir(f"{SHARED}/carrier")
    write_bytes(bob, f"{SHARED}/carrier/pwned", b"written through the link")
    carrier = bob.lookup(f"{SHARED}/carrier")
    link = Entry(new_id(), "l", mode=0o777, target=str(team.outside))
    plant(bob, SHARED, {E_ACUTE: link, SURROGATES: carrier, "carrier": None})

    dest = team.tmp / "dl"
    r = team.alice("get", "-r", "/proj", str(dest))
    assert_one_line_error(r)
    assert team.outside_bytes() == 0
    r = team.alice("fsck")  # fsck names the bad manifest
    assert r.returncode == 4 and "UTF-8" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x\0y", "\udcff", "\ud800", "n" * 256,
                                  "\u00e9" * 128])
def test_get_refuses_bad_names(team: Team, name: str) -> None:
    bob = team.bob
    plant(bob, SHARED, {name: Entry(new_id(), "l", mode=0o777, target=str(team.outside))})
    dest = team.tmp / "dl"
    r = team.alice("get", "-r", "/proj", str(dest))
    assert_one_line_error(r)
    assert team.outside_bytes() == 0 and not dest.exists()


@pytest.mark.parametrize("entry", [
    Entry("1" * 32, "l", mode=0o777, target=""),
    Entry("1" * 32, "l", mode=0o777, target="a\0b"),
    Entry("1" * 32, "f", mode=0o644, mtime_ns=2**100),
    Entry("1" * 32, "d", mode=0o755, mtime_ns=-2**70),
])
def test_get_odd_entries_clear_error_or_safe(team: Team, entry: Entry) -> None:
    bob = team.bob
    if entry.type == "d":
        bob.mkdir(f"{SHARED}/real")
        entry = replace(bob.lookup(f"{SHARED}/real"), mtime_ns=entry.mtime_ns)
        plant(bob, SHARED, {"real": entry})
    else:
        plant(bob, SHARED, {"odd": entry})
    r = team.alice("get", "-r", "/proj", str(team.tmp / "dl"))
    assert "Traceback" not in r.stderr
    if r.returncode:
        assert_one_line_error(r)
    assert team.outside_bytes() == 0


def test_names_are_strict_utf8() -> None:
    for bad in (SURROGATES, "\udcff", "a\ud800b"):
        with pytest.raises(UsageError, match="UTF-8"):
            check_name(bad)
        with pytest.raises(UsageError, match="UTF-8"):
            split_path("/x/" + bad)
    assert check_name(E_ACUTE) == E_ACUTE
    body = {"format": "csfs-dir-1", "dir_id": "0" * 32, "mode": 0o755, "mtime_ns": 0,
            "readers": [], "writers": [],
            "entries": {SURROGATES: {"id": "1" * 32, "type": "d", "mode": 0o755,
                                     "mtime_ns": 0}}}
    plain = json.dumps(body).encode()  # ASCII, with the surrogates as \\u escapes
    with pytest.raises(FormatError):
        DirectoryManifest.decode_plain(plain, "0" * 32, 1)
    with pytest.raises(FormatError):  # raw bytes that are not UTF-8 at all
        DirectoryManifest.decode_plain(plain.replace(b"\\udcc3\\udca9", b"\xc3("), "0" * 32, 1)


def test_resync_never_follows_a_symlink_it_made_earlier(team: Team) -> None:
    bob = team.bob
    bob.symlink(str(team.outside), f"{SHARED}/s")
    dl = team.tmp / "dl"
    dl.mkdir()
    team.ok("get", "-r", "/proj", str(dl))  # into dl/proj
    assert os.readlink(dl / "proj" / "s") == str(team.outside)
    # Bob turns the link into a folder holding a file; Alice syncs again.
    bob.remove(f"{SHARED}/s")
    bob.mkdir(f"{SHARED}/s")
    write_bytes(bob, f"{SHARED}/s/evil", b"evil")
    r = team.alice("get", "-r", "/proj", str(dl))
    assert_one_line_error(r)
    assert "s" in r.stderr
    assert team.outside_bytes() == 0
    assert os.readlink(dl / "proj" / "s") == str(team.outside)  # left as it was


def test_tree_destination_named_by_get_is_not_followed(team: Team) -> None:
    """`get -r /proj/ln DIR` writes into DIR/ln, a name the vault chose: an earlier
    `get /proj/ln DIR` may have made it a link out."""
    bob = team.bob
    bob.symlink(str(team.outside), f"{SHARED}/ln")
    dl = team.tmp / "dl"
    dl.mkdir()
    team.ok("get", "/proj/ln", str(dl))
    bob.remove(f"{SHARED}/ln")
    bob.mkdir(f"{SHARED}/ln")
    write_bytes(bob, f"{SHARED}/ln/evil", b"evil")
    r = team.alice("get", "-r", "/proj/ln", str(dl))
    assert_one_line_error(r, 2)
    assert "symbolic link" in r.stderr and team.outside_bytes() == 0


def test_resync_replaces_files_and_links_without_following(team: Team) -> None:
    bob = team.bob
    write_bytes(bob, f"{SHARED}/f", b"one")
    bob.symlink("f", f"{SHARED}/l")
    dl = team.tmp / "dl"
    dl.mkdir()
    team.ok("get", "-r", "/proj", str(dl))
    # Bob swaps the two: the file becomes a link out, the link a file.
    bob.remove(f"{SHARED}/f")
    bob.remove(f"{SHARED}/l")
    bob.symlink(str(team.outside / "x"), f"{SHARED}/f")
    write_bytes(bob, f"{SHARED}/l", b"two")
    team.ok("get", "-r", "/proj", str(dl))
    assert os.readlink(dl / "proj" / "f") == str(team.outside / "x")
    assert not os.path.islink(dl / "proj" / "l") and (dl / "proj" / "l").read_bytes() == b"two"
    assert team.outside_bytes() == 0


def test_put_refuses_local_names_that_are_not_utf8(team: Team) -> None:
    src = team.tmp / "src"
    src.mkdir()
    bad = os.fsencode(str(src)) + b"/caf\xe9"
    with open(bad, "wb") as f:
        f.write(b"latin-1 name")
    r = team.alice("put", "-r", str(src), "/up")
    assert_one_line_error(r, 2)
    assert "UTF-8" in r.stderr and "caf\\xe9" in r.stderr
    assert "up" not in team.ok("ls", "/")  # checked before anything was uploaded
    r = team.alice("put", os.fsdecode(bad), "/proj/")
    assert_one_line_error(r, 2)
    assert "UTF-8" in r.stderr
    assert "caf" not in team.ok("ls", "/proj")


# -- 2. modes ---------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_get_masks_modes_and_drops_special_bits(team: Team, umask_022: None) -> None:
    bob = team.bob
    write_bytes(bob, f"{SHARED}/suid", b"#!/bin/sh\n", mode=0o6777)
    write_bytes(bob, f"{SHARED}/open", b"plain", mode=0o666)
    bob.mkdir(f"{SHARED}/private", mode=0o700)
    bob.mkdir(f"{SHARED}/ro", mode=0o7777)
    write_bytes(bob, f"{SHARED}/ro/inside", b"x")
    bob.setattr(f"{SHARED}/ro", mode=0o1555)
    dl = team.tmp / "dl"
    team.ok("get", "-r", "/proj", str(dl))
    mode = {n: stat.S_IMODE(os.lstat(dl / n).st_mode) for n in ("suid", "open", "private", "ro")}
    assert mode == {"suid": 0o755, "open": 0o644, "private": 0o700, "ro": 0o555}
    assert (dl / "ro" / "inside").read_bytes() == b"x"
    team.ok("get", "/proj/suid", str(team.tmp / "one"))
    assert stat.S_IMODE(os.lstat(team.tmp / "one").st_mode) == 0o755
    os.chmod(dl / "ro", 0o700)  # so that the test folder can be removed


# -- 3. cycles ----------------------------------------------------------------------------


def test_get_refuses_a_directory_cycle(team: Team) -> None:
    bob = team.bob
    bob.mkdir(f"{SHARED}/a/b", parents=True)
    a = bob.lookup(f"{SHARED}/a")
    plant(bob, f"{SHARED}/a/b", {"loop": replace(a, mode=0o755)})
    dl = team.tmp / "dl"
    r = team.alice("get", "-r", "/proj", str(dl))
    assert_one_line_error(r)
    assert "cycle" in r.stderr and "/proj/a/b/loop" in r.stderr
    assert not dl.exists()  # refused before anything was written


def test_get_refuses_a_folder_listed_twice(team: Team) -> None:
    bob = team.bob
    bob.mkdir(f"{SHARED}/a")
    write_bytes(bob, f"{SHARED}/a/f", b"f")
    plant(bob, SHARED, {"twin": bob.lookup(f"{SHARED}/a")})
    dl = team.tmp / "dl"
    r = team.alice("get", "-r", "/proj", str(dl))
    assert_one_line_error(r)
    assert "twice" in r.stderr
    assert not dl.exists()


def test_library_lookup_refuses_a_path_through_a_cycle(team: Team) -> None:
    bob = team.bob
    bob.mkdir(f"{SHARED}/a")
    plant(bob, f"{SHARED}/a", {"loop": bob.lookup(f"{SHARED}/a")})
    from csfs.errors import IntegrityError

    with pytest.raises(IntegrityError, match="cycle"):
        bob.lookup(f"{SHARED}/a/loop")
    with pytest.raises(IntegrityError, match="cycle"):
        bob.lookup(f"{SHARED}/a/loop/loop/loop")


# -- 4. local-side mistakes ---------------------------------------------------------------


def test_get_refuses_to_overwrite_without_force(team: Team) -> None:
    write_bytes(team.bob, f"{SHARED}/f", b"from the vault")
    mine = team.tmp / "mine.txt"
    mine.write_bytes(b"my own work")
    r = team.alice("get", "/proj/f", str(mine))
    assert_one_line_error(r, 2)
    assert "--force" in r.stderr and mine.read_bytes() == b"my own work"
    team.ok("get", "--force", "/proj/f", str(mine))
    assert mine.read_bytes() == b"from the vault"
    assert "--force" in team.ok("get", "--help")


def test_get_into_a_missing_folder_names_the_destination(team: Team) -> None:
    write_bytes(team.bob, f"{SHARED}/f", b"x")
    target = team.tmp / "nope" / "f"
    r = team.alice("get", "/proj/f", str(target))
    assert_one_line_error(r)
    assert str(team.tmp / "nope") in r.stderr and ".csfs-tmp" not in r.stderr
    assert not (team.tmp / "nope").exists()


def test_put_directory_symlink_is_stored_as_a_symlink(team: Team) -> None:
    src = team.tmp / "src"
    (src / "real").mkdir(parents=True)
    (src / "real" / "f").write_bytes(b"f")
    os.symlink("real", src / "alias")
    team.ok("put", "-r", str(src), "/up")
    listing = team.ok("ls", "-l", "/up")
    assert "alias -> real" in listing
    dl = team.tmp / "dl"
    team.ok("get", "-r", "/up", str(dl))
    assert os.readlink(dl / "alias") == "real" and (dl / "real" / "f").read_bytes() == b"f"


def test_put_fifo_is_not_a_regular_file(team: Team) -> None:
    fifo = team.tmp / "pipe"
    os.mkfifo(fifo)
    r = team.alice("put", str(fifo), "/pipe")
    assert_one_line_error(r, 2)
    assert "not a regular file" in r.stderr
    src = team.tmp / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    r = team.alice("put", "-r", str(src), "/src")
    assert_one_line_error(r, 2)
    assert "not a regular file" in r.stderr and "pipe" in r.stderr


def test_failed_download_leaves_no_temp_files(team: Team) -> None:
    write_bytes(team.bob, f"{SHARED}/f", b"x" * 100_000)
    entry = team.bob.lookup(f"{SHARED}/f")
    from csfs.vault.layout import content_key

    key = content_key(entry.id, entry.version)
    raw = bytearray(team.bob.store.get(key))
    raw[-100] ^= 1
    team.bob.store.put(key, bytes(raw))
    dl = team.tmp / "dl"
    dl.mkdir()
    r = team.alice("get", "/proj/f", str(dl / "f"))
    assert_one_line_error(r)
    assert os.listdir(dl) == []
    r = team.alice("get", "-r", "/proj", str(dl / "tree"))
    assert_one_line_error(r)
    leftovers = [f for _, _, fs in os.walk(dl) for f in fs]
    assert leftovers == [] and not (dl / "tree").exists()
