"""A folder link's listing (docs/format.md 7.8): the paths, sizes and one version of
each file below a linked folder, with presigned URLs of that version's objects.

Protects against: a listing edited or forged by the store or a member (it is
sealed to the owner and the link's key and signed by the owner, and its context
names the link), a listing moved to another link (the context's node id, and the
`link` inside), and paths that could escape or alias (each name checked as a
manifest's, every parent listed, no path or file twice). Read strictly: anything
off the spec is a FormatError before any of it is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from csfs.crypto import Context, Identity, Recipient
from csfs.crypto.envelope import KIND_LISTING, MAX_VERSION
from csfs.crypto.sealed import max_object_size, open_object, seal_object
from csfs.crypto.stream import MAX_PLAINTEXT
from csfs.errors import AuthenticationError, FormatError, UsageError
from csfs.vault.layout import check_id
from csfs.vault.manifest import MTIME_RANGE, check_name

LISTING_FORMAT = "csfs-folder-1"
MAX_ITEMS = 10_000
MAX_LISTING_BYTES = 32 << 20
MAX_LISTING_OBJECT = max_object_size(MAX_LISTING_BYTES)
MAX_DEPTH = 64  # names in a path
MAX_PATH = 4096  # bytes of UTF-8
MAX_URL = 4096
_FILE_KEYS = {"envelope", "mtime_ns", "node", "payload", "size", "type", "version"}
_EMPTY_FILE_KEYS = {"mtime_ns", "node", "size", "type", "version"}
_KEYS = {"entries", "format", "link", "made_ns"}


def listing_key(link_id: str) -> str:
    return f"l/{check_id(link_id)}"


@dataclass(frozen=True)
class ListedFile:
    node: str
    version: int  # 0: an empty file, no objects and no URLs
    size: int
    mtime_ns: int
    envelope: str = ""  # presigned URLs of k/<node>/<version> and c/<node>/<version>
    payload: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mtime_ns": self.mtime_ns, "node": self.node, "size": self.size,
                               "type": "f", "version": self.version}
        if self.version:
            out.update(envelope=self.envelope, payload=self.payload)
        return out


@dataclass
class Listing:
    link: str
    version: int  # of the listing object (its context), 1, 2, ...
    made_ns: int
    # path below the folder -> a file, or None for a folder
    entries: dict[str, ListedFile | None] = field(default_factory=dict)

    def files(self) -> dict[str, ListedFile]:
        return {p: f for p, f in self.entries.items() if f is not None}

    def versions(self) -> set[tuple[str, int]]:
        """(node, version) of every file version the listing names."""
        return {(f.node, f.version) for f in self.files().values() if f.version}

    def encode_plain(self) -> bytes:
        entries = {p: ({"type": "d"} if f is None else f.to_json())
                   for p, f in self.entries.items()}
        body = {"entries": entries, "format": LISTING_FORMAT, "link": self.link,
                "made_ns": self.made_ns}
        return json.dumps(body, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    @classmethod
    def decode_plain(cls, data: bytes, link: str, version: int) -> Listing:
        """Parse a listing strictly (7.8); ``version`` comes from the verified context."""
        if len(data) > MAX_LISTING_BYTES:
            raise FormatError(f"folder listing is larger than {MAX_LISTING_BYTES} bytes")
        if not 1 <= version <= MAX_VERSION:
            raise FormatError("folder listing version out of range")
        try:
            body = json.loads(data.decode("utf-8"), object_pairs_hook=_no_dupes)
        except RecursionError:
            raise FormatError("malformed folder listing: nested too deeply") from None
        except ValueError as exc:
            raise FormatError(f"malformed folder listing: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != LISTING_FORMAT:
            raise FormatError("unknown folder listing format")
        if set(body) != _KEYS:
            raise FormatError(f"malformed folder listing: fields {sorted(body)}")
        entries = body["entries"]
        if not isinstance(entries, dict) or len(entries) > MAX_ITEMS:
            raise FormatError(f"folder listing entries: not an object of at most {MAX_ITEMS}")
        made = _int(body["made_ns"], "made_ns", 0, MAX_VERSION)
        if not isinstance(body["link"], str):
            raise FormatError("malformed folder listing: link is not a string")
        out: dict[str, ListedFile | None] = {}
        nodes: set[str] = set()
        for path, item in entries.items():
            _check_path(path)
            out[path] = _item(item)
            f = out[path]
            if f is not None:
                if f.node in nodes:
                    raise FormatError("malformed folder listing: a file listed twice")
                nodes.add(f.node)
        for path in out:
            parent = path.rpartition("/")[0]
            if parent and (parent not in out or out[parent] is not None):
                raise FormatError("malformed folder listing: an item whose folder is not listed")
        if body["link"] != link:
            raise AuthenticationError("folder listing belongs to another link")
        return cls(link, version, made, out)

    def seal(self, vault_id: bytes, owner: Identity, link_public: bytes) -> bytes:
        """The object stored at l/<link>: wrapped to the owner and the link's key."""
        plain = self.encode_plain()
        if len(self.entries) > MAX_ITEMS or len(plain) > MAX_LISTING_BYTES:
            raise UsageError(f"a folder link lists at most {MAX_ITEMS} files and folders")
        context = Context(KIND_LISTING, vault_id, bytes.fromhex(self.link), self.version)
        recipients: list[Recipient] = [owner.recipient]
        return seal_object(plain, recipients, owner, context, (link_public,))

    @classmethod
    def open(cls, raw: bytes, vault_id: bytes, link: str, identity: Identity,
             owner: bytes) -> Listing:
        expect = Context(KIND_LISTING, vault_id, bytes.fromhex(link), -1)
        env, plain = open_object(raw, identity, expect, allowed_signers={owner},
                                 what="folder listing", max_length=MAX_LISTING_BYTES)
        return cls.decode_plain(plain, link, env.context.version)


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise FormatError("folder listing has a duplicate key or path")
    return out


