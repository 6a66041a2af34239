"""Share links (docs/format.md 7.7, 7.8): a file, or a folder, read in a browser by
whoever holds the link, until it expires or the owner ends it.

A link is a fresh X25519 key pair. Its private key goes only into the URL
fragment, with presigned GET URLs; the owner adds a stanza for its public key
to the envelopes of the versions it may read, and records the public key in the
access log. A file link gets its own self-contained version (a re-encryption
under a fresh content key); a folder link gets a listing (folder_listing.py)
naming one self-contained version of each file, which `refresh_folder_links`
rewrites to show newer ones. Ending a link moves each file off the versions the
link could read and deletes them, so nothing the holder kept opens anything
still stored. Every step of an unlink is safe to repeat.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import parse_envelope, rewrap_envelope
from csfs.crypto.envelope import new_link_key
from csfs.errors import (
    ContentionError,
    CsfsError,
    NotFound,
    PreconditionFailed,
    UsageError,
)
from csfs.vault.access_records import LinkAdd, parse_op
from csfs.vault.access_state import AccessState
from csfs.vault.folder_links import listed_items, listing_or_none, read_listing
from csfs.vault.folder_listing import (
    Listing,
    listing_key,
)
from csfs.vault.layout import content_key, envelope_key, new_id
from csfs.vault.link_common import (
    GONE,
    LINK_FORMAT,
    LISTING_GONE,
    ROTATE_TRIES,
    LinkInfo,
    add_stanza,
    append_link,
    check_seconds,
    link_url,
    rotate,
    s3_of,
    seconds_left,
)
from csfs.vault.manifest import Entry
from csfs.vault.members import require_vault_owner
from csfs.vault.tree_index import Tree, find_paths, index_tree, log_readers, recipients_of
from csfs.vault.vault import Vault, store_has


def make_link(vault: Vault, path: str, seconds: int, reader: str) -> LinkInfo:
    """A link to the file at ``path`` as it is now, valid ``seconds`` (7.7)."""
    require_vault_owner(vault)
    check_seconds(seconds)
    s3 = s3_of(vault)
    vault.refresh_access(force=True)
    entry = vault.lookup(path)
    if entry.type == "d":
        raise UsageError(f"{path} is a folder", hint="link a folder with --folder")
    if entry.type != "f":
        raise UsageError(f"{path} is not a regular file")
    if not entry.version:
        raise UsageError(f"{path} is empty: there is nothing to link")
    expires = int(time.time()) + seconds
    new = rotate(vault, path, entry)
    secret, public = new_link_key()
    add_stanza(vault, new.id, new.version, public)
    link = LinkAdd(new_id(), new.id, new.version, public.hex(), expires * 10**9)
    append_link(vault, link)
    vhex = f"{new.version:016x}"
    fragment = {
        "envelope": s3.presigned_get(f"k/{new.id}/{vhex}", seconds_left(expires)),
        "expires": expires,
        "format": LINK_FORMAT,
        "key": secret.hex(),
        "name": posixpath.basename(path.rstrip("/")),
        "node": new.id,
        "owner": vault.header.owner.hex(),
        "payload": s3.presigned_get(f"c/{new.id}/{vhex}", seconds_left(expires)),
        "size": new.size,
        "vault_id": vault.header.vault_id,
        "version": new.version,
    }
    return LinkInfo(link.link, path, new.version, expires, link_url(reader, fragment))


@dataclass
class Refreshed:
    """What a refresh of one folder link did."""

    info: LinkInfo
    added: int = 0  # file versions the link reads now and did not before
    dropped: int = 0  # versions it no longer reads (their envelopes re-wrapped without it)
    problem: str = ""  # why it was not refreshed


def refresh_folder_links(vault: Vault) -> list[Refreshed]:
    """Rewrite the listing of every live folder link from its folder as it is now
    (7.8): new files and versions in (self-contained, with a stanza for the link's
    key), files gone out (their versions no longer open with the link's key)."""
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    now = time.time_ns()
    live = [x for x in vault.access.current.links.values()
            if x.kind == "d" and x.expires_ns > now]
    out = []
    for link in sorted(live, key=lambda x: x.link):
        tree = index_tree(vault)
        path = tree.locations.get(link.node, [None])[0]
        info = LinkInfo(link.link, path, 0, link.expires_ns // 10**9, folder=True)
        try:
            old, etag = read_listing(vault, link)
            public = bytes.fromhex(link.public)
            items = ({} if path is None else
                     listed_items(vault, tree, path, public, link.expires_ns // 10**9,
                             old.versions()))
            new = Listing(link.link, old.version + 1, time.time_ns(), items)
            vault.store.put(listing_key(link.link),
                            new.seal(vault.vault_id, vault.identity, public), if_match=etag)
            vault.state.observe(listing_key(link.link), new.version)
            dropped = old.versions() - new.versions()
            keys = linked_keys(vault)
            for node, version in sorted(dropped):
                _rewrap_without(vault, tree, node, version, link.public, keys)
            out.append(Refreshed(replace(info, files=len(new.files())),
                                 len(new.versions() - old.versions()), len(dropped)))
        except PreconditionFailed:
            out.append(Refreshed(info, problem="its listing changed meanwhile; try again"))
        except CsfsError as exc:
            out.append(Refreshed(info, problem=exc.message))
    return out


# -- what live links read (kept by fsck, kept through re-wraps) -------------------------


def linked_keys(vault: Vault) -> dict[tuple[str, int], list[bytes]]:
    """The X25519 keys of the live links (not ended, not expired) that read each file
    version (7.5, 7.7, 7.8): a file link's version, and the versions each folder link's
    listing names. A listing that cannot be read names nothing."""
    now = time.time_ns()
    out: dict[tuple[str, int], list[bytes]] = {}
    for x in sorted(vault.access.current.links.values(), key=lambda x: x.link):
        if x.expires_ns <= now:
            continue
        public = bytes.fromhex(x.public)
        if x.kind == "f":
            out.setdefault((x.node, x.version), []).append(public)
            continue
        listing = listing_or_none(vault, x)
        for nv in sorted(listing.versions() if listing is not None else ()):
            out.setdefault(nv, []).append(public)
    return out


def live_link_objects(vault: Vault) -> tuple[set[str], list[str]]:
    """The object keys that live links name (kept by fsck, 5.5), and what is wrong with
    them: a version or listing gone from the store, a listing that does not open."""
    now = time.time_ns()
    keys: set[str] = set()
    problems: list[str] = []
    for x in sorted(vault.access.current.links.values(), key=lambda x: x.link):
        if x.expires_ns <= now:
            continue
        short = x.link[:12]
        hint = f"the link no longer works (`csfs unlink {short}` ends it)"
        versions = {(x.node, x.version)}
        if x.kind == "d":
            keys.add(listing_key(x.link))
            try:
                versions = read_listing(vault, x)[0].versions()
            except NotFound:
                problems.append(f"share link {short}: {LISTING_GONE}, so {hint}")
                continue
            except CsfsError as exc:
                problems.append(f"share link {short}: its listing: {exc.message}")
                continue
        for node, version in sorted(versions):
            pair = (content_key(node, version), envelope_key(node, version))
            keys.update(pair)
            if not all(store_has(vault.store, k) for k in pair):
                what = "its version" if x.kind == "f" else "a version it lists"
                problems.append(f"share link {short}: {what} is gone from the store, so {hint}")
    return keys, problems


def _rewrap_without(
    vault: Vault,
    tree: Tree,
    node: str,
    version: int,
    public: str,
    keys: dict[tuple[str, int], list[bytes]],
) -> None:
    """Wrap a version to its readers from the log and its other live links only, not
    the link whose public key is ``public`` (7.5): its URLs then open nothing."""
    try:
        raw, etag = vault.envelope_with_etag(node, version)
    except NotFound:
        return
    readers = log_readers(vault, tree, vault.access.current).get(node)
    if readers is None:  # the file is gone from the tree: the vault's own readers
        readers = list(vault.load_dir(vault.header.root_id, fresh=True)[0].readers)
    others = tuple(k for k in keys.get((node, version), []) if k.hex() != public)
    env = parse_envelope(raw)
    env.verify(vault.signers_for(node))
    new = rewrap_envelope(env, vault.identity, recipients_of(readers), vault.identity, others)
    vault.replace_envelope(node, version, new.encode(), etag)


# -- listing and ending links ----------------------------------------------------------


def list_links(vault: Vault) -> list[LinkInfo]:
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    links = vault.access.current.links
    paths = find_paths(vault, {x.node for x in links.values()})

    def info(x: LinkAdd) -> LinkInfo:
        # Nothing of csfs deletes what a live link reads without ending the link in
        # the log; something else did (a store, a tool, an older csfs): say so.
        base = LinkInfo(x.link, paths.get(x.node), x.version, x.expires_ns // 10**9,
                        folder=x.kind == "d")
        if x.kind == "d":
            try:
                return replace(base, files=len(read_listing(vault, x)[0].files()))
            except NotFound:
                return replace(base, ended=LISTING_GONE)
            except CsfsError as exc:
                return replace(base, ended=f"its listing: {exc.message}")
        pair = (content_key(x.node, x.version), envelope_key(x.node, x.version))
        return base if all(store_has(vault.store, k) for k in pair) else replace(base, ended=GONE)

    return sorted((info(x) for x in links.values()), key=lambda i: (i.path or "", i.id))


def _resolve(links: dict[str, LinkAdd], ref: str) -> LinkAdd | None:
    found = [k for k in links if k.startswith(ref.lower())] if ref else []
    if len(found) > 1:
        raise UsageError(f"{ref!r} names more than one link", hint="give more of its id")
    return links[found[0]] if found else None


def _ended_links(vault: Vault) -> dict[str, LinkAdd]:
    """The links the log added and then ended (7.2), read from the whole log."""
    added: dict[str, LinkAdd] = {}
    for _, body in vault.access.verify_all():
        if body is not None and body.get("op") == "link-add":
            op = parse_op(body, vault.header.vault_id, vault.header.owner)
            if isinstance(op, LinkAdd):
                added[op.link] = op
    current = vault.access.current.links
    return {k: x for k, x in added.items() if k not in current}


@dataclass
class Unlinked:
    """What `csfs unlink` did; running it again finishes whatever is left."""

    info: LinkInfo
    logged: bool = False  # link-remove appended now (False: the log had it already)
    moved: list[str] = field(default_factory=list)  # files moved to a new version
    deleted: int = 0  # versions that were in the store and are deleted now
    listing_deleted: bool = False  # a folder link's listing, likewise
    # Kept instead (an upload in flight draws on them, 5.5): the link's key is taken
    # out of their envelopes, and fsck --repair deletes them once nothing needs them.
    kept: int = 0
    problems: list[str] = field(default_factory=list)


def _uses(vault: Vault, entry: Entry, version: int) -> bool:
    """Whether the file's current version is ``version`` or draws on it (2.6)."""
    if entry.version == version:
        return True
    if not entry.version:
        return False
    try:
        return version in {s.version for s in vault.open_version(entry)[1].sources}
    except CsfsError:
        # Unreadable: it cannot be moved to a new version anyway, and ending the link
        # must not wait for it (fsck reports it).
        return False


class _Trees:
    """The vault tree, walked again only after a lost race: a folder link ends many
    versions, and one walk serves them all while nothing changes."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.tree = index_tree(vault)

    def again(self) -> Tree:
        self.tree = index_tree(self.vault)
        return self.tree

    def where(self, node: str) -> tuple[str | None, Entry | None]:
        path = self.tree.locations.get(node, [None])[0]
        entry = next((e for p, e in self.tree.order if p == path), None)
        return path, entry


def _move_off(
    vault: Vault, trees: _Trees, node: str, version: int, ref: str
) -> tuple[str | None, Entry | None, int | None]:
    """Where the file ``node`` is, its entry there now, and the version it left if it
    had to leave one that uses ``version``: looked up afresh after every lost race,
    so a file that changes meanwhile (another writer, a rename) never stops the
    unlink half-way."""
    path = None
    for attempt in range(ROTATE_TRIES):
        if attempt:
            trees.again()
        path, entry = trees.where(node)
        if path is None or entry is None or entry.type != "f":
            return None, None, None
        if not _uses(vault, entry, version):
            return path, entry, None
        try:
            return path, rotate(vault, path, entry), entry.version
        except ContentionError:
            continue
    raise ContentionError(
        f"{path} keeps changing; link {ref} is not ended yet",
        hint=f"run `csfs unlink {ref}` again",
    )


def _end_version(
    vault: Vault, trees: _Trees, link: LinkAdd, node: str, version: int, done: Unlinked,
    keys: dict[tuple[str, int], list[bytes]],
) -> str | None:
    """Move the file ``node`` off ``version`` and delete it, or keep it (without the
    link's key) for an upload in flight. Returns the file's path."""
    path, entry, left = _move_off(vault, trees, node, version, link.link[:12])
    if left is not None and path is not None:
        done.moved.append(path)
    pair = (content_key(node, version), envelope_key(node, version))
    if not any(store_has(vault.store, k) for k in pair):
        return path
    # Versions known to be no upload in flight: this one, the file's current one,
    # and the one it just left.
    settled = {version, *(x for x in (left, entry and entry.version) if x)}
    drawn = vault.kept_for_uploads(node, settled)
    if drawn is None or version in drawn:
        # Another client's upload builds on it (2.6, 5.5): deleting it now would
        # break that version. Its key no longer opens it for the link.
        _rewrap_without(vault, trees.tree, node, version, link.public, keys)
        done.kept += 1
    else:
        vault.delete_version(node, version)
        done.deleted += 1
    return path


def remove_link(vault: Vault, ref: str) -> Unlinked:
    """End a link (7.7, 7.8): move each file off the versions it could read if it still
    uses them, delete those versions (and a folder link's listing), then append
    `link-remove`. Each step is safe to repeat, so running it again after any failure
    finishes the job; a link the log has already ended (by a run stopped half-way) is
    finished the same way."""
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    link = _resolve(vault.access.current.links, ref)
    logged = link is None
    if link is None:
        link = _resolve(_ended_links(vault), ref)
    if link is None:
        raise UsageError(f"no link {ref!r}", hint="see `csfs links`")
    trees = _Trees(vault)
    done = Unlinked(LinkInfo(link.link, None, link.version, link.expires_ns // 10**9,
                             folder=link.kind == "d"))
    keys = linked_keys(vault)
    if link.kind == "f":
        path = _end_version(vault, trees, link, link.node, link.version, done, keys)
    else:
        path = trees.where(link.node)[0]
        for node, version in _listed_versions(vault, link, done):
            _end_version(vault, trees, link, node, version, done, keys)
        if store_has(vault.store, listing_key(link.link)):
            vault.store.delete(listing_key(link.link))
            done.listing_deleted = True
    if not logged:
        def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Any]]:
            return {"op": "link-remove", "link": link.link}, []

        vault.access.append(make)
    done.logged = not logged
    done.info = replace(done.info, path=path)
    return done


def _listed_versions(vault: Vault, link: LinkAdd, done: Unlinked) -> Iterator[tuple[str, int]]:
    try:
        listing = read_listing(vault, link)[0]
    except NotFound:
        return  # deleted by an unlink that got this far: its versions were ended first
    except CsfsError as exc:
        done.problems.append(
            f"its listing cannot be read ({exc.message}): the versions it named are left as "
            "they are, readable through URLs a holder kept until they expire"
        )
        return
    yield from sorted(listing.versions())
