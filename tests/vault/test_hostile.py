"""Hostile objects: what a write member signing its own manifests, or a store that
swaps objects, can make a reader pay (docs/format.md 5.3 limits and strict parsing).

Bob is a member with write access to /proj. He signs, with his own key, manifests
that no csfs writer produces. Alice (the owner) and every other reader must reject
them as a FormatError: no traceback, no exception other than a CsfsError, no
rollback floor raised, no unbounded memory or time. The store attacks replace
objects on a real local-folder store and run the real CLI in a subprocess.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import Context, Identity, generate_identity
from csfs.crypto.envelope import KIND_DIRECTORY
from csfs.crypto.keys import public_key_file
from csfs.crypto.sealed import seal_object
from csfs.errors import FormatError
from csfs.store import Store, open_store
from csfs.vault import Vault, sharing
from csfs.vault.layout import HEADER_KEY, content_key, envelope_key, manifest_key, new_id
from tests.vault.conftest import CSFS, assert_one_line_error, run_csfs, write_bytes

BOB = "bob"


class _AnyVersionContext(Context):
    """A context whose version is encoded whatever its value, as a hostile writer
    (with its own code) can do: csfs's own encoder refuses versions >= 2^63."""

    def encode(self) -> bytes:
        return (bytes([self.kind]) + self.vault_id + self.node_id
                + (self.version % (1 << 64)).to_bytes(8, "big"))


@dataclass
class Team:
    store: Store
    tmp: Path
    alice: Identity
    bob: Identity
    a: Vault
    proj: str  # /proj's dir id
    known: dict[str, Any] = field(default_factory=dict)

    def open(self, who: str = "alice") -> Vault:
        """A fresh client (its own state: no rollback memory of earlier tests)."""
        ident = self.alice if who == "alice" else self.bob
        tag = f"{who}-{new_id()[:8]}"
        return Vault.open(self.store, ident, state_dir=str(self.tmp / tag / "state"),
                          config_dir=str(self.tmp / tag / "config"), ttl=0.0,
                          trusted_owners={self.alice.recipient.verify_key_bytes})

    def plain(self, dir_id: str | None = None) -> dict[str, Any]:
        """The current manifest of a directory as a JSON object, as Bob reads it."""
        m, _ = self.a.load_dir(dir_id or self.proj, fresh=True)
        return dict(json.loads(m.encode_plain()))

    def version(self, dir_id: str | None = None) -> int:
        return self.a.load_dir(dir_id or self.proj, fresh=True)[0].version

    def bob_signs(self, body: dict[str, Any] | bytes, version: int | None = None,
                  dir_id: str | None = None) -> None:
        """Bob seals a manifest of his own making to the directory's readers and puts it."""
        dir_id = dir_id or self.proj
        m = self.known.get(dir_id) or self.a.load_dir(dir_id, fresh=True)[0]
        self.known[dir_id] = m  # Bob remembers the good one: the store now holds his
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctx = _AnyVersionContext(KIND_DIRECTORY, self.a.vault_id, bytes.fromhex(dir_id),
                                 m.version + 1 if version is None else version)
        self.store.put(manifest_key(dir_id), seal_object(data, m.recipients(), self.bob, ctx))


@pytest.fixture
def team(tmp_path: Path) -> Team:
    store = open_store(str(tmp_path / "store"))
    alice, bob = generate_identity(), generate_identity()
    a = Vault.create(store, alice, state_dir=str(tmp_path / "alice" / "state"),
                     config_dir=str(tmp_path / "alice" / "config"), name="alice")
    a.mkdir("/proj/sub", parents=True)
    write_bytes(a, "/proj/plan.txt", b"the plan")
    sharing.add_member(a, public_key_file(bob), BOB)
    sharing.share(a, "/proj", BOB, write=True)
    return Team(store, tmp_path, alice, bob, a, a.lookup("/proj").id)


# -- 1. versions ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1 << 63, (1 << 64) - 1])
def test_writer_cannot_raise_the_rollback_floor_out_of_reach(team: Team, version: int) -> None:
    """Bob signs /proj at version 2^64-1. Accepted, every client's floor would become a
    version no writer can exceed, and the next write would crash (OverflowError)."""
    before = team.version()
    team.bob_signs(team.plain(), version=version)
    a = team.open()
    with pytest.raises(FormatError, match="version"):
        a.listdir("/proj")
    assert a.state.floor(team.proj) < 1 << 63
    # The owner repairs by writing a new manifest from what it last trusted: the
    # floor was not raised, so a normal next version is accepted everywhere.
    good = team.known[team.proj].copy()  # the last trusted manifest
    good.version = before + 1
    team.store.put(manifest_key(team.proj), good.seal(team.a.vault_id, team.alice))
    assert "plan.txt" in a.listdir("/proj")
    write_bytes(a, "/proj/after.txt", b"writes work")


