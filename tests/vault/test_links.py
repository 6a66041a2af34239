"""Share links (format.md 7.7) at the library level, on moto over HTTP: what keeps a
link working (re-wraps by share and unshare, fsck --repair) and what ends it, and
that an ended link says so. A link is opened as its holder opens it: the presigned
URLs of its fragment fetched with no credentials, and the objects decrypted by the
independent decoder (tests/crypto/independent_decoder.py) with the fragment's key."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from csfs.crypto import Identity, generate_identity, parse_envelope
from csfs.crypto.keys import public_key_file
from csfs.store import Store
from csfs.vault import Vault, folder_links, links, sharing
from csfs.vault.fsck import fsck
from csfs.vault.layout import content_key, envelope_key
from tests.crypto import independent_decoder as spec
from tests.vault.conftest import read_bytes, write_bytes

READER = "http://127.0.0.1:1/"
BOB = "bob"


@dataclass
class World:
    store: Store
    tmp: Path
    alice: Identity
    bob: Identity
    a: Vault

    def open(self, who: str) -> Vault:
        ident = {"alice": self.alice, "bob": self.bob}[who]
        return Vault.open(self.store, ident, state_dir=str(self.tmp / who / "state2"),
                          config_dir=str(self.tmp / who / "config2"), ttl=0.0,
                          trusted_owners={self.alice.recipient.verify_key_bytes})


@pytest.fixture
def world(moto_store: Store, tmp_path: Path) -> World:
    alice = generate_identity()
    a = Vault.create(moto_store, alice, state_dir=str(tmp_path / "alice" / "state"),
                     config_dir=str(tmp_path / "alice" / "config"), name="alice")
    a.mkdir("/proj/sub", parents=True)
    write_bytes(a, "/proj/plan.txt", b"the plan")
    write_bytes(a, "/proj/sub/deep.txt", b"deep")
    bob = generate_identity()
    sharing.add_member(a, public_key_file(bob), BOB)
    return World(moto_store, tmp_path, alice, bob, a)


def fragment(url: str) -> dict[str, Any]:
    frag = url.split("#", 1)[1]
    return dict(json.loads(base64.urlsafe_b64decode(frag + "=" * (-len(frag) % 4))))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as res:  # noqa: S310 - a presigned URL on moto
        return bytes(res.read())


def status_of(url: str) -> int:
    try:
        fetch(url)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def link_pem(key_hex: str) -> bytes:
    """The link's X25519 key as a key file the independent decoder reads (1.2; the
    Ed25519 block is only there to complete the file: a link signs nothing)."""
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    clear = serialization.NoEncryption()
    kem = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(key_hex))
    sig = ed25519.Ed25519PrivateKey.generate()
    return kem.private_bytes(pem, pkcs8, clear) + sig.private_bytes(pem, pkcs8, clear)


def open_link(url: str) -> bytes:
    """What the link's holder reads: 7.7 "Reading a link", from the spec alone."""
    f = fragment(url)
    context = spec.context_bytes(2, f["vault_id"], f["node"], f["version"])
    plain = spec.decrypt(fetch(f["envelope"]), fetch(f["payload"]), link_pem(f["key"]),
                         context, signers={bytes.fromhex(f["owner"])})
    assert len(plain) == f["size"]
    return plain


def stanzas(world: World, url: str) -> int:
    f = fragment(url)
    return len(parse_envelope(world.store.get(envelope_key(f["node"], f["version"]))).stanzas)


# -- a link does not end silently (issue 13) ---------------------------------------------


def test_a_share_and_unshare_above_a_linked_file_keep_the_link(world: World) -> None:
    """A share or unshare re-wraps the current version's envelope to the readers from
    the log; a live link of that version is in the log too, so it stays a reader."""
    url = links.make_link(world.a, "/proj/plan.txt", 3600, READER).url
    assert open_link(url) == b"the plan"
    sharing.share(world.a, "/proj", BOB)
    assert open_link(url) == b"the plan"
    assert read_bytes(world.open("bob"), "/Shared/alice/proj/plan.txt") == b"the plan"
    assert stanzas(world, url) == 3  # alice, bob, the link
    # (An unshare re-wraps only what the member signed; still, the link lives on.)
    sharing.unshare(world.a, "/proj", BOB)
    assert open_link(url) == b"the plan"
    [info] = links.list_links(world.a)
    assert info.path == "/proj/plan.txt" and not info.ended


