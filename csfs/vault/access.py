"""Members, share notices and the hash-linked access log (docs/format.md 7).

Who may read and write what is derived from the log alone. Each entry is
signed by the owner, names the hash of the one before it, and is created
with If-None-Match: the store can delete or roll back entries but cannot
forge, edit, reorder or fork them, and a client that remembers the head it
last saw reports any of that. Entry bodies are encrypted to the current
members, so the store learns neither names nor the share graph; the hash
chain and signatures stay verifiable without opening a body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_LOG, KIND_NOTICE
from csfs.crypto.keys import load_recipient_pem, public_key_file
from csfs.crypto.sealed import max_object_size, open_object, seal_object
from csfs.crypto.signing import sign_blob, verify_blob
from csfs.errors import (
    AccessDenied,
    AuthenticationError,
    FormatError,
    KeyFileError,
    NoMatchingKeyError,
    NotFound,
    PreconditionFailed,
    UsageError,
)
from csfs.store import Store
from csfs.vault.layout import MAX_SIGNED_BLOB, VaultHeader, check_id, read_limited
from csfs.vault.manifest import check_name
from csfs.vault.state import VaultState

MEMBER_DOMAIN = b"csfs v1 member record\0"
LOG_DOMAIN = b"csfs v1 log entry\0"
MEMBER_FORMAT = "csfs-member-1"
LOG_FORMAT = "csfs-log-1"
NOTICE_FORMAT = "csfs-share-1"
# A notice's JSON is a few hundred bytes; a reader GETs no more than this (format.md 7.4).
MAX_NOTICE_BYTES = 4096
MAX_NOTICE_OBJECT = max_object_size(MAX_NOTICE_BYTES)
OPS = ("member-add", "member-remove", "share", "unshare")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LOG_KEY = re.compile(r"a/([0-9a-f]{16})")


def require_owner(is_owner: bool) -> None:
    if not is_owner:
        raise AccessDenied(
            "only the vault owner can change members and shares",
            hint="ask the owner to run this command",
        )


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


@dataclass
class AccessState:
    """The state derived from the log (7.3)."""

    members: dict[str, Member] = field(default_factory=dict)
    grants: dict[str, dict[str, str]] = field(default_factory=dict)
    writers: dict[str, list[str]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)  # share roots that are files (7.6)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": sorted(self.files),
            "grants": self.grants,
            "members": {fp: base64.b64encode(m.raw).decode() for fp, m in self.members.items()},
            "writers": self.writers,
        }

    @classmethod
    def from_json(cls, obj: Any, vault_id: str, owner: bytes) -> AccessState:
        try:
            members = {}
            for fp, raw in obj["members"].items():
                member = Member.decode(base64.b64decode(raw, validate=True), vault_id, owner)
                if member.fingerprint != fp:
                    raise FormatError("member state names a record under another fingerprint")
                members[fp] = member
            grants = {
                check_id(n): {str(fp): _mode(m) for fp, m in g.items()}
                for n, g in obj["grants"].items()
            }
            writers = {check_id(n): [str(fp) for fp in w] for n, w in obj["writers"].items()}
            files = {check_id(n) for n in obj.get("files", [])}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise FormatError(f"malformed access state: {exc}") from None
        return cls(members, grants, writers, files)

    def copy(self) -> AccessState:
        return AccessState(
            dict(self.members),
            {n: dict(g) for n, g in self.grants.items()},
            {n: list(w) for n, w in self.writers.items()},
            set(self.files),
        )

    def by_name(self, name: str) -> Member:
        for m in self.members.values():
            if m.name == name:
                return m
        raise NotFound(f"no member named {name!r}", hint="see `csfs member ls`")

    def apply(self, body: dict[str, Any], vault_id: str, owner: bytes) -> None:
        op = body.get("op")
        try:
            if op == "member-add":
                member = Member.decode(
                    base64.b64decode(body["record"], validate=True), vault_id, owner
                )
                for fp, m in self.members.items():
                    if m.name == member.name and fp != member.fingerprint:
                        raise FormatError(f"two members named {member.name!r}")
                self.members[member.fingerprint] = member
            elif op == "member-remove":
                fp = str(body["member"])
                self.members.pop(fp, None)
                for node in list(self.grants):
                    self._ungrant(node, fp)
                for node, ws in list(self.writers.items()):
                    self.writers[node] = [w for w in ws if w != fp]
            elif op in ("share", "unshare"):
                node, fp = check_id(body["node"]), str(body["member"])
                if op == "share":
                    if fp not in self.members:
                        raise FormatError("a share names someone who is not a member")
                    kind = body.get("type", "d")
                    if kind not in ("d", "f") or (kind == "f" and body["write"] is True):
                        raise FormatError("a share of an unknown type, or a writable file share")
                    self.grants.setdefault(node, {})[fp] = "w" if body["write"] is True else "r"
                    if kind == "f":
                        self.files.add(node)
                else:
                    self._ungrant(node, fp)
                for root, ws in dict(body["writers"]).items():
                    if ws:
                        self.writers[check_id(root)] = [str(w) for w in ws]
                    else:
                        self.writers.pop(check_id(root), None)
            else:
                raise FormatError(f"unknown access log operation {op!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"malformed access log entry: {exc}") from None
        self.writers = {n: w for n, w in self.writers.items() if w}
        self.files &= set(self.grants)

    def _ungrant(self, node: str, fp: str) -> None:
        grant = self.grants.get(node)
        if grant is not None:
            grant.pop(fp, None)
            if not grant:
                del self.grants[node]

    def is_root(self, node: str) -> bool:
        return node in self.grants

    def recipients(self, owner: Recipient) -> list[Recipient]:
        return [owner, *(m.recipient for m in self.members.values())]


def _mode(m: Any) -> str:
    if m not in ("r", "w"):
        raise ValueError(f"bad grant {m!r}")
    return str(m)


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


class Pins:
    """Member keys this user has seen, per vault and name (trust on first use)."""

    def __init__(self, config_dir: str | None) -> None:
        self.path = os.path.join(config_dir, "pins.json") if config_dir else None
        self.lock = threading.Lock()
        self.dirty = False
        self.data: dict[str, dict[str, str]] = {}
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError):
                self.data = {}

    def get(self, vault_id: str, name: str) -> str | None:
        return self.data.get(vault_id, {}).get(name)

    def pin(self, vault_id: str, name: str, fingerprint: str) -> None:
        with self.lock:
            if self.data.setdefault(vault_id, {}).get(name) != fingerprint:
                self.data[vault_id][name] = fingerprint
                self.dirty = True

    def forget(self, vault_id: str, name: str) -> None:
        with self.lock:
            if self.data.get(vault_id, {}).pop(name, None) is not None:
                self.dirty = True

    def save(self) -> None:
        with self.lock:
            if not self.path or not self.dirty:
                return
            directory = os.path.dirname(self.path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pins-")
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            self.dirty = False


def default_config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "csfs")


class AccessLog:
    """Reads, verifies and appends to a vault's access log; keeps the derived state.

    The verified head, the derived state and (for members) the share notices
    are remembered in the client's vault state, so a refresh fetches only new
    entries: one LIST, one GET of the remembered head, one GET per new entry.
    """

    def __init__(
        self, store: Store, header: VaultHeader, identity: Identity, state: VaultState, pins: Pins
    ) -> None:
        self.store = store
        self.header = header
        self.identity = identity
        self.state = state
        self.pins = pins
        self.me = identity.recipient.fingerprint
        self.is_owner = identity.recipient.verify_key_bytes == header.owner
        saved = state.access_for(self.me)
        self.seq = int(saved.get("seq", 0))
        self.head = str(saved.get("head", header.digest))
        self.joined = bool(saved.get("joined", self.is_owner))
        self.current = (
            AccessState.from_json(saved["state"], header.vault_id, header.owner)
            if "state" in saved
            else AccessState()
        )
        # The notices name the shared folders: kept on disk only sealed to this key
        # (docs/design.md: no names on the local disk). A file from before that
        # holds them in clear ("notices") is read once and rewritten sealed.
        self._sealed_notices: tuple[str, str] | None = None  # (notices JSON, sealed text)
        self.notices = {n["node"]: Notice(**n) for n in self._open_notices(saved)}
        self._migrate = "notices" in saved
        self.changed_keys: dict[str, tuple[str, str]] = {}  # name -> (pinned fp, logged fp)
        # The remembered part of the chain is verified again once per open (each
        # command, each mount start: format.md 7.2), so a changed old entry is found
        # by the next command, not only by `csfs log` or fsck.
        self.chain_checked = False
        self.present: set[int] = set()  # seqs in the store at the last refresh
        self.planted: set[int] = set()  # of those, objects not signed by the owner: ignored

    # -- reading ---------------------------------------------------------------------

    def _list(self) -> list[int]:
        """The seqs present in the store, ascending. Numbers need not be contiguous:
        a deleted owner entry is caught by the next one's ``prev`` (format.md 7.2)."""
        seqs = sorted(
            int(m.group(1), 16)
            for info in self.store.list("a/")
            if (m := _LOG_KEY.fullmatch(info.key))
        )
        if (seqs[-1] if seqs else 0) < self.seq:
            raise AuthenticationError(
                f"the access log was rolled back: this client saw {self.seq} entries, "
                f"the store has {seqs[-1] if seqs else 0} (tampering)"
            )
        self.present = set(seqs)
        return seqs

    def _fetch(self, seq: int, prev: str, after: int) -> LogEntry | None:
        """Entry ``seq``, which must follow the owner entry ``after`` (hash ``prev``);
        None for an object not signed by the owner: a member or the store planted it,
        and it is ignored (format.md 7.2), never a reason to stop."""
        try:
            raw = read_limited(self.store, log_key(seq), MAX_SIGNED_BLOB, "access log entry")
        except NotFound:
            raise AuthenticationError(f"access log entry {seq} vanished (tampering)") from None
        except FormatError:
            # Larger than any entry the owner can sign: planted, like any other junk.
            self.planted.add(seq)
            return None
        try:
            owner_signed = verify_blob(raw, LOG_DOMAIN, "access log entry")[1] == self.header.owner
        except (AuthenticationError, FormatError):
            owner_signed = False
        if not owner_signed:
            self.planted.add(seq)
            return None
        entry = LogEntry.decode(raw, self.header)
        if entry.seq != seq:
            # A copy of an owner entry put under another number: anyone who can write
            # the bucket can make one, so it is planted, not a reason to stop. (An
            # entry moved away from its own number still breaks the next link.)
            self.planted.add(seq)
            return None
        if entry.prev != prev:
            if seq != after + 1:
                raise AuthenticationError(
                    f"the access log has a gap: an entry after {after} was removed or "
                    "replaced (tampering)"
                )
            raise AuthenticationError(
                f"access log entry {seq} does not follow entry {after} "
                "(entries were edited, removed or reordered)"
            )
        return entry

    def _chain(self, seqs: list[int], prev: str, after: int) -> list[LogEntry]:
        out = []
        for seq in seqs:
            entry = self._fetch(seq, prev, after)
            if entry is not None:
                out.append(entry)
                prev, after = entry.hash, entry.seq
        return out

    def refresh(self) -> AccessState:
        return self.refresh_to(None)

    def refresh_to(self, limit: int | None) -> AccessState:
        """Read new entries (up to ``limit``, for tests and vectors) and apply them."""
        self.planted = set()
        seqs = self._list()
        if limit is not None:
            seqs = [s for s in seqs if s <= limit]
        if self.seq:
            try:
                raw = read_limited(
                    self.store, log_key(self.seq), MAX_SIGNED_BLOB, "access log entry"
                )
            except NotFound:
                raise AuthenticationError(
                    f"the access log was rolled back: entry {self.seq}, which this client "
                    "saw, is gone (tampering)"
                ) from None
            if hashlib.sha256(raw).hexdigest() != self.head:
                raise _rewritten(self.seq)
        if self.seq and not self.chain_checked:
            old = self._chain([s for s in seqs if s <= self.seq], self.header.digest, 0)
            if not old or old[-1].hash != self.head:
                raise _rewritten(self.seq)
        self.chain_checked = True
        # The whole chain first, then the bodies (format.md 7.2).
        new = self._chain([s for s in seqs if s > self.seq], self.head, self.seq)
        for entry in new:
            self._apply(entry)
            self.seq, self.head = entry.seq, entry.hash
        if seqs or self._migrate:
            self._check_pins()
            self._save()
        return self.current

    def verify_all(self) -> list[tuple[LogEntry, dict[str, Any] | None]]:
        """Fetch and check the whole chain; the bodies this key can open, else None.
        Objects not signed by the owner are skipped and left in ``planted``."""
        self.planted = set()
        entries = self._chain(self._list(), self.header.digest, 0)
        out: list[tuple[LogEntry, dict[str, Any] | None]] = []
        for entry in entries:
            if entry.seq == self.seq and entry.hash != self.head:
                raise _rewritten(entry.seq)
            try:
                body: dict[str, Any] | None = entry.open(self.identity, self.header)
            except NoMatchingKeyError:
                body = None
            out.append((entry, body))
        return out

    def _apply(self, entry: LogEntry) -> None:
        try:
            body = entry.open(self.identity, self.header)
        except NoMatchingKeyError:
            if self.is_owner:
                raise AuthenticationError(
                    f"access log entry {entry.seq} is not readable by the owner"
                ) from None
            if self.joined:
                # Bodies are wrapped to every current member: we were removed.
                self.joined = False
                self.current = AccessState()
                self.notices = {}
            return
        if not self.joined:
            member_fp = _added_fp(body, self.header)
            if member_fp != self.me:
                return
            self.current = AccessState.from_json(
                body["state"], self.header.vault_id, self.header.owner
            )
            self.joined = True
            return
        self.current.apply(body, self.header.vault_id, self.header.owner)
        if self.is_owner:
            return
        if body["op"] == "share" and body["member"] == self.me:
            self._read_notice(str(body["notice"]), entry.seq, body)
        elif body["op"] in ("unshare", "member-remove"):
            for node in list(self.notices):
                if self.me not in self.current.grants.get(node, {}):
                    del self.notices[node]

    def _read_notice(self, notice_id: str, seq: int, body: dict[str, Any]) -> None:
        try:
            raw = read_limited(self.store, notice_key(notice_id), MAX_NOTICE_OBJECT, "share notice")
        except NotFound:
            raise AuthenticationError("a share notice is missing from the store") from None
        try:
            notice = open_notice(raw, notice_id, seq, self.header, self.identity)
        except NoMatchingKeyError:
            raise AuthenticationError("a share notice is not sealed to its grantee") from None
        if (
            notice.node != body["node"]
            or notice.write != (body["write"] is True)
            or notice.type != body.get("type", "d")
        ):
            raise AuthenticationError("a share notice does not match its log entry")
        prior = self.notices.get(notice.node)
        if prior is not None and prior.shown:
            shown = prior.shown  # a new grant on a share already shown keeps its name
        else:
            taken = {n.shown for n in self.notices.values()}
            shown, n = notice.name, 2
            while shown in taken:
                shown, n = f"{notice.name} ({n})", n + 1
        self.notices[notice.node] = replace(notice, shown=shown)

    def _check_pins(self) -> None:
        """Trust on first use: pin new names; remember names whose key changed."""
        self.changed_keys = {}
        for m in self.current.members.values():
            pinned = self.pins.get(self.header.vault_id, m.name)
            if pinned is None:
                self.pins.pin(self.header.vault_id, m.name, m.fingerprint)
            elif pinned != m.fingerprint:
                self.changed_keys[m.name] = (pinned, m.fingerprint)
        self.pins.save()

    def _local_context(self) -> Context:
        # Never a store object: node id zero, signed by this key, not by the owner.
        return Context(KIND_NOTICE, self.header.vault_id_bytes, bytes(16), self.seq)

    def _open_notices(self, saved: dict[str, Any]) -> list[dict[str, Any]]:
        if "notices" in saved:
            return list(saved["notices"])
        sealed = saved.get("sealed_notices")
        if not sealed:
            return []
        try:
            _, plain = open_object(
                base64.b64decode(sealed, validate=True),
                self.identity,
                self._local_context(),
                allowed_signers={self.identity.recipient.verify_key_bytes},
                what="saved share notices",
            )
            notices = json.loads(plain)
        except (AuthenticationError, FormatError, ValueError):
            # Damaged local state: the notices are read again from the log.
            self.seq, self.head, self.current = 0, self.header.digest, AccessState()
            return []
        self._sealed_notices = (plain.decode(), str(sealed))
        return list(notices)

    def _seal_notices(self) -> str:
        if not self.notices:
            return ""
        plain = _json([n.to_json() for n in self.notices.values()]).decode()
        # Sealed again only when they change: most commands add no notice.
        if self._sealed_notices is None or self._sealed_notices[0] != plain:
            raw = seal_object(
                plain.encode(), [self.identity.recipient], self.identity, self._local_context()
            )
            self._sealed_notices = (plain, base64.b64encode(raw).decode())
        return self._sealed_notices[1]

    def _save(self) -> None:
        self.state.set_access(
            self.me,
            {
                "seq": self.seq,
                "head": self.head,
                "joined": self.joined,
                "state": self.current.to_json(),
                "sealed_notices": self._seal_notices(),
            },
        )
        self._migrate = False
        self.state.save()

    # -- decisions ---------------------------------------------------------------------

    def trusted(self, fp: str) -> Member | None:
        """The member with this fingerprint, unless its key changed under a pinned name."""
        m = self.current.members.get(fp)
        if m is None or m.name in self.changed_keys:
            return None
        return m

    @property
    def file_roots(self) -> set[str]:
        return self.current.files

    def writer_keys(self, root: str | None) -> set[bytes]:
        keys = {self.header.owner}
        for fp in self.current.writers.get(root, []) if root else []:
            m = self.trusted(fp)
            if m is not None:
                keys.add(m.recipient.verify_key_bytes)
        return keys

    # -- appending (the owner) -----------------------------------------------------------

    def append(
        self,
        make: Callable[[AccessState, int], tuple[dict[str, Any], list[Recipient]]],
    ) -> tuple[int, dict[str, Any]]:
        """Append one entry. ``make(state, seq)`` returns its body and any extra
        recipients; it runs again if another writer appended first."""
        require_owner(self.is_owner)
        for _ in range(20):
            self.refresh()
            seq = self.seq + 1
            while seq in self.present:  # taken by an object someone planted: skip it
                seq += 1
            if self.seq == 0:
                self.genesis()
                continue
            body, extra = make(self.current.copy(), seq)
            after = self.current.copy()
            after.apply(body, self.header.vault_id, self.header.owner)
            recipients = list(dict.fromkeys([*after.recipients(self.identity.recipient), *extra]))
            if body["op"] == "member-add":
                body = {**body, "state": after.to_json()}
            if self._put(seq, body, recipients):
                self.refresh()
                return seq, body
        raise UsageError("gave up appending to the access log: too many concurrent changes")

    def genesis(self, name: str = "owner") -> None:
        """Entry 1: the owner's own member record, so that its name is known."""
        me = Member.create(
            self.identity, self.header.vault_id, name, public_key_file(self.identity)
        )
        state = AccessState()
        body: dict[str, Any] = {"op": "member-add", "record": base64.b64encode(me.raw).decode()}
        state.apply(body, self.header.vault_id, self.header.owner)
        self._put(1, {**body, "state": state.to_json()}, [self.identity.recipient])
        self.refresh()

    def _put(self, seq: int, body: dict[str, Any], recipients: list[Recipient]) -> bool:
        context = Context(KIND_LOG, self.header.vault_id_bytes, bytes(16), seq)
        sealed = seal_object(_json(body), recipients, self.identity, context)
        obj = {
            "body": base64.b64encode(sealed).decode(),
            "format": LOG_FORMAT,
            "prev": self.head,
            "seq": seq,
            "time_ns": time.time_ns(),
            "vault_id": self.header.vault_id,
        }
        raw = sign_blob(self.identity.signing_key, LOG_DOMAIN, _json(obj))
        try:
            self.store.put(log_key(seq), raw, if_none_match=True)
        except PreconditionFailed:
            return False  # another writer took this seq: re-read the log and try the next
        return True

    def owner_name(self) -> str:
        for m in self.current.members.values():
            if m.recipient.verify_key_bytes == self.header.owner:
                return m.name
        return "owner"


