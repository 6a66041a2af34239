"""Sharing between three users on one moto bucket (format.md 7).

Alice owns the vault. Bob holds a hybrid post-quantum key, Carol a P-256 key:
every test also checks that those kinds work as recipients beside X25519.
Each user has its own state and pin directories, as separate machines would.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import Identity, generate_identity, parse_envelope
from csfs.crypto.envelope import rewrap_envelope
from csfs.crypto.keys import load_recipient_pem, public_key_file
from csfs.errors import (
    AccessDenied,
    AuthenticationError,
    CrossShare,
    FormatError,
    IntegrityError,
    KeyFileError,
    NoMatchingKeyError,
    NotFound,
    UsageError,
)
from csfs.store import Store
from csfs.vault import Vault
from csfs.vault import sharing
from csfs.vault.access import log_key
from csfs.vault.fsck import fsck
from csfs.vault.layout import content_key, envelope_key, manifest_key
from csfs.vault.manifest import DirectoryManifest
from tests.vault.conftest import read_bytes, write_bytes

BOB, CAROL = "MEMBERNAMEBOB", "MEMBERNAMECAROL"


@dataclass
class Users:
    store: Store
    tmp: Path
    alice: Identity
    bob: Identity
    carol: Identity
    a: Vault

    def open(self, who: str, *, fresh: bool = False) -> Vault:
        ident = {"alice": self.alice, "bob": self.bob, "carol": self.carol}[who]
        tag = f"{who}-fresh-{id(object())}" if fresh else who
        return Vault.open(self.store, ident, state_dir=str(self.tmp / tag / "state"),
                          config_dir=str(self.tmp / tag / "config"), ttl=0.0,
                          trusted_owners={self.alice.recipient.verify_key_bytes})


@pytest.fixture
def users(moto_store: Store, tmp_path: Path) -> Users:
    alice = generate_identity()
    u = Users(moto_store, tmp_path, alice, generate_identity("mlkem768x25519"),
              generate_identity("p256"),
              Vault.create(moto_store, alice, state_dir=str(tmp_path / "alice" / "state"),
                           config_dir=str(tmp_path / "alice" / "config"), name="alice"))
    u.a.mkdir("/proj/sub", parents=True)
    write_bytes(u.a, "/proj/plan.txt", b"the plan")
    write_bytes(u.a, "/proj/sub/deep.txt", b"deep")
    write_bytes(u.a, "/private.txt", b"alice only")
    sharing.add_member(u.a, public_key_file(u.bob), BOB)
    sharing.add_member(u.a, public_key_file(u.carol), CAROL)
    return u


def test_read_share(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    b = users.open("bob")
    assert list(b.listdir("/")) == ["Shared"]
    assert list(b.listdir("/Shared")) == ["alice"]
    assert list(b.listdir("/Shared/alice")) == ["proj"]
    assert read_bytes(b, "/Shared/alice/proj/plan.txt") == b"the plan"
    assert read_bytes(b, "/Shared/alice/proj/sub/deep.txt") == b"deep"
    with pytest.raises(AccessDenied):
        write_bytes(b, "/Shared/alice/proj/x.txt", b"no")
    with pytest.raises(AccessDenied):
        b.mkdir("/Shared/alice/proj/newdir")
    with pytest.raises(AccessDenied):
        b.mkdir("/Shared/alice/mine")
    # Nothing outside the share: the root manifest is not wrapped to Bob.
    with pytest.raises(NoMatchingKeyError):
        DirectoryManifest.open(users.store.get(manifest_key(users.a.header.root_id)),
                               b.vault_id, users.a.header.root_id, users.bob, None)
    assert [(s.direction, s.path, s.member, s.write) for s in sharing.list_shares(b)] == \
        [("in", "/Shared/alice/proj", "alice", False)]
    assert [(s.direction, s.path, s.member) for s in sharing.list_shares(users.a)] == \
        [("out", "/proj", BOB)]


def test_carol_sees_nothing_that_is_not_hers(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    c = users.open("carol")
    assert c.listdir("/Shared/alice") == {}
    with pytest.raises(NotFound):
        c.lookup("/Shared/alice/proj")
    plan = users.a.lookup("/proj/plan.txt")
    for key in (manifest_key(users.a.lookup("/proj").id), manifest_key(users.a.header.root_id)):
        with pytest.raises(NoMatchingKeyError):
            DirectoryManifest.open(users.store.get(key), c.vault_id, key[2:], users.carol, None)
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(plan.id, plan.version))).open(users.carol)


def test_write_share_and_later_files_wrap_to_every_reader(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    sharing.share(users.a, "/proj/sub", CAROL)
    b = users.open("bob")
    write_bytes(b, "/Shared/alice/proj/sub/from-bob.txt", b"written by bob")
    b.mkdir("/Shared/alice/proj/sub/bobdir")
    write_bytes(b, "/Shared/alice/proj/sub/bobdir/x", b"x")
    # The owner and Carol (a reader of the sub-share) read what Bob wrote.
    assert read_bytes(users.open("alice"), "/proj/sub/from-bob.txt") == b"written by bob"
    c = users.open("carol")
    assert read_bytes(c, "/Shared/alice/sub/from-bob.txt") == b"written by bob"
    assert read_bytes(c, "/Shared/alice/sub/bobdir/x") == b"x"
    # Bob's write authority covers the nested share too; Carol's share is read-only.
    with pytest.raises(AccessDenied):
        write_bytes(c, "/Shared/alice/sub/carol.txt", b"no")


def test_share_rewrites_no_content(users: Users) -> None:
    before = {i.key: i.etag for i in users.store.list("c/")}
    report = sharing.share(users.a, "/proj", BOB)
    assert {i.key: i.etag for i in users.store.list("c/")} == before
    assert report.directories == 2 and report.envelopes == 2 and report.bytes_rewritten == 0


def test_revocation_rotates_keys(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    assert read_bytes(b, "/Shared/alice/proj/plan.txt") == b"the plan"
    report = sharing.unshare(users.a, "/proj", BOB)
    assert report.directories == 2
    write_bytes(users.a, "/proj/plan.txt", b"the new plan")
    new = users.a.lookup("/proj/plan.txt")
    # Bob's old key opens neither the new version nor any re-sealed manifest.
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(new.id, new.version))).open(users.bob)
    proj = users.a.lookup("/proj").id
    with pytest.raises(NoMatchingKeyError):
        DirectoryManifest.open(users.store.get(manifest_key(proj)), users.a.vault_id, proj,
                               users.bob, None)
    b = users.open("bob")
    assert b.listdir("/Shared/alice") == {}
    # His write authority is gone too: the client refuses, and a forged switch is rejected.
    with pytest.raises((AccessDenied, NotFound)):
        write_bytes(b, "/Shared/alice/proj/late.txt", b"late")


def test_unshare_reencrypt_deletes_old_versions(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    old = {p: users.a.lookup(p) for p in ("/proj/plan.txt", "/proj/sub/deep.txt")}
    report = sharing.unshare(users.a, "/proj", BOB, reencrypt=True)
    assert report.files_reencrypted == 2 and report.versions_deleted == 2
    assert report.bytes_rewritten >= len(b"the plan") + len(b"deep")
    for path, e in old.items():
        for key in (content_key(e.id, e.version), envelope_key(e.id, e.version)):
            with pytest.raises(NotFound):
                users.store.get(key)
        cur = users.a.lookup(path)
        assert cur.id == e.id and cur.version != e.version
        with pytest.raises(NoMatchingKeyError):
            parse_envelope(users.store.get(envelope_key(cur.id, cur.version))).open(users.bob)
    assert read_bytes(users.a, "/proj/plan.txt") == b"the plan"
    assert fsck(users.a, grace=0).ok


def test_forged_manifest_by_a_reader_is_rejected(users: Users) -> None:
    sharing.share(users.a, "/proj", CAROL)  # read-only
    c = users.open("carol")
    proj = users.a.lookup("/proj").id
    m, _ = c.load_dir(proj)
    forged = m.copy()
    forged.version += 1
    forged.entries["plan.txt"] = forged.entries["sub"]  # point the name elsewhere
    # Straight to the bucket, as anyone with bucket credentials could.
    users.store.put(manifest_key(proj), forged.seal(c.vault_id, users.carol))
    a = users.open("alice")
    with pytest.raises(AuthenticationError, match="not an authorised writer"):
        a.listdir("/proj")
    report = fsck(users.open("alice"))
    assert any("not an authorised writer" in p for p in report.problems)


def test_forged_envelope_by_a_reader_is_rejected(users: Users) -> None:
    sharing.share(users.a, "/proj", CAROL)
    plan = users.a.lookup("/proj/plan.txt")
    key = envelope_key(plan.id, plan.version)
    env = parse_envelope(users.store.get(key))
    users.store.put(key, rewrap_envelope(env, users.carol, [users.carol.recipient],
                                         users.carol).encode())
    with pytest.raises(AuthenticationError, match="not an authorised writer"):
        read_bytes(users.open("alice"), "/proj/plan.txt")


def test_former_writer_forgery_is_rejected(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    write_bytes(b, "/Shared/alice/proj/bob.txt", b"fine while allowed")
    proj = users.a.lookup("/proj").id
    m, _ = b.load_dir(proj)
    sharing.unshare(users.a, "/proj", BOB)
    # What Bob wrote while allowed stays readable: the owner took it over.
    assert read_bytes(users.open("alice"), "/proj/bob.txt") == b"fine while allowed"
    forged = m.copy()
    forged.version = users.a.load_dir(proj, fresh=True)[0].version + 1
    del forged.entries["plan.txt"]
    users.store.put(manifest_key(proj), forged.seal(b.vault_id, users.bob))
    with pytest.raises(AuthenticationError, match="not an authorised writer"):
        users.open("alice").listdir("/proj")


def test_member_key_must_be_self_signed(users: Users) -> None:
    dave = generate_identity()
    with pytest.raises(KeyFileError, match="self-signature"):
        sharing.add_member(users.a, dave.recipient.to_pem(), "dave")
    text = bytearray(public_key_file(dave))
    # The signature block is base64 of 64 bytes: change one of its characters.
    at = text.index(b"SIGNATURE-----\n") + len(b"SIGNATURE-----\n") + 5
    text[at] = ord("A") if text[at] != ord("A") else ord("B")
    with pytest.raises(KeyFileError):
        load_recipient_pem(bytes(text))


def test_changed_member_key_is_refused(users: Users) -> None:
    sharing.share(users.a, "/proj", CAROL, write=True)
    c = users.open("carol")
    write_bytes(c, "/Shared/alice/proj/c.txt", b"carol")
    b = users.open("bob")  # Bob pins Carol's key on first sight
    assert b.access.trusted(c.access.me) is not None
    # The owner removes Carol and adds another key under her name.
    sharing.remove_member(users.a, CAROL)
    impostor = generate_identity()
    with pytest.raises(AuthenticationError, match="another key"):
        sharing.add_member(users.a, public_key_file(impostor), CAROL)  # pinned by Alice
    fresh_owner = users.open("alice", fresh=True)  # an owner machine that never saw Carol
    sharing.add_member(fresh_owner, public_key_file(impostor), CAROL)
    with pytest.raises(AuthenticationError, match="changed key"):
        sharing.share(users.open("alice"), "/proj", CAROL)
    b = users.open("bob")
    assert CAROL in b.access.changed_keys
    assert b.access.trusted(impostor.recipient.fingerprint) is None
    sharing.trust_member(users.a, CAROL)
    sharing.share(users.a, "/proj", CAROL)


def test_non_owner_cannot_administer(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    for call in (lambda: sharing.share(b, "/Shared/alice/proj", CAROL),
                 lambda: sharing.add_member(b, public_key_file(generate_identity()), "eve"),
                 lambda: sharing.unshare(b, "/Shared/alice/proj", BOB)):
        with pytest.raises(AccessDenied):
            call()


# -- the log ---------------------------------------------------------------------------


def _log(users: Users) -> list[bytes]:
    keys = sorted(i.key for i in users.store.list("a/"))
    return [users.store.get(k) for k in keys]


@pytest.fixture
def logged(users: Users) -> Users:
    sharing.share(users.a, "/proj", BOB)
    sharing.share(users.a, "/proj/sub", CAROL)
    assert len(_log(users)) == 5  # alice, bob, carol, two shares
    users.open("bob")  # Bob's client remembers the head
    return users


def _expect_tamper(users: Users, match: str) -> None:
    for fresh in (True, False):
        with pytest.raises(AuthenticationError, match=match):
            users.open("bob", fresh=fresh)


def test_log_entry_removed(logged: Users) -> None:
    logged.store.delete(log_key(3))
    _expect_tamper(logged, "gap")


def test_log_entries_reordered(logged: Users) -> None:
    e3, e4 = logged.store.get(log_key(3)), logged.store.get(log_key(4))
    logged.store.put(log_key(3), e4)
    logged.store.put(log_key(4), e3)
    # Each is a misplaced copy (ignored, format.md 7.2); entry 5 then follows neither.
    with pytest.raises(AuthenticationError, match="gap"):
        users_open_fresh(logged)


def users_open_fresh(users: Users) -> Vault:
    return users.open("bob", fresh=True)


def test_log_entry_edited(logged: Users) -> None:
    raw = bytearray(logged.store.get(log_key(4)))
    raw[len(raw) // 2] ^= 1
    logged.store.put(log_key(4), bytes(raw))
    with pytest.raises(AuthenticationError):
        users_open_fresh(logged)
    with pytest.raises(AuthenticationError):
        logged.open("alice").access.verify_all()


def test_log_head_rolled_back(logged: Users) -> None:
    logged.store.delete(log_key(5))
    with pytest.raises(AuthenticationError, match="rolled back"):
        logged.open("bob")
    # A client that never saw entry 5 cannot know; that is the limit of pinning.
    users_open_fresh(logged)


def test_log_head_rewritten(logged: Users) -> None:
    # The store puts an older (validly signed) entry where the head was.
    logged.store.put(log_key(5), logged.store.get(log_key(4)))
    with pytest.raises(AuthenticationError, match="rewritten"):
        logged.open("bob")


@pytest.mark.parametrize("field", ["seq", "time_ns"])
@pytest.mark.parametrize("loose", ["5", True, 5.0])
def test_log_entry_number_not_a_json_integer(logged: Users, field: str, loose: Any) -> None:
    # An owner-signed entry whose number is a string, bool or float: int() would
    # take "5" or true, but format.md 7.2 allows only JSON integers.
    import json

    from csfs.crypto.signing import sign_blob, verify_blob
    from csfs.vault.access import LOG_DOMAIN

    payload, _ = verify_blob(logged.store.get(log_key(5)), LOG_DOMAIN, "entry")
    obj = json.loads(payload)
    obj[field] = loose
    raw = sign_blob(logged.alice.signing_key, LOG_DOMAIN, json.dumps(obj).encode())
    logged.store.put(log_key(5), raw)
    with pytest.raises((FormatError, AuthenticationError)):
        users_open_fresh(logged)


def test_log_forked_by_non_owner(logged: Users) -> None:
    # Bob holds bucket credentials and appends an entry signed by himself.
    from csfs.vault.access import AccessLog

    bob = logged.open("bob")
    forged = AccessLog(logged.store, bob.header, logged.bob, bob.state, bob.access.pins)
    assert forged._put(forged.seq + 1, {"op": "share", "node": logged.a.header.root_id,
                                        "member": bob.access.me, "write": True,
                                        "notice": "0" * 32, "writers": {}},
                       [logged.bob.recipient])
    # Ignored, not obeyed (format.md 7.2): Bob gains nothing, and nobody is stopped.
    a = logged.open("alice")
    assert logged.a.header.root_id not in a.access.current.grants
    assert a.access.planted == {forged.seq + 1}


def test_log_and_notices_hide_names(logged: Users, s3_client: Any, s3_bucket: str) -> None:
    for key in [*(i.key for i in logged.store.list("a/")), *(i.key for i in logged.store.list("n/"))]:
        body = logged.store.get(key)
        for needle in (BOB.encode(), CAROL.encode(), b"proj", b"alice"):
            assert needle not in body, key


def test_log_verifies_and_lists(logged: Users) -> None:
    entries = logged.open("alice").access.verify_all()
    assert [body["op"] for _, body in entries if body] == \
        ["member-add"] * 3 + ["share", "share"]
    # Carol joined at entry 3: she verifies the chain but cannot open entry 1 or 2.
    carol = logged.open("carol").access.verify_all()
    assert [body is None for _, body in carol] == [True, True, False, False, False]


def test_writer_of_one_share_cannot_vouch_for_another(users: Users) -> None:
    # Carol may write /proj but only read /other. She lists /other/in's id in /proj,
    # then forges /other/in's manifest. Reached through /proj her signature would
    # count, but the folder is also under /other, where it does not.
    users.a.mkdir("/other/in", parents=True)
    write_bytes(users.a, "/other/in/keep.txt", b"keep")
    sharing.share(users.a, "/proj", CAROL, write=True)
    sharing.share(users.a, "/other", CAROL)
    c = users.open("carol")
    inner = c.lookup("/Shared/alice/other/in")
    c.update_dir(c.lookup("/Shared/alice/proj").id,
                 lambda m: m.entries.__setitem__("alias", inner))
    m, _ = c.load_dir(inner.id)
    forged = m.copy()
    forged.version += 1
    del forged.entries["keep.txt"]
    users.store.put(manifest_key(inner.id), forged.seal(c.vault_id, users.carol))
    # A client with a long TTL that sees /other, then /proj, then opens the folder.
    a = Vault.open(users.store, users.alice, state_dir=str(users.tmp / "alice" / "state"),
                   config_dir=str(users.tmp / "alice" / "config"), ttl=60)
    assert "in" in a.listdir("/other")
    assert "alias" in a.listdir("/proj")
    for path in ("/other/in", "/proj/alias"):
        with pytest.raises(AuthenticationError, match="not an authorised writer"):
            a.listdir(path)


# -- attacks by a writer on the owner's own share and unshare (found in review) ------------


def test_planted_alias_cannot_extend_a_share(users: Users) -> None:
    """Bob (writer of /proj) lists Carol's shared folder inside /proj, hoping that the
    owner's next share of /proj wraps it to Dave too."""
    users.a.mkdir("/secret")
    write_bytes(users.a, "/secret/s.txt", b"carol's secret")
    sharing.share(users.a, "/secret", CAROL)
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    secret_id = next(n for n in b.access.current.grants if n != b.lookup("/Shared/alice/proj").id)
    b.update_dir(b.lookup("/Shared/alice/proj").id,
                 lambda m: m.entries.__setitem__("evil", replace(m.entries["sub"], id=secret_id)))
    dave = generate_identity()
    sharing.add_member(users.a, public_key_file(dave), "dave")
    with pytest.raises(IntegrityError, match="same node"):
        sharing.share(users.a, "/proj", "dave")
    s = users.a.lookup("/secret/s.txt")
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(s.id, s.version))).open(dave)
    assert any("same node" in p for p in fsck(users.open("alice")).problems)


