"""A folder link (format.md 7.8) of files written through a real mount: a file whose
current version is a delta (2.6, an fsync of a small change) is moved to a
self-contained version first, so the link reads it whole and nothing earlier."""

from __future__ import annotations

import random

import pytest

from csfs.crypto import parse_envelope
from tests.fuse.helpers import Vault, requires_fuse
from tests.fuse.test_crash_points import save
from tests.fuse.test_delta import write_at
from tests.vault.test_links import fragment, listed_urls, open_folder_link

pytestmark = [pytest.mark.mount, requires_fuse]

MIB = 1 << 20
READER = "http://127.0.0.1:1/"


def is_delta(vault: Vault, node: str, version: int) -> bool:
    return vault.get_raw(f"c/{node}/{version:016x}")[:8] == b"csfs-pl3"


def test_a_folder_link_never_reads_a_delta(moto_vault: Vault) -> None:
    m = moto_vault.mount(ttl=600)
    data = bytearray(random.Random(8).randbytes(2 * MIB))  # noqa: S311 (test data, seeded)
    save(m.p("db"), bytes(data))
    m.sync()
    write_at(m.p("db"), 7, b"#")
    data[7] = ord("#")
    m.sync()
    node = moto_vault.cli("ls", "-l", "/").stdout  # (listed to be sure it is committed)
    assert b"db" in node
    m.umount()
    before = set(moto_vault.list_keys("c/"))
    delta = [k for k in before if moto_vault.get_raw(k)[:8] == b"csfs-pl3"]
    assert len(delta) == 1, "the small change was written as a delta"
    moto_vault.cli("mkdir", "/d")
    moto_vault.cli("mv", "/db", "/d/db")
    r = moto_vault.cli("link", "--folder", "/d", "--expires", "1h", "--reader", READER)
    url = r.stdout.decode().strip()
    assert open_folder_link(url) == {"db": bytes(data)}
    item = listed_urls(url)["db"]
    assert not is_delta(moto_vault, item["node"], item["version"])
    assert f"c/{item['node']}/{item['version']:016x}" not in before  # a new version
    env = parse_envelope(moto_vault.get_raw(f"k/{item['node']}/{item['version']:016x}"))
    assert len(env.stanzas) == 2  # the owner and the link
    assert fragment(url)["name"] == "d"