def test_file_version_out_of_range_is_a_format_error(team: Team) -> None:
    body = team.plain()
    body["entries"]["plan.txt"]["version"] = (1 << 64) - 1
    team.bob_signs(body)
    with pytest.raises(FormatError):
        team.open().listdir("/proj")


# -- 3. resource limits -------------------------------------------------------------------


def test_deeply_nested_manifest_is_a_format_error(team: Team) -> None:
    """200,000 nested arrays: without a limit, json gives RecursionError in ls and fsck."""
    depth = 200_000
    body = (b'{"format":"csfs-dir-1","dir_id":"' + team.proj.encode() + b'","x":'
            + b"[" * depth + b"]" * depth + b"}")
    team.bob_signs(body)
    a = team.open()
    with pytest.raises(FormatError):
        a.listdir("/proj")
    from csfs.vault.fsck import fsck

    report = fsck(a)
    assert any("nested" in p or "malformed" in p for p in report.problems), report.problems


def test_too_many_entries_rejected_before_entries_are_parsed(team: Team) -> None:
    """100,001 entries (the limit is 100,000): rejected from the count alone."""
    body = team.plain()
    e = body["entries"]["plan.txt"]
    body["entries"] = {f"f{i}": e for i in range(100_001)}
    team.bob_signs(body)
    a = team.open()
    t = time.monotonic()
    with pytest.raises(FormatError, match="entries"):
        a.listdir("/proj")
    assert time.monotonic() - t < 10


def test_oversized_manifest_rejected_before_decrypting(team: Team) -> None:
    """33 MiB of plaintext (the limit is 32 MiB): the sealed length says so up front."""
    body = team.plain()
    body["entries"]["plan.txt"] = dict(body["entries"]["plan.txt"])
    team.bob_signs(json.dumps(body).encode()[:-1] + b',"pad":"' + b"x" * (33 << 20) + b'"}')
    with pytest.raises(FormatError, match="larger than"):
        team.open().listdir("/proj")


# -- 4. lenient readers ---------------------------------------------------------------


def _entry_case(field: str, value: Any, name: str = "plan.txt") -> Any:
    def edit(body: dict[str, Any]) -> None:
        entry = body["entries"][name]
        if value is _DROP:
            del entry[field]
        else:
            entry[field] = value
    return edit


def _top_case(field: str, value: Any) -> Any:
    def edit(body: dict[str, Any]) -> None:
        if value is _DROP:
            del body[field]
        else:
            body[field] = value
    return edit


_DROP = object()
LENIENT: dict[str, Any] = {
    "file-without-size": _entry_case("size", _DROP),
    "file-without-version": _entry_case("version", _DROP),
    "float-mtime": _entry_case("mtime_ns", 1.5e18),
    "bool-mode": _entry_case("mode", True),
    "string-size": _entry_case("size", "8"),
    "null-mode": _entry_case("mode", None),
    "unknown-entry-field": _entry_case("owner", "mallory"),
    "dir-with-size": _entry_case("size", 0, "sub"),
    "symlink-without-target": lambda b: b["entries"].__setitem__(
        "ln", {"id": new_id(), "type": "l", "mode": 0o777, "mtime_ns": 1}),
    "symlink-target-too-long": lambda b: b["entries"].__setitem__(
        "ln", {"id": new_id(), "type": "l", "mode": 0o777, "mtime_ns": 1, "target": "a" * 4096}),
    "entry-not-an-object": lambda b: b["entries"].__setitem__("x", [1, 2]),
    "writers-not-empty": _top_case("writers", ["00" * 32]),
    "readers-not-a-list": _top_case("readers", "pem"),
    "no-readers": _top_case("readers", []),
    "manifest-without-mode": _top_case("mode", _DROP),
    "float-manifest-mtime": _top_case("mtime_ns", 1.0),
    "unknown-manifest-field": _top_case("comment", "hi"),
    "entries-a-list": _top_case("entries", []),
}


def test_lenient_parsing_closed(team: Team) -> None:
    """Every malformed manifest Bob can sign is a FormatError for Alice (not an empty
    file, not a float time, not a traceback). One vault, one fresh reader per case."""
    good = team.plain()
    wrong: dict[str, str] = {}
    for case, edit in LENIENT.items():
        body = copy.deepcopy(good)
        edit(body)
        team.bob_signs(body)
        try:
            team.open().listdir("/proj")
            wrong[case] = "accepted"
        except FormatError:
            pass
        except Exception as exc:  # anything but a FormatError is a bug here
            wrong[case] = f"{type(exc).__name__}: {exc}"
    assert wrong == {}


