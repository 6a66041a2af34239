"""Directory manifests: names -> entries, encrypted and signed (docs/format.md 5.3).

Protects against: names and structure reaching the store (the manifest is an
encrypted payload), forged directories (the envelope signer must be a
writer), a manifest moved to another directory (the context names the
directory id), and replay of an older manifest (the context carries a version
that readers compare with the highest they have seen).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_DIRECTORY
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import open_object, seal_object
from csfs.errors import (
    AuthenticationError,
    FormatError,
    NameTooLong,
    UsageError,
    XattrNoSpace,
    XattrTooBig,
    XattrUnsupported,
)
from csfs.vault.layout import check_id

MANIFEST_FORMAT = "csfs-dir-1"
MAX_NAME = 255
# f file, d directory, l symlink, p FIFO, s socket, c/b character/block device
TYPES = ("f", "d", "l", "p", "s", "c", "b")
DEVICE_TYPES = ("c", "b")
MAX_ID = 0xFFFF_FFFE  # uid/gid: 32 bits, minus (uid_t)-1, which means "no change"
MAX_TIME_NS = (1 << 63) - 1
MAX_RDEV = 0xFFFF_FFFF
# Extended attributes (format.md 5.3): user.* only, bounded per entry.
XATTR_PREFIX = "user."
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 65536
MAX_XATTR_TOTAL = 65536


def check_name(name: str) -> str:
    """A single path component: what POSIX allows, minus what would be ambiguous."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"invalid file name {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise NameTooLong(f"file name too long ({MAX_NAME} bytes at most): {name[:40]}...")
    return name


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
    # Optional metadata (format.md 5.3); None: absent, as written by older code.
    uid: int | None = None  # None: the mounting user's
    gid: int | None = None
    atime_ns: int | None = None  # None: mtime_ns
    ctime_ns: int | None = None  # None: mtime_ns
    rdev: int = 0  # device nodes only
    xattrs: tuple[tuple[str, bytes], ...] = ()  # sorted by name; user.* only

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
        if self.type in DEVICE_TYPES:
            out["rdev"] = self.rdev
        for key in ("uid", "gid", "atime_ns", "ctime_ns"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.xattrs:
            out["xattrs"] = {n: base64.b64encode(v).decode("ascii") for n, v in self.xattrs}
        return out

    def xattr_dict(self) -> dict[str, bytes]:
        return dict(self.xattrs)

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
        try:
            return replace(entry, **_metadata_from_json(obj, kind))
        except UsageError as exc:
            raise FormatError(f"malformed directory entry: {exc.message}") from None


def _exact_int(obj: dict[str, Any], key: str, high: int) -> int | None:
    """An optional JSON integer in [0, high]: not a bool, not a float."""
    if key not in obj:
        return None
    value = obj[key]
    if type(value) is not int or not 0 <= value <= high:
        raise FormatError(f"directory entry field {key!r} is not an integer in range")
    return value


def _metadata_from_json(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The optional fields of an entry (format.md 5.3), checked strictly."""
    out: dict[str, Any] = {
        "uid": _exact_int(obj, "uid", MAX_ID),
        "gid": _exact_int(obj, "gid", MAX_ID),
        "atime_ns": _exact_int(obj, "atime_ns", MAX_TIME_NS),
        "ctime_ns": _exact_int(obj, "ctime_ns", MAX_TIME_NS),
    }
    rdev = _exact_int(obj, "rdev", MAX_RDEV)
    if (rdev is not None) != (kind in DEVICE_TYPES):
        raise FormatError("rdev is required on device entries and only there")
    out["rdev"] = rdev or 0
    raw = obj.get("xattrs")
    if raw is not None:
        if type(raw) is not dict or not raw:
            raise FormatError("xattrs is not a non-empty object")
        values = []
        for name, text in raw.items():
            if type(text) is not str:
                raise FormatError("an xattr value is not a string")
            try:
                value = base64.b64decode(text.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                raise FormatError("an xattr value is not base64") from None
            if base64.b64encode(value).decode("ascii") != text:
                raise FormatError("an xattr value is not canonical base64")
            values.append((name, value))
        out["xattrs"] = check_xattrs(values)
    return out


def check_xattr_name(name: str) -> str:
    """A storable extended attribute name: user.*, strict UTF-8, bounded (format.md 5.3)."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError("extended attribute name is not UTF-8") from None
    if not name.startswith(XATTR_PREFIX) or size == len(XATTR_PREFIX) or "\0" in name:
        raise XattrUnsupported(f"unsupported extended attribute name {name[:40]!r}")
    if size > MAX_XATTR_NAME:
        raise NameTooLong(f"extended attribute name too long ({MAX_XATTR_NAME} bytes at most)")
    return name


def check_xattrs(pairs: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Sorted, checked (name, value) pairs; raises if any limit is broken."""
    total = 0
    for name, value in pairs:
        check_xattr_name(name)
        if len(value) > MAX_XATTR_VALUE:
            raise XattrTooBig(f"extended attribute value over {MAX_XATTR_VALUE} bytes")
        total += len(name.encode("utf-8")) + len(value)
    if total > MAX_XATTR_TOTAL:
        raise XattrNoSpace(f"extended attributes over {MAX_XATTR_TOTAL} bytes on one entry")
    if len({n for n, _ in pairs}) != len(pairs):
        raise FormatError("duplicate extended attribute name")
    return tuple(sorted(pairs))


@dataclass
class DirectoryManifest:
    dir_id: str
    version: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    readers: list[str] = field(default_factory=list)  # public key PEMs
    writers: list[str] = field(default_factory=list)  # Ed25519 public keys, hex
    mtime_ns: int = 0
    mode: int = 0o755
    # The directory's own times (format.md 5.3); None: mtime_ns, as older code wrote.
    ctime_ns: int | None = None
    atime_ns: int | None = None
    # The vault root's owner (other folders' owners are in their entries); None: the
    # mounting user's.
    uid: int | None = None
    gid: int | None = None
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
        for key in ("ctime_ns", "atime_ns", "uid", "gid"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
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
                _exact_int(body, "ctime_ns", MAX_TIME_NS),
                _exact_int(body, "atime_ns", MAX_TIME_NS),
                _exact_int(body, "uid", MAX_ID),
                _exact_int(body, "gid", MAX_ID),
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
