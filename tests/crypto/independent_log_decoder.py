"""An independent reader of the csfs access log, written only from docs/format.md.

Like independent_decoder.py (whose envelope and payload reader it reuses), it
imports nothing from the csfs package: it checks that sections 1.2, 1.3, 3, 5,
6.1 and 7 of the specification are enough to verify the log and derive what a
client derives from it. Section numbers in comments refer to docs/format.md.

Failures are FormatFailure or AuthFailure (re-exported from
independent_decoder), matching a vector's `expect: format | authentication`.
Where the specification is silent or disagrees with the vectors, the comment
says "SPEC GAP" and what this reader assumed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519

from tests.crypto.independent_decoder import (
    MAX_ENVELOPE,
    AuthFailure,
    FormatFailure,
    NoMatch,
    context_bytes,
    decrypt,
    parse_signed_blob,
    parse_vault_header,
)

__all__ = ["AuthFailure", "FormatFailure", "NoMatch", "read_log", "read_vector_case"]

LOG_ENTRY_DOMAIN = b"csfs v1 log entry\0"  # 7.2
MEMBER_RECORD_DOMAIN = b"csfs v1 member record\0"  # 7.1
KEY_SIGNATURE_DOMAIN = b"csfs v1 key self-signature\0"  # 1.2
RECIPIENT_DOMAIN = b"csfs v1 recipient\0"  # 1.3
ZERO_ID = "00" * 16  # 7.2: the node_id of a log entry's context

PEM_ANY = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # 7.1
ID = re.compile(r"[0-9a-f]{32}")  # 5: ids are 32 lowercase hex digits
HASH_HEX = re.compile(r"[0-9a-f]{64}")  # 7.2: prev is lowercase hex
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9_-]{43}")  # 1.3


@dataclass(frozen=True)
class PublicKey:
    """The parts of a key that 1.3's recipient id is computed from."""

    kem_id: int
    kem_pub: bytes
    ed25519_pub: bytes

    @property
    def rid(self) -> bytes:
        """1.3."""
        return hashlib.sha256(
            RECIPIENT_DOMAIN + struct.pack(">H", self.kem_id) + self.kem_pub + self.ed25519_pub
        ).digest()

    @property
    def fingerprint(self) -> str:
        """1.3: "SHA256:" and the unpadded base64url of rid."""
        return "SHA256:" + base64.urlsafe_b64encode(self.rid).rstrip(b"=").decode("ascii")


