"""Cross-check the access-log vectors (docs/format.md 6.1) with an independent reader.

Nothing here imports csfs: see independent_log_decoder.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.crypto.independent_decoder import context_bytes, parse_signed_blob, parse_vault_header
from tests.crypto.independent_log_decoder import (
    MEMBER_RECORD_DOMAIN,
    ZERO_ID,
    AuthFailure,
    FormatFailure,
    identity_public_key,
    open_laid_out,
    parse_member_record,
    parse_public_key_file,
    read_vector_case,
    verify_entry,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
LOG_VECTORS = sorted((VECTORS / "log").glob("*.json"))
FAILURES = {"format": FormatFailure, "authentication": AuthFailure}


def load_case(path: Path) -> tuple[dict[str, Any], bytes]:
    case = json.loads(path.read_text(encoding="utf-8"))
    identity = (VECTORS / "keys" / f"{case['identity']}.pem").read_bytes()
    return case, identity


@pytest.mark.parametrize("path", LOG_VECTORS, ids=lambda p: p.stem)
def test_log_vector(path: Path) -> None:
    case, identity = load_case(path)
    if case["expect"] == "success":
        # Compared through JSON so that key order never matters but list order does.
        assert json.loads(json.dumps(read_vector_case(case, identity))) == case["result"]
    else:
        with pytest.raises(FAILURES[case["expect"]]):
            read_vector_case(case, identity)


def test_log_vectors_present() -> None:
    # 6.1: every expected outcome is covered, so a reader that always fails (or
    # always succeeds) cannot pass.
    outcomes = {json.loads(p.read_text(encoding="utf-8"))["expect"] for p in LOG_VECTORS}
    assert outcomes == {"success", "authentication", "format"}


def test_failures_are_distinct() -> None:
    # A vector's class must be checked exactly: neither class may be a subclass
    # of the other, or pytest.raises would accept the wrong one.
    assert not issubclass(AuthFailure, FormatFailure)
    assert not issubclass(FormatFailure, AuthFailure)


def test_readable_is_monotonic_for_members_never_removed() -> None:
    # 7.2: recipients are the owner and every member after the entry, so in
    # this history (nobody removed) each reader can open every entry from the
    # one that adds it onwards, and none before.
    for path in LOG_VECTORS:
        case, _ = load_case(path)
        if case["expect"] == "success":
            readable = case["result"]["readable"]
            assert readable == sorted(readable), path.stem


def _alice_public_key_file() -> str:
    """Alice's public key file, from the member record of entry 1 (7.1, 7.2)."""
    case, identity = load_case(VECTORS / "log" / "success_alice.json")
    vault = parse_vault_header(bytes.fromhex(case["header"]))
    owner = bytes.fromhex(vault["owner"])
    header = bytes.fromhex(case["header"])
    entry = verify_entry(
        bytes.fromhex(case["entries"]["1"]),
        1,
        hashlib.sha256(header).digest(),
        owner,
        vault["vault_id"],
    )
    context = context_bytes(4, vault["vault_id"], ZERO_ID, 1)
    body = open_laid_out(base64.b64decode(entry["body"]), identity, context, owner)
    assert body is not None and body["op"] == "member-add"
    record = parse_member_record(base64.b64decode(body["record"]), owner, vault["vault_id"])
    assert record.name == "alice"
    payload, _ = parse_signed_blob(base64.b64decode(body["record"]), MEMBER_RECORD_DOMAIN)
    return json.loads(payload)["public"]


def test_member_key_self_signature() -> None:
    # 1.2/1.3/7.1: the fingerprint of the record's key is the one the vector
    # names "alice", and the key file alone (private half) derives the same one.
    text = _alice_public_key_file()
    key = parse_public_key_file(text, require_signature=True)
    case, identity = load_case(VECTORS / "log" / "success_alice.json")
    assert case["result"]["members"][key.fingerprint] == "alice"
    assert identity_public_key(identity) == key
    # A signature that does not verify is a format error inside a record (7.1)...
    begin = text.index("-----BEGIN CSFS KEY SIGNATURE-----\n") + 35
    flipped = text[:begin] + ("B" if text[begin] == "A" else "A") + text[begin + 1 :]
    with pytest.raises(FormatFailure):
        parse_public_key_file(flipped, require_signature=True)
    # ... as is a missing one, while a plain recipient may omit it (1.2).
    unsigned = text[: text.index("-----BEGIN CSFS KEY SIGNATURE-----")]
    assert parse_public_key_file(unsigned, require_signature=False) == key
    with pytest.raises(FormatFailure):
        parse_public_key_file(unsigned, require_signature=True)
    # A private key file is not a public one (1.2).
    with pytest.raises(FormatFailure):
        parse_public_key_file(identity.decode(), require_signature=False)
