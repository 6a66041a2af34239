"""The access state (docs/format.md 7.3): members, grants, writers and file shares,
as the fold of the log's operations in order.

Pure: no I/O and no keys. The same fold runs when a client reads the log and
when the owner checks an entry before appending it, so both derive the same
state from the same entries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from csfs.crypto import Recipient
from csfs.errors import FormatError, NotFound
from csfs.vault.access_records import (
    LinkAdd,
    LinkRemove,
    LogOp,
    Member,
    MemberAdd,
    MemberRemove,
    Share,
    parse_link,
)
from csfs.vault.layout import check_id


@dataclass
class AccessState:
    """The state derived from the log (7.3)."""

    members: dict[str, Member] = field(default_factory=dict)
    grants: dict[str, dict[str, str]] = field(default_factory=dict)
    writers: dict[str, list[str]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)  # share roots that are files (7.6)
    links: dict[str, LinkAdd] = field(default_factory=dict)  # share links (7.7), by id

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": sorted(self.files),
            "grants": self.grants,
            "members": {fp: base64.b64encode(m.raw).decode() for fp, m in self.members.items()},
            "writers": self.writers,
        }
        if self.links:  # 7.3: absent means none, as in states written before links
            out["links"] = {k: v.to_json() for k, v in self.links.items()}
        return out

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
            links = {check_id(k): parse_link(k, v) for k, v in obj.get("links", {}).items()}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise FormatError(f"malformed access state: {exc}") from None
        return cls(members, grants, writers, files, links)

    def copy(self) -> AccessState:
        return AccessState(
            dict(self.members),
            {n: dict(g) for n, g in self.grants.items()},
            {n: list(w) for n, w in self.writers.items()},
            set(self.files),
            dict(self.links),
        )

    def live_links(self, node: str, version: int, now_ns: int) -> list[LinkAdd]:
        """The file links to version ``version`` of file ``node`` that have not
        expired (7.7): readers of that version, as the log says, like its members.
        (Folder links name their versions in their listings, 7.8.)"""
        return [
            x for _, x in sorted(self.links.items())
            if x.kind == "f" and x.node == node and x.version == version
            and x.expires_ns > now_ns
        ]

    def by_name(self, name: str) -> Member:
        for m in self.members.values():
            if m.name == name:
                return m
        raise NotFound(f"no member named {name!r}", hint="see `csfs member ls`")

    def apply(self, op: LogOp) -> None:
        """Fold one checked operation (:func:`parse_op`) into the state."""
        if isinstance(op, LinkAdd):
            if op.link in self.links:
                raise FormatError("a link id added twice")
            self.links[op.link] = op
            return
        if isinstance(op, LinkRemove):
            self.links.pop(op.link, None)
            return
        if isinstance(op, MemberAdd):
            member = op.member
            for fp, m in self.members.items():
                if m.name == member.name and fp != member.fingerprint:
                    raise FormatError(f"two members named {member.name!r}")
            self.members[member.fingerprint] = member
        elif isinstance(op, MemberRemove):
            self.members.pop(op.member, None)
            for node in list(self.grants):
                self._ungrant(node, op.member)
            for node, ws in list(self.writers.items()):
                self.writers[node] = [w for w in ws if w != op.member]
        else:
            if isinstance(op, Share):
                if op.member not in self.members:
                    raise FormatError("a share names someone who is not a member")
                self.grants.setdefault(op.node, {})[op.member] = "w" if op.write else "r"
                if op.type == "f":
                    self.files.add(op.node)
            else:
                self._ungrant(op.node, op.member)
            for root, ws in op.writers.items():
                if ws:
                    self.writers[root] = ws
                else:
                    self.writers.pop(root, None)
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
