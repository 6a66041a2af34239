# ruff: noqa: F811  (the users and people fixtures are imported from the sharing tests)
"""Attacks on access authority by a member with its own key and bucket write access
(issue 9, outside review). Alice owns the vault; Bob and Carol are members. Every
test is written as the attack: what the attacker does with its own key and raw
store writes, and what it must not get.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from csfs.crypto import Identity, parse_envelope
from csfs.crypto.envelope import KIND_DIRECTORY
from csfs.crypto.sealed import seal_object
from csfs.errors import AuthenticationError, CsfsError, NoMatchingKeyError
from csfs.vault import sharing
from csfs.vault.access import log_key
from csfs.vault.fsck import fsck
from csfs.vault.layout import envelope_key
from csfs.vault.manifest import DirectoryManifest, Entry
from tests.vault.conftest import assert_one_line_error, read_bytes, run_csfs, write_bytes
from tests.vault.test_hostile import _AnyVersionContext
from tests.vault.test_sharing import BOB, CAROL, Users, users  # noqa: F401  (fixture)
from tests.cli.test_sharing_cli import ok, people, pub  # noqa: F401  (fixture)


def _opens(users: Users, who: Identity) -> set[str]:
    """Every manifest and envelope in the bucket that ``who`` can open."""
    out = set()
    for info in users.store.list(""):
        raw = users.store.get(info.key)
        if info.key.startswith("m/"):
            env_len = int.from_bytes(raw[:4], "big")
            env = parse_envelope(raw[4:4 + env_len])
        elif info.key.startswith("k/"):
            env = parse_envelope(raw)
        else:
            continue
        try:
            env.open(who)
        except NoMatchingKeyError:
            continue
        out.add(info.key)
    return out


def _ids_in_bucket(users: Users) -> dict[str, str]:
    """What Bob learns from a bucket listing: every folder id (m/<id>) and file id."""
    out = {}
    for info in users.store.list(""):
        kind, _, rest = info.key.partition("/")
        if kind == "m":
            out[rest] = "d"
    return out


# -- 1. a writer's alias must not gain it readership of the owner's folders ---------------


def test_planted_aliases_gain_a_writer_nothing_on_a_routine_unshare(users: Users) -> None:
    users.a.mkdir("/secret")
    write_bytes(users.a, "/secret/s.txt", b"alice's secret")
    sharing.share(users.a, "/proj", BOB, write=True)
    sharing.share(users.a, "/proj", CAROL)
    b = users.open("bob")
    proj = b.lookup("/Shared/alice/proj").id
    before = _opens(users, users.bob)
    # Bob lists every folder id of the bucket (the root's is in the public header) in
    # /proj, and /private.txt too (its id from the listing, its size guessed right).
    private = users.a.lookup("/private.txt")
    planted = {f"a{i}": Entry(node, "d", mode=0o755)
               for i, node in enumerate([b.header.root_id, *_ids_in_bucket(users)])}
    planted["p.txt"] = replace(private, mode=0o644)

    b.update_dir(proj, lambda m: m.entries.update(planted))
    # Alice's routine unshare of Carol, with re-encryption.
    report = sharing.unshare(users.open("alice"), "/proj", CAROL, reencrypt=True)
    assert report.problems  # the aliases are reported
    a = users.open("alice")
    shared = {f"m/{a.lookup(p).id}" for p in ("/proj", "/proj/sub")} | {
        envelope_key(e.id, e.version) for e in (a.lookup(p) for p in
                                                ("/proj/plan.txt", "/proj/sub/deep.txt"))}
    assert _opens(users, users.bob) - before <= shared, "Bob gained a reader's key"
    for path in ("/", "/secret"):
        assert f"m/{a.lookup(path).id}" not in _opens(users, users.bob)
    for path, data in (("/private.txt", b"alice only"), ("/secret/s.txt", b"alice's secret")):
        e = a.lookup(path)
        assert envelope_key(e.id, e.version) not in _opens(users, users.bob)
        assert read_bytes(a, path) == data  # nothing the owner had was deleted


# -- 2. revocation cannot be blocked by what the revoked member wrote ---------------------


def _forge_huge(users: Users, b: object, node: str) -> None:
    vault = b  # type: ignore[assignment]
    m, _ = vault.load_dir(node)  # type: ignore[attr-defined]
    # Sealed by hand, as a hostile writer with its own code can: csfs's encoder
    # refuses versions >= 2^63.
    context = _AnyVersionContext(KIND_DIRECTORY, vault.vault_id, bytes.fromhex(node), 2**64 - 1)  # type: ignore[attr-defined]
    users.store.put(f"m/{node}", seal_object(m.encode_plain(), m.recipients(), users.bob, context))


@pytest.mark.parametrize("how", ["unshare", "member rm"])
def test_a_huge_manifest_version_does_not_block_revocation(users: Users, how: str) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    sub = b.lookup("/Shared/alice/proj/sub").id
    _forge_huge(users, b, sub)
    a = users.open("alice")
    with pytest.raises(CsfsError):
        a.listdir("/proj/sub")  # refused, and the owner's floor is not raised to 2^64-1
    assert [s.member for s in sharing.list_shares(a)] == [BOB]  # `csfs shares` still works
    if how == "unshare":
        report = sharing.unshare(a, "/proj", BOB)
        assert any("/proj/sub" in p for p in report.problems)
    else:
        assert sharing.remove_member(a, BOB) == ["/proj"]
    assert users.open("alice").access.current.grants == {}
    assert not users.open("bob").access.notices  # Bob's share is gone
    # The owner goes on writing there, and can replace the forged folder.
    write_bytes(a, "/proj/after.txt", b"after")
    a.remove("/proj/sub", recursive=True)
    a.mkdir("/proj/sub")
    assert read_bytes(users.open("alice"), "/proj/after.txt") == b"after"


# -- 7, 9. fsck and unshare as users run them ------------------------------------------------


def test_unshare_of_what_is_not_shared_is_a_clear_error(people: Any) -> None:
    alice, bob, _ = people
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    r = run_csfs("unshare", "/projects", "--with", "bob", env=alice)
    assert_one_line_error(r)
    assert "not shared with bob" in r.stderr


def test_a_file_share_grantee_fsck_is_clean(people: Any) -> None:
    alice, bob, _ = people
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    ok(alice, "share", "/projects/report.txt", "--with", "bob")
    assert ok(bob, "cat", "/Shared/alice/report.txt") == "quarterly numbers\n"
    r = run_csfs("fsck", env=bob)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fsck_names_a_planted_alias(users: Users) -> None:
    users.a.mkdir("/secret")
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    secret = users.a.lookup("/secret")
    b.update_dir(b.lookup("/Shared/alice/proj").id,
                 lambda m: m.entries.__setitem__("evil", secret))
    problems = fsck(users.open("alice")).problems
    assert any("alias" in p and "/proj/evil" in p for p in problems), problems
    assert not any("interrupted move?" in p for p in problems)


# -- 5. a later share never takes over an earlier share's name -------------------------------


def test_a_new_share_never_takes_over_a_shared_name(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    proj = users.a.lookup("/proj").id
    # Another folder named proj whose id sorts first (ids are random: make a few).
    n = 0
    while True:
        n += 1
        other = users.a.mkdir(f"/x{n}/proj", parents=True)
        if other.id < proj:
            break
    b = users.open("bob")
    assert b.lookup("/Shared/alice/proj").id == proj
    sharing.share(users.a, f"/x{n}/proj", BOB)
    for fresh in (False, True):
        b = users.open("bob", fresh=fresh)
        assert b.lookup("/Shared/alice/proj").id == proj  # Bob keeps writing where he was
        assert b.lookup("/Shared/alice/proj (2)").id == other.id
    sharing.unshare(users.a, "/proj", BOB)
    b = users.open("bob")  # the later share keeps its name for its whole life
    assert list(b.listdir("/Shared/alice")) == ["proj (2)"]


# -- 8. old log entries are verified again at every open --------------------------------------


def test_a_changed_old_log_entry_is_found_at_the_next_open(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    sharing.share(users.a, "/proj/sub", CAROL)
    users.open("bob")  # Bob's client remembers the head (entry 5)
    raw = bytearray(users.store.get(log_key(2)))
    raw[len(raw) // 2] ^= 1
    users.store.put(log_key(2), bytes(raw))
    with pytest.raises(AuthenticationError):
        users.open("bob")  # a command with a remembered head
    with pytest.raises(AuthenticationError):
        users.open("alice")


# -- 3. a replayed pre-revocation manifest does not bring a removed reader back ----------------


def test_a_replayed_manifest_does_not_wrap_to_a_removed_member(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    sharing.share(users.a, "/proj", CAROL)
    proj = users.a.lookup("/proj").id
    old = users.store.get(f"m/{proj}")  # owner-signed, readers: alice, Bob and Carol
    sharing.remove_member(users.a, BOB)
    users.store.put(f"m/{proj}", old)  # the store (or Bob) replays it
    a = users.open("alice", fresh=True)  # a new machine of the owner: no floor yet
    write_bytes(a, "/proj/new.txt", b"after Bob left")
    a.mkdir("/proj/newdir")
    e = a.lookup("/proj/new.txt")
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.bob)
    parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.carol)  # still hers
    for path in ("/proj", "/proj/newdir"):
        assert f"m/{a.lookup(path).id}" in _opens(users, users.carol), path
        assert f"m/{a.lookup(path).id}" not in _opens(users, users.bob), path


def test_a_replayed_manifest_does_not_make_a_write_member_wrap_to_a_removed_member(
    users: Users,
) -> None:
    # Carol writes in /proj; she cannot see the tree above it, but the verified log
    # says Bob is no longer a member: her new file must not be wrapped to him.
    sharing.share(users.a, "/proj", BOB)
    sharing.share(users.a, "/proj", CAROL, write=True)
    proj = users.a.lookup("/proj").id
    old = users.store.get(f"m/{proj}")  # owner-signed, readers: alice, Bob and Carol
    sharing.remove_member(users.a, BOB)
    users.store.put(f"m/{proj}", old)  # the store (or Bob) replays it
    c = users.open("carol", fresh=True)  # a new machine of Carol's: no floor yet
    write_bytes(c, "/Shared/alice/proj/new.txt", b"after Bob left")
    e = c.lookup("/Shared/alice/proj/new.txt")
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.bob)
    parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.alice)
    parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.carol)


# -- 4. a log entry a member planted stops nobody --------------------------------------------


def _plant(users: Users, seq: int, raw: bytes | None = None) -> None:
    """Bob, with bucket credentials, writes a/<seq>: signed by his own key, or junk."""
    from csfs.vault.access import AccessLog

    b = users.open("bob")
    if raw is not None:
        users.store.put(log_key(seq), raw)
        return
    forged = AccessLog(users.store, b.header, users.bob, b.state, b.access.pins)
    forged.head = b.access.head
    assert forged._put(seq, {"op": "share", "node": users.a.header.root_id,
                             "member": b.access.me, "write": True,
                             "notice": "0" * 32, "writers": {}}, [users.bob.recipient])


def test_a_planted_log_entry_is_ignored_and_the_owner_goes_on(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    n = max(int(i.key[2:], 16) for i in users.store.list("a/"))
    _plant(users, n + 1)  # the next seq, signed by Bob
    _plant(users, n + 2, users.store.get(log_key(2)))  # a copy of an owner entry
    _plant(users, n + 3, b"junk")  # and a junk object further on
    _plant(users, 2**64 - 1, b"junk")  # and one at the highest number there is
    for who in ("alice", "bob", "carol"):
        for fresh in (False, True):
            v = users.open(who, fresh=fresh)  # nobody is stopped
            assert users.a.header.root_id not in v.access.current.grants
            assert v.access.planted == {n + 1, n + 2, n + 3, 2**64 - 1}
    # The owner appends past the planted objects, and everyone follows.
    a = users.open("alice")
    sharing.share(a, "/proj/sub", CAROL)
    sharing.unshare(a, "/proj", BOB)
    assert read_bytes(users.open("carol", fresh=True), "/Shared/alice/sub/deep.txt") == b"deep"
    assert not users.open("bob").access.notices
    problems = fsck(users.open("alice")).problems
    assert any("not signed by the owner" in p for p in problems), problems


def test_a_planted_entry_cannot_hide_a_removed_owner_entry(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    sharing.share(users.a, "/proj/sub", CAROL)
    n = max(int(i.key[2:], 16) for i in users.store.list("a/"))
    # The store replaces entry n-1 (an owner entry) by junk: entry n no longer links.
    users.store.put(log_key(n - 1), b"junk")
    with pytest.raises(AuthenticationError, match="gap"):
        users.open("carol", fresh=True)


# -- 6. a writer cannot sign for an owner-only folder by listing it in its share --------------


def test_a_writer_cannot_sign_for_an_owner_only_folder_through_its_share(users: Users) -> None:
    users.a.mkdir("/priv/secret2", parents=True)
    write_bytes(users.a, "/priv/secret2/x", b"alice's")
    sharing.share(users.a, "/proj", CAROL, write=True)
    earlier = users.open("alice")  # an earlier run of the owner saw the folder
    assert read_bytes(earlier, "/priv/secret2/x") == b"alice's"
    earlier.close()
    secret = users.a.lookup("/priv/secret2")
    c = users.open("carol")
    proj = c.lookup("/Shared/alice/proj").id
    mine = write_bytes(c, "/Shared/alice/proj/x", b"carol's bytes")
    forged = DirectoryManifest(secret.id, version=1 << 40, entries={"x": mine},
                               readers=[users.alice.recipient.to_pem().decode(),
                                        users.carol.recipient.to_pem().decode()])
    users.store.put(f"m/{secret.id}", forged.seal(c.vault_id, users.carol))
    c.update_dir(proj, lambda m: m.entries.__setitem__("alias", secret))
    a = users.open("alice")  # a later command of the owner, through the planted path
    with pytest.raises(AuthenticationError, match="not an authorised writer"):
        read_bytes(a, "/proj/alias/x")
    with pytest.raises(AuthenticationError):
        users.open("alice").listdir("/priv/secret2")
    problems = fsck(users.open("alice")).problems
    assert any("alias" in p for p in problems) and not any("move?" in p for p in problems)


def test_a_planted_log_object_stops_no_command(people: Any) -> None:
    alice, bob, tmp = people
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    ok(alice, "share", "/projects", "--with", "bob")
    log = tmp / "store" / "a"
    top = max(int(p.name, 16) for p in log.iterdir())
    (log / f"{top + 1:016x}").write_bytes(b"planted by bob")
    for env in (alice, bob):
        assert ok(env, "ls", "/" if env is alice else "/Shared/alice").strip()
    ok(alice, "unshare", "/projects", "--with", "bob")  # the owner appends past it
    r = run_csfs("fsck", env=alice)
    assert r.returncode != 0 and "not signed by the owner" in r.stdout + r.stderr


def test_a_planted_alias_gains_a_writer_no_write_authority_on_unshare(users: Users) -> None:
    """Bob (writer of /proj) lists /secret (Carol's read share) in /proj; the owner's next
    unshare under /proj must not record Bob as a writer of /secret."""
    users.a.mkdir("/secret")
    sharing.share(users.a, "/secret", CAROL)
    sharing.share(users.a, "/proj", BOB, write=True)
    sharing.share(users.a, "/proj", CAROL)
    secret = users.a.lookup("/secret")
    b = users.open("bob")
    b.update_dir(b.lookup("/Shared/alice/proj").id,
                 lambda m: m.entries.__setitem__("evil", secret))
    sharing.unshare(users.open("alice"), "/proj", CAROL)
    bob_fp = users.bob.recipient.fingerprint
    assert bob_fp not in users.open("alice").access.current.writers.get(secret.id, [])
    assert bob_fp not in users.open("carol").access.current.writers.get(secret.id, [])