def test_forged_folder_is_not_laundered_by_the_owner(users: Users) -> None:
    """Bob may read /secret and write /proj. He signs a manifest for /secret/sub himself
    and lists sub in /proj; the owner's share walk must neither accept nor re-sign it."""
    users.a.mkdir("/secret/sub", parents=True)
    sharing.share(users.a, "/secret", BOB)
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    sub = b.lookup("/Shared/alice/secret/sub")
    m, _ = b.load_dir(sub.id)
    forged = m.copy()
    forged.version += 1
    forged.readers.append(generate_identity().recipient.to_pem().decode())
    users.store.put(manifest_key(sub.id), forged.seal(b.vault_id, users.bob))
    b.update_dir(b.lookup("/Shared/alice/proj").id,
                 lambda m: m.entries.__setitem__("sub", sub))
    with pytest.raises(IntegrityError):
        sharing.share(users.open("alice"), "/proj", CAROL)
    raw = users.store.get(manifest_key(sub.id))
    assert parse_envelope(raw[4:4 + int.from_bytes(raw[:4], "big")]).signer == \
        users.bob.recipient.verify_key_bytes  # still Bob's forgery: never re-signed


def test_unshare_drops_reader_keys_a_writer_planted(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    bob2 = generate_identity()  # a key of Bob's that is no member
    b.update_dir(b.lookup("/Shared/alice/proj").id,
                 lambda m: m.readers.append(bob2.recipient.to_pem().decode()))
    sharing.unshare(users.a, "/proj", BOB)
    write_bytes(users.a, "/proj/after.txt", b"after the revocation")
    e = users.a.lookup("/proj/after.txt")
    for ident in (users.bob, bob2):
        with pytest.raises(NoMatchingKeyError):
            parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(ident)


def test_a_planted_cycle_does_not_stop_revocation(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB, write=True)
    b = users.open("bob")
    proj = b.lookup("/Shared/alice/proj")
    b.update_dir(proj.id, lambda m: m.entries.__setitem__("loop", proj))
    report = sharing.unshare(users.a, "/proj", BOB)
    assert any("same node" in p for p in report.problems)
    assert users.open("alice").access.current.grants.get(proj.id) is None
    assert users.open("bob").listdir("/Shared/alice") == {}
    assert any("same node" in p for p in fsck(users.open("alice")).problems)


def test_moves_across_a_share_boundary_are_refused(users: Users) -> None:
    sharing.share(users.a, "/proj", BOB)
    users.a.mkdir("/private")
    for src, dst in (("/proj/sub", "/private/sub"), ("/proj/plan.txt", "/private/plan.txt"),
                     ("/private.txt", "/proj/private.txt")):
        with pytest.raises(CrossShare):
            users.a.rename(src, dst)
    users.a.rename("/proj/plan.txt", "/proj/sub/plan.txt")  # inside one share: fine


# -- sharing one file ---------------------------------------------------------------------


def test_file_share(users: Users) -> None:
    sharing.share(users.a, "/proj", CAROL, write=True)  # a writer of the file's folder
    sharing.share(users.a, "/proj/plan.txt", BOB)
    b = users.open("bob")
    assert list(b.listdir("/Shared/alice")) == ["plan.txt"]
    assert b.lookup("/Shared/alice/plan.txt").mode & 0o222 == 0
    assert read_bytes(b, "/Shared/alice/plan.txt") == b"the plan"
    # Bob sees the file, not its folder: the folder's manifest is not his.
    proj = users.a.lookup("/proj").id
    with pytest.raises(NoMatchingKeyError):
        DirectoryManifest.open(users.store.get(manifest_key(proj)), b.vault_id, proj,
                               users.bob, None)
    with pytest.raises(AccessDenied):
        write_bytes(b, "/Shared/alice/plan.txt", b"no")
    with pytest.raises(UsageError, match="read-only"):
        sharing.share(users.a, "/proj/sub/deep.txt", BOB, write=True)
    # New versions, by the owner or by another writer, reach Bob.
    write_bytes(users.a, "/proj/plan.txt", b"plan v2")
    assert read_bytes(users.open("bob"), "/Shared/alice/plan.txt") == b"plan v2"
    write_bytes(users.open("carol"), "/Shared/alice/proj/plan.txt", b"plan v3 by carol")
    assert read_bytes(users.open("bob"), "/Shared/alice/plan.txt") == b"plan v3 by carol"
    assert fsck(users.open("alice")).ok
    # Unshared: the next version is not wrapped to Bob, and the file leaves his view.
    sharing.unshare(users.a, "/proj/plan.txt", BOB)
    write_bytes(users.a, "/proj/plan.txt", b"plan v4")
    e = users.a.lookup("/proj/plan.txt")
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(users.store.get(envelope_key(e.id, e.version))).open(users.bob)
    assert users.open("bob").listdir("/Shared/alice") == {}


def test_a_member_key_can_be_replaced_deliberately(users: Users) -> None:
    new_bob = generate_identity()
    sharing.remove_member(users.a, BOB)
    with pytest.raises(AuthenticationError, match="another key"):
        sharing.add_member(users.a, public_key_file(new_bob), BOB)
    assert sharing.trust_member(users.a, BOB) is None  # no such member: the pin is dropped
    sharing.add_member(users.a, public_key_file(new_bob), BOB)
    sharing.share(users.a, "/proj", BOB)
    v = Vault.open(users.store, new_bob, state_dir=str(users.tmp / "nb"),
                   config_dir=str(users.tmp / "nb-config"), ttl=0.0,
                   trusted_owners={users.alice.recipient.verify_key_bytes})
    assert read_bytes(v, "/Shared/alice/proj/plan.txt") == b"the plan"


def test_rewrap_reads_at_most_one_envelope_limit(users: Users) -> None:
    # A store that swaps a huge object in for a key envelope costs the owner's
    # share at most MAX_ENVELOPE_SIZE + 1 bytes, then a clear refusal.
    from csfs.crypto.envelope import MAX_ENVELOPE_SIZE

    plan = users.a.lookup("/proj/plan.txt")
    users.store.put(envelope_key(plan.id, plan.version), b"\0" * (MAX_ENVELOPE_SIZE + 4096))
    largest = 0
    real = users.a.store.get_with_etag

    def counting(key: str, *args: Any, **kwargs: Any) -> tuple[bytes, str]:
        nonlocal largest
        data, etag = real(key, *args, **kwargs)
        largest = max(largest, len(data))
        return data, etag

    users.a.store.get_with_etag = counting  # type: ignore[method-assign]
    with pytest.raises(FormatError, match="larger than any valid"):
        sharing.share(users.a, "/proj", BOB)
    assert largest <= MAX_ENVELOPE_SIZE + 1


def _delta_version(users: Users, tmp: Path, path: str) -> tuple[bytes, Any, Any]:
    """Through the mount's file system: a 4-chunk file, then one byte changed and
    fsynced, which is sealed as a delta of the first version (format.md 2.6)."""
    from csfs.vault.filesystem import FileSystem

    data = bytearray(os.urandom(4 << 16))
    write_bytes(users.a, path, bytes(data))
    first = users.a.lookup(path)
    fs = FileSystem(users.a, str(tmp / "fs-cache"), 64 << 20)
    try:
        fh = fs.open(path, os.O_RDWR)
        fs.write(fh, 70_000, b"!")
        data[70_000] = ord("!")
        fs.fsync(fh)
        fs.release(fh)
    finally:
        fs.close()
    reader = users.open("alice", fresh=True)
    delta = reader.lookup(path)
    _, cipher = reader.open_version(delta)
    assert [s.version for s in cipher.sources] == [first.version]  # a delta, not a copy
    return bytes(data), first, delta


def test_unshare_reencrypt_also_deletes_a_delta_versions_sources(
    users: Users, tmp_path: Path
) -> None:
    sharing.share(users.a, "/proj", BOB)
    data, first, delta = _delta_version(users, tmp_path, "/proj/big.bin")
    report = sharing.unshare(users.a, "/proj", BOB, reencrypt=True)
    assert report.files_reencrypted == 3
    for e in (first, delta):  # the source too: it held most of the file, readable to bob
        for key in (content_key(e.id, e.version), envelope_key(e.id, e.version)):
            with pytest.raises(NotFound):
                users.store.get(key)
    reader = users.open("alice", fresh=True)
    cur = reader.lookup("/proj/big.bin")
    assert not reader.open_version(cur)[1].sources  # self-contained now
    assert read_bytes(reader, "/proj/big.bin") == data
    assert fsck(users.a, grace=0).ok


def test_a_delta_version_that_loses_a_race_is_kept_as_a_whole_conflict_copy(
    users: Users, tmp_path: Path
) -> None:
    from csfs.vault.filesystem import FileSystem

    data = os.urandom(4 << 16)
    write_bytes(users.a, "/proj/big.bin", data)
    fs = FileSystem(users.a, str(tmp_path / "fs-cache"), 64 << 20)
    try:
        fh = fs.open("/proj/big.bin", os.O_RDWR)
        fs.write(fh, 5, b"ours")
        # Meanwhile another client of alice's replaces the file.
        write_bytes(users.open("alice", fresh=True), "/proj/big.bin", b"theirs")
        fs.fsync(fh)
        fs.release(fh)
    finally:
        fs.close()
    reader = users.open("alice", fresh=True)
    names = sorted(reader.listdir("/proj"))
    copy = next(n for n in names if n.startswith("big (conflict"))
    assert read_bytes(reader, "/proj/big.bin") == b"theirs"
    ours = data[:5] + b"ours" + data[9:]
    assert read_bytes(reader, f"/proj/{copy}") == ours
    assert not reader.open_version(reader.lookup(f"/proj/{copy}"))[1].sources
