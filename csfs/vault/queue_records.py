"""The records of the upload queue on disk: a sealed version waiting to commit
(Record), a queued namespace change (NamespaceOp), and how both are sealed to
the mount's own key and written atomically (docs/format.md 9)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Identity
from csfs.crypto.envelope import KIND_OFFLINE, Context
from csfs.crypto.sealed import open_object, seal_object
from csfs.vault.layout import content_key, envelope_key
from csfs.vault.manifest import Entry

CHAIN_MAX = 64  # earlier versions of one file a record may replace (see Record.chain)


@dataclass
class Record:
    """A sealed version in the queue: where it commits, and what it replaces."""

    seq: int
    file_id: str
    version: int  # 0: an empty file, no objects
    base_version: int  # the version this one replaces; a mismatch at commit is a conflict
    parent_id: str
    name: str
    size: int
    mode: int
    mtime_ns: int
    deleted: bool = False  # unlinked locally: upload nothing, commit nothing
    ctime_ns: int = 0  # 0: keep the entry's (records written by older code have neither)
    atime_ns: int = 0
    # Earlier versions of this file sealed by this queue that may be what the store
    # holds at commit: one writer's queued versions never conflict with each other,
    # even when a crash lost the record of the one in between.
    chain: list[int] = field(default_factory=list)
    # [node id, version] of the entry that a rename of this not yet committed file
    # replaced at its name; the commit replaces it in the same manifest switch.
    replaces: list[Any] | None = None

    def own_versions(self) -> set[int]:
        return {self.base_version, self.version, *self.chain}

    @property
    def keys(self) -> list[str]:
        if self.version == 0:
            return []
        return [content_key(self.file_id, self.version), envelope_key(self.file_id, self.version)]


@dataclass
class NamespaceOp:
    """A namespace change made while the store was unreachable (or while earlier
    ones still waited): applied in order before the next upload commit, each as
    conditional as its online form (format.md 5.5, 8.1)."""

    seq: int
    kind: str  # mkdir | remove | rename | setattr | dirattr
    node_id: str
    parent_id: str
    name: str
    # The entry as the mount shows it after the change (Entry.to_json): the new
    # folder, the moved entry, the changed entry; None for a removal.
    entry: dict[str, Any] | None = None
    version: int | None = None  # remove: the file version seen (None: a folder)
    dst_parent_id: str = ""  # rename
    dst_name: str = ""
    replaces: list[Any] | None = None  # rename: [node id, version] seen at the target
    readers: list[str] = field(default_factory=list)  # mkdir: the new folder's readers
    fields: list[str] = field(default_factory=list)  # setattr: the entry fields changed
    # dirattr: fields of the folder's own manifest set (times; the root's mode and owner)
    manifest: dict[str, Any] = field(default_factory=dict)


class RecordSealer:
    """Seals queue records to the mount's own key and opens them: the local disk
    holds no plaintext name, and a record no other key signed."""

    def __init__(self, vault_id: bytes, identity: Identity) -> None:
        self.vault_id = vault_id
        self.identity = identity

    def context(self, file_id: str) -> Context:
        return Context(KIND_OFFLINE, self.vault_id, bytes.fromhex(file_id), 0)

    def seal(self, file_id: str, body: dict[str, Any]) -> bytes:
        me = self.identity
        return seal_object(json.dumps(body).encode(), [me.recipient], me, self.context(file_id))

    def open(self, path: str) -> dict[str, Any]:
        file_id = os.path.basename(path).split(".")[0].split("-")[0]
        with open(path, "rb") as f:
            raw = f.read()
        me = self.identity
        _, data = open_object(
            raw,
            me,
            self.context(file_id),
            allowed_signers={me.recipient.verify_key_bytes},
            what="an upload queue record",
        )
        body: dict[str, Any] = json.loads(data)
        return body


def with_content(meta: Entry, r: Record) -> Entry:
    """``meta`` (an entry's metadata) pointing at the queued version ``r``."""
    return replace(
        meta,
        mode=r.mode,
        size=r.size,
        mtime_ns=r.mtime_ns,
        version=r.version,
        ctime_ns=r.ctime_ns or meta.ctime_ns,
        atime_ns=r.atime_ns or meta.atime_ns,
    )


def write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
