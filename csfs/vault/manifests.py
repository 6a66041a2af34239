"""Directory manifests: loading them (a TTL cache, the last verified copy for
offline use, the rollback floor) and switching them (docs/format.md 5.3, 5.5).

Every switch is conditional on the version read (If-Match); a lost race re-reads
and re-applies the change. commit_versions is the one primitive that points
names at new file versions where the name still holds what the writer started
from. Whose signatures a manifest may carry is asked of signers_for (authority.py).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from csfs.crypto import Identity
from csfs.errors import (
    AuthenticationError,
    ContentionError,
    FormatError,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    TransientStoreError,
)
from csfs.vault.core import T, VaultCore
from csfs.vault.layout import HEADER_KEY, manifest_key, read_limited_with_etag
from csfs.vault.manifest import MAX_MANIFEST_OBJECT, DirectoryManifest, Entry

log = logging.getLogger("csfs.upload")  # conflicts met by queued uploads
MAX_RETRIES = 50
VERSION_LIMIT = 1 << 63  # manifest versions at or above are format errors (format.md 5.3)


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


class Manifests(VaultCore):
    """Loads and switches directory manifests, and knows when the store is offline.

    Owns the manifest cache, the last verified copy of each (served while the
    store is unreachable) and the rollback floors it raises. Never switches a
    manifest without If-Match on the version read; never serves one older than
    a floor.
    """

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
            # A name added to (or changed in) a removed folder brings the folder back
            # (format.md 5.5); a change that clears the mark itself does not.
            revived = new.removed if manifest.removed and new.removed and new.entries else None
            if revived is not None:
                new.removed = None
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
            self._after_switch(manifest, new)
            if revived is not None:
                self.relist(dir_id, new.mode, *revived)
            return result
        raise ContentionError("gave up after repeated concurrent changes to one directory")

    def relist(self, dir_id: str, mode: int, parent_id: str, name: str) -> None:
        """Make sure ``parent_id`` lists the folder ``dir_id``: back under ``name``, or
        a conflict name if another node took it (format.md 5.5: a folder an rmdir
        removed while another client added a name to it)."""

        def add(m: DirectoryManifest) -> None:
            if any(e.id == dir_id for e in m.entries.values()):
                return
            at = name if name not in m.entries else conflict_name(name, m.entries, self.identity)
            log.warning("a folder removed while another client wrote in it is put back")
            m.entries[at] = Entry(dir_id, "d", mode=mode, mtime_ns=time.time_ns())

        self.update_dir(parent_id, add)

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

    def _after_switch(self, old: DirectoryManifest, new: DirectoryManifest) -> None:
        """Called once a switch of ``old`` to ``new`` has landed (Authority keeps file
        shares' pointers in step)."""


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

