"""What deletes old versions (`csfs unlink`, `unshare --reencrypt`, `fsck --repair`)
keeps those that another client's upload in flight draws on (format.md 2.6, 5.5).

The other client is a real mount killed right after it uploaded a delta version
(CSFS_CRASH_AT=uploaded), before its manifest switch: the objects are in the store,
named by no manifest. The owner then deletes old versions; the mount, remounted,
commits the delta (as a conflict copy: the file moved on meanwhile), which reads
the chunks it did not change from its source. Deleting that source lost the edit.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.crypto import independent_decoder as spec
from tests.fuse.helpers import Mount, Vault, requires_fuse
from tests.fuse.helpers import read_file as read
from tests.fuse.test_crash_points import attempt, mount_crashing_at, save
from tests.fuse.test_delta import write_at
from tests.vault.test_links import fragment, open_link

pytestmark = [pytest.mark.mount, requires_fuse]

MIB = 1 << 20
READER = "http://127.0.0.1:1/"


def payloads(vault: Vault, node: str) -> list[str]:
    return vault.list_keys(f"c/{node}/")


def edit_in_flight(vault: Vault, m: Mount, path: str, data: bytes) -> bytes:
    """A one-byte edit through a mount that dies once its delta is uploaded."""
    mount_crashing_at(vault, m, "uploaded")
    attempt(lambda: write_at(m.p(*path.split("/")), 5, b"#"))  # the fsync never returns
    m.kill()
    return data[:5] + b"#" + data[6:]


def committed_edit(vault: Vault, m: Mount, folder: str = "") -> bytes:
    """Remount: the queued delta commits, as a conflict copy next to the file."""
    m.mount()
    m.sync(timeout=60)
    copies = [n for n in os.listdir(m.p(folder)) if "(conflict" in n]
    assert len(copies) == 1, os.listdir(m.p(folder))
    return read(m.p(folder, copies[0]))


def test_unlink_keeps_the_linked_version_an_upload_in_flight_draws_on(
    moto_vault: Vault,
) -> None:
    m = moto_vault.mount(ttl=600)
    data = random.Random(5).randbytes(2 * MIB)  # noqa: S311 (test data, seeded)
    save(m.p("f"), data)
    m.umount()
    r = moto_vault.cli("link", "/f", "--expires", "1h", "--reader", READER)
    url, link_id = r.stdout.decode().strip(), r.stderr.decode().split()[1]
    assert open_link(url) == data
    edited = edit_in_flight(moto_vault, m, "f", data)
    node, version = fragment(url)["node"], fragment(url)["version"]
    assert len(payloads(moto_vault, node)) == 3  # before the link, linked, the edit
    out = moto_vault.cli("unlink", link_id).stderr.decode()
    with pytest.raises(spec.NoMatch):
        open_link(url)  # still stored, but its envelope no longer opens for the link
    assert committed_edit(moto_vault, m) == edited
    assert read(m.p("f")) == data
    assert "kept until `csfs fsck --repair`" in out, out
    m.umount()
    # Once the edit is in, nothing needs the linked version: fsck collects it.
    moto_vault.cli("fsck", "--repair", "--grace", "0")
    assert f"c/{node}/{version:016x}" not in payloads(moto_vault, node)


def test_unshare_reencrypt_keeps_a_source_an_upload_in_flight_draws_on(
    moto_vault: Vault,
) -> None:
    bob = moto_vault.user("bob")
    moto_vault.cli("member", "add", bob.public_key, "--name", "bob")
    m = moto_vault.mount(ttl=600)
    os.mkdir(m.p("d"))
    data = random.Random(6).randbytes(2 * MIB)  # noqa: S311 (test data, seeded)
    save(m.p("d", "f"), data)
    m.umount()
    moto_vault.cli("share", "/d", "--with", "bob")
    edited = edit_in_flight(moto_vault, m, "d/f", data)
    out = moto_vault.cli("unshare", "/d", "--with", "bob", "--reencrypt").stderr.decode()
    assert committed_edit(moto_vault, m, "d") == edited
    assert read(m.p("d", "f")) == data
    assert "kept until `csfs fsck --repair`" in out, out


def test_fsck_repair_keeps_a_source_an_upload_in_flight_draws_on(moto_vault: Vault) -> None:
    """The edit's source is an old orphan (the file was rewritten since), the edit a
    recent one: within the grace period, the source is kept with it."""
    m = moto_vault.mount(ttl=600)
    data = random.Random(7).randbytes(2 * MIB)  # noqa: S311 (test data, seeded)
    save(m.p("f"), data)
    m.umount()
    time.sleep(30)  # the source is older than the grace period below, the edit not
    edited = edit_in_flight(moto_vault, m, "f", data)
    newer = os.path.join(moto_vault.root, "newer")
    save(newer, b"rewritten by the owner")
    moto_vault.cli("put", newer, "/f")
    out = moto_vault.cli("fsck", "--repair", "--grace", str(20 / 60)).stdout.decode()
    assert "problem" not in out.lower(), out
    assert committed_edit(moto_vault, m) == edited
    assert read(m.p("f")) == b"rewritten by the owner"
