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
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_LOG, KIND_NOTICE
from csfs.crypto.keys import public_key_file
from csfs.crypto.sealed import open_object, seal_object
from csfs.crypto.signing import sign_blob, verify_blob
from csfs.errors import (
    AccessDenied,
    AuthenticationError,
    ContentionError,
    FormatError,
    NoMatchingKeyError,
    NotFound,
    PreconditionFailed,
)
from csfs.store import Store

# The records, the fold and the pins live in their own modules; the names other
# modules (and the vector generator) import from here are re-exported.
from csfs.vault.access_records import (
    LOG_DOMAIN,
    LOG_FORMAT,
    MAX_NOTICE_BYTES,
    MAX_NOTICE_OBJECT,
    MEMBER_DOMAIN,
    MEMBER_FORMAT,
    NOTICE_FORMAT,
    OPS,
    LogEntry,
    LogOp,
    Member,
    MemberAdd,
    MemberRemove,
    Notice,
    Share,
    Unshare,
    _json,
    _loads,
    check_member_name,
    log_key,
    notice_key,
    open_notice,
    parse_op,
    seal_notice,
)
from csfs.vault.access_state import AccessState
from csfs.vault.layout import MAX_SIGNED_BLOB, VaultHeader, read_limited
from csfs.vault.pins import Pins, default_config_dir
from csfs.vault.state import VaultState

__all__ = [
    "LOG_DOMAIN",
    "LOG_FORMAT",
    "MAX_NOTICE_BYTES",
    "MAX_NOTICE_OBJECT",
    "MEMBER_DOMAIN",
    "MEMBER_FORMAT",
    "NOTICE_FORMAT",
    "OPS",
    "AccessLog",
    "AccessState",
    "LogEntry",
    "LogOp",
    "Member",
    "MemberAdd",
    "MemberRemove",
    "Notice",
    "Pins",
    "Share",
    "Unshare",
    "_json",
    "_loads",
    "check_member_name",
    "default_config_dir",
    "log_key",
    "notice_key",
    "open_notice",
    "parse_op",
    "require_owner",
    "seal_notice",
]

_LOG_KEY = re.compile(r"a/([0-9a-f]{16})")


def require_owner(is_owner: bool) -> None:
    if not is_owner:
        raise AccessDenied(
            "only the vault owner can change members and shares",
            hint="ask the owner to run this command",
        )


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
        op = parse_op(body, self.header.vault_id, self.header.owner)
        self.current.apply(op)
        if self.is_owner:
            return
        if isinstance(op, Share) and op.member == self.me:
            if op.notice is None:
                raise FormatError("malformed access log entry: a share without its notice")
            self._read_notice(op.notice, entry.seq, op)
        elif isinstance(op, (Unshare, MemberRemove)):
            for node in list(self.notices):
                if self.me not in self.current.grants.get(node, {}):
                    del self.notices[node]

    def _read_notice(self, notice_id: str, seq: int, op: Share) -> None:
        try:
            raw = read_limited(self.store, notice_key(notice_id), MAX_NOTICE_OBJECT, "share notice")
        except NotFound:
            raise AuthenticationError("a share notice is missing from the store") from None
        try:
            notice = open_notice(raw, notice_id, seq, self.header, self.identity)
        except NoMatchingKeyError:
            raise AuthenticationError("a share notice is not sealed to its grantee") from None
        if notice.node != op.node or notice.write != op.write or notice.type != op.type:
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
            after.apply(parse_op(body, self.header.vault_id, self.header.owner))
            recipients = list(dict.fromkeys([*after.recipients(self.identity.recipient), *extra]))
            if body["op"] == "member-add":
                body = {**body, "state": after.to_json()}
            if self._put(seq, body, recipients):
                self.refresh()
                return seq, body
        raise ContentionError("gave up appending to the access log: too many concurrent changes")

    def genesis(self, name: str = "owner") -> None:
        """Entry 1: the owner's own member record, so that its name is known."""
        me = Member.create(
            self.identity, self.header.vault_id, name, public_key_file(self.identity)
        )
        state = AccessState()
        body: dict[str, Any] = {"op": "member-add", "record": base64.b64encode(me.raw).decode()}
        state.apply(parse_op(body, self.header.vault_id, self.header.owner))
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
