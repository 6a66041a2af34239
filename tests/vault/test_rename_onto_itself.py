"""Vault.rename of a path onto itself is rename(2)'s no-op, even inside a share."""

from __future__ import annotations

import pytest

from csfs.errors import NotFound
from csfs.vault import Vault
from tests.vault.conftest import read_bytes, write_bytes


@pytest.mark.parametrize("backend", ["local"])
def test_rename_onto_itself(vault: Vault) -> None:
    vault.mkdir("/A")
    write_bytes(vault, "/A/f", b"data")
    before = {i.key: i.etag for i in vault.store.list()}
    for src, dst in (("/A", "/A"), ("/A/f", "/A/f"), ("/A/./f", "A/f")):
        assert vault.rename(src, dst).id == vault.lookup(src).id
    assert {i.key: i.etag for i in vault.store.list()} == before  # nothing written
    assert read_bytes(vault, "/A/f") == b"data"
    with pytest.raises(NotFound):
        vault.rename("/missing", "/missing")