def test_a_file_share_of_a_linked_file_keeps_the_link(world: World) -> None:
    url = links.make_link(world.a, "/proj/plan.txt", 3600, READER).url
    sharing.share(world.a, "/proj/plan.txt", BOB)
    assert open_link(url) == b"the plan"
    sharing.unshare(world.a, "/proj/plan.txt", BOB)
    assert open_link(url) == b"the plan"


def test_an_expired_link_is_not_wrapped_again(world: World) -> None:
    """A re-wrap never extends a link: an expired one is left out."""
    url = links.make_link(world.a, "/proj/plan.txt", 1, READER).url
    assert stanzas(world, url) == 2
    time.sleep(1.2)
    sharing.share(world.a, "/proj", BOB)
    assert stanzas(world, url) == 2  # alice and bob only
    with pytest.raises(spec.NoMatch):
        open_link(url)


def test_fsck_repair_keeps_the_version_of_a_live_link(world: World) -> None:
    """The linked version stops being current when the file changes; the link still
    names it (7.7), so it is not an orphan."""
    url = links.make_link(world.a, "/proj/plan.txt", 3600, READER).url
    f = fragment(url)
    write_bytes(world.a, "/proj/plan.txt", b"the new plan")
    report = fsck(world.a, repair=True, grace=0)
    assert report.ok, report.problems
    linked = {content_key(f["node"], f["version"]), envelope_key(f["node"], f["version"])}
    assert not linked & set(report.orphans)
    assert open_link(url) == b"the plan"
    assert read_bytes(world.a, "/proj/plan.txt") == b"the new plan"


def test_fsck_collects_the_version_of_an_ended_link(world: World) -> None:
    url = links.make_link(world.a, "/proj/plan.txt", 1, READER).url
    f = fragment(url)
    write_bytes(world.a, "/proj/plan.txt", b"the new plan")
    time.sleep(1.2)  # expired: its URLs no longer work, nothing needs the version
    report = fsck(world.a, repair=True, grace=0)
    assert content_key(f["node"], f["version"]) in report.orphans
    assert status_of(f["envelope"]) == 404


def test_unshare_reencrypt_ends_a_link_and_says_why(world: World) -> None:
    """Re-encryption deletes the version the revoked member could read; a link to it
    cannot survive that. It is ended in the log and reported, not left listed."""
    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    sharing.share(world.a, "/proj", BOB)
    report = sharing.unshare(world.a, "/proj", BOB, reencrypt=True)
    assert report.links_ended == [(made.id, "/proj/plan.txt")], report
    assert links.list_links(world.a) == []
    assert status_of(fragment(made.url)["payload"]) == 404
    assert read_bytes(world.a, "/proj/plan.txt") == b"the plan"


def test_links_shows_a_link_whose_objects_are_gone_as_ended(world: World) -> None:
    """Whatever removed them (a store, a tool, an older csfs), `csfs links` says so."""
    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    f = fragment(made.url)
    world.store.delete(content_key(f["node"], f["version"]))
    [info] = links.list_links(world.a)
    assert info.ended and "gone" in info.ended


# -- `csfs unlink` finishes what it starts ----------------------------------------------


def linked_objects(url: str) -> tuple[str, str]:
    f = fragment(url)
    return f["envelope"], f["payload"]


