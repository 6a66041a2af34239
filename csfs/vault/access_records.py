"""The access log's wire records (docs/format.md 7): member records, log entries,
share notices, and the typed operation each log body holds.

Everything here encodes or decodes bytes and checks them; nothing reads the
store or keeps state. The signatures bind every record to the vault owner and
the vault, so a record moved to another vault or signed by someone else is
rejected here, before any state is derived from it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_LOG, KIND_NOTICE
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import max_object_size, open_object, seal_object
from csfs.crypto.signing import sign_blob, verify_blob
from csfs.errors import AuthenticationError, FormatError, KeyFileError, UsageError
from csfs.vault.layout import VaultHeader, check_id
from csfs.vault.manifest import check_name

MEMBER_DOMAIN = b"csfs v1 member record\0"
LOG_DOMAIN = b"csfs v1 log entry\0"
MEMBER_FORMAT = "csfs-member-1"
LOG_FORMAT = "csfs-log-1"
NOTICE_FORMAT = "csfs-share-1"
# A notice's JSON is a few hundred bytes; a reader GETs no more than this (format.md 7.4).
MAX_NOTICE_BYTES = 4096
MAX_NOTICE_OBJECT = max_object_size(MAX_NOTICE_BYTES)
OPS = ("member-add", "member-remove", "share", "unshare", "link-add", "link-remove")
_HEX32 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")



def log_key(seq: int) -> str:
    return f"a/{seq:016x}"


def notice_key(notice_id: str) -> str:
    return f"n/{check_id(notice_id)}"


def check_member_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid member name {name!r}",
            hint="1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # deep nesting too: one line, not a traceback
        raise FormatError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what} is not a JSON object")
    return obj


@dataclass(frozen=True)
class Member:
    """A member record (7.1): a self-signed public key with a name, countersigned by the owner."""

    name: str
    recipient: Recipient
    raw: bytes

    @property
    def fingerprint(self) -> str:
        return self.recipient.fingerprint

    @classmethod
    def create(cls, owner: Identity, vault_id: str, name: str, public_text: bytes) -> Member:
        load_recipient_pem(public_text, "the member's public key", require_self_signature=True)
        body = {
            "added_ns": time.time_ns(),
            "format": MEMBER_FORMAT,
            "name": check_member_name(name),
            "public": public_text.decode("ascii"),
            "vault_id": vault_id,
        }
        return cls.decode(sign_blob(owner.signing_key, MEMBER_DOMAIN, _json(body)), vault_id, None)

    @classmethod
    def decode(cls, raw: bytes, vault_id: str, owner: bytes | None) -> Member:
        payload, signer = verify_blob(raw, MEMBER_DOMAIN, "member record")
        if owner is not None and signer != owner:
            raise AuthenticationError("a member record is not signed by the vault owner")
        body = _loads(payload, "member record")
        try:
            if body["format"] != MEMBER_FORMAT or body["vault_id"] != vault_id:
                raise FormatError("member record of another format or vault")
            name = check_member_name(body["name"])
            public = str(body["public"]).encode("ascii")
        except (KeyError, UnicodeEncodeError, UsageError) as exc:
            raise FormatError(f"malformed member record: {exc}") from None
        try:
            recipient = load_recipient_pem(
                public, "public key in a member record", require_self_signature=True
            )
        except KeyFileError as exc:
            raise FormatError(f"bad member record: {exc.message}") from None
        return cls(name, recipient, raw)


def _strict_int(value: Any, what: str) -> int:
    """A JSON integer, not a string or bool, which ``int()`` would accept (format.md)."""
    if type(value) is not int or value < 0:
        raise FormatError(f"malformed access log entry: {what} is not an integer")
    return value


@dataclass(frozen=True)
class LogEntry:
    seq: int
    prev: str
    time_ns: int
    body: bytes  # sealed: env_len || envelope || payload
    raw: bytes

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @classmethod
    def decode(cls, raw: bytes, header: VaultHeader) -> LogEntry:
        payload, signer = verify_blob(raw, LOG_DOMAIN, "access log entry")
        if signer != header.owner:
            raise AuthenticationError("an access log entry is not signed by the vault owner")
        obj = _loads(payload, "access log entry")
        try:
            if obj["format"] != LOG_FORMAT or obj["vault_id"] != header.vault_id:
                raise FormatError("access log entry of another format or vault")
            entry = cls(
                _strict_int(obj["seq"], "seq"),
                str(obj["prev"]),
                _strict_int(obj["time_ns"], "time_ns"),
                base64.b64decode(obj["body"], validate=True),
                raw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed access log entry: {exc}") from None
        return entry

    def open(self, identity: Identity, header: VaultHeader) -> dict[str, Any]:
        expect = Context(KIND_LOG, header.vault_id_bytes, bytes(16), self.seq)
        _, plain = open_object(
            self.body, identity, expect, allowed_signers={header.owner}, what="access log body"
        )
        body = _loads(plain, "access log body")
        if body.get("op") not in OPS:
            raise FormatError(f"unknown access log operation {body.get('op')!r}")
        return body


@dataclass(frozen=True)
class Notice:
    """A share notice (7.4), as the grantee sees it."""

    id: str
    node: str
    type: str
    name: str
    owner: str
    write: bool
    # Local state, never stored: the name this client shows the share under. Chosen
    # once, when its first grant is applied, and kept for the life of the share, so a
    # later share under the same name never takes over a path in use (format.md 7.4).
    shown: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "type": self.type,
            "name": self.name,
            "owner": self.owner,
            "write": self.write,
            "shown": self.shown,
        }


def seal_notice(
    notice: Notice, seq: int, header: VaultHeader, owner: Identity, grantee: Recipient
) -> bytes:
    body = {
        "format": NOTICE_FORMAT,
        "name": notice.name,
        "node": notice.node,
        "owner": notice.owner,
        "type": notice.type,
        "write": notice.write,
    }
    context = Context(KIND_NOTICE, header.vault_id_bytes, bytes.fromhex(notice.id), seq)
    return seal_object(_json(body), [owner.recipient, grantee], owner, context)


def open_notice(
    raw: bytes, notice_id: str, seq: int, header: VaultHeader, identity: Identity
) -> Notice:
    expect = Context(KIND_NOTICE, header.vault_id_bytes, bytes.fromhex(notice_id), seq)
    _, plain = open_object(
        raw,
        identity,
        expect,
        allowed_signers={header.owner},
        what="share notice",
        max_length=MAX_NOTICE_BYTES,
    )
    obj = _loads(plain, "share notice")
    try:
        if obj["format"] != NOTICE_FORMAT or obj["type"] not in ("d", "f"):
            raise FormatError("share notice of an unknown format")
        return Notice(
            notice_id,
            check_id(obj["node"]),
            obj["type"],
            check_name(obj["name"]),
            check_member_name(obj["owner"]),
            obj["write"] is True,
        )
    except (KeyError, TypeError, UsageError) as exc:
        raise FormatError(f"malformed share notice: {exc}") from None



def read_member_record(raw: bytes) -> Member:
    """A member record read under the vault id it names itself, signer unchecked:
    for showing a record that an owner-signed log entry already vouches for."""
    payload, _ = verify_blob(raw, MEMBER_DOMAIN, "member record")
    return Member.decode(raw, str(_loads(payload, "member record")["vault_id"]), None)


# -- log operations (format.md 7.3) -----------------------------------------------------


@dataclass(frozen=True)
class MemberAdd:
    member: Member
    # The state after this entry, so the member it adds can start from it; the
    # JSON object as logged, decoded only by that member.
    state: Any = None


@dataclass(frozen=True)
class MemberRemove:
    member: str  # fingerprint


@dataclass(frozen=True)
class Share:
    node: str
    member: str  # fingerprint
    write: bool
    type: str  # "d" (a folder) or "f" (a file, never writable)
    writers: dict[str, list[str]]  # share root -> writer fingerprints; empty: none left
    notice: str | None  # the grantee's notice id


@dataclass(frozen=True)
class Unshare:
    node: str
    member: str
    writers: dict[str, list[str]]


@dataclass(frozen=True)
class LinkAdd:
    """A share link (format.md 7.7) to one version of a file, or a folder link (7.8)
    to a folder (``kind`` "d", ``version`` 0: its listing names the versions)."""

    link: str
    node: str
    version: int
    public: str  # the link's X25519 public key, 64 hex digits
    expires_ns: int
    kind: str = "f"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expires_ns": self.expires_ns, "node": self.node,
                               "public": self.public}
        if self.kind == "d":
            out["type"] = "d"
        else:
            out["version"] = self.version
        return out


@dataclass(frozen=True)
class LinkRemove:
    link: str


LogOp = MemberAdd | MemberRemove | Share | Unshare | LinkAdd | LinkRemove


def parse_link(link: str, value: dict[str, Any]) -> LinkAdd:
    """The fields of a `link-add` (and of a link in a state), checked as 7.3 says."""
    expires, public = value["expires_ns"], value["public"]
    kind = value.get("type", "f")
    if "type" in value and kind != "d":
        raise FormatError("a link of an unknown type")
    if kind == "d":
        if "version" in value:
            raise FormatError("a folder link with a version")
        version = 0
    else:
        version = value["version"]
        if type(version) is not int or not 1 <= version < 2**63:
            raise FormatError("a link's version is not an integer in [1, 2^63 - 1]")
    if type(expires) is not int or not 0 <= expires < 2**63:
        raise FormatError("a link's expires_ns is not an integer in [0, 2^63 - 1]")
    if not isinstance(public, str) or not _HEX32.fullmatch(public):
        raise FormatError("a link's public key is not 64 lowercase hex digits")
    return LinkAdd(check_id(link), check_id(value["node"]), version, public, expires, kind)


def parse_op(body: dict[str, Any], vault_id: str, owner: bytes) -> LogOp:
    """The operation in an opened log body, every field checked; whether it fits the
    state (a share names a member, names stay unique) is the fold's job."""
    op = body.get("op")
    try:
        if op == "member-add":
            record = base64.b64decode(body["record"], validate=True)
            return MemberAdd(Member.decode(record, vault_id, owner), body.get("state"))
        if op == "member-remove":
            return MemberRemove(str(body["member"]))
        if op in ("share", "unshare"):
            node, fp = check_id(body["node"]), str(body["member"])
            if op == "share":
                kind = body.get("type", "d")
                if kind not in ("d", "f") or (kind == "f" and body["write"] is True):
                    raise FormatError("a share of an unknown type, or a writable file share")
                write = body["write"] is True
            writers = {
                check_id(root): [str(w) for w in ws] if ws else []
                for root, ws in dict(body["writers"]).items()
            }
            if op == "share":
                notice = body.get("notice")
                notice_id = None if notice is None else str(notice)
                return Share(node, fp, write, kind, writers, notice_id)
            return Unshare(node, fp, writers)
        if op == "link-add":
            return parse_link(body["link"], body)
        if op == "link-remove":
            return LinkRemove(check_id(body["link"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"malformed access log entry: {exc}") from None
    raise FormatError(f"unknown access log operation {op!r}")