def _rewritten(seq: int) -> AuthenticationError:
    return AuthenticationError(
        f"access log entry {seq} was rewritten since this client saw it (tampering)"
    )


def _added_fp(body: dict[str, Any], header: VaultHeader) -> str | None:
    if body.get("op") != "member-add":
        return None
    try:
        raw = base64.b64decode(body["record"], validate=True)
    except (KeyError, ValueError, TypeError):
        raise FormatError("malformed access log entry: bad member record") from None
    return Member.decode(raw, header.vault_id, header.owner).fingerprint


def describe_entry(body: dict[str, Any] | None, names: dict[str, str]) -> str:
    """One line for `csfs log`; node ids are shown, never paths (the log has none)."""
    if body is None:
        return "(not readable by your key)"
    op = body["op"]
    if op == "member-add":
        m = Member.decode(base64.b64decode(body["record"]), _record_vault(body), None)
        return f"member-add {m.name} {m.fingerprint}"
    who = names.get(str(body.get("member")), str(body.get("member")))
    if op == "member-remove":
        return f"member-remove {who}"
    mode = " (write)" if body.get("write") else ""
    what = "file" if body.get("type") == "f" else "folder"
    return f"{op} {what} {str(body['node'])[:12]} {'with' if op == 'share' else 'from'} {who}{mode}"


def _record_vault(body: dict[str, Any]) -> str:
    payload, _ = verify_blob(base64.b64decode(body["record"]), MEMBER_DOMAIN, "member record")
    return str(_loads(payload, "member record")["vault_id"])