def _int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise FormatError(f"malformed folder listing: {what} is not an integer in range")
    return value


def _check_path(path: Any) -> None:
    if not isinstance(path, str):
        raise FormatError("malformed folder listing: a path is not a string")
    try:
        if len(path.encode("utf-8")) > MAX_PATH:
            raise FormatError("malformed folder listing: a path is too long")
    except UnicodeEncodeError:
        raise FormatError("malformed folder listing: a path is not UTF-8") from None
    names = path.split("/")
    if len(names) > MAX_DEPTH:
        raise FormatError("malformed folder listing: a path is too deep")
    try:
        for name in names:
            check_name(name)
    except UsageError:
        raise FormatError("malformed folder listing: a bad name in a path") from None


def _url(value: Any) -> str:
    if (not isinstance(value, str) or not 0 < len(value) <= MAX_URL
            or not value.startswith(("https://", "http://"))):
        raise FormatError("malformed folder listing: a bad URL")
    return value


def _item(item: Any) -> ListedFile | None:
    if not isinstance(item, dict) or item.get("type") not in ("d", "f"):
        raise FormatError("malformed folder listing: an item of unknown type")
    if item["type"] == "d":
        if set(item) != {"type"}:
            raise FormatError("malformed folder listing: a folder with other keys")
        return None
    version = _int(item.get("version"), "version", 0, MAX_VERSION)
    if set(item) != (_FILE_KEYS if version else _EMPTY_FILE_KEYS):
        raise FormatError("malformed folder listing: a file with missing or unknown keys")
    size = _int(item["size"], "size", 0, MAX_PLAINTEXT)
    if not version and size:
        raise FormatError("malformed folder listing: an empty file with a size")
    try:
        node = check_id(item["node"])
    except (ValueError, TypeError, UsageError, FormatError):
        raise FormatError("malformed folder listing: a bad node id") from None
    return ListedFile(
        node, version, size, _int(item["mtime_ns"], "mtime_ns", *MTIME_RANGE),
        _url(item["envelope"]) if version else "", _url(item["payload"]) if version else "",
    )