def _raw(key: Any) -> bytes:
    """1.1's `kem_pub` encoding of one public key component."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return key.public_bytes_raw()


def _kind(keys: list[Any]) -> PublicKey:
    """1.2: the kind is recognised from the sequence of algorithms (public keys)."""
    if len(keys) == 2 and isinstance(keys[1], ed25519.Ed25519PublicKey):
        if isinstance(keys[0], x25519.X25519PublicKey):
            return PublicKey(0x0020, _raw(keys[0]), _raw(keys[1]))
        if isinstance(keys[0], ec.EllipticCurvePublicKey) and keys[0].curve.name == "secp256r1":
            return PublicKey(0x0010, _raw(keys[0]), _raw(keys[1]))
    if (
        len(keys) == 3
        and isinstance(keys[0], mlkem.MLKEM768PublicKey)
        and isinstance(keys[1], x25519.X25519PublicKey)
        and isinstance(keys[2], ed25519.Ed25519PublicKey)
    ):
        # 1.1: kem_pub of the hybrid kind is the ML-KEM-768 key || the X25519 key.
        return PublicKey(0x647A, _raw(keys[0]) + _raw(keys[1]), _raw(keys[2]))
    raise FormatFailure("key file is not one of the kinds of 1.2")


def parse_public_key_file(text: str, *, require_signature: bool) -> PublicKey:
    """1.2: a public key file, with its optional (here: maybe required) self-signature.

    SPEC GAP (1.2, 7.1): the error class of a bad key file inside a member record
    is given by 7.1 (format error); 1.2 only calls it a "key file error".
    """
    blocks = [(label.decode(), body) for label, body in PEM_ANY.findall(text.encode("utf-8"))]
    keys, signatures = [], []
    for label, body in blocks:
        pem = b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label.encode(), body, label.encode())
        if label == "PUBLIC KEY":
            try:
                keys.append(serialization.load_pem_public_key(pem))
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise FormatFailure("unreadable PUBLIC KEY block") from exc
        elif label == "CSFS KEY SIGNATURE":
            try:
                signatures.append(base64.b64decode(b"".join(body.split()), validate=True))
            except binascii.Error as exc:
                raise FormatFailure("signature block is not base64") from exc
        elif "PRIVATE KEY" in label:
            raise FormatFailure("a public key file holding a private key")
        # SPEC GAP (1.2): blocks with other labels are neither allowed nor
        # forbidden; "text outside the blocks" is ignored, so this reader
        # ignores unknown blocks too.
    key = _kind(keys)  # 1.2: the signature block is ignored when recognising the kind
    # SPEC GAP (1.2): "ends with one more block" - the text does not say whether
    # a second signature block, or one placed before the keys, is an error. This
    # reader requires at most one, anywhere.
    if len(signatures) > 1:
        raise FormatFailure("more than one CSFS KEY SIGNATURE block")
    if not signatures:
        if require_signature:
            raise FormatFailure("public key without a self-signature")  # 7.1
        return key
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.ed25519_pub).verify(
            signatures[0], KEY_SIGNATURE_DOMAIN + key.rid
        )
    except InvalidSignature as exc:
        raise FormatFailure("self-signature does not verify") from exc  # 7.1: format error
    return key


def identity_public_key(pem: bytes) -> PublicKey:
    """1.2: the public half of an unencrypted private key file, for our own fingerprint."""
    keys = []
    for label, body in PEM_ANY.findall(pem):
        if label == b"PRIVATE KEY":
            block = b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"
            keys.append(serialization.load_pem_private_key(block, password=None).public_key())
    return _kind(keys)


# 7.1: member records.


@dataclass(frozen=True)
class Member:
    fingerprint: str
    name: str
    public: PublicKey


def parse_member_record(blob: bytes, owner: bytes, vault_id: str) -> Member:
    """7.1. Blob layout errors are format errors and come first (5.1)."""
    payload, signer = parse_signed_blob(blob, MEMBER_RECORD_DOMAIN)
    if signer != owner:
        raise AuthFailure("member record not signed by the owner")
    record = _json_object(payload, "member record")
    if record.get("format") != "csfs-member-1":
        raise FormatFailure("member record format is not csfs-member-1")
    if record.get("vault_id") != vault_id:
        raise FormatFailure("member record names another vault")
    name = record.get("name")
    if not isinstance(name, str) or not MEMBER_NAME.fullmatch(name):
        raise FormatFailure("bad member name")
    public = record.get("public")
    if not isinstance(public, str):
        raise FormatFailure("member record without a public key file")
    key = parse_public_key_file(public, require_signature=True)
    return Member(key.fingerprint, name, key)


# 7.2: log entries.


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatFailure(f"{what} is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise FormatFailure(f"{what} is not a JSON object")
    return value


def _b64(value: Any, what: str) -> bytes:
    """7.2: standard base64 with padding."""
    if not isinstance(value, str):
        raise FormatFailure(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise FormatFailure(f"{what} is not standard base64") from exc


class MisplacedEntry(AuthFailure):
    """7.2: an owner entry under another number than its own is a planted copy."""


def verify_entry(blob: bytes, seq: int, prev: bytes, owner: bytes, vault_id: str) -> dict:
    """7.2: the checks a reader makes on every entry it fetches -> the entry JSON."""
    payload, signer = parse_signed_blob(blob, LOG_ENTRY_DOMAIN)
    if signer != owner:
        raise AuthFailure("log entry not signed by the owner")
    entry = _json_object(payload, "log entry")
    # 7.2: a wrong `format` or `vault_id` is a format error.
    if entry.get("format") != "csfs-log-1":
        raise FormatFailure("log entry format is not csfs-log-1")
    if entry.get("vault_id") != vault_id:
        raise FormatFailure("log entry names another vault")
    if type(entry.get("seq")) is not int:
        raise AuthFailure(f"object a/{seq} holds entry {entry.get('seq')!r}")
    if entry["seq"] != seq:
        raise MisplacedEntry(f"object a/{seq} holds entry {entry['seq']}")
    if not isinstance(entry.get("prev"), str) or not HASH_HEX.fullmatch(entry["prev"]):
        raise AuthFailure("prev is not 64 lowercase hex digits")
    if not hmac.compare_digest(bytes.fromhex(entry["prev"]), prev):
        raise AuthFailure(f"entry {seq}: prev does not match the previous object")
    return entry


def open_laid_out(
    obj: bytes, identity: bytes, context: bytes, owner: bytes
) -> dict[str, Any] | None:
    """`env_len || envelope || payload` (5.3) -> decrypted JSON, or None if no stanza opens.

    The envelope must be signed by the owner, both for a log body (7.2) and for
    a notice (7.4).
    """
    if len(obj) < 4:
        raise FormatFailure("short object")
    (env_len,) = struct.unpack(">I", obj[:4])
    if env_len > MAX_ENVELOPE or env_len > len(obj) - 4:
        raise FormatFailure("env_len out of range")
    try:
        plaintext = decrypt(obj[4 : 4 + env_len], obj[4 + env_len :], identity, context, {owner})
    except NoMatch:
        return None
    return _json_object(plaintext, "decrypted body")


# 7.3: derived state.


def _fingerprint_field(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not FINGERPRINT.fullmatch(value):
        raise FormatFailure(f"{key!r} is not a fingerprint")
    return value


def _id_field(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise FormatFailure(f"{key!r} is not an id")
    return value


class State:
    """7.3's derived state, with the member records already verified."""

    def __init__(self, owner: bytes, vault_id: str) -> None:
        self.owner, self.vault_id = owner, vault_id
        self.files: list[str] = []
        self.members: dict[str, tuple[str, Member]] = {}  # fp -> (base64 record, parsed)
        self.grants: dict[str, dict[str, str]] = {}
        self.writers: dict[str, list[str]] = {}
        # 7.3, 7.7, 7.8: link id -> (node, version, public, expires_ns); version 0
        # for a folder link (`"type":"d"`, which has none)
        self.links: dict[str, tuple[str, int, str, int]] = {}

    def as_json(self) -> dict[str, Any]:
        """7.3's JSON form."""
        return {
            "files": self.files,
            "grants": self.grants,
            "members": {fp: rec for fp, (rec, _) in self.members.items()},
            "writers": self.writers,
            "links": {
                k: {"expires_ns": e, "node": n, "public": p,
                    **({"version": v} if v else {"type": "d"})}
                for k, (n, v, p, e) in self.links.items()
            },
        }

    def add_link(self, link: Any, fields: dict[str, Any]) -> None:
        """7.3 link-add: the id, then version in [1, 2^63 - 1] (a folder link, with
        `"type":"d"`, has none; any other type is an error), expires_ns in
        [0, 2^63 - 1] and 64 lowercase hex digits of public key."""
        if not isinstance(link, str) or not ID.fullmatch(link):
            raise FormatFailure("a link id is not an id")
        if link in self.links:
            raise FormatFailure("a link already in links")
        node = _id_field(fields, "node")
        version, expires, public = (fields.get(k) for k in ("version", "expires_ns", "public"))
        if "type" in fields:
            if fields["type"] != "d":
                raise FormatFailure("a link of another type than d")
            if "version" in fields:
                raise FormatFailure("a folder link with a version")
            version = 0
        elif type(version) is not int or not 1 <= version <= 2**63 - 1:
            raise FormatFailure("a link's version is out of range")
        if type(expires) is not int or not 0 <= expires <= 2**63 - 1:
            raise FormatFailure("a link's expires_ns is out of range")
        if not isinstance(public, str) or not re.fullmatch(r"[0-9a-f]{64}", public):
            raise FormatFailure("a link's public key is not 64 lowercase hex digits")
        self.links[link] = (node, version, public, expires)

    def add_member(self, record_b64: Any, fingerprint: str | None = None) -> str:
        member = parse_member_record(_b64(record_b64, "member record"), self.owner, self.vault_id)
        if fingerprint is not None and fingerprint != member.fingerprint:
            # SPEC GAP (7.3): the spec does not say that a `state` key must be
            # the fingerprint of its record, nor the class of a mismatch.
            raise FormatFailure("state names a member under another fingerprint")
        if any(
            m.name == member.name for fp, (_, m) in self.members.items() if fp != member.fingerprint
        ):
            raise FormatFailure(f"member name {member.name!r} already in use")  # 7.3
        self.members[member.fingerprint] = (record_b64, member)
        return member.fingerprint

    @classmethod
    def from_json(cls, value: Any, owner: bytes, vault_id: str) -> State:
        """7.3: the `state` of a member-add entry, checked as if applied.

        SPEC GAP (7.3): the spec does not say whether a reader must verify the
        member records inside `state` (owner signature, self-signature, 7.1) or
        the shape of `files`, `grants` and `writers`; this reader verifies
        everything, including that `files` holds only nodes with grants (true
        "after every entry").
        """
        # 7.3: `files` may be absent in a `state`, meaning [].
        if not isinstance(value, dict) or not {"grants", "members", "writers"} <= set(value):
            raise FormatFailure("state lacks grants, members or writers")
        if not set(value) <= {"files", "grants", "links", "members", "writers"}:
            raise FormatFailure("state has keys other than files, grants, links, members, writers")
        state = cls(owner, vault_id)
        if not isinstance(value["members"], dict):
            raise FormatFailure("state members is not an object")
        for fp, record in value["members"].items():
            state.add_member(record, fp)
        grants, writers = value["grants"], value["writers"]
        if not isinstance(grants, dict) or not isinstance(writers, dict):
            raise FormatFailure("state grants/writers are not objects")
        for node, holders in grants.items():
            if not ID.fullmatch(node) or not isinstance(holders, dict) or not holders:
                raise FormatFailure("bad grants in state")
            for fp, right in holders.items():
                if fp not in state.members or right not in ("r", "w"):
                    raise FormatFailure("bad grant in state")
            state.grants[node] = dict(holders)
        state._set_writers(writers)
        files = value.get("files", [])
        if not isinstance(files, list):
            raise FormatFailure("state files is not a list")
        for node in files:
            if not isinstance(node, str) or not ID.fullmatch(node) or node not in state.grants:
                raise FormatFailure("state files names a node without grants")
            if node not in state.files:
                state.files.append(node)
        # 7.3: `links` may be absent, meaning {}.
        links = value.get("links", {})
        if not isinstance(links, dict):
            raise FormatFailure("state links is not an object")
        for link, fields in links.items():
            if not isinstance(fields, dict):
                raise FormatFailure("a link in state is not an object")
            state.add_link(link, fields)
        return state

    def _set_writers(self, writers: Any) -> None:
        """7.3: replace writers[root] by each list; a root mapped to [] is deleted.

        7.3: a writer fingerprint that names no current member authorises
        nothing, so it is kept as written rather than rejected.
        """
        if not isinstance(writers, dict):
            raise FormatFailure("writers is not an object")
        for root, fps in writers.items():
            if not ID.fullmatch(root) or not isinstance(fps, list):
                raise FormatFailure("bad writers map")
            if any(not isinstance(fp, str) or not FINGERPRINT.fullmatch(fp) for fp in fps):
                raise FormatFailure("a writer is not a fingerprint")
            if fps:
                self.writers[root] = list(fps)
            else:
                self.writers.pop(root, None)

    def drop(self, fingerprint: str) -> None:
        """7.3: remove a fingerprint from every grant and writer list, deleting any
        `grants[node]` or `writers[root]` left empty (member-remove)."""
        for node in list(self.grants):
            self.grants[node].pop(fingerprint, None)
            if not self.grants[node]:
                del self.grants[node]
        for root in list(self.writers):
            self.writers[root] = [fp for fp in self.writers[root] if fp != fingerprint]
            if not self.writers[root]:
                del self.writers[root]

    def apply(self, body: dict[str, Any]) -> None:
        """7.2's table and 7.3's rules for one decrypted entry body."""
        op = body.get("op")
        if op == "member-add":
            # 7.3: a reader that already holds a state ignores the `state` of
            # later member-add entries; 7.2 only requires the key to be there.
            if "state" not in body:
                raise FormatFailure("member-add without state")
            self.add_member(body.get("record"))
        elif op == "member-remove":
            fp = _fingerprint_field(body, "member")
            # 7.3: a no-op for a fingerprint that is not a member.
            if fp in self.members:
                del self.members[fp]
                self.drop(fp)
        elif op == "share":
            node, fp = _id_field(body, "node"), _fingerprint_field(body, "member")
            _id_field(body, "notice")
            if fp not in self.members or not isinstance(body.get("write"), bool):
                raise FormatFailure("share names a non-member or lacks write")  # 7.2, 7.3
            kind = share_type(body)
            if kind == "f" and body["write"]:
                raise FormatFailure("a file share with write true")  # 7.3
            self.grants.setdefault(node, {})[fp] = "w" if body["write"] else "r"
            self._set_writers(body.get("writers"))
            if kind == "f" and node not in self.files:
                self.files.append(node)  # 7.3
        elif op == "unshare":
            node, fp = _id_field(body, "node"), _fingerprint_field(body, "member")
            # 7.3: a grant that does not exist is a no-op.
            self.grants.get(node, {}).pop(fp, None)
            if node in self.grants and not self.grants[node]:
                del self.grants[node]
            self._set_writers(body.get("writers"))
        elif op == "link-add":
            self.add_link(body.get("link"), body)  # 7.3; links change no grant or writer
        elif op == "link-remove":
            # 7.3: deletes links[link], a no-op if absent; 7.2: the key must be there.
            self.links.pop(_id_field(body, "link"), None)
        else:
            raise FormatFailure(f"unknown log op {op!r}")  # 7.2
        # 7.3: after every entry, `files` keeps only nodes that still have grants.
        self.files = [node for node in self.files if node in self.grants]