def test_unlink_finishes_when_the_file_changes_while_it_rotates(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client writes the file while unlink moves it to a new version: the
    switch is refused (the other version wins), and unlink looks again: the file no
    longer uses the linked version, so it only has to delete it."""
    from csfs.vault import versions

    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    other = world.open("alice")
    calls: list[Any] = []

    def racing(entry: Any, parent: Any, node_id: str | None = None) -> tuple[int, int]:
        out = versions.reencrypt_version(world.a, entry, parent, node_id)
        if not calls:  # once: the other client's write lands before our switch
            write_bytes(other, "/proj/plan.txt", b"written meanwhile")
        calls.append(entry)
        return out

    monkeypatch.setattr(world.a, "reencrypt_version", racing)
    done = links.remove_link(world.a, made.id[:8])
    assert calls, "the rotation ran"
    assert done.logged and done.deleted == 1 and done.moved == []
    assert links.list_links(world.a) == []
    assert [status_of(u) for u in linked_objects(made.url)] == [404, 404]
    assert read_bytes(world.a, "/proj/plan.txt") == b"written meanwhile"


def test_unlink_moves_the_file_off_the_linked_version(world: World) -> None:
    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    done = links.remove_link(world.a, made.id)
    assert done.logged and done.deleted == 1 and done.moved == ["/proj/plan.txt"]
    assert world.a.lookup("/proj/plan.txt").version != made.version
    assert [status_of(u) for u in linked_objects(made.url)] == [404, 404]
    assert read_bytes(world.a, "/proj/plan.txt") == b"the plan"


def test_unlink_again_finishes_an_unlink_stopped_after_its_log_entry(world: World) -> None:
    """What an earlier csfs left when it stopped half-way: `link-remove` in the log,
    the file still on the linked version. Running unlink again finishes the job."""
    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    world.a.access.append(lambda state, seq: ({"op": "link-remove", "link": made.id}, []))
    assert links.list_links(world.a) == []
    assert open_link(made.url) == b"the plan"  # ended in the log, not in fact
    done = links.remove_link(world.a, made.id[:10])
    assert not done.logged and done.deleted == 1 and done.moved == ["/proj/plan.txt"]
    assert [status_of(u) for u in linked_objects(made.url)] == [404, 404]
    assert read_bytes(world.a, "/proj/plan.txt") == b"the plan"
    again = links.remove_link(world.a, made.id[:10])
    assert not again.logged and not again.deleted and not again.moved


def test_unlink_again_logs_an_unlink_stopped_before_its_log_entry(world: World) -> None:
    made = links.make_link(world.a, "/proj/plan.txt", 3600, READER)
    write_bytes(world.a, "/proj/plan.txt", b"moved on")
    world.a.delete_version(fragment(made.url)["node"], made.version)
    done = links.remove_link(world.a, made.id)
    assert done.logged and not done.deleted and not done.moved
    assert links.list_links(world.a) == []


# -- folder links (7.8) -----------------------------------------------------------------


def open_folder_link(url: str) -> dict[str, bytes | None]:
    """What a folder link's holder reads, from the spec alone: path -> the file's
    bytes, or None for a folder."""
    f = fragment(url)
    assert f["format"] == "csfs-folder-link-1"
    owner = bytes.fromhex(f["owner"])
    _, items = spec.read_folder_listing(fetch(f["listing"]), f["vault_id"], f["link"],
                                        link_pem(f["key"]), owner)
    out: dict[str, bytes | None] = {}
    for path, item in items.items():
        if item["type"] == "d":
            out[path] = None
        elif not item["version"]:
            out[path] = b""
        else:
            context = spec.context_bytes(2, f["vault_id"], item["node"], item["version"])
            plain = spec.decrypt(fetch(item["envelope"]), fetch(item["payload"]),
                                 link_pem(f["key"]), context, signers={owner})
            assert len(plain) == item["size"]
            out[path] = plain
    return out


PROJ = {"plan.txt": b"the plan", "sub": None, "sub/deep.txt": b"deep"}


def listed_urls(url: str) -> dict[str, dict[str, Any]]:
    f = fragment(url)
    return dict(spec.read_folder_listing(fetch(f["listing"]), f["vault_id"], f["link"],
                                         link_pem(f["key"]), bytes.fromhex(f["owner"]))[1])


def test_a_folder_link_reads_the_folder_and_nothing_else(world: World) -> None:
    write_bytes(world.a, "/elsewhere.txt", b"not linked")
    write_bytes(world.a, "/proj/empty", b"")
    world.a.symlink("plan.txt", "/proj/alias")  # not listed: a link holder reads files
    made = folder_links.make_folder_link(world.a, "/proj", 3600, READER)
    assert made.folder and made.files == 3
    assert open_folder_link(made.url) == {**PROJ, "empty": b""}
    f = fragment(made.url)
    assert set(f) == {"expires", "format", "key", "link", "listing", "name", "owner",
                      "vault_id"}
    assert f["name"] == "proj"
    [info] = links.list_links(world.a)
    assert info.folder and info.path == "/proj" and info.files == 3 and not info.ended
    # The link's key opens nothing outside the folder.
    other = world.a.lookup("/elsewhere.txt")
    env = parse_envelope(world.store.get(envelope_key(other.id, other.version)))
    assert len(env.stanzas) == 1


def test_a_folder_link_shows_later_changes_once_refreshed(world: World) -> None:
    made = folder_links.make_folder_link(world.a, "/proj", 3600, READER)
    before = listed_urls(made.url)["plan.txt"]
    write_bytes(world.a, "/proj/plan.txt", b"the new plan")
    write_bytes(world.a, "/proj/sub/new.txt", b"new")
    world.a.remove("/proj/sub/deep.txt")
    assert open_folder_link(made.url) == PROJ  # a snapshot until refreshed
    [r] = links.refresh_folder_links(world.a)
    assert not r.problem and (r.added, r.dropped) == (2, 2), r
    assert open_folder_link(made.url) == {"plan.txt": b"the new plan", "sub": None,
                                          "sub/new.txt": b"new"}
    # What left the listing no longer opens with the link's key, even through the
    # URLs a holder kept.
    context = spec.context_bytes(2, fragment(made.url)["vault_id"], before["node"],
                                 before["version"])
    with pytest.raises(spec.NoMatch):
        spec.decrypt(fetch(before["envelope"]), fetch(before["payload"]),
                     link_pem(fragment(made.url)["key"]), context)


def test_a_share_above_a_folder_link_keeps_it(world: World) -> None:
    made = folder_links.make_folder_link(world.a, "/proj", 3600, READER)
    sharing.share(world.a, "/proj", BOB)
    assert open_folder_link(made.url) == PROJ
    assert read_bytes(world.open("bob"), "/Shared/alice/proj/plan.txt") == b"the plan"


def test_fsck_repair_keeps_what_a_folder_link_reads(world: World) -> None:
    made = folder_links.make_folder_link(world.a, "/proj", 3600, READER)
    write_bytes(world.a, "/proj/plan.txt", b"the new plan")
    report = fsck(world.a, repair=True, grace=0)
    assert report.ok, report.problems
    assert open_folder_link(made.url) == PROJ
    world.store.delete(f"l/{made.id}")
    report = fsck(world.a, repair=False, grace=0)
    assert any(made.id[:12] in p and "listing is gone" in p for p in report.problems)
    [info] = links.list_links(world.a)
    assert info.ended == "its listing is gone from the store"


def test_unlink_of_a_folder_link_ends_everything_it_read(world: World) -> None:
    made = folder_links.make_folder_link(world.a, "/proj", 3600, READER)
    urls = listed_urls(made.url)
    done = links.remove_link(world.a, made.id)
    assert done.logged and done.listing_deleted and done.deleted == 2
    assert sorted(done.moved) == ["/proj/plan.txt", "/proj/sub/deep.txt"]
    assert status_of(fragment(made.url)["listing"]) == 404
    for item in urls.values():
        if item["type"] == "f":
            assert [status_of(item["envelope"]), status_of(item["payload"])] == [404, 404]
    assert links.list_links(world.a) == []
    assert read_bytes(world.a, "/proj/plan.txt") == b"the plan"
    assert read_bytes(world.a, "/proj/sub/deep.txt") == b"deep"


def test_folder_links_refuse_what_they_cannot_do(world: World) -> None:
    from csfs.errors import UsageError

    with pytest.raises(UsageError, match="not a folder"):
        folder_links.make_folder_link(world.a, "/proj/plan.txt", 3600, READER)
    with pytest.raises(UsageError, match="vault root"):
        folder_links.make_folder_link(world.a, "/", 3600, READER)
    with pytest.raises(UsageError, match="is a folder"):
        links.make_link(world.a, "/proj", 3600, READER)
