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
from csfs.crypto.envelope import KIND_DIRECTORY, MAX_VERSION
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import max_object_size, open_object, seal_object
from csfs.crypto.stream import MAX_PLAINTEXT
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

# Limits on what one manifest may hold (format.md 5.3). A writer can sign any
# manifest it likes, and every reader of the directory pays for parsing it: these
# bound that cost (about 1 s of CPU and 170 MB at the limits) while staying far
# above real directories. Readers check the byte size before decrypting and the
# entry count before interpreting any entry.
MAX_MANIFEST_BYTES = 32 << 20  # plaintext JSON: 100,000 file entries with ~190-byte names
MAX_ENTRIES = 100_000
MAX_TARGET = 4095  # symlink target bytes: PATH_MAX (4096) less its NUL
MAX_READERS = 1024  # one envelope stanza per reader (MAX_STANZAS)
MAX_READER_PEM = 16 << 10
MTIME_RANGE = (-(1 << 63), (1 << 63) - 1)
MAX_MANIFEST_OBJECT = max_object_size(MAX_MANIFEST_BYTES)  # what a reader GETs at most
_MANIFEST_FIELDS = {"format", "dir_id", "mode", "mtime_ns", "readers", "writers", "entries"}
_MANIFEST_OPTIONAL = {"ctime_ns", "atime_ns", "uid", "gid", "removed"}
_ENTRY_FIELDS = {  # required, per type
    "f": {"id", "type", "mode", "mtime_ns", "size", "version"},
    "d": {"id", "type", "mode", "mtime_ns"},
    "l": {"id", "type", "mode", "mtime_ns", "target"},
    "p": {"id", "type", "mode", "mtime_ns"},
    "s": {"id", "type", "mode", "mtime_ns"},
    "c": {"id", "type", "mode", "mtime_ns", "rdev"},
    "b": {"id", "type", "mode", "mtime_ns", "rdev"},
}
_ENTRY_OPTIONAL = {"uid", "gid", "atime_ns", "ctime_ns", "xattrs"}


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
        raise NameTooLong(f"file name too long ({MAX_NAME} bytes at most): {name[:40]}...")
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
        """An entry exactly as format.md 5.3 lays it out; anything else is a FormatError."""
        if not isinstance(obj, dict):
            raise FormatError("malformed directory entry: not a JSON object")
        kind = obj.get("type")
        if kind not in TYPES:
            raise FormatError(f"unknown directory entry type {str(kind)[:20]!r}")
        required = _ENTRY_FIELDS[kind]
        if not required <= set(obj) <= required | _ENTRY_OPTIONAL:
            raise FormatError(
                f"malformed directory entry: fields {sorted(obj)} (type {kind!r} has "
                f"{sorted(required)}, optionally {sorted(_ENTRY_OPTIONAL)})"
            )
        target = obj.get("target", "")
        if kind == "l":
            if not isinstance(target, str) or not target or "\0" in target:
                raise FormatError("malformed directory entry: bad symlink target")
            try:  # strict UTF-8, like names (format.md 5.3)
                size = len(target.encode("utf-8"))
            except UnicodeEncodeError:
                raise FormatError("symlink target is not valid UTF-8") from None
            if size > MAX_TARGET:
                raise FormatError(f"symlink target longer than {MAX_TARGET} bytes")
        entry = cls(
            id=check_id(obj["id"]),
            type=kind,
            mode=json_int(obj["mode"], "mode", 0, 0o7777),
            size=json_int(obj.get("size", 0), "size", 0, MAX_PLAINTEXT),
            mtime_ns=json_int(obj["mtime_ns"], "mtime_ns", *MTIME_RANGE),
            version=json_int(obj.get("version", 0), "version", 0, MAX_VERSION),
            target=target,
        )
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


def _removed(body: dict[str, Any]) -> tuple[str, str] | None:
    """A manifest's "removed" mark (format.md 5.3): (parent id, name), or None."""
    if "removed" not in body:
        return None
    mark = body["removed"]
    if not isinstance(mark, dict) or set(mark) != {"parent", "name"}:
        raise FormatError("malformed directory manifest: removed is not {parent, name}")
    parent, name = mark["parent"], mark["name"]
    if not isinstance(parent, str) or not isinstance(name, str):
        raise FormatError("malformed directory manifest: removed holds a non-string")
    try:
        return check_id(parent), check_name(name)
    except (UsageError, FormatError) as exc:
        raise FormatError(f"malformed directory manifest: removed: {exc}") from None