def share_type(body: dict[str, Any]) -> str:
    """7.2, 7.3: a share's optional `type`, "d" when absent; another value is a
    format error."""
    kind = body.get("type", "d")
    if kind not in ("d", "f"):
        raise FormatFailure(f"share type {kind!r} is neither 'd' nor 'f'")
    return kind


# 7.4: share notices.


def read_notice(
    obj: bytes | None,
    share: dict,
    seq: int,
    identity: bytes,
    owner: bytes,
    vault_id: str,
) -> dict[str, Any]:
    """7.4: the notice named by the `share` entry number `seq`, read when the
    grantee applies that entry -> 6.1's form of it.

    SPEC GAP (7.4): the order of the format checks and the comparison with the
    entry is not given (a notice whose `type` is "x" fails both); this reader
    makes the format checks first. Nor does 7.4 say what a reader checks of
    `owner` ("for display"); this reader requires a string (format error).
    """
    notice_id = share["notice"]
    if obj is None:
        raise AuthFailure("the notice named by a share entry is missing")  # 7.4
    context = context_bytes(5, vault_id, notice_id, seq)
    notice = open_laid_out(obj, identity, context, owner)
    if notice is None:
        raise AuthFailure("the grantee cannot open its notice")  # 7.4
    if notice.get("format") != "csfs-share-1":
        raise FormatFailure("notice format is not csfs-share-1")
    if notice.get("type") not in ("d", "f"):
        raise FormatFailure("notice type is neither 'd' nor 'f'")
    name, owner_name = notice.get("name"), notice.get("owner")
    if not isinstance(name, str) or not _manifest_name_ok(name) or not isinstance(owner_name, str):
        raise FormatFailure("bad notice name or owner")
    # 7.4: a `node`, `write` or `type` other than the entry's (an entry without
    # `type` means "d") is an authentication error.
    if (
        notice.get("node") != share["node"]
        or notice.get("write") is not share["write"]
        or notice["type"] != share_type(share)
    ):
        raise AuthFailure("notice does not match its share entry")
    return {"name": name, "node": share["node"], "owner": owner_name, "write": share["write"]}