def test_manifest_version_zero_is_rejected(team: Team) -> None:
    team.bob_signs(team.plain(), version=0)
    with pytest.raises(FormatError, match="version"):
        team.open().listdir("/proj")


# -- 6. one source of truth for a folder's mode and time ---------------------------------


def test_folder_metadata_comes_from_the_parent_entry(team: Team) -> None:
    """/proj/sub's own manifest says mode 0 and time 0: readers show what /proj lists
    (format.md 5.3); the manifest's own copy is for the vault root only."""
    sub = team.a.lookup("/proj/sub")
    body = team.plain(sub.id)
    body["mode"], body["mtime_ns"] = 0, 0
    team.bob_signs(body, dir_id=sub.id)
    a = team.open()
    assert a.listdir("/proj/sub") == {}
    seen = a.lookup("/proj/sub")
    assert (seen.mode, seen.mtime_ns) == (sub.mode, sub.mtime_ns)
    assert (seen.mode, seen.mtime_ns) != (0, 0)


# -- 2. bounded reads: the store swaps a small object for a huge one -------------------------

HUGE = 1 << 30  # sparse on disk: costs no space, but a naive reader holds it in memory
RSS_LIMIT_KB = 200 << 10  # the CLI itself needs well under this


@pytest.fixture
def cli(tmp_path: Path, identity: Identity, key_file: str,
        cli_env: dict[str, str]) -> tuple[Vault, dict[str, str]]:
    env = {**cli_env, "CSFS_STORE": str(tmp_path / "cli-store")}
    r = run_csfs("init", env=env)
    assert r.returncode == 0, r.stderr
    src = tmp_path / "small.txt"
    src.write_bytes(b"small file " * 100)
    r = run_csfs("put", str(src), "/small.txt", env=env)
    assert r.returncode == 0, r.stderr
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))  # above SMALL_FILE: downloaded to a temp file
    r = run_csfs("put", str(big), "/big.bin", env=env)
    assert r.returncode == 0, r.stderr
    r = run_csfs("mkdir", "/d", env=env)
    assert r.returncode == 0, r.stderr
    v = Vault.open(open_store(env["CSFS_STORE"]), identity, state_dir=str(tmp_path / "peek"))
    return v, env


def _make_huge(store_root: str, key: str) -> None:
    path = os.path.join(store_root, key)
    with open(path, "r+b") as f:
        f.truncate(HUGE)


def _run_measured(*args: str, env: dict[str, str]) -> tuple[Any, int]:
    """Run the CLI; return its result (the RSS line removed) and its peak RSS in KiB."""
    import subprocess

    # VmHWM is this process image's own peak (ru_maxrss would include the pytest
    # process it was forked from: Linux keeps it across exec).
    code = ("import atexit, re, sys; atexit.register(lambda: print('PEAK-RSS', re.search("
            "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), "
            "file=sys.stderr)); " + CSFS[-1])
    r = subprocess.run([CSFS[0], "-c", code, *args], env=env, capture_output=True, text=True,
                       timeout=300)
    peak = int(re.search(r"PEAK-RSS (\d+)", r.stderr).group(1))  # type: ignore[union-attr]
    r.stderr = re.sub(r"PEAK-RSS \d+\n?", "", r.stderr)
    return r, peak


@pytest.mark.parametrize("what", ["payload", "large-payload", "envelope", "manifest", "header"])
def test_swapped_huge_object_costs_no_memory(cli: tuple[Vault, dict[str, str]],
                                             what: str) -> None:
    v, env = cli
    e = v.lookup("/big.bin" if what == "large-payload" else "/small.txt")
    key = {"payload": content_key(e.id, e.version), "envelope": envelope_key(e.id, e.version),
           "large-payload": content_key(e.id, e.version),
           "manifest": manifest_key(v.lookup("/d").id), "header": HEADER_KEY}[what]
    _make_huge(env["CSFS_STORE"], key)
    args = (("ls", "/d") if what == "manifest" else
            ("cat", "/big.bin") if what == "large-payload" else ("cat", "/small.txt"))
    r, peak_kb = _run_measured(*args, env=env)
    assert_one_line_error(r)
    assert r.stdout == ""
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb >> 10} MiB reading a swapped {what}"


# -- 5. malformed headers: one line, and "changed" for a client that pinned one --------------


