"""What share links (docs/format.md 7.7, 7.8) have in common: the link record
and its URL, presigned URLs and their lifetime, the log entry, and the
self-contained version a link reads with a stanza for its key."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from csfs.crypto import parse_envelope
from csfs.crypto.envelope import add_link_stanza
from csfs.errors import (
    AuthenticationError,
    ContentionError,
    CsfsError,
    PreconditionFailed,
    UsageError,
)
from csfs.store.s3 import S3Store
from csfs.vault.access_records import LinkAdd
from csfs.vault.access_state import AccessState
from csfs.vault.manifest import Entry
from csfs.vault.manifests import VersionChange
from csfs.vault.vault import Vault

LINK_FORMAT = "csfs-link-1"
FOLDER_LINK_FORMAT = "csfs-folder-link-1"
ROTATE_TRIES = 5  # a file rewritten faster than it can be re-encrypted wins, and says so
MAX_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs last at most 7 days
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
GONE = "its version is gone from the store"
LISTING_GONE = "its listing is gone from the store"


@dataclass(frozen=True)
class LinkInfo:
    id: str
    path: str | None  # None: the file or folder was moved out of reach or removed
    version: int  # a file link's version; 0 for a folder link
    expires: int  # seconds since the epoch
    url: str = ""  # only when just made: the owner keeps no private key
    ended: str = ""  # why a link still in the log no longer works ("" if it does)
    folder: bool = False
    files: int = 0  # a folder link: the files its listing names

    @property
    def expired(self) -> bool:
        return self.expires <= time.time()


def parse_duration(text: str) -> int:
    """'90s', '30m', '12h', '7d' -> seconds; refuses more than 7 days."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise UsageError(f"invalid expiry {text!r}", hint="a number and s, m, h or d, e.g. 7d")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if seconds > MAX_SECONDS:
        raise UsageError(
            f"a link can last at most 7 days (presigned S3 URLs expire by then), not {text}"
        )
    return seconds


def s3_of(vault: Vault) -> S3Store:
    store: Any = vault.store
    while not isinstance(store, S3Store):
        store = getattr(store, "inner", None)
        if store is None:
            raise UsageError(
                "share links need an S3 store (the browser reads through presigned URLs)"
            )
    return store


def check_seconds(seconds: int) -> None:
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError("a link can last at most 7 days (presigned S3 URLs expire by then)")


def seconds_left(expires: int) -> int:
    """Seconds from now to ``expires``: every URL of a link expires with it, never
    later (7.7, 7.8), however long making the link took."""
    seconds = expires - int(time.time())
    if seconds <= 0:
        raise UsageError("the link has expired meanwhile")
    return seconds


def link_url(reader: str, fragment: dict[str, Any]) -> str:
    text = json.dumps(fragment, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return f"{reader.rstrip('/')}/link.html#{encoded}"


def append_link(vault: Vault, link: LinkAdd) -> None:
    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Any]]:
        return {"op": "link-add", "link": link.link, **link.to_json()}, []

    vault.access.append(make)


# -- versions a link reads -------------------------------------------------------------


def rotate(vault: Vault, path: str, entry: Entry) -> Entry:
    """A new self-contained version of the file at ``path`` (a re-encryption under a
    fresh key), switched in if the file did not change meanwhile."""
    parent_id, name = vault.parent_of(path)
    parent = vault.load_dir(parent_id, fresh=True)[0]
    version, length = vault.reencrypt_version(entry, parent)
    new = replace(entry, version=version, size=length)
    # Switched only where the name still holds the version re-encrypted (the one
    # "base unchanged" test of the vault); otherwise ours is dropped.
    change = VersionChange(name, entry.id, new, entry, restore=False)
    if vault.commit_versions(parent_id, [change], keep_lost=False):
        vault.delete_version(entry.id, version)
        raise ContentionError(f"{path} changed meanwhile", hint="try again")
    return new


def fresh_entry(vault: Vault, path: str, node: str) -> Entry | None:
    """The entry of ``node`` at ``path`` as the store has it now (None: not there)."""
    try:
        parent_id, name = vault.parent_of(path)
        entry = vault.load_dir(parent_id, fresh=True)[0].entries.get(name)
    except CsfsError:
        return None
    return entry if entry is not None and entry.id == node and entry.type == "f" else None


def self_contained(vault: Vault, path: str, entry: Entry) -> Entry:
    """``entry``, or the file moved to a self-contained version if it is a delta (2.6:
    a link must not read earlier versions through a delta's sources)."""
    for _ in range(ROTATE_TRIES):
        if not vault.open_version(entry)[1].delta:
            return entry
        try:
            return rotate(vault, path, entry)
        except ContentionError:
            fresh = fresh_entry(vault, path, entry.id)
            if fresh is None or not fresh.version:
                raise
            entry = fresh
    raise ContentionError(f"{path} keeps changing", hint="try again")


def add_stanza(vault: Vault, node: str, version: int, public: bytes) -> None:
    """The version's envelope with one more stanza, for the link's key (7.7 step 2)."""
    for _ in range(ROTATE_TRIES):
        raw, etag = vault.envelope_with_etag(node, version)
        env = parse_envelope(raw)
        env.verify(vault.signers_for(node))
        if env.context != vault.file_context(node, version):
            raise AuthenticationError("a key envelope belongs to another file")
        new = add_link_stanza(env, vault.identity, public, vault.identity)
        try:
            vault.replace_envelope(node, version, new.encode(), etag)
            return
        except PreconditionFailed:
            continue
    raise ContentionError("a key envelope keeps changing", hint="try again")


# -- file links (7.7) ------------------------------------------------------------------


