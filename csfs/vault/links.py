"""Share links (docs/format.md 7.7): one file, read in a browser by whoever holds
the link, until it expires or the owner ends it.

A link is a fresh X25519 key pair. Its private key goes only into the URL
fragment, with presigned GET URLs of one version's two objects; the owner adds
a stanza for its public key to that version's envelope and records the public
key in the access log. Each link gets its own self-contained version (a
re-encryption under a fresh content key), so ending it can delete exactly the
objects its holder could have read.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from csfs.crypto import parse_envelope, rewrap_envelope
from csfs.crypto.envelope import add_link_stanza
from csfs.errors import ContentionError, CsfsError, NotFound, UsageError
from csfs.store.s3 import S3Store
from csfs.vault.access_records import LinkAdd, parse_op
from csfs.vault.access_state import AccessState
from csfs.vault.layout import content_key, envelope_key, new_id
from csfs.vault.manifest import Entry
from csfs.vault.manifests import VersionChange
from csfs.vault.members import require_vault_owner
from csfs.vault.tree_index import find_paths, index_tree, log_readers, recipients_of
from csfs.vault.vault import Vault, store_has

LINK_FORMAT = "csfs-link-1"
ROTATE_TRIES = 5  # a file rewritten faster than it can be re-encrypted wins, and says so
MAX_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs last at most 7 days
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
GONE = "its version is gone from the store"


@dataclass(frozen=True)
class LinkInfo:
    id: str
    path: str | None  # None: the file was moved out of reach or removed
    version: int
    expires: int  # seconds since the epoch
    url: str = ""  # only when just made: the owner keeps no private key
    ended: str = ""  # why a link still in the log no longer works ("" if it does)

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


def _s3(vault: Vault) -> S3Store:
    store: Any = vault.store
    while not isinstance(store, S3Store):
        store = getattr(store, "inner", None)
        if store is None:
            raise UsageError(
                "share links need an S3 store (the browser reads through presigned URLs)"
            )
    return store


def _rotate(vault: Vault, path: str, entry: Entry) -> Entry:
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


def make_link(vault: Vault, path: str, seconds: int, reader: str) -> LinkInfo:
    """A link to the file at ``path`` as it is now, valid ``seconds`` (7.7)."""
    require_vault_owner(vault)
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError("a link can last at most 7 days (presigned S3 URLs expire by then)")
    s3 = _s3(vault)
    vault.refresh_access(force=True)
    entry = vault.lookup(path)
    if entry.type != "f":
        raise UsageError(f"{path} is not a regular file", hint="folder links are not supported")
    if not entry.version:
        raise UsageError(f"{path} is empty: there is nothing to link")
    new = _rotate(vault, path, entry)
    secret = x25519.X25519PrivateKey.generate()
    public = secret.public_key()
    raw, etag = vault.envelope_with_etag(new.id, new.version)
    env = parse_envelope(raw)
    env.verify({vault.header.owner})  # we just wrote it
    vault.replace_envelope(
        new.id, new.version, add_link_stanza(env, vault.identity, public, vault.identity).encode(),
        etag,
    )
    expires = int(time.time()) + seconds
    link = LinkAdd(new_id(), new.id, new.version, public.public_bytes_raw().hex(),
                   expires * 10**9)

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Any]]:
        return {"op": "link-add", "link": link.link, **link.to_json()}, []

    vault.access.append(make)
    vhex = f"{new.version:016x}"
    fragment = {
        "envelope": s3.presigned_get(f"k/{new.id}/{vhex}", seconds),
        "expires": expires,
        "format": LINK_FORMAT,
        "key": secret.private_bytes_raw().hex(),
        "name": path.rstrip("/").rsplit("/", 1)[-1],
        "node": new.id,
        "owner": vault.header.owner.hex(),
        "payload": s3.presigned_get(f"c/{new.id}/{vhex}", seconds),
        "size": new.size,
        "vault_id": vault.header.vault_id,
        "version": new.version,
    }
    text = json.dumps(fragment, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    url = f"{reader.rstrip('/')}/link.html#{encoded}"
    return LinkInfo(link.link, path, new.version, expires, url)


def list_links(vault: Vault) -> list[LinkInfo]:
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    links = vault.access.current.links
    paths = find_paths(vault, {x.node for x in links.values()})

    def ended(x: LinkAdd) -> str:
        # Nothing of csfs deletes a live link's version without ending the link in
        # the log; something else did (a store, a tool, an older csfs): say so.
        keys = (content_key(x.node, x.version), envelope_key(x.node, x.version))
        return "" if all(store_has(vault.store, k) for k in keys) else GONE

    return sorted(
        (LinkInfo(k, paths.get(x.node), x.version, x.expires_ns // 10**9, ended=ended(x))
         for k, x in links.items()),
        key=lambda i: (i.path or "", i.id),
    )


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


@dataclass(frozen=True)
class Unlinked:
    """What `csfs unlink` did; running it again finishes whatever is left."""

    info: LinkInfo
    logged: bool  # link-remove appended now (False: the log had it already)
    moved_to: int | None  # the file's new version, if it still used the linked one
    deleted: bool  # the linked version's objects were in the store and are deleted now
    # Kept instead (an upload in flight draws on the version, 5.5): the link's key is
    # taken out of its envelope, and fsck --repair deletes it once nothing needs it.
    kept: bool = False


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


def _move_off(vault: Vault, link: LinkAdd) -> tuple[str | None, Entry | None, int | None]:
    """Where the linked file is, its entry there now, and the version it left if it
    had to leave one that uses the linked one: looked up afresh after every lost race,
    so a file that changes meanwhile (another writer, a rename) never stops the unlink
    half-way."""
    path = None
    for _ in range(ROTATE_TRIES):
        tree = index_tree(vault)
        path = tree.locations.get(link.node, [None])[0]
        entry = next((e for p, e in tree.order if p == path), None)
        if path is None or entry is None or entry.type != "f":
            return None, None, None
        if not _uses(vault, entry, link.version):
            return path, entry, None
        try:
            return path, _rotate(vault, path, entry), entry.version
        except ContentionError:
            continue
    raise ContentionError(
        f"{path} keeps changing; link {link.link[:12]} is not ended yet",
        hint=f"run `csfs unlink {link.link[:12]}` again",
    )


def _drop_link_key(vault: Vault, link: LinkAdd) -> None:
    """Wrap the linked version to its readers from the log without this link (7.5),
    for a version that must stay stored a while: its URLs then open nothing."""
    try:
        raw, etag = vault.envelope_with_etag(link.node, link.version)
    except NotFound:
        return
    tree = index_tree(vault)
    state = vault.access.current
    readers = log_readers(vault, tree, state).get(link.node)
    if readers is None:  # the file is gone from the tree: the vault's own readers
        readers = list(vault.load_dir(vault.header.root_id, fresh=True)[0].readers)
    others = [x for x in state.live_links(link.node, link.version, time.time_ns())
              if x.link != link.link]
    env = parse_envelope(raw)
    env.verify(vault.signers_for(link.node))
    new = rewrap_envelope(env, vault.identity, recipients_of(readers), vault.identity,
                          tuple(bytes.fromhex(x.public) for x in others))
    vault.replace_envelope(link.node, link.version, new.encode(), etag)


def remove_link(vault: Vault, ref: str) -> Unlinked:
    """End a link (7.7): move the file off the linked version if it still uses it,
    delete that version's objects, then append `link-remove`. Each step is safe to
    repeat, so running it again after any failure finishes the job; a link the log
    has already ended (by a run stopped half-way) is finished the same way."""
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    link = _resolve(vault.access.current.links, ref)
    logged = link is None
    if link is None:
        link = _resolve(_ended_links(vault), ref)
    if link is None:
        raise UsageError(f"no link {ref!r}", hint="see `csfs links`")
    path, entry, left = _move_off(vault, link)
    moved_to = entry.version if entry is not None and left is not None else None
    keys = (content_key(link.node, link.version), envelope_key(link.node, link.version))
    stored = any(store_has(vault.store, k) for k in keys)
    # Versions known to be no upload in flight: the linked one, the file's current
    # one, and the one it just left.
    settled = {link.version, *(x for x in (left, entry and entry.version) if x)}
    drawn = vault.kept_for_uploads(link.node, settled) if stored else set()
    kept = drawn is None or link.version in drawn
    if kept:
        # Another client's upload builds on it (2.6, 5.5): deleting it now would
        # break that version. Its key no longer opens it for the link.
        _drop_link_key(vault, link)
    else:
        vault.delete_version(link.node, link.version)
    if not logged:
        def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Any]]:
            return {"op": "link-remove", "link": link.link}, []

        vault.access.append(make)
    info = LinkInfo(link.link, path, link.version, link.expires_ns // 10**9)
    return Unlinked(info, not logged, moved_to, stored and not kept, kept)
