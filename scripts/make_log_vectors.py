#!/usr/bin/env python3
"""Generate tests/vectors/log/*.json: access-log vectors (docs/format.md 6.1).

Run: .venv/bin/python scripts/make_log_vectors.py [OUTDIR]

A real vault is built with the library on a local store (fixed identities from
make_vectors.py), then its header, log entries and share notices are written
out as they are, and as tampered copies. Lies the owner signs are made with
the same helpers the library uses, so only the lie differs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from make_vectors import IDENTITIES  # noqa: E402

from csfs.crypto import Context  # noqa: E402
from csfs.crypto.envelope import KIND_LOG, KIND_NOTICE  # noqa: E402
from csfs.crypto.keys import Identity, public_key_file  # noqa: E402
from csfs.crypto.sealed import open_object, seal_object  # noqa: E402
from csfs.crypto.signing import sign_blob, verify_blob  # noqa: E402
from csfs.store import open_store  # noqa: E402
from csfs.vault import Vault, sharing  # noqa: E402
from csfs.vault.access import LOG_DOMAIN, MEMBER_DOMAIN, AccessLog, Pins, _json  # noqa: E402
from csfs.vault.layout import VaultHeader  # noqa: E402
from csfs.vault.state import VaultState  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "vectors", "log")
ALICE = IDENTITIES["alice"]
NAMES = {"alice": "alice", "bob": "bob", "carol-p256": "carol", "dave-pq": "dave"}


def build(tmp: str) -> tuple[bytes, dict[int, bytes], dict[str, bytes], str]:
    store = open_store(os.path.join(tmp, "store"))
    v = Vault.create(store, ALICE, state_dir=os.path.join(tmp, "s"),
                     config_dir=os.path.join(tmp, "c"), name="alice")
    v.mkdir("/proj")
    v.write_file("/proj/plan.txt", io.BytesIO(b"the plan"))
    for key in ("bob", "carol-p256"):
        sharing.add_member(v, public_key_file(IDENTITIES[key]), NAMES[key])
    sharing.share(v, "/proj", "bob", write=True)
    sharing.share(v, "/proj", "carol")
    sharing.unshare(v, "/proj", "carol")
    sharing.add_member(v, public_key_file(IDENTITIES["dave-pq"]), "dave")
    sharing.share(v, "/proj/plan.txt", "dave")  # a file share (7.6)
    entries = {int(i.key[2:], 16): store.get(i.key) for i in store.list("a/")}
    notices = {i.key[2:]: store.get(i.key) for i in store.list("n/")}
    # Then two share links (7.7) to plan.txt's version, and the first one ended, and
    # a folder link (7.8) to /proj: entries 9 to 12, in vectors of their own (the 8
    # above stay as they were).
    plan = v.lookup("/proj/plan.txt")
    for body in (_link_add(plan.id, plan.version), _link_add(plan.id, plan.version)):
        v.access.append(lambda state, seq, body=body: (body, []))
        LINKS.append(body["link"])
    v.access.append(lambda state, seq: ({"op": "link-remove", "link": LINKS[0]}, []))
    folder = {**_link_add(v.lookup("/proj").id, 0), "type": "d"}
    del folder["version"]
    v.access.append(lambda state, seq: (folder, []))
    LINKED.update({int(i.key[2:], 16): store.get(i.key) for i in store.list("a/")})
    return store.get("csfs-vault"), entries, notices, v.lookup("/proj").id


LINKS: list[str] = []
LINKED: dict[int, bytes] = {}


def _link_add(node: str, version: int) -> dict[str, Any]:
    return {"op": "link-add", "link": os.urandom(16).hex(), "node": node, "version": version,
            "public": os.urandom(32).hex(), "expires_ns": 1_800_000_000 * 10**9}


def payload(raw: bytes) -> dict[str, Any]:
    return json.loads(verify_blob(raw, LOG_DOMAIN, "entry")[0])


def resign(obj: dict[str, Any], key: Identity = ALICE) -> bytes:
    return sign_blob(key.signing_key, LOG_DOMAIN, _json(obj))


def reseal_body(raw: bytes, header: VaultHeader, edit: Any) -> bytes:
    """Open an entry's body as the owner, edit it, seal it again (same recipients' kinds)."""
    obj = payload(raw)
    sealed = base64.b64decode(obj["body"])
    ctx = Context(KIND_LOG, header.vault_id_bytes, bytes(16), obj["seq"])
    _, plain = open_object(sealed, ALICE, ctx, allowed_signers=None, what="body")
    body = edit(json.loads(plain))
    recipients = [i.recipient for i in IDENTITIES.values()]
    obj["body"] = base64.b64encode(seal_object(_json(body), recipients, ALICE, ctx)).decode()
    return resign(obj)


def moved(raw: bytes, header: VaultHeader, seq: int, prev: str) -> bytes:
    """The owner's entry ``raw`` as if appended at ``seq`` after the entry hashing to
    ``prev`` (its body sealed again under the new seq's context)."""
    obj = payload(raw)
    sealed = base64.b64decode(obj["body"])
    old = Context(KIND_LOG, header.vault_id_bytes, bytes(16), obj["seq"])
    _, plain = open_object(sealed, ALICE, old, allowed_signers=None, what="body")
    new = Context(KIND_LOG, header.vault_id_bytes, bytes(16), seq)
    recipients = [i.recipient for i in IDENTITIES.values()]
    obj.update(seq=seq, prev=prev,
               body=base64.b64encode(seal_object(plain, recipients, ALICE, new)).decode())
    return resign(obj)


def replay(header_raw: bytes, entries: dict[int, bytes], notices: dict[str, bytes],
           who: str) -> dict[str, Any]:
    """What a correct reader derives, via the library (the expected result)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        store.put("csfs-vault", header_raw)
        for seq, raw in entries.items():
            store.put(f"a/{seq:016x}", raw)
        for nid, raw in notices.items():
            store.put(f"n/{nid}", raw)
        header = VaultHeader.decode(header_raw)
        log = AccessLog(store, header, IDENTITIES[who], VaultState(None, "x"), Pins(None))
        log.refresh()
        readable = [body is not None for _, body in log.verify_all()]
        return {
            "members": {fp: m.name for fp, m in log.current.members.items()},
            "grants": log.current.grants,
            "writers": log.current.writers,
            "notices": sorted(
                ({"node": n.node, "name": n.name, "owner": n.owner, "write": n.write}
                 for n in log.notices.values()), key=lambda n: n["node"]),
            "readable": readable,
            "links": {k: f"{x.node}/{x.version:016x}" if x.kind == "f" else f"{x.node}/folder"
                      for k, x in log.current.links.items()},
        }


def write(name: str, expect: str, description: str, identity: str, header: bytes,
          entries: dict[int, bytes], notices: dict[str, bytes],
          pinned: tuple[int, str] | None = None) -> None:
    case: dict[str, Any] = {
        "expect": expect,
        "description": description,
        "identity": identity,
        "header": header.hex(),
        "entries": {str(k): v.hex() for k, v in sorted(entries.items())},
        "notices": {k: v.hex() for k, v in sorted(notices.items())},
    }
    if pinned is not None:
        case["pinned"] = {"seq": pinned[0], "hash": pinned[1]}
    if expect == "success":
        case["result"] = replay(header, entries, notices, identity)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(case, f, indent=1, sort_keys=True)
        f.write("\n")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".json"):
            os.unlink(os.path.join(OUT, old))
    with tempfile.TemporaryDirectory() as tmp:
        header_raw, entries, notices, proj = build(tmp)
    header = VaultHeader.decode(header_raw)
    h = {s: hashlib.sha256(r).hexdigest() for s, r in entries.items()}
    assert len(entries) == 8, "alice, bob, carol, share bob, share carol, unshare carol, dave, file"

    for who in IDENTITIES:
        write(f"success_{NAMES[who]}", "success",
              f"eight entries read by {NAMES[who]}", who, header_raw, entries, notices)
    write("success_pinned_head", "success", "a client that saw entry 5 before", "bob",
          header_raw, entries, notices, (5, h[5]))

    def without(seq: int) -> dict[int, bytes]:
        return {s: r for s, r in entries.items() if s != seq}

    write("entry_removed", "authentication", "entry 3 deleted", "bob", header_raw, without(3),
          notices)
    swapped = {**entries, 3: entries[4], 4: entries[3]}
    write("entries_reordered", "authentication", "entries 3 and 4 swapped", "bob", header_raw,
          swapped, notices)
    edited = bytearray(entries[4])
    edited[len(edited) // 2] ^= 1
    write("entry_edited", "authentication", "one bit of entry 4 flipped", "bob", header_raw,
          {**entries, 4: bytes(edited)}, notices)
    # Lies about entry 7 are told with entry 7 as the newest, so that the lie itself,
    # not the broken link to entry 8, is what a reader must catch.
    upto7 = without(8)
    obj = payload(entries[7])
    # Objects not signed by the owner are planted: ignored, never fatal (7.2).
    planted = resign(obj, IDENTITIES["bob"])
    write("entry_signed_by_member", "success", "entry 7 signed by bob, not the owner: ignored",
          "bob", header_raw, {**upto7, 7: planted}, notices)
    write("entry_planted_then_owner", "success",
          "a/7 signed by bob and a/9 junk, both ignored; the owner's entry 7 appended as 8 "
          "with prev of entry 6", "bob", header_raw,
          {**upto7, 7: planted, 8: moved(entries[7], header, 8, h[6]), 9: b"junk"}, notices)
    write("entry_replaced_by_junk", "authentication",
          "entry 4 replaced by junk: entry 5 does not follow entry 3", "bob", header_raw,
          {**entries, 4: b"junk"}, notices)
    write("entry_bad_prev", "authentication", "entry 7 re-signed with prev of entry 5", "bob",
          header_raw, {**upto7, 7: resign({**obj, "prev": h[5]})}, notices)
    write("entry_bad_seq", "success", "entry 7 re-signed claiming seq 8: a misplaced copy, "
          "ignored", "bob", header_raw, {**upto7, 7: resign({**obj, "seq": 8})}, notices)
    write("entry_copied_above_head", "success",
          "a copy of entry 5 put at a/9 by someone with bucket access: ignored", "bob",
          header_raw, {**entries, 9: entries[5]}, notices)
    write("entry_other_vault", "format", "entry 7 re-signed naming another vault", "bob",
          header_raw, {**upto7, 7: resign({**obj, "vault_id": "0" * 32})}, notices)
    write("entry_bad_format", "format", "entry 7 re-signed with format csfs-log-2", "bob",
          header_raw, {**upto7, 7: resign({**obj, "format": "csfs-log-2"})}, notices)
    write("entry_unknown_op", "format", "entry 7's body re-sealed with op \"grant-all\"",
          "bob", header_raw,
          {**upto7, 7: reseal_body(entries[7], header, lambda b: {**b, "op": "grant-all"})},
          notices)

    def unsigned_record(body: dict[str, Any]) -> dict[str, Any]:
        record = base64.b64decode(body["record"])
        rec = json.loads(verify_blob(record, MEMBER_DOMAIN, "record")[0])
        rec["public"] = rec["public"][: rec["public"].index("-----BEGIN CSFS KEY SIGNATURE")]
        new = sign_blob(ALICE.signing_key, MEMBER_DOMAIN, _json(rec))
        return {**body, "record": base64.b64encode(new).decode()}

    write("member_without_self_signature", "format",
          "entry 7 adds dave with a public key lacking its self-signature", "bob", header_raw,
          {**upto7, 7: reseal_body(entries[7], header, unsigned_record)}, notices)
    write("log_rolled_back", "authentication", "the client saw 8 entries; the store has 7",
          "bob", header_raw, without(8), notices, (8, h[8]))
    write("head_rewritten", "authentication", "entry 5's hash differs from the one pinned",
          "bob", header_raw, entries, notices, (5, h[4]))
    # Bob's notice (of entry 4, his share), whatever order the random notice ids sort in.
    nid, nraw = next((k, r) for k, r in notices.items()
                     if _notice_for(r, k, entries, header)[0] == 4)
    bob_notice = _notice_for(nraw, nid, entries, header)
    write("notice_for_other_node", "authentication",
          "bob's notice re-sealed by the owner naming another folder", "bob", header_raw,
          entries, {**notices, nid: _reseal_notice(bob_notice, nid, header, proj)})
    link_vectors(header_raw, header, notices)
    print(f"wrote {len(os.listdir(OUT))} log vectors to {OUT}")


def link_vectors(header_raw: bytes, header: VaultHeader, notices: dict[str, bytes]) -> None:
    """7.3, 7.7, 7.8: link-add (entries 9, 10), link-remove (entry 11) and a folder
    link's link-add (entry 12)."""
    for who in ("alice", "bob"):
        write(f"success_links_{who}", "success",
              f"two links added, the first removed, a folder link added, read by {who}", who,
              header_raw, LINKED, notices)
    write("link_folder_with_version", "format",
          "entry 12 (a folder link) re-sealed with a version", "bob", header_raw,
          {**LINKED, 12: reseal_body(LINKED[12], header, lambda b: {**b, "version": 1})},
          notices)
    write("link_unknown_type", "format", "entry 12 re-sealed with type \"f\"", "bob",
          header_raw,
          {**LINKED, 12: reseal_body(LINKED[12], header, lambda b: {**b, "type": "f"})},
          notices)
    upto10 = {s: r for s, r in LINKED.items() if s <= 10}
    write("link_added_twice", "format", "entry 10 re-sealed adding the link id of entry 9",
          "bob", header_raw,
          {**upto10, 10: reseal_body(LINKED[10], header, lambda b: {**b, "link": LINKS[0]})},
          notices)
    write("link_bad_public", "format", "entry 10 re-sealed with a public key that is not hex",
          "bob", header_raw,
          {**upto10, 10: reseal_body(LINKED[10], header, lambda b: {**b, "public": "xyz"})},
          notices)
    write("link_version_zero", "format", "entry 10 re-sealed with version 0", "bob",
          header_raw,
          {**upto10, 10: reseal_body(LINKED[10], header, lambda b: {**b, "version": 0})},
          notices)
    write("link_remove_without_link", "format", "entry 11 re-sealed without its link id",
          "bob", header_raw,
          {**{s: r for s, r in LINKED.items() if s <= 11},
           11: reseal_body(LINKED[11], header, lambda b: {"op": "link-remove"})},
          notices)


def _notice_for(raw: bytes, nid: str, entries: dict[int, bytes],
                header: VaultHeader) -> tuple[int, dict[str, Any]]:
    for seq in entries:
        ctx = Context(KIND_NOTICE, header.vault_id_bytes, bytes.fromhex(nid), seq)
        try:
            _, plain = open_object(raw, ALICE, ctx, allowed_signers=None, what="notice")
        except Exception:  # noqa: S112 - not this seq
            continue
        return seq, json.loads(plain)
    raise SystemExit("no entry matches the notice")


def _reseal_notice(found: tuple[int, dict[str, Any]], nid: str, header: VaultHeader,
                   proj: str) -> bytes:
    seq, body = found
    body = {**body, "node": "f" * 32 if proj != "f" * 32 else "e" * 32}
    ctx = Context(KIND_NOTICE, header.vault_id_bytes, bytes.fromhex(nid), seq)
    return seal_object(_json(body), [ALICE.recipient, IDENTITIES["bob"].recipient], ALICE, ctx)


if __name__ == "__main__":
    main()
