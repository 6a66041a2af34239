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
from csfs.crypto.envelope import KIND_DIRECTORY, MAX_VERSION
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import max_object_size, open_object, seal_object
from csfs.crypto.stream import MAX_PLAINTEXT
from csfs.errors import AuthenticationError, FormatError, UsageError
from csfs.vault.layout import check_id

MANIFEST_FORMAT = "csfs-dir-1"
MAX_NAME = 255
TYPES = ("f", "d", "l")

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
_ENTRY_FIELDS = {
    "f": {"id", "type", "mode", "mtime_ns", "size", "version"},
    "d": {"id", "type", "mode", "mtime_ns"},
    "l": {"id", "type", "mode", "mtime_ns", "target"},
}


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
        """An entry exactly as format.md 5.3 lays it out; anything else is a FormatError."""
        if not isinstance(obj, dict):
            raise FormatError("malformed directory entry: not a JSON object")
        kind = obj.get("type")
        if kind not in TYPES:
            raise FormatError(f"unknown directory entry type {str(kind)[:20]!r}")
        if set(obj) != _ENTRY_FIELDS[kind]:
            raise FormatError(
                f"malformed directory entry: fields {sorted(obj)} (type {kind!r} has exactly "
                f"{sorted(_ENTRY_FIELDS[kind])})"
            )
        target = obj.get("target", "")
        if kind == "l":
            if not isinstance(target, str) or not target or "\0" in target:
                raise FormatError("malformed directory entry: bad symlink target")
            if len(target.encode("utf-8", "surrogateescape")) > MAX_TARGET:
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
        return entry


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
        """Parse a manifest's JSON strictly (format.md 5.3); anything else is a FormatError.

        ``version`` comes from the (already verified) envelope context."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise FormatError(f"directory manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        if not 1 <= version <= MAX_VERSION:
            raise FormatError("directory manifest version out of range")
        try:
            body = json.loads(data.decode("utf-8", "surrogateescape"), object_pairs_hook=_no_dupes)
        except RecursionError:
            # Deep nesting: no valid manifest is more than 3 levels deep.
            raise FormatError("malformed directory manifest: nested too deeply") from None
        except ValueError as exc:
            raise FormatError(f"malformed directory manifest: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
            raise FormatError("unknown directory manifest format")
        if set(body) != _MANIFEST_FIELDS:
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
