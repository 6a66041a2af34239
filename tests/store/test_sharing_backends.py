"""The sharing round trip on every backend, Ceph RGW included (its conditional PUTs
carry the log's If-None-Match appends and the envelopes' If-Match re-wraps)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from csfs.crypto import generate_identity, parse_envelope
from csfs.crypto.keys import public_key_file
from csfs.errors import NoMatchingKeyError
from csfs.store import Store
from csfs.vault import Vault, sharing
from csfs.vault.layout import envelope_key


def test_share_round_trip(store: Store, tmp_path: Path) -> None:
    alice, bob = generate_identity(), generate_identity("p256")

    def open_as(ident, who):  # type: ignore[no-untyped-def]
        return Vault.open(store, ident, state_dir=str(tmp_path / who), ttl=0.0,
                          config_dir=str(tmp_path / f"{who}-config"),
                          trusted_owners={alice.recipient.verify_key_bytes})

    a = Vault.create(store, alice, state_dir=str(tmp_path / "alice"), name="alice",
                     config_dir=str(tmp_path / "alice-config"))
    a.mkdir("/team")
    a.write_file("/team/a.txt", io.BytesIO(b"for the team"))
    sharing.add_member(a, public_key_file(bob), "bob")
    assert sharing.share(a, "/team", "bob", write=True).envelopes == 1
    b = open_as(bob, "bob")
    out = io.BytesIO()
    b.read_file("/Shared/alice/team/a.txt", out)
    assert out.getvalue() == b"for the team"
    b.write_file("/Shared/alice/team/b.txt", io.BytesIO(b"from bob"))
    report = sharing.unshare(a, "/team", "bob", reencrypt=True)
    assert report.files_reencrypted == 2
    e = a.lookup("/team/b.txt")
    with pytest.raises(NoMatchingKeyError):
        parse_envelope(store.get(envelope_key(e.id, e.version))).open(bob)
    assert [body["op"] for _, body in open_as(alice, "alice2").access.verify_all() if body] == \
        ["member-add", "member-add", "share", "unshare"]
