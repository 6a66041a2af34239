"""The library against tests/vectors/log/*.json (docs/format.md 6.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto.keys import load_identity_pem
from csfs.errors import AuthenticationError, FormatError
from csfs.store import open_store
from csfs.vault.access import AccessLog, Pins
from csfs.vault.layout import VaultHeader
from csfs.vault.state import VaultState

VECTORS = os.path.join(os.path.dirname(__file__), "..", "vectors")
LOG_VECTORS = sorted(n for n in os.listdir(os.path.join(VECTORS, "log")) if n.endswith(".json"))
ERRORS = {"authentication": AuthenticationError, "format": FormatError}


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(VECTORS, "log", name)) as f:
        return json.load(f)


def test_the_set_is_complete() -> None:
    expects = {load(n)["expect"] for n in LOG_VECTORS}
    assert expects == {"success", "authentication", "format"} and len(LOG_VECTORS) >= 15


@pytest.mark.parametrize("name", LOG_VECTORS)
def test_log_vector(name: str, tmp_path: Path) -> None:
    case = load(name)
    store = open_store(str(tmp_path / "store"))
    store.put("csfs-vault", bytes.fromhex(case["header"]))
    for seq, raw in case["entries"].items():
        store.put(f"a/{int(seq):016x}", bytes.fromhex(raw))
    for nid, raw in case["notices"].items():
        store.put(f"n/{nid}", bytes.fromhex(raw))
    with open(os.path.join(VECTORS, "keys", case["identity"] + ".pem"), "rb") as f:
        identity = load_identity_pem(f.read(), None)
    header = VaultHeader.decode(bytes.fromhex(case["header"]))
    state = VaultState(None, "vector")
    log = AccessLog(store, header, identity, state, Pins(None))
    if "pinned" in case:
        # Replay up to the pinned entry, as the client did the first time.
        log.seq, log.head = 0, header.digest
        log.refresh_to(case["pinned"]["seq"])
        log.head = case["pinned"]["hash"]
    if case["expect"] != "success":
        with pytest.raises(ERRORS[case["expect"]]):
            log.refresh()
            log.verify_all()
        return
    log.refresh()
    bodies = log.verify_all()
    want = case["result"]
    assert [b is not None for _, b in bodies] == want["readable"]
    assert {fp: m.name for fp, m in log.current.members.items()} == want["members"]
    assert log.current.grants == want["grants"]
    assert log.current.writers == want["writers"]
    assert {k: f"{x.node}/{x.version:016x}" if x.kind == "f" else f"{x.node}/folder"
            for k, x in log.current.links.items()} == \
        want["links"]
    got = sorted(({"node": n.node, "name": n.name, "owner": n.owner, "write": n.write}
                  for n in log.notices.values()), key=lambda n: n["node"])
    assert got == want["notices"]
