"""The vault: an encrypted tree of directories and files in a store (docs/format.md 5).

Crash safety comes from the update order: a file version's ciphertext, then
its envelope, then the directory manifest switched by a conditional PUT. A
crash leaves at most orphans, never a torn file. Concurrent writers never
lose data silently: the loser of the conditional PUT re-reads the manifest
and re-applies its change; a real conflict becomes a conflict copy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import posixpath
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, TypeVar

from cachetools import LRUCache, TTLCache

from csfs.crypto import (
    Context,
    Envelope,
    Identity,
    Recipient,
    encrypt_stream,
)
from csfs.crypto.envelope import KIND_FILE, MAX_ENVELOPE_SIZE
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.sealed import decrypt_opened, max_payload_size, open_envelope
from csfs.crypto.stream import (
    HEADER_SIZE,
    MAX_MAP_SIZE,
    ChunkCipher,
    Fetch,
    SourceOpener,
    SourceSet,
    payload_size,
)
from csfs.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationError,
    ContentionError,
    CrossShare,
    CsfsError,
    DirectoryNotEmpty,
    FormatError,
    IntegrityError,
    IsADirectory,
    NoMatchingKeyError,
    NotADirectory,
    NotFound,
    NotSupported,
    PreconditionFailed,
    TransientStoreError,
    UploadImpossible,
    UsageError,
)
from csfs.store import Store
from csfs.vault.access import (
    AccessLog,
    Notice,
    Pins,
    check_member_name,
    default_config_dir,
    notice_key,
    seal_notice,
)
from csfs.vault.crashpoint import crash_point
from csfs.vault.layout import (
    HEADER_KEY,
    MAX_SIGNED_BLOB,
    VaultHeader,
    content_key,
    envelope_key,
    manifest_key,
    new_id,
    new_version,
    read_limited,
    read_limited_with_etag,
)
from csfs.vault.manifest import MAX_MANIFEST_OBJECT, DirectoryManifest, Entry, check_name
from csfs.vault.state import VaultState, default_state_dir

T = TypeVar("T")
log = logging.getLogger("csfs.upload")  # conflicts met by queued uploads
# A folder as the mount shows it, given how to load the stored one (Vault.overlay).
Overlay = Callable[[str, Callable[[], DirectoryManifest]], DirectoryManifest | None]
SMALL_FILE = 8 << 20  # payloads up to this size are built in memory, larger ones in a temp file
MAX_RETRIES = 50
_EXTENDED = "a file's ciphertext is longer than its directory entry allows: extended or replaced"
VERSION_LIMIT = 1 << 63  # manifest versions at or above are format errors (format.md 5.3)


class Unset:
    """The type of UNSET: an argument not given (where None means something)."""


UNSET = Unset()


def split_path(path: str) -> list[str]:
    """'/a/b' -> ['a', 'b']; the vault path syntax is POSIX, always absolute."""
    norm = posixpath.normpath("/" + path.strip())
    return [check_name(p) for p in norm.split("/") if p]


@dataclass(frozen=True)
class VersionChange:
    """A new version of one file, to point ``name`` at (Vault.commit_versions).

    The name is switched while it holds ``base``, the entry the writer started
    from; with ``own``, while it holds ``file_id`` at any of those versions (an
    upload queue's versions of one file never conflict with each other). A name
    removed meanwhile gets the version back unless not ``restore``. ``follow``
    (a queued upload): the file may have been renamed in the folder meanwhile and
    is switched where it is now, and ``replaces`` ([node id, version]) is what a
    rename of the not yet committed file replaced at ``name``. ``new`` may be made
    from the manifest switched (to keep metadata changed there meanwhile).
    """

    name: str
    file_id: str
    new: Entry | Callable[[DirectoryManifest], Entry]
    base: Entry | None = None
    own: frozenset[int] | None = None
    restore: bool = True
    follow: bool = False
    replaces: list[Any] | None = None

    def holds_base(self, cur: Entry) -> bool:
        """Whether ``cur`` is still the version this change replaces."""
        if self.own is not None:
            return cur.id == self.file_id and cur.version in self.own
        return same_version(cur, self.base)


class Vault:
    """One open vault: its header, the directory manifests, the file versions and the
    access log, read and changed through one store with this client's identity.

    Owns the manifest cache and the rollback floors (the client's vault state),
    the access log view (who may read and write each share root), and the update
    order: content, then envelope, then the manifest switched by a conditional
    PUT. Every object it reads is authenticated against the signers the log
    allows before it is used.

    Never prints, exits or caches plaintext on disk; never switches a manifest
    without If-Match on the version it read (a lost race re-reads and re-applies,
    it never overwrites); never trusts a signer the access log does not grant.
    """

    def __init__(
        self,
        store: Store,
        identity: Identity,
        header: VaultHeader,
        state: VaultState,
        *,
        ttl: float = 1.0,
        tmp_dir: str | None = None,
        config_dir: str | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.header = header
        self.state = state
        self.vault_id = header.vault_id_bytes
        # Held by local writers around manifest switches and their own bookkeeping
        # (the mount's namespace operations and upload commits), so that one
        # process never races itself; other clients are handled by If-Match.
        self.commit_lock = threading.RLock()
        self.tmp_dir = tmp_dir
        self._manifests: TTLCache[str, tuple[DirectoryManifest, str]] = TTLCache(
            maxsize=4096, ttl=ttl
        )
        # The last verified manifest of every directory seen, however old: what the
        # mount serves and seals against while the store is unreachable (offline mode).
        self._known: LRUCache[str, tuple[DirectoryManifest, str]] = LRUCache(maxsize=16384)
        self.offline_since: float | None = None  # wall-clock time the store stopped answering
        # The mount's own view of a folder with its queued namespace changes applied
        # (None: no change pending there); see view_dir. Not for commits, which start
        # from the store's manifest.
        self.overlay: Overlay | None = None
        self._store_view = threading.local()  # .on: this thread applies queued changes
        self._lock = threading.RLock()
        self.state.pin_header(header.digest)
        self.access = AccessLog(
            store,
            header,
            identity,
            state,
            Pins(config_dir if config_dir is not None else default_config_dir()),
        )
        self._access_ttl = max(ttl, 2.0)
        self._access_lock = threading.Lock()
        self._access_checked = 0.0
        # Every directory each node was seen listed in: the nearest share roots above
        # a node decide whose signatures are accepted for it (format.md 7.3).
        # Directories' parents are also remembered between runs (VaultState.listed_in).
        self._parents: dict[str, set[str]] = {}
        self._children: dict[str, set[str]] = {}
        for child, parents in state.listed_in.items():
            self._parents[child] = set(parents)
            for parent in parents:
                self._children.setdefault(parent, set()).add(child)
        self._virtual: dict[str, DirectoryManifest] = {}
        self._discovering = False
        self.pointer_errors: list[str] = []  # shown by `csfs status`; fsck finds stale ones
        self.refresh_access(force=True)

    # -- opening -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: Store,
        identity: Identity,
        *,
        state_dir: str | None = None,
        readers: list[Recipient] | None = None,
        name: str = "owner",
        config_dir: str | None = None,
        replace_pin: bool = False,
    ) -> Vault:
        """A new, empty vault owned by ``identity``; ``readers`` can also read everything.

        ``name`` is the owner's member name, shown to those it shares with. If this
        client remembers another vault at this store, nothing is written unless
        ``replace_pin`` says to forget it (a store wiped and re-created on purpose)."""
        check_member_name(name)
        state = VaultState(_state_dir(state_dir), store.url)
        exists = UsageError(
            f"a vault already exists at {store.url}", hint="use it, or pick another --store"
        )
        if state.header_digest is not None:
            if store_has(store, HEADER_KEY):
                raise exists
            if not replace_pin:
                raise UsageError(
                    f"this client remembers another vault at {store.url}, now gone",
                    hint="if you wiped and re-created this store on purpose, run "
                    "`csfs init --replace-pin` (or `csfs forget-store` first)",
                )
            state.forget()  # in memory; saved only once the new vault exists
        header = VaultHeader.create(identity)
        try:
            store.put(HEADER_KEY, header.raw, if_none_match=True)
        except PreconditionFailed:
            raise exists from None
        vault = cls(store, identity, header, state, config_dir=config_dir)
        everyone = list(dict.fromkeys([identity.recipient, *(readers or [])]))
        root = DirectoryManifest(
            header.root_id,
            version=1,
            readers=[r.to_pem().decode() for r in everyone],
            mtime_ns=time.time_ns(),
        )
        store.put(
            manifest_key(header.root_id), root.seal(vault.vault_id, identity), if_none_match=True
        )
        vault.access.genesis(name)
        vault.state.save()
        return vault

    @classmethod
    def open(
        cls,
        store: Store,
        identity: Identity,
        *,
        state_dir: str | None = None,
        ttl: float = 1.0,
        tmp_dir: str | None = None,
        trusted_owners: set[bytes] | None = None,
        config_dir: str | None = None,
    ) -> Vault:
        """Open the vault in ``store``.

        The first time a client sees a vault, its owner must be the client's own
        key or one of ``trusted_owners``: otherwise whoever controls the store
        could hand a new client a vault of their own, readable by them.
        Afterwards the header is pinned (per store URL) and any change refused;
        the owner is trusted per key, so another key of this user is asked again.
        """
        try:
            raw = read_limited(store, HEADER_KEY, MAX_SIGNED_BLOB, "vault header")
        except NotFound:
            raise NotFound(
                f"no csfs vault at {store.url}", hint="create one with `csfs init`"
            ) from None
        state = VaultState(_state_dir(state_dir), store.url)
        if state.header_digest is not None:
            # A pinned client compares the raw bytes first: a replaced header is
            # "changed", whatever it holds, and is never parsed.
            state.pin_header(hashlib.sha256(raw).hexdigest())
        header = VaultHeader.decode(raw)
        own = identity.recipient.verify_key_bytes
        me = identity.recipient.fingerprint
        # Asked once per key, not per store: the pin says the header is the one seen
        # before, not that this key's user chose to trust its owner.
        if not state.owner_trusted_by(me) and header.owner not in {
            own,
            *(trusted_owners or ()),
        }:
            raise AuthenticationError(
                f"this vault belongs to a key you have not trusted yet "
                f"(owner {header.owner.hex()[:16]}...)",
                hint="check the owner's public key with them, then pass --trust-owner PUB.pem",
            )
        state.trust_owner(me)
        return cls(store, identity, header, state, ttl=ttl, tmp_dir=tmp_dir, config_dir=config_dir)

    def close(self) -> None:
        self.state.save()

    # -- access (format.md 7) -------------------------------------------------------------

    @property
    def is_owner(self) -> bool:
        return self.access.is_owner

    def refresh_access(self, *, force: bool = False) -> None:
        """Read new access-log entries, at most once per TTL unless forced.

        Offline, what is known stays in force until the store answers again."""
        now = time.monotonic()
        if not force and (now - self._access_checked < self._access_ttl or self.offline):
            return
        # One refresh at a time; other threads go on with what is known meanwhile.
        if not self._access_lock.acquire(blocking=force):
            return
        try:
            if not force and now - self._access_checked < self._access_ttl:
                return
            try:
                self.access.refresh()
            except TransientStoreError:
                if force:
                    raise
                self.went_offline()
                return
            virtual = self._build_virtual() if self.shared_view else {}
            with self._lock:
                self._virtual = virtual
                self._access_checked = time.monotonic()
        finally:
            self._access_lock.release()

    # -- offline mode -----------------------------------------------------------------

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    def went_offline(self) -> None:
        with self._lock:
            if self.offline_since is None:
                self.offline_since = time.time()

    def probe(self) -> bool:
        """One cheap round trip (HEAD of the header); back online if the store answers."""
        try:
            self.store.head(HEADER_KEY)
        except TransientStoreError:
            return False
        with self._lock:
            self.offline_since = None
        return True

    def known_dir(self, dir_id: str) -> DirectoryManifest:
        """The last verified manifest of a directory, however old, with no round trip
        (sealing a file needs nothing from the store); loaded if never seen. A folder
        made offline is known by its queued mkdir."""
        virtual = self._virtual.get(dir_id)
        if virtual is not None:
            return virtual

        def known() -> DirectoryManifest:
            with self._lock:
                found = self._known.get(dir_id)
            return found[0] if found is not None else self.load_dir(dir_id)[0]

        return self._overlaid(dir_id, known)

    def view_dir(self, dir_id: str) -> DirectoryManifest:
        """A folder as this client shows it: the store's manifest with the namespace
        changes queued here (offline) applied."""
        return self._overlaid(dir_id, lambda: self.load_dir(dir_id)[0])

    def _overlaid(self, dir_id: str, base: Callable[[], DirectoryManifest]) -> DirectoryManifest:
        if self.overlay is None or getattr(self._store_view, "on", False):
            return base()
        view = self.overlay(dir_id, base)
        return base() if view is None else view

    @contextlib.contextmanager
    def store_view(self) -> Iterator[None]:
        """Paths resolve in the store's manifests only (applying queued changes)."""
        self._store_view.on = True
        try:
            yield
        finally:
            self._store_view.on = False

    def note_parent(self, node_id: str, parent_id: str) -> None:
        with self._lock:
            self._parents.setdefault(node_id, set()).add(parent_id)

    @property
    def shared_view(self) -> bool:
        """Members other than the owner see only ``Shared/<owner>/<name>``."""
        return not self.is_owner and (self.access.joined or bool(self.access.notices))

    @property
    def root_id(self) -> str:
        return _virtual_id("/") if self.shared_view else self.header.root_id

    def _build_virtual(self) -> dict[str, DirectoryManifest]:
        owner = self.access.owner_name()
        top, shared, mine = (
            _virtual_id("/"),
            _virtual_id("/Shared"),
            _virtual_id("/Shared/" + owner),
        )
        ro = 0o555
        entries: dict[str, Entry] = {}
        # The name chosen when the share was first applied (AccessLog._read_notice), so
        # that a later share never displaces an earlier one's path.
        notices = sorted(self.access.notices.values(), key=lambda n: (not n.shown, n.node))
        for notice in notices:
            name, n = notice.shown or notice.name, 2
            while name in entries:
                name, n = f"{notice.name} ({n})", n + 1
            if notice.type == "f":
                # A shared file: its entry comes from its pointer (format.md 7.6).
                try:
                    pointer = self.load_dir(notice.node)[0]
                except CsfsError:
                    continue  # shown once it can be read and verified
                found = [e for e in pointer.entries.values() if e.id == notice.node]
                if found:
                    entries[name] = replace(found[0], mode=found[0].mode & ~0o222)
                continue
            entries[name] = Entry(notice.node, "d", mode=0o755 if notice.write else ro)
        return {
            top: DirectoryManifest(top, 1, {"Shared": Entry(shared, "d", mode=ro)}, mode=ro),
            shared: DirectoryManifest(shared, 1, {owner: Entry(mine, "d", mode=ro)}, mode=ro),
            mine: DirectoryManifest(mine, 1, entries, mode=ro),
        }

    def share_roots_of(self, node_id: str) -> set[str | None]:
        """The nearest share root at or above ``node_id`` on every path by which this
        client has seen it (None: under no share root, or not found). A node listed
        under two parents counts under both, so the writers of one share cannot
        vouch for another share's folder by also listing it in a folder of theirs."""
        grants = self.access.current.grants
        if node_id in self._virtual:
            return {None}
        out: set[str | None] = set()
        todo, seen = [node_id], set[str]()
        while todo and len(seen) < 10_000:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in grants:
                out.add(node)
                continue
            if node == self.header.root_id:
                out.add(None)
                continue
            with self._lock:
                parents = set(self._parents.get(node, ()))
            if not parents and not self._discovering:
                # Not reached by a walk in this process (an upload queued before a
                # remount, say): find where it lives, once.
                self._discover(node)
                with self._lock:
                    parents = set(self._parents.get(node, ()))
            if not parents:
                out.add(None)
            todo.extend(parents)
        return out or {None}

    def _discover(self, node_id: str) -> None:
        self._discovering = True
        try:
            for _, entry in self.walk("/"):
                if entry.id == node_id or node_id in self._parents:
                    return
        except CsfsError:
            pass  # what cannot be walked cannot vouch for a writer either
        finally:
            self._discovering = False

    def signers_for(self, node_id: str) -> set[bytes]:
        """Whose signatures are accepted on this directory or file (format.md 7.3):
        the writers of its share root, on every path it was seen by."""
        sets = [self.access.writer_keys(root) for root in self.share_roots_of(node_id)]
        return set.intersection(*sets)

    def log_readers(self, node_id: str) -> set[str] | None:
        """Fingerprints the access log lets read ``node_id``: the root's readers plus
        members granted on it or above, on every path by which it was seen (format.md
        7.5). Only the owner sees the tree above the share roots; a member checks what
        the verified log does tell it: the vault's current members (and the owner).
        A manifest's own ``readers`` list is never the authority: a replayed
        pre-revocation manifest still names the removed member."""
        if not self.is_owner:
            return {
                fp
                for fp, m in self.access.current.members.items()
                if self.access.trusted(fp) is not None
                or m.recipient.verify_key_bytes == self.header.owner
            }
        root = self.header.root_id
        base = {r.fingerprint for r in self.load_dir(root)[0].recipients()}
        grants = self.access.current.grants
        memo: dict[str, set[str]] = {}

        def granted(node: str, seen: frozenset[str]) -> set[str] | None:
            if node == root:
                return set()
            if node in memo:
                return memo[node]
            own = {fp for fp in grants.get(node, {}) if self.access.trusted(fp) is not None}
            with self._lock:
                parents = set(self._parents.get(node, ()))
            if not parents and not self._discovering:
                self._discover(node)
                with self._lock:
                    parents = set(self._parents.get(node, ()))
            above = [granted(p, seen | {node}) for p in parents if p not in seen]
            known = [a for a in above if a is not None]
            if not known and parents:
                return None  # only a cycle leads here: it grants nothing on its own
            out = (set.intersection(*known) if known else set()) | own
            memo[node] = out
            return out

        return base | (granted(node_id, frozenset()) or set())

    def _log_checked(self, node_id: str, readers: list[str]) -> list[str]:
        """``readers`` without the keys the log does not let read ``node_id``."""
        allowed = self.log_readers(node_id)
        if allowed is None:
            return list(readers)
        return [r for r in readers if _fingerprint(r) in allowed]

    def may_write(self, dir_id: str) -> bool:
        if dir_id in self._virtual:
            return False
        if self.is_owner:
            return True
        writers = self.access.current.writers
        return all(
            root is not None and self.access.me in writers.get(root, [])
            for root in self.share_roots_of(dir_id)
        )

    def check_writable(self, dir_id: str) -> None:
        if dir_id in self._virtual:
            raise AccessDenied("the Shared folders are read-only", hint="write inside a share")
        if not self.may_write(dir_id):
            raise AccessDenied(
                "read-only: this was shared with you without write access"
                if self.access.joined
                else "read-only: only the vault owner writes here"
            )

    # -- directory manifests -----------------------------------------------------------

    def load_dir(self, dir_id: str, *, fresh: bool = False) -> tuple[DirectoryManifest, str]:
        self.refresh_access()
        virtual = self._virtual.get(dir_id)
        if virtual is not None:
            return virtual, ""
        with self._lock:
            cached = None if fresh else self._manifests.get(dir_id)
            known = self._known.get(dir_id)
        if cached is not None:
            return cached
        if self.offline and known is not None and not fresh:
            return known  # served stale until the store answers a probe again
        try:
            return self._fetch_dir(dir_id)
        except TransientStoreError:
            self.went_offline()
            if known is None or fresh:
                raise
            return known

    def _fetch_dir(self, dir_id: str) -> tuple[DirectoryManifest, str]:
        for _ in range(5):
            # A manifest older than what we knew *before* asking is a rollback. One
            # older than what a concurrent switch of ours recorded meanwhile is just
            # a GET that raced that switch: ask again.
            floor = self.state.floor(dir_id)
            try:
                raw, etag = read_limited_with_etag(
                    self.store, manifest_key(dir_id), MAX_MANIFEST_OBJECT, "directory manifest"
                )
            except NotFound:
                raise IntegrityError("a directory manifest is missing from the store") from None
            manifest = DirectoryManifest.open(
                raw, self.vault_id, dir_id, self.identity, self.signers_for(dir_id)
            )
            if manifest.version >= VERSION_LIMIT:
                # Before it can raise the rollback floor: a writer's 2^64-1 would
                # otherwise block every later write here, revocation included.
                raise FormatError("a directory manifest has an out-of-range version")
            if manifest.version < floor:
                raise AuthenticationError(
                    "a directory manifest was rolled back to an older version (replay)"
                )
            self.state.observe(dir_id, manifest.version)
            if manifest.version >= self.state.floor(dir_id):
                break
        self._remember(dir_id, manifest, etag)
        return manifest, etag

    def _remember(self, dir_id: str, manifest: DirectoryManifest, etag: str) -> None:
        with self._lock:
            cached = self._manifests.get(dir_id)
            if cached is None or cached[0].version <= manifest.version:
                self._manifests[dir_id] = (manifest, etag)
                known = self._known.get(dir_id)
                if known is None or known[0].version <= manifest.version:
                    self._known[dir_id] = (manifest, etag)
                children = {c.id for c in manifest.entries.values()}
                gone = self._children.get(dir_id, set()) - children
                for node in gone:
                    self._parents.get(node, set()).discard(dir_id)
                for child in children:
                    self._parents.setdefault(child, set()).add(dir_id)
                self._children[dir_id] = children
                dirs = {c.id for c in manifest.entries.values() if c.type == "d"}
                for node in dirs | (gone & set(self.state.listed_in)):
                    self.state.set_listed_in(node, self._parents.get(node, set()))

    def update_dir(
        self,
        dir_id: str,
        change: Callable[[DirectoryManifest], T],
        *,
        force: bool = False,
        sets_readers: bool = False,
        touch: bool = True,
    ) -> T:
        """Apply ``change`` to a copy of the manifest and switch it with If-Match.

        The readers found in the manifest are kept only where the log grants them
        (log_readers), unless ``sets_readers``: the change computed them from the log
        itself (share and unshare, from the state their entry is about to create).

        On a lost race the manifest is re-read and ``change`` re-applied, so
        changes to different entries merge; ``change`` decides what a true
        conflict becomes.
        """
        self.check_writable(dir_id)
        fresh = False
        for attempt in range(MAX_RETRIES):
            manifest, etag = self.load_dir(dir_id, fresh=fresh)
            new = manifest.copy()
            result = change(new)
            if not sets_readers:
                new.readers = self._log_checked(dir_id, new.readers)
            if not force and new.encode_plain() == manifest.encode_plain():
                return result  # nothing to switch
            new.version = manifest.version + 1
            now = time.time_ns()
            # touch=False: the change sets the folder's times itself (a queued upload's
            # commit, which happened earlier in POSIX terms).
            if touch and new.mtime_ns == manifest.mtime_ns:  # unless the change set it
                new.mtime_ns = now
            if touch and new.ctime_ns == manifest.ctime_ns:  # a change of content changes it
                new.ctime_ns = now
            raw = new.seal(self.vault_id, self.identity)
            try:
                new_etag = self.store.put(manifest_key(dir_id), raw, if_match=etag)
            except PreconditionFailed:
                fresh = True
                # Jittered backoff, so that many writers on one directory spread out.
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # noqa: S311
                continue
            self.state.observe(dir_id, new.version)
            new.signer = self.identity.recipient.verify_key_bytes
            self._remember(dir_id, new, new_etag)
            self._sync_file_shares(manifest, new)
            return result
        raise ContentionError("gave up after repeated concurrent changes to one directory")

    def commit_versions(
        self,
        parent_id: str,
        changes: list[VersionChange],
        *,
        also: Callable[[DirectoryManifest], None] | None = None,
        touch: bool = True,
        keep_lost: bool = True,
    ) -> list[tuple[str, Entry]]:
        """Point each change's name at its new version in one conditional switch of
        ``parent_id``, where the name still holds the version the writer started from
        (VersionChange says what counts as that); the (name, entry) pairs that lost a
        race to another writer are returned, and kept as conflict copies unless not
        ``keep_lost``. ``also`` makes further changes in the same switch (it runs
        first, on every attempt); ``touch`` as for update_dir.

        Every "switch a version if its base is unchanged" in the vault goes through
        here: a file written or put, a queued upload's commit, a re-encryption.
        """

        def switch(m: DirectoryManifest) -> list[tuple[str, Entry]]:
            if also is not None:
                also(m)
            lost = []
            for change in changes:
                new = change.new(m) if callable(change.new) else change.new
                if not self._place_version(m, change, new):
                    lost.append((change.name, new))
            return lost

        lost = self.update_dir(parent_id, switch, touch=touch)
        if keep_lost:
            for name, entry in lost:
                self.conflict_copy(parent_id, name, entry)
        return lost

    def _place_version(self, m: DirectoryManifest, change: VersionChange, new: Entry) -> bool:
        """Apply one change to ``m``; False if the name no longer holds its base."""
        cur = m.entries.get(change.name)
        if cur is not None and change.holds_base(cur):
            m.entries[change.name] = new
            return True
        if not change.follow:
            if cur is None and change.restore:
                m.entries[change.name] = new
                return True
            return False
        moved = [n for n, e in m.entries.items() if change.holds_base(e)]
        listed = any(e.id == change.file_id for e in m.entries.values())
        if moved:
            m.entries[moved[0]] = new
        elif cur is None and not listed:
            m.entries[change.name] = new  # removed or moved elsewhere meanwhile: keep ours
        elif change.replaces is not None and not listed and cur is not None and cur.type == "f":
            # A rename over the name, committed with the new file in this one switch.
            # If the name no longer holds what the rename replaced, another client
            # changed it meanwhile: theirs is kept as a conflict copy beside it.
            if [cur.id, cur.version] != list(change.replaces):
                log.warning("conflict: a rename replaced a file changed elsewhere")
                m.entries[conflict_name(change.name, m.entries, self.identity)] = cur
            m.entries[change.name] = new
        else:
            log.warning(
                "conflict: the directory has version %x, this upload replaces %x",
                cur.version if cur else 0,
                change.base.version if change.base is not None else 0,
            )
            return False
        return True

    # -- file shares (format.md 7.6) ----------------------------------------------------

    def is_file_share(self, node_id: str) -> bool:
        return node_id in self.access.file_roots

    def recipients_for(
        self, parent: DirectoryManifest, file_id: str, *, known: bool = False
    ) -> list[Recipient]:
        """Who a new version of ``file_id`` is wrapped to: its directory's readers,
        plus, for a shared file, the readers of its share pointer (``known``: as last
        seen, with no round trip)."""
        out = parent.recipients()
        if self.is_file_share(file_id):
            try:
                pointer = self.known_dir(file_id) if known else self.load_dir(file_id)[0]
                out += pointer.recipients()
            except NoMatchingKeyError:
                pass  # a pointer this key cannot read is one it cannot keep current either
        # From the directory, not the file: a new file is listed nowhere yet.
        allowed = self.log_readers(parent.dir_id)
        if allowed is not None:
            grants = self.access.current.grants.get(file_id, {})
            allowed |= {fp for fp in grants if self.access.trusted(fp) is not None}
        return [r for r in dict.fromkeys(out) if allowed is None or r.fingerprint in allowed]

    def _sync_file_shares(self, old: DirectoryManifest, new: DirectoryManifest) -> None:
        """Keep the pointer of each shared file in ``new`` equal to its entry.

        The directory switch has landed already: a pointer that cannot be updated
        now is left stale (fsck reports it), never a reason to undo the switch.
        """
        roots = self.access.file_roots
        if not roots:
            return
        shared = [
            f for f in {e.id for e in [*old.entries.values(), *new.entries.values()]} if f in roots
        ]
        for file_id in shared:
            now = {n: e for n, e in new.entries.items() if e.id == file_id and e.type == "f"}

            def point(m: DirectoryManifest, now: dict[str, Entry] = now) -> None:
                m.entries = dict(list(now.items())[:1])

            try:
                self.update_dir(file_id, point)
            except CsfsError as exc:
                with self._lock:
                    self.pointer_errors = [*self.pointer_errors[-20:], exc.message]

    def new_directory(
        self, parent: DirectoryManifest, mode: int, dir_id: str | None = None, *, put: bool = True
    ) -> DirectoryManifest:
        """A new empty folder's manifest (put in the store unless ``put`` is False:
        a folder made offline). With ``dir_id``: that id (a queued mkdir, applied
        again after a crash: the manifest may be in the store already)."""
        self.check_writable(parent.dir_id)
        dir_id = dir_id or new_id()
        self.note_parent(dir_id, parent.dir_id)
        readers = self._log_checked(dir_id, parent.readers)
        child = DirectoryManifest(
            dir_id, version=1, readers=readers, mtime_ns=time.time_ns(), mode=mode
        )
        if put:
            with contextlib.suppress(PreconditionFailed):
                # Only ours: a random 128-bit id. Taken already by an earlier attempt.
                self.store.put(
                    manifest_key(dir_id),
                    child.seal(self.vault_id, self.identity),
                    if_none_match=True,
                )
        return child

    # -- paths --------------------------------------------------------------------

    def root_entry(self) -> Entry:
        manifest, _ = self.load_dir(self.root_id)
        return Entry(
            self.root_id,
            "d",
            mode=manifest.mode,
            mtime_ns=manifest.mtime_ns,
            ctime_ns=manifest.ctime_ns,
            atime_ns=manifest.atime_ns,
            uid=manifest.uid,
            gid=manifest.gid,
        )

    def lookup(self, path: str) -> Entry:
        parts = split_path(path)
        entry = self.root_entry()
        above = {entry.id}  # the folders on this path: one met again is a cycle
        for i, name in enumerate(parts):
            if entry.type != "d":
                raise NotADirectory(f"not a directory: /{'/'.join(parts[:i])}")
            manifest = self.view_dir(entry.id)
            found = manifest.entries.get(name)
            if found is None:
                raise NotFound(f"no such file or directory: /{'/'.join(parts[: i + 1])}")
            if found.type == "d":
                if found.id in above:
                    raise IntegrityError(cycle_message("/" + "/".join(parts[: i + 1])))
                above.add(found.id)
            entry = found
        return entry

    def parent_of(self, path: str) -> tuple[str, str]:
        """(directory id of the parent, final name) for a path that is not the root."""
        parts = split_path(path)
        if not parts:
            raise UsageError("the vault root cannot be changed this way")
        parent = self.lookup("/" + "/".join(parts[:-1]))
        if parent.type != "d":
            raise NotADirectory(f"not a directory: /{'/'.join(parts[:-1])}")
        return parent.id, parts[-1]

    def listdir(self, path: str = "/") -> dict[str, Entry]:
        entry = self.lookup(path)
        if entry.type != "d":
            raise NotADirectory(f"not a directory: {path}")
        return dict(self.view_dir(entry.id).entries)

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except NotFound:
            return False
        return True

    # -- directories and links ----------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False, **meta: Any) -> Entry:
        """``meta``: further Entry fields of the new directory (owner, for example)."""
        parts = split_path(path)
        if parents:
            for i in range(1, len(parts)):
                sub = "/" + "/".join(parts[:i])
                if not self.exists(sub):
                    self.mkdir(sub, mode)
        parent_id, name = self.parent_of(path)
        parent, _ = self.load_dir(parent_id)
        if name in parent.entries:
            if parents and parent.entries[name].type == "d":
                return parent.entries[name]
            raise AlreadyExists(f"already exists: {path}")
        entry = Entry(
            self.new_directory(parent, mode).dir_id,
            "d",
            mode=mode,
            mtime_ns=time.time_ns(),
            **meta,
        )

        def add(m: DirectoryManifest) -> Entry:
            if name in m.entries:
                # Another client made it first: keep theirs; ours is an empty orphan.
                if m.entries[name].type == "d":
                    return m.entries[name]
                raise AlreadyExists(f"already exists: {path}")
            m.entries[name] = entry
            return entry

        return self.update_dir(parent_id, add)

    def symlink(self, target: str, path: str, **meta: Any) -> Entry:
        return self.make_node(path, Entry(new_id(), "l", mode=0o777, target=target, **meta))

    def make_node(self, path: str, entry: Entry) -> Entry:
        """Add a content-less entry (symlink, FIFO, socket, device) under a new name."""
        parent_id, name = self.parent_of(path)
        entry = replace(entry, mtime_ns=time.time_ns())

        def add(m: DirectoryManifest) -> Entry:
            if name in m.entries:
                raise AlreadyExists(f"already exists: {path}")
            m.entries[name] = entry
            return entry

        return self.update_dir(parent_id, add)

    def setattr(self, path: str, **changes: Any) -> Entry:
        """Change Entry fields other than id, type and content (mode, owner, times, xattrs)."""
        if not split_path(path):
            # The root has no entry in a parent: its manifest holds its mode and times.
            if set(changes) - {"mode", "mtime_ns", "atime_ns", "ctime_ns", "uid", "gid"}:
                raise NotSupported("the vault root keeps only its mode, owner and times")

            def change_root(m: DirectoryManifest) -> None:
                for key, value in changes.items():
                    setattr(m, key, value)

            self.update_dir(self.root_id, change_root, touch=False)
            return self.root_entry()
        parent_id, name = self.parent_of(path)

        def change(m: DirectoryManifest) -> Entry:
            cur = m.entries.get(name)
            if cur is None:
                raise NotFound(f"no such file or directory: {path}")
            new = replace(cur, **changes)
            m.entries[name] = new
            return new

        # An entry's attributes are not the folder's content: its times stay (POSIX).
        return self.update_dir(parent_id, change, touch=False)

    def remove(
        self,
        path: str,
        *,
        recursive: bool = False,
        expect_dir: bool | None = None,
        expect: tuple[str, int | None] | None = None,
        own_versions: Callable[[str], set[int]] | None = None,
    ) -> Entry | None:
        """Remove ``path``; the removed entry. With ``expect`` (the node id and, if
        known, version the caller saw there) it removes only that: if the name holds
        another node by the switch, or a version of it the caller did not see (and
        ``own_versions(id)`` does not name), that is newer than the removal and stays;
        None then."""
        parent_id, name = self.parent_of(path)

        def drop(m: DirectoryManifest) -> Entry | None:
            cur = m.entries.get(name)
            if cur is None:
                raise NotFound(f"no such file or directory: {path}")
            if expect is not None and not still_holds(cur, *expect, own_versions):
                return None
            if expect_dir is True and cur.type != "d":
                raise NotADirectory(f"not a directory: {path}")
            if expect_dir is False and cur.type == "d":
                raise IsADirectory(f"is a directory: {path}", hint="use rm -r")
            if cur.type == "d" and not recursive and self.load_dir(cur.id)[0].entries:
                raise DirectoryNotEmpty(f"directory not empty: {path}", hint="use rm -r")
            del m.entries[name]
            return cur

        # The objects of what was removed become orphans; `csfs fsck --repair` collects them.
        return self.update_dir(parent_id, drop)

    def rename(
        self,
        src: str,
        dst: str,
        *,
        replace_existing: bool = True,
        expect: Entry | Unset | None = UNSET,
        own_versions: Callable[[str], set[int]] | None = None,
        ctime_ns: int | None = None,
    ) -> Entry:
        """Move ``src`` to ``dst``. With ``expect`` (what the caller saw at ``dst``,
        None for nothing), replacing is conditional like a write: a file that another
        client put at ``dst`` meanwhile is kept there as a conflict copy, not lost.
        ``own_versions(id)`` names versions the caller itself may have committed
        since it looked (its upload queue). ``ctime_ns``: also set the moved entry's
        change time (POSIX: a rename changes it)."""
        src_parent, src_name = self.parent_of(src)
        dst_parent, dst_name = self.parent_of(dst)
        entry = self.lookup(src)
        if (src_parent, src_name) == (dst_parent, dst_name):
            return entry  # rename(2) of a path onto itself: nothing to do
        if ctime_ns is not None:
            entry = replace(entry, ctime_ns=ctime_ns)
        if self.share_roots_of(src_parent) != self.share_roots_of(dst_parent):
            # Its objects are wrapped to the readers where it is: moved across a share
            # boundary it would stay readable to the old readers and not to the new.
            # EXDEV makes mv copy (new versions, wrapped right) and delete.
            raise CrossShare(f"cannot move {src} across a share boundary", hint="copy it instead")
        if entry.type == "d":
            dst_parts = split_path(dst)
            if dst_parts[: len(split_path(src))] == split_path(src):
                raise UsageError(f"cannot move {src} into itself")

        def unexpected(cur: Entry) -> bool:
            if isinstance(expect, Unset) or cur.type != "f" or entry.type != "f":
                return False
            return (
                expect is None
                or cur.type != expect.type
                or not still_holds(cur, expect.id, expect.version, own_versions)
            )

        def place(m: DirectoryManifest, moving: Entry) -> None:
            cur = m.entries.get(dst_name)
            if cur is not None and cur.id != moving.id:
                if not replace_existing:
                    raise AlreadyExists(f"already exists: {dst}")
                if cur.type == "d" and (moving.type != "d" or self.load_dir(cur.id)[0].entries):
                    raise DirectoryNotEmpty(f"cannot replace directory {dst}")
                if cur.type != "d" and moving.type == "d":
                    raise NotADirectory(f"cannot replace non-directory {dst} with a directory")
                if unexpected(cur):
                    # Changed by another client since the caller looked: keep it.
                    m.entries[conflict_name(dst_name, m.entries, self.identity)] = cur
            m.entries[dst_name] = moving

        if src_parent == dst_parent:

            def move(m: DirectoryManifest) -> Entry:
                cur = m.entries.get(src_name)
                if cur is None:
                    raise NotFound(f"no such file or directory: {src}")
                del m.entries[src_name]
                if ctime_ns is not None:
                    cur = replace(cur, ctime_ns=ctime_ns)
                place(m, cur)
                return cur

            return self.update_dir(src_parent, move)

        # Across directories: add first, then remove. A crash in between leaves the
        # node in both places (fsck reports it), never in neither.
        moved = entry

        def add(m: DirectoryManifest) -> Entry:
            place(m, moved)
            return moved

        self.update_dir(dst_parent, add)
        crash_point("renamed-across")

        def drop(m: DirectoryManifest) -> Entry | None:
            cur = m.entries.get(src_name)
            if cur is None or cur.id != moved.id:
                return None
            if replace(cur, ctime_ns=moved.ctime_ns) != moved:
                # Changed by another client since ``entry`` was read (a newer version,
                # a chmod): the destination takes that first, or it would be lost.
                return cur
            del m.entries[src_name]
            return None

        for _ in range(MAX_RETRIES):
            newer = self.update_dir(src_parent, drop)
            if newer is None:
                return moved
            if ctime_ns is not None:
                newer = replace(newer, ctime_ns=ctime_ns)

            def carry(m: DirectoryManifest, old: Entry = moved, new: Entry = newer) -> bool:
                cur = m.entries.get(dst_name)
                if cur is None or cur.id != old.id:
                    return False  # the destination changed meanwhile: ``new`` stays at src
                m.entries[dst_name] = new
                return True

            if not self.update_dir(dst_parent, carry):
                return moved
            moved = newer
        raise ContentionError("gave up after repeated concurrent changes to a moved file")

    def remove_if(
        self,
        dir_id: str,
        name: str,
        node_id: str,
        version: int | None,
        own_versions: Callable[[str], set[int]] | None = None,
    ) -> None:
        """Remove ``name`` only if it still holds that node at that version (None:
        any; ``own_versions(id)``: also those): a newer one written meanwhile by
        another client stays. A folder is removed only while empty."""

        def drop(m: DirectoryManifest) -> None:
            cur = m.entries.get(name)
            if cur is None or not still_holds(cur, node_id, version, own_versions):
                return
            if cur.type == "d" and self.load_dir(cur.id)[0].entries:
                raise DirectoryNotEmpty(f"another client put files in {name!r} meanwhile")
            del m.entries[name]

        self.update_dir(dir_id, drop)

    def add_directory(self, dir_id: str, name: str, entry: Entry) -> None:
        """Put a folder made offline (``entry.id``) into ``dir_id`` under ``name``, or,
        if another client took the name meanwhile, under a conflict name."""
        parent, _ = self.load_dir(dir_id)
        self.new_directory(parent, entry.mode, entry.id)

        def add(m: DirectoryManifest) -> None:
            if any(e.id == entry.id for e in m.entries.values()):
                return  # added already (applied again after a crash)
            at = name if name not in m.entries else conflict_name(name, m.entries, self.identity)
            m.entries[at] = entry

        self.update_dir(dir_id, add)

    def set_entry(self, dir_id: str, name: str, node_id: str, changes: dict[str, Any]) -> None:
        """Change fields of the entry ``name`` if it still holds ``node_id``."""

        def change(m: DirectoryManifest) -> None:
            cur = m.entries.get(name)
            if cur is not None and cur.id == node_id:
                m.entries[name] = replace(cur, **changes)

        self.update_dir(dir_id, change, touch=False)

    def path_of(self, dir_id: str) -> str | None:
        """The path of a directory as this client knows it (for messages); None if unknown."""
        parts: list[str] = []
        node = dir_id
        for _ in range(256):
            if node in (self.root_id, self.header.root_id):
                return "/" + "/".join(reversed(parts))
            with self._lock:
                parents = sorted(self._parents.get(node, ()))
            if not parents:
                self._discover(node)
                with self._lock:
                    parents = sorted(self._parents.get(node, ()))
            if not parents:
                return None
            listing = self.load_dir(parents[0])[0].entries
            names = [n for n, e in listing.items() if e.id == node]
            if not names:
                return None
            parts.append(names[0])
            node = parents[0]
        return None

    # -- files --------------------------------------------------------------------------

    def file_context(self, file_id: str, version: int) -> Context:
        return Context(KIND_FILE, self.vault_id, bytes.fromhex(file_id), version)

    def upload_version(
        self,
        file_id: str,
        src: BinaryIO,
        recipients_from: DirectoryManifest,
        version: int | None = None,
    ) -> tuple[int, int]:
        """Encrypt ``src`` as a new version of ``file_id``; upload ciphertext, then envelope.

        Returns (version, plaintext length). The manifest is not touched.
        """
        self.check_writable(recipients_from.dir_id)
        version = version or new_version()
        context = self.file_context(file_id, version)
        recipients = self.recipients_for(recipients_from, file_id)
        ckey = content_key(file_id, version)
        if _known_size(src) <= SMALL_FILE:
            buf = io.BytesIO()
            env = encrypt_stream(src, buf, recipients, self.identity, context=context)
            self.store.put(ckey, buf.getvalue(), if_none_match=True)
        else:
            # Large or of unknown size: encrypt in a thread while the parts upload.
            env = self._encrypt_uploading(src, ckey, recipients, context)
        self.store.put(envelope_key(file_id, version), env.encode(), if_none_match=True)
        assert env.length is not None  # the writer knows it
        return version, env.length

    def _encrypt_uploading(
        self, src: BinaryIO, key: str, recipients: list[Recipient], context: Context
    ) -> Envelope:
        """Encrypt ``src`` and upload the ciphertext at once, overlapping the two."""
        sink = _PartSink()
        result: list[Envelope] = []

        def produce() -> None:
            try:
                result.append(encrypt_stream(src, sink, recipients, self.identity, context=context))  # type: ignore[arg-type]
                sink.finish()
            except BaseException as exc:
                sink.fail(exc)

        producer = threading.Thread(target=produce, name="csfs-encrypt", daemon=True)
        producer.start()
        try:
            self.store.put_parts(key, sink.parts(), if_none_match=True)
        finally:
            sink.cancel()
            producer.join()
        return result[0]

    def commit_file(self, parent_id: str, name: str, new: Entry, base: Entry | None) -> Entry:
        """Point ``name`` at ``new`` unless someone else changed it since ``base``.

        A change made meanwhile by another writer is kept, and ours is stored
        next to it as a conflict copy; nothing is lost.
        """

        def no_directory(m: DirectoryManifest) -> None:
            cur = m.entries.get(name)
            if cur is not None and cur.type == "d":
                raise IsADirectory(f"is a directory: {name}")

        change = VersionChange(name, new.id, new, base)
        lost = self.commit_versions(parent_id, [change], also=no_directory, keep_lost=False)
        return new if not lost else self.conflict_copy(parent_id, name, new)

    def conflict_copy(self, parent_id: str, name: str, new: Entry) -> Entry:
        """Keep a losing version as ``name (conflict ...)`` under a node id of its own.

        The version's objects are bound to their node id, so the copy is
        re-encrypted under the new one; conflicts are rare, and this keeps every
        node id unique in the tree.
        """
        parent, _ = self.load_dir(parent_id)
        node = new_id()
        version, length = self.reencrypt_version(new, parent, node)
        copy = replace(new, id=node, version=version, size=length)

        def add(m: DirectoryManifest) -> Entry:
            m.entries[conflict_name(name, m.entries, self.identity)] = copy
            return copy

        return self.update_dir(parent_id, add)

    def reencrypt_version(
        self, entry: Entry, recipients_from: DirectoryManifest, node_id: str | None = None
    ) -> tuple[int, int]:
        """Upload ``entry``'s bytes again as a new version (of ``node_id``, if given) under
        a fresh key; returns (version, length) as upload_version does.

        The decryption feeds the encryption through a pipe: the plaintext never
        touches the local disk, and memory stays bounded whatever the file's size.
        """
        rfd, wfd = os.pipe()
        failed: list[BaseException] = []
        with open(rfd, "rb") as src:
            with open(wfd, "wb") as dst:

                def pump() -> None:
                    try:
                        self.read_file(entry, dst)
                    except BaseException as exc:  # re-raised below
                        failed.append(exc)
                    finally:
                        with contextlib.suppress(OSError):
                            dst.close()

                reader = threading.Thread(target=pump, name="csfs-reencrypt", daemon=True)
                reader.start()
                try:
                    version, length = self.upload_version(node_id or entry.id, src, recipients_from)
                finally:
                    src.close()  # a failed upload: the reader gets EPIPE and stops
                    reader.join()
        if failed:
            # What was uploaded is cut short: never committed, collected by fsck.
            raise failed[0]
        if length != entry.size:
            raise IntegrityError("a file's length differs from its manifest entry")
        return version, length

    # -- named store operations for the owner's tools (sharing) -----------------------

    def create_manifest(self, manifest: DirectoryManifest) -> None:
        """Write the first version of a manifest (a file share's pointer); refused by
        the store if one exists."""
        self.store.put(
            manifest_key(manifest.dir_id),
            manifest.seal(self.vault_id, self.identity),
            if_none_match=True,
        )
        self.state.observe(manifest.dir_id, manifest.version)

    def post_notice(self, notice: Notice, seq: int, to: Recipient) -> None:
        """Write a share notice for its member (format.md 7.4), sealed to ``to``."""
        self.store.put(
            notice_key(notice.id),
            seal_notice(notice, seq, self.header, self.identity, to),
            if_none_match=True,
        )

    def envelope_with_etag(self, file_id: str, version: int) -> tuple[bytes, str]:
        """A version's key envelope as stored (bounded read), and its etag."""
        key = envelope_key(file_id, version)
        return read_limited_with_etag(self.store, key, MAX_ENVELOPE_SIZE, "key envelope")

    def replace_envelope(self, file_id: str, version: int, raw: bytes, etag: str) -> None:
        """Store a re-wrapped envelope if the store still holds the one read (``etag``);
        PreconditionFailed otherwise."""
        self.store.put(envelope_key(file_id, version), raw, if_match=etag)

    def delete_version(self, file_id: str, version: int) -> None:
        """Delete a superseded version's objects; those already gone are fine."""
        for key in (content_key(file_id, version), envelope_key(file_id, version)):
            with contextlib.suppress(NotFound):
                self.store.delete(key)

    def put_version_object(self, key: str, path: str) -> None:
        """Upload one object of a sealed version (its content or envelope) from a
        local file, if the store has none at ``key``. Idempotent: one already there
        with the same length is this upload, done before a crash or by a retry;
        UploadImpossible if the store holds other contents there."""
        try:
            if os.path.getsize(path) > 8 << 20:
                self.store.put_file(key, path, if_none_match=True)
            else:
                with open(path, "rb") as f:
                    self.store.put(key, f.read(), if_none_match=True)
        except PreconditionFailed:
            # Already there: an upload before a crash, or a retry. Same key, same bytes.
            if self.store.head(key).size != os.path.getsize(path):
                raise UploadImpossible(
                    f"object {key} exists in the store with other contents"
                ) from None

    def write_file(
        self, path: str, src: BinaryIO, *, mode: int | None = None, mtime_ns: int | None = None
    ) -> Entry:
        """Write ``src`` as the new content of ``path`` (created if missing)."""
        parent_id, name = self.parent_of(path)
        parent, _ = self.load_dir(parent_id)
        base = parent.entries.get(name)
        if base is not None and base.type == "d":
            raise IsADirectory(f"is a directory: {path}")
        file_id = base.id if base is not None and base.type == "f" else new_id()
        version, length = self.upload_version(file_id, src, parent)
        if mode is None:
            mode = base.mode if base is not None and base.type == "f" else 0o644
        new = Entry(
            file_id,
            "f",
            mode=mode,
            size=length,
            mtime_ns=mtime_ns or time.time_ns(),
            version=version,
        )
        return self.commit_file(parent_id, name, new, base)

    def open_version(
        self, entry: Entry, header: bytes | None = None
    ) -> tuple[Envelope, ChunkCipher]:
        """Fetch and check a file version's envelope and payload header."""
        if entry.type != "f":
            raise IsADirectory("not a regular file")
        try:
            env_raw = read_limited(
                self.store, envelope_key(entry.id, entry.version), MAX_ENVELOPE_SIZE, "key envelope"
            )
            if header is None:
                header = self.store.get(content_key(entry.id, entry.version), 0, HEADER_SIZE)
        except NotFound:
            raise IntegrityError(
                "a file's ciphertext or key envelope is missing from the store"
            ) from None
        env, cipher = open_envelope(
            env_raw,
            header,
            self.identity,
            context=self.file_context(entry.id, entry.version),
            allowed_signers=self.signers_for(entry.id),
        )
        if env.length != entry.size:
            raise AuthenticationError("file size in its directory does not match its envelope")
        if cipher.needs_map:
            try:
                block = self.store.get(
                    content_key(entry.id, entry.version), HEADER_SIZE, HEADER_SIZE + cipher.map_size
                )
            except NotFound:
                raise IntegrityError("a file's ciphertext is missing from the store") from None
            cipher.load_map(block)
        return env, cipher

    def read_file(self, path_or_entry: str | Entry, dst: BinaryIO) -> Entry:
        """Decrypt a whole file into ``dst``, streaming.

        On failure ``dst`` may hold a verified prefix: the caller discards it.
        """
        entry = self.lookup(path_or_entry) if isinstance(path_or_entry, str) else path_or_entry
        if entry.type != "f":
            raise IsADirectory("not a regular file")
        if entry.version == 0:
            return entry
        ckey = content_key(entry.id, entry.version)
        try:
            if payload_size(entry.size) <= SMALL_FILE:
                # Small: one GET of the whole payload (its header included), one of the
                # envelope. Bounded by the largest payload of entry.size bytes (the
                # smallest chunks): a store that swapped in a huge object costs no memory.
                bound = max_payload_size(entry.size) + MAX_MAP_SIZE
                blob = self.store.get(ckey, 0, bound + 1)
                if len(blob) > bound:
                    raise AuthenticationError(_EXTENDED)
                _, cipher = self.open_version(entry, blob[:HEADER_SIZE])
                decrypt_opened(
                    io.BytesIO(blob[HEADER_SIZE + cipher.map_size :]),
                    dst,
                    cipher,
                    self.sources(entry, cipher),
                )
                return entry
            _, cipher = self.open_version(entry)
            with tempfile.TemporaryDirectory(dir=self.tmp_dir) as tmp:
                local = os.path.join(tmp, "payload")
                if self.store.get_to_file(ckey, local, end=cipher.size + 1).size != cipher.size:
                    raise AuthenticationError(_EXTENDED)
                with open(local, "rb") as f:
                    f.seek(HEADER_SIZE + cipher.map_size)  # the map was read by open_version
                    decrypt_opened(f, dst, cipher, self.sources(entry, cipher))
        except NotFound:
            raise IntegrityError(
                "a file's ciphertext or key envelope is missing from the store"
            ) from None
        return entry

    def read_range(self, entry: Entry, cipher: ChunkCipher, offset: int, size: int) -> bytes:
        """Random access: decrypt only the chunks covering [offset, offset+size)."""
        key = content_key(entry.id, entry.version)
        return cipher.read_range(
            lambda a, b: self.store.get(key, a, b), offset, size, self.sources(entry, cipher)
        )

    def sources(self, entry: Entry, cipher: ChunkCipher) -> SourceOpener | None:
        """What opens the earlier versions a delta version draws on (format.md 2.6),
        read from the store; None for a self-contained version."""
        if not cipher.delta:
            return None

        def fetch_for(version: int) -> Fetch:
            key = content_key(entry.id, version)

            def fetch(start: int, stop: int) -> bytes:
                try:
                    return self.store.get(key, start, stop)
                except NotFound:
                    raise IntegrityError(
                        f"an earlier version ({key}) that a file's version draws on is "
                        "missing from the store"
                    ) from None

            return fetch

        return SourceSet(cipher, fetch_for)

    # -- trees ------------------------------------------------------------------------

    def walk(
        self, path: str = "/", entry: Entry | None = None, *, fresh: bool = False
    ) -> Iterator[tuple[str, Entry]]:
        """Every (path, entry) under ``path``, depth first, parents before children;
        ``fresh`` re-reads every manifest instead of trusting the TTL cache."""
        stack = [(path, entry or self.lookup(path))]
        expanded: set[str] = set()  # a node listed twice, or a cycle, is entered once
        while stack:
            path, entry = stack.pop()
            yield path, entry
            if entry.type == "d" and entry.id not in expanded:
                expanded.add(entry.id)
                manifest = self.load_dir(entry.id, fresh=fresh)[0]
                for name, child in sorted(manifest.entries.items(), reverse=True):
                    stack.append((posixpath.join(path, name), child))


class _PartSink:
    """A write-only file that hands fixed-size parts to an uploading consumer."""

    PART = 8 << 20
    DEPTH = 4  # parts waiting: bounds memory while the upload is slower than encryption

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=self.DEPTH)
        self.buf = bytearray()
        self.cancelled = threading.Event()

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise UsageError("upload cancelled")

    def write(self, data: bytes | memoryview) -> int:
        self.buf += data
        while len(self.buf) >= self.PART:
            self._put(bytes(self.buf[: self.PART]))
            del self.buf[: self.PART]
        return len(data)

    def finish(self) -> None:
        if self.buf:
            self._put(bytes(self.buf))
        self._put(None)

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(UsageError):
            self._put(exc)

    def cancel(self) -> None:
        self.cancelled.set()

    def parts(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def same_version(cur: Entry, base: Entry | None) -> bool:
    """Whether ``cur`` is still the file version a writer started from."""
    return (
        base is not None
        and cur.id == base.id
        and cur.version == base.version
        and cur.type == base.type
    )


def still_holds(
    cur: Entry, node_id: str, version: int | None, own: Callable[[str], set[int]] | None
) -> bool:
    """Whether ``cur`` is still what a writer saw: node ``node_id`` at ``version``
    (None: any), or at one of the writer's own later versions (``own(node_id)``)."""
    if cur.id != node_id:
        return False
    return version is None or cur.version == version or cur.version in (own(cur.id) if own else ())


def conflict_name(name: str, taken: dict[str, Entry], identity: Identity) -> str:
    stem, ext = posixpath.splitext(name)
    tag = identity.recipient.fingerprint[7:15]
    when = time.strftime("%Y-%m-%d %H%M%S", time.gmtime())
    candidate = f"{stem} (conflict {tag} {when}){ext}"
    n = 2
    while candidate in taken:
        candidate = f"{stem} (conflict {tag} {when} {n}){ext}"
        n += 1
    return candidate


def _known_size(src: BinaryIO) -> int:
    """Bytes left in ``src`` if that can be known cheaply, else a size that counts as large."""
    try:
        pos = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(pos)
        return end - pos
    except (OSError, ValueError, AttributeError):
        return SMALL_FILE + 1


def cycle_message(path: str) -> str:
    return f"directory cycle in the vault: {path} leads back to a folder above it"


@functools.lru_cache(maxsize=1024)
def _fingerprint(pem: str) -> str:
    return load_recipient_pem(pem.encode(), "reader key").fingerprint


def _virtual_id(path: str) -> str:
    """A stable id for a folder of the Shared view; it never names a store object."""
    return hashlib.sha256(b"csfs v1 virtual\0" + path.encode()).hexdigest()[:32]


def store_has(store: Store, key: str) -> bool:
    try:
        store.head(key)
    except NotFound:
        return False
    return True


def _state_dir(state_dir: str | None) -> str:
    return state_dir if state_dir is not None else default_state_dir()