def _manifest_name_ok(name: str) -> bool:
    """5.3's rules for a name."""
    raw = name.encode("utf-8")
    return 0 < len(raw) <= 255 and "/" not in name and "\0" not in name and name not in (".", "..")


# The whole log, as section 6.1 presents it.


def read_log(
    header: bytes,
    entries: dict[int, bytes],
    notices: dict[str, bytes],
    identity: bytes,
    pinned: tuple[int, bytes] | None = None,
) -> dict[str, Any]:
    """Verify the log (7.2) and derive 6.1's `result` for `identity` (7.3, 7.4)."""
    vault = parse_vault_header(header)
    owner, vault_id = bytes.fromhex(vault["owner"]), vault["vault_id"]

    # 7.2: the remembered head, then the chain, are checked before any body is
    # opened. Objects not signed by the owner (not a signed blob, a bad signature,
    # another signer) are planted: skipped, never obeyed, never fatal. Numbers may
    # be missing; a removed or replaced owner entry shows as the next owner
    # entry's `prev` not matching.
    top = max(entries, default=0)
    if pinned is not None:
        head_seq, head_hash = pinned
        if top < head_seq or head_seq not in entries:
            raise AuthFailure("log is shorter than the remembered head (rollback)")
        if not hmac.compare_digest(hashlib.sha256(entries[head_seq]).digest(), head_hash):
            raise AuthFailure("entry at the remembered head has another hash (rewrite)")

    # 7.2: every owner entry is verified, including those the reader will not open.
    prev = hashlib.sha256(header).digest()
    verified: dict[int, dict] = {}
    for seq in sorted(entries):
        try:
            _, signer = parse_signed_blob(entries[seq], LOG_ENTRY_DOMAIN)
        except (AuthFailure, FormatFailure):
            continue  # planted
        if signer != owner:
            continue  # planted
        try:
            verified[seq] = verify_entry(entries[seq], seq, prev, owner, vault_id)
        except MisplacedEntry:
            continue  # an owner entry copied under another number: planted
        prev = hashlib.sha256(entries[seq]).digest()

    # 6.1 `readable`: whether the identity opens each body (context kind 4).
    bodies: dict[int, dict | None] = {}
    for seq, entry in verified.items():
        context = context_bytes(4, vault_id, ZERO_ID, seq)
        bodies[seq] = open_laid_out(_b64(entry.get("body"), "body"), identity, context, owner)

    # 7.3: start at the first member-add of our own fingerprint that we can
    # open (7.2: the owner reads the log like any member, from entry 1).
    key = identity_public_key(identity)
    me = key.fingerprint
    is_owner = key.ed25519_pub == owner  # 7.4: the owner holds no notices
    state: State | None = None
    held: dict[str, dict] = {}  # node -> 6.1 notice of our latest share entry for it
    for seq in verified:
        body = bodies[seq]
        if state is None:
            if body is not None and body.get("op") == "member-add":
                record = _b64(body.get("record"), "record")
                if parse_member_record(record, owner, vault_id).fingerprint == me:
                    state = State.from_json(body.get("state"), owner, vault_id)
                    if me not in state.members:
                        raise FormatFailure("member-add state lacks the member it adds")
            continue
        if body is None:
            # 7.3: an entry we cannot open after we joined means we were
            # removed: the state becomes empty and all our grants (7.4: and
            # their notices) are gone; a later member-add of our key starts
            # again from that entry's state.
            state = None
            held.clear()
            continue
        state.apply(body)
        if body["op"] == "share" and body["member"] == me and not is_owner:
            # 7.4: the grantee reads the notice when it applies the entry.
            held[body["node"]] = read_notice(
                notices.get(body["notice"]), body, seq, identity, owner, vault_id
            )
    if state is None:
        # 7.3: a key that no member-add adds (or that was removed and not added
        # again) derives nothing from the log.
        state = State(owner, vault_id)

    # 7.4: a grantee holds the notice of its latest share entry for each grant
    # it still has; 6.1 lists them sorted by node.
    result_notices = [held[node] for node in sorted(held) if me in state.grants.get(node, {})]

    return {
        "grants": state.grants,
        "members": {fp: m.name for fp, (_, m) in state.members.items()},
        "notices": result_notices,
        "readable": [bodies[seq] is not None for seq in verified],
        # 6.1: {<link id>: "<node>/<version as 16 hex digits>"}
        "links": {k: f"{n}/{v:016x}" if v else f"{n}/folder"
                  for k, (n, v, _, _) in state.links.items()},
        "writers": state.writers,
    }


def read_vector_case(case: dict[str, Any], identity: bytes) -> dict[str, Any]:
    """6.1: a log vector's JSON -> the derived result (or an exception)."""
    entries: dict[int, bytes] = {}
    for key, value in case["entries"].items():
        if not key.isdigit():
            continue  # 5: a key matching no pattern is ignored
        entries[int(key)] = bytes.fromhex(value)
    pinned = None
    if case.get("pinned") is not None:
        pinned = (int(case["pinned"]["seq"]), bytes.fromhex(case["pinned"]["hash"]))
    notices = {nid: bytes.fromhex(obj) for nid, obj in case["notices"].items()}
    return read_log(bytes.fromhex(case["header"]), entries, notices, identity, pinned)
