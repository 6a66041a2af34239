"""Folder links (docs/format.md 7.8): a listing naming one self-contained version
of each file below a folder, read with the link's key; links.py refreshes and ends
them."""

from __future__ import annotations

import posixpath
import time

from csfs.crypto.envelope import new_link_key
from csfs.errors import (
    AuthenticationError,
    CsfsError,
    IntegrityError,
    NotFound,
    UsageError,
)
from csfs.vault.access_records import LinkAdd
from csfs.vault.folder_listing import (
    MAX_ITEMS,
    MAX_LISTING_OBJECT,
    ListedFile,
    Listing,
    listing_key,
)
from csfs.vault.layout import new_id, read_limited_with_etag
from csfs.vault.link_common import (
    FOLDER_LINK_FORMAT,
    LinkInfo,
    add_stanza,
    append_link,
    check_seconds,
    link_url,
    s3_of,
    seconds_left,
    self_contained,
)
from csfs.vault.members import require_vault_owner
from csfs.vault.tree_index import Tree, index_tree
from csfs.vault.vault import Vault

# -- folder links (7.8) ----------------------------------------------------------------


def listed_items(
    vault: Vault,
    tree: Tree,
    path: str,
    public: bytes,
    expires: int,
    before: set[tuple[str, int]],
) -> dict[str, ListedFile | None]:
    """The items of a listing of the folder at ``path``: each file at a
    self-contained version that the link's key opens (a stanza added unless it is in
    ``before``), with URLs presigned until ``expires``."""
    s3 = s3_of(vault)
    top = path.rstrip("/")
    items = tree.under(path)
    for where, other in tree.aliased(items)[:1]:
        raise IntegrityError(
            f"cannot link {path}: {where} is the same node as {other} (planted by a writer?)",
            hint=f"remove the wrong entry with `csfs rm -r {where}`, then run `csfs fsck`",
        )
    below = [(p, e) for p, e in items if p != path and e.type in ("d", "f")]
    if len(below) > MAX_ITEMS:
        raise UsageError(f"a folder link lists at most {MAX_ITEMS} files and folders")
    out: dict[str, ListedFile | None] = {}
    for p, e in below:
        rel = p[len(top) + 1:]
        if e.type == "d":
            out[rel] = None
            continue
        if not e.version:
            out[rel] = ListedFile(e.id, 0, 0, e.mtime_ns)
            continue
        cur = self_contained(vault, p, e)
        if (cur.id, cur.version) not in before:
            add_stanza(vault, cur.id, cur.version, public)
        vhex = f"{cur.version:016x}"
        out[rel] = ListedFile(
            cur.id, cur.version, cur.size, cur.mtime_ns,
            s3.presigned_get(f"k/{cur.id}/{vhex}", seconds_left(expires)),
            s3.presigned_get(f"c/{cur.id}/{vhex}", seconds_left(expires)),
        )
    return out


def make_folder_link(vault: Vault, path: str, seconds: int, reader: str) -> LinkInfo:
    """A read-only link to the folder at ``path`` and everything below it, as it is
    now (7.8); `refresh_folder_links` shows later changes."""
    require_vault_owner(vault)
    check_seconds(seconds)
    s3 = s3_of(vault)
    vault.refresh_access(force=True)
    entry = vault.lookup(path)
    if entry.type != "d":
        raise UsageError(f"{path} is not a folder", hint="link a file without --folder")
    if entry.id == vault.header.root_id:
        raise UsageError("the vault root cannot be linked", hint="link a folder inside it")
    secret, public = new_link_key()
    expires = int(time.time()) + seconds
    link_id = new_id()
    items = listed_items(vault, index_tree(vault), path, public, expires, set())
    listing = Listing(link_id, 1, time.time_ns(), items)
    vault.store.put(listing_key(link_id), listing.seal(vault.vault_id, vault.identity, public),
                    if_none_match=True)
    vault.state.observe(listing_key(link_id), 1)
    link = LinkAdd(link_id, entry.id, 0, public.hex(), expires * 10**9, "d")
    append_link(vault, link)  # last: before it, nothing refers to the listing
    fragment = {
        "expires": expires,
        "format": FOLDER_LINK_FORMAT,
        "key": secret.hex(),
        "link": link_id,
        "listing": s3.presigned_get(listing_key(link_id), seconds_left(expires)),
        "name": posixpath.basename(path.rstrip("/")),
        "owner": vault.header.owner.hex(),
        "vault_id": vault.header.vault_id,
    }
    return LinkInfo(link_id, path, 0, expires, link_url(reader, fragment), folder=True,
                    files=len(listing.files()))


def read_listing(vault: Vault, link: LinkAdd) -> tuple[Listing, str]:
    """A folder link's listing and its ETag, checked (7.8) and held to the highest
    version this client has seen. NotFound if it is not in the store."""
    key = listing_key(link.link)
    raw, etag = read_limited_with_etag(vault.store, key, MAX_LISTING_OBJECT, "folder listing")
    listing = Listing.open(raw, vault.vault_id, link.link, vault.identity, vault.header.owner)
    if listing.version < vault.state.floor(key):
        raise AuthenticationError("a folder link's listing was rolled back")
    vault.state.observe(key, listing.version)
    return listing, etag


def listing_or_none(vault: Vault, link: LinkAdd) -> Listing | None:
    try:
        return read_listing(vault, link)[0]
    except (NotFound, CsfsError):
        return None