def _signed_header(body: dict[str, Any]) -> bytes:
    from csfs.crypto.signing import sign_blob
    from csfs.vault.layout import HEADER_DOMAIN

    mallory = generate_identity()
    body = {k: (mallory.recipient.verify_key_bytes.hex() if v == "MALLORY" else v)
            for k, v in body.items()}
    return sign_blob(mallory.signing_key, HEADER_DOMAIN,
                     json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


HEADERS = {
    "no-vault-id": {"format": "csfs-vault-1", "owner": "MALLORY", "root_id": "0" * 32},
    "non-hex-owner": {"format": "csfs-vault-1", "owner": "zz" * 32, "root_id": "0" * 32,
                      "vault_id": "1" * 32},
    "owner-not-a-string": {"format": "csfs-vault-1", "owner": 7, "root_id": "0" * 32,
                           "vault_id": "1" * 32},
    "not-an-object": ["csfs-vault-1"],
    "deeply-nested": "NESTED",
}


@pytest.mark.parametrize("case", list(HEADERS))
def test_malformed_header_is_one_line(cli: tuple[Vault, dict[str, str]], case: str,
                                      tmp_path: Path) -> None:
    env = cli[1]
    body = HEADERS[case]
    if body == "NESTED":
        from csfs.crypto.signing import sign_blob
        from csfs.vault.layout import HEADER_DOMAIN

        raw = sign_blob(generate_identity().signing_key, HEADER_DOMAIN,
                        b"[" * 100_000 + b"]" * 100_000)
    elif isinstance(body, list):
        from csfs.crypto.signing import sign_blob
        from csfs.vault.layout import HEADER_DOMAIN

        raw = sign_blob(generate_identity().signing_key, HEADER_DOMAIN, json.dumps(body).encode())
    else:
        raw = _signed_header(body)
    with open(os.path.join(env["CSFS_STORE"], HEADER_KEY), "wb") as f:
        f.write(raw)
    # The client that made the vault has pinned its header: "changed", before parsing.
    r = run_csfs("ls", env=env)
    assert_one_line_error(r, 4)
    assert "header changed" in r.stderr
    # A new client (no pin): a one-line format error.
    fresh = {**env, "XDG_STATE_HOME": str(tmp_path / "fresh-state")}
    r = run_csfs("ls", env=fresh)
    assert_one_line_error(r, 3)


def test_writer_errors_are_one_line_through_the_cli(team: Team, tmp_path: Path) -> None:
    """The nested manifest through `csfs ls` and `csfs fsck` as Alice runs them."""
    from csfs.crypto import save_identity

    depth = 200_000
    team.bob_signs(b'{"format":"csfs-dir-1","x":' + b"[" * depth + b"]" * depth + b"}")
    key, _ = save_identity(team.alice, str(tmp_path / "akeys"), "alice", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CSFS_"))}
    env.update({"CSFS_KEY": key, "CSFS_STORE": str(tmp_path / "store"),
                "XDG_STATE_HOME": str(tmp_path / "a-state"),
                "XDG_CONFIG_HOME": str(tmp_path / "a-config"),
                "XDG_DATA_HOME": str(tmp_path / "a-data")})
    assert_one_line_error(run_csfs("ls", "/proj", env=env), 3)
    r = run_csfs("fsck", env=env)
    assert "Traceback" not in r.stderr and r.returncode != 0, r.stderr


def test_floor_poisoned_by_an_older_client_is_dropped(team: Team) -> None:
    """A client that accepted a 2^64-1 manifest before this fix saved that floor: it is
    not a version any valid manifest can reach, so the client forgets it."""
    a = team.open()
    a.listdir("/proj")
    a.state.seen[team.proj] = (1 << 64) - 1
    a.state.dirty = True
    a.close()
    again = Vault.open(team.store, team.alice, state_dir=os.path.dirname(a.state.path or ""),
                       config_dir=str(team.tmp / "again"), ttl=0.0)
    assert again.state.floor(team.proj) == 0
    assert "plan.txt" in again.listdir("/proj")


def test_cache_reads_of_envelopes_are_bounded(tmp_path: Path) -> None:
    """The mount reads envelopes through its ciphertext cache: a swapped huge one is a
    FormatError after at most 2 MiB + 1 bytes, not a 1 GiB read."""
    import tracemalloc

    from csfs.crypto.envelope import MAX_ENVELOPE_SIZE
    from csfs.vault.cache import ObjectCache

    store = open_store(str(tmp_path / "store"))
    key = envelope_key(new_id(), 1)
    store.put(key, b"x")
    _make_huge(str(tmp_path / "store"), key)
    cache = ObjectCache(str(tmp_path / "cache"), store, 1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="larger than"):
            cache.get_small(key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        cache.close()
    assert peak < 4 * MAX_ENVELOPE_SIZE