def json_int(value: Any, what: str, low: int, high: int) -> int:
    """A JSON integer in [low, high]: not a bool, not a float (format.md 5.3)."""
    if type(value) is not int:
        raise FormatError(f"malformed directory manifest: {what} is not an integer")
    if not low <= value <= high:
        raise FormatError(f"malformed directory manifest: {what} out of range")
    return value


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
    # (parent dir id, name): the folder was removed from there, and a writer that adds
    # a name puts it back (format.md 5.3, 5.5); None: a live folder.
    removed: tuple[str, str] | None = None
    signer: bytes = b""  # who signed the stored manifest; not part of its plaintext

    def set_fields(self, changes: dict[str, Any]) -> None:
        """Set the folder's own fields (its times; the root's mode and owner)."""
        for key, value in changes.items():
            setattr(self, key, value)

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
        if self.removed is not None:
            body["removed"] = {"parent": self.removed[0], "name": self.removed[1]}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @classmethod
    def decode_plain(cls, data: bytes, dir_id: str, version: int) -> DirectoryManifest:
        """Parse a manifest's JSON strictly (format.md 5.3); anything else is a FormatError.

        ``version`` comes from the (already verified) envelope context."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise FormatError(f"directory manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        if not 1 <= version <= MAX_VERSION:
            raise FormatError("directory manifest version out of range")
        try:
            body = json.loads(data.decode("utf-8"), object_pairs_hook=_no_dupes)
        except RecursionError:
            # Deep nesting: no valid manifest is more than 3 levels deep.
            raise FormatError("malformed directory manifest: nested too deeply") from None
        except ValueError as exc:
            raise FormatError(f"malformed directory manifest: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
            raise FormatError("unknown directory manifest format")
        if not _MANIFEST_FIELDS <= set(body) <= _MANIFEST_FIELDS | _MANIFEST_OPTIONAL:
            raise FormatError(f"malformed directory manifest: fields {sorted(body)}")
        if body["dir_id"] != dir_id:
            raise AuthenticationError("directory manifest names another directory")
        entries, readers, writers = body["entries"], body["readers"], body["writers"]
        if not isinstance(entries, dict) or len(entries) > MAX_ENTRIES:
            raise FormatError(f"directory manifest entries: not an object of at most {MAX_ENTRIES}")
        if not isinstance(readers, list) or not 1 <= len(readers) <= MAX_READERS:
            raise FormatError(f"directory manifest readers: not a list of 1 to {MAX_READERS}")
        if not all(isinstance(r, str) and 0 < len(r) <= MAX_READER_PEM for r in readers):
            raise FormatError("directory manifest readers: not a list of public key texts")
        if writers != []:
            raise FormatError("directory manifest writers: reserved, must be []")
        try:
            names = {check_name(n): Entry.from_json(e) for n, e in entries.items()}
        except UsageError as exc:
            raise FormatError(f"malformed directory manifest: {exc}") from None
        return cls(
            dir_id,
            version,
            names,
            readers,
            [],
            json_int(body["mtime_ns"], "mtime_ns", *MTIME_RANGE),
            json_int(body["mode"], "mode", 0, 0o7777),
            _exact_int(body, "ctime_ns", MAX_TIME_NS),
            _exact_int(body, "atime_ns", MAX_TIME_NS),
            _exact_int(body, "uid", MAX_ID),
            _exact_int(body, "gid", MAX_ID),
            _removed(body),
        )

    def seal(self, vault_id: bytes, signer: Identity) -> bytes:
        """The object stored at m/<dir_id>: envelope length, envelope, payload."""
        plain = self.encode_plain()
        # What readers would reject is never written (format.md 5.3 limits).
        if len(self.entries) > MAX_ENTRIES or len(plain) > MAX_MANIFEST_BYTES:
            raise UsageError(
                f"directory is full: at most {MAX_ENTRIES} entries "
                f"and {MAX_MANIFEST_BYTES >> 20} MiB of listing per directory"
            )
        if not 1 <= self.version <= MAX_VERSION:
            raise FormatError("directory manifest version out of range")
        context = Context(KIND_DIRECTORY, vault_id, bytes.fromhex(self.dir_id), self.version)
        return seal_object(plain, self.recipients(), signer, context)

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
            raw,
            identity,
            expect,
            allowed_signers=allowed_signers,
            what="directory manifest object",
            max_length=MAX_MANIFEST_BYTES,
        )
        manifest = cls.decode_plain(plain, dir_id, env.context.version)
        manifest.signer = env.signer
        return manifest
