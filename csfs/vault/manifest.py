"""Directory manifests: names -> entries, encrypted and signed (docs/format.md 5.3).

Protects against: names and structure reaching the store (the manifest is an
encrypted payload), forged directories (the envelope signer must be a
writer), a manifest moved to another directory (the context names the
directory id), and replay of an older manifest (the context carries a version
that readers compare with the highest they have seen).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_DIRECTORY
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import open_object, seal_object
from csfs.errors import AuthenticationError, FormatError, UsageError
from csfs.vault.layout import check_id

MANIFEST_FORMAT = "csfs-dir-1"
MAX_NAME = 255
TYPES = ("f", "d", "l")


def check_name(name: str) -> str:
    """A single path component: what POSIX allows, minus what would be ambiguous.

    Names are strict UTF-8 (docs/format.md 5.3): a lone surrogate, as
    surrogateescape makes from bytes that are not UTF-8, is refused, since two
    different strings would then be the same bytes on a local disk.
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"invalid file name {name!r}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
        raise UsageError(f"file name is not valid UTF-8: {shown}") from None
    if len(encoded) > MAX_NAME:
        raise UsageError(f"file name too long ({MAX_NAME} bytes at most): {name[:40]}...")
    return name


def shown_name(name: str) -> str:
    """A local name (surrogateescape from the OS) for a message: the bytes that are not
    UTF-8 as \\x escapes, never raw."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no byte decodes to
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise FormatError("directory manifest has a duplicate key or name")
    return out


@dataclass(frozen=True)
class Entry:
    id: str
    type: str  # "f" file, "d" directory, "l" symlink
    mode: int = 0o644
    size: int = 0
    mtime_ns: int = 0
    version: int = 0  # files: the current version; 0 means empty with no objects
    target: str = ""  # symlinks only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
        }
        if self.type == "f":
            out["size"] = self.size
            out["version"] = self.version
        if self.type == "l":
            out["target"] = self.target
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        try:
            kind = obj["type"]
            if kind not in TYPES:
                raise FormatError(f"unknown directory entry type {kind!r}")
            entry = cls(
                id=check_id(obj["id"]),
                type=kind,
                mode=int(obj["mode"]),
                size=int(obj.get("size", 0)),
                mtime_ns=int(obj["mtime_ns"]),
                version=int(obj.get("version", 0)),
                target=str(obj.get("target", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed directory entry: {exc}") from None
        if entry.size < 0 or entry.version < 0 or not 0 <= entry.mode <= 0o7777:
            raise FormatError("directory entry field out of range")
        if entry.type == "f" and entry.version == 0 and entry.size != 0:
            raise FormatError("an empty file entry (version 0) has a size")
        return entry


@dataclass
class DirectoryManifest:
    dir_id: str
    version: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    readers: list[str] = field(default_factory=list)  # public key PEMs
    writers: list[str] = field(default_factory=list)  # Ed25519 public keys, hex
    mtime_ns: int = 0
    mode: int = 0o755
    signer: bytes = b""  # who signed the stored manifest; not part of its plaintext

    def copy(self) -> DirectoryManifest:
        return replace(
            self, entries=dict(self.entries), readers=list(self.readers), writers=list(self.writers)
        )

    def recipients(self) -> list[Recipient]:
        return [load_recipient_pem(p.encode(), "reader key in a manifest") for p in self.readers]

    def writer_keys(self) -> set[bytes]:
        return {bytes.fromhex(w) for w in self.writers}

    def encode_plain(self) -> bytes:
        body = {
            "format": MANIFEST_FORMAT,
            "dir_id": self.dir_id,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "readers": self.readers,
            "writers": self.writers,
            "entries": {n: e.to_json() for n, e in sorted(self.entries.items())},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @classmethod
    def decode_plain(cls, data: bytes, dir_id: str, version: int) -> DirectoryManifest:
        try:
            body = json.loads(data.decode("utf-8", "surrogateescape"), object_pairs_hook=_no_dupes)
            if body.get("format") != MANIFEST_FORMAT:
                raise FormatError("unknown directory manifest format")
            if body["dir_id"] != dir_id:
                raise AuthenticationError("directory manifest names another directory")
            entries = {check_name(n): Entry.from_json(e) for n, e in body["entries"].items()}
            return cls(
                dir_id,
                version,
                entries,
                [str(r) for r in body["readers"]],
                [str(w) for w in body["writers"]],
                int(body["mtime_ns"]),
                int(body.get("mode", 0o755)),
            )
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise FormatError(f"malformed directory manifest: {exc}") from None

    def seal(self, vault_id: bytes, signer: Identity) -> bytes:
        """The object stored at m/<dir_id>: envelope length, envelope, payload."""
        context = Context(KIND_DIRECTORY, vault_id, bytes.fromhex(self.dir_id), self.version)
        return seal_object(self.encode_plain(), self.recipients(), signer, context)

    @classmethod
    def open(
        cls,
        raw: bytes,
        vault_id: bytes,
        dir_id: str,
        identity: Identity,
        allowed_signers: set[bytes] | None,
    ) -> DirectoryManifest:
        expect = Context(KIND_DIRECTORY, vault_id, bytes.fromhex(dir_id), -1)
        env, plain = open_object(
            raw, identity, expect, allowed_signers=allowed_signers, what="directory manifest object"
        )
        manifest = cls.decode_plain(plain, dir_id, env.context.version)
        manifest.signer = env.signer
        return manifest
