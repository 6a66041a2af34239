"""The vault: an encrypted tree of directories and files in a store (docs/format.md 5).

Crash safety comes from the update order: a file version's ciphertext, then
its envelope, then the directory manifest switched by a conditional PUT. A
crash leaves at most orphans, never a torn file. Concurrent writers never
lose data silently: the loser of the conditional PUT re-reads the manifest
and re-applies its change; a real conflict becomes a conflict copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time

from cachetools import LRUCache, TTLCache

from csfs.crypto import (
    Identity,
    Recipient,
)
from csfs.crypto.envelope import MAX_ENVELOPE_SIZE
from csfs.errors import (
    AuthenticationError,
    IsADirectory,
    NotFound,
    PreconditionFailed,
    UploadImpossible,
    UsageError,
)
from csfs.store import Store
from csfs.vault import versions
from csfs.vault.access import (
    AccessLog,
    Notice,
    Pins,
    check_member_name,
    default_config_dir,
    notice_key,
    seal_notice,
)
from csfs.vault.authority import Authority
from csfs.vault.core import Overlay
from csfs.vault.layout import (
    HEADER_KEY,
    MAX_SIGNED_BLOB,
    VaultHeader,
    content_key,
    envelope_key,
    manifest_key,
    read_limited,
    read_limited_with_etag,
)
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import (
    Manifests,
    VersionChange,
)
from csfs.vault.namespace import Namespace
from csfs.vault.paths import split_path
from csfs.vault.shared_view import SharedView
from csfs.vault.state import VaultState, default_state_dir

__all__ = ["Vault", "split_path", "store_has"]  # split_path: the mount imports it from here


class Vault(Namespace, Authority, SharedView, Manifests):
    """One open vault: its header, the directory manifests, the file versions and the
    access log, read and changed through one store with this client's identity.

    A facade: it owns the store, the identity, the header and the client's state,
    and composes the parts that do the work (core.py declares what they share):
    Manifests (manifests.py), Authority (authority.py), SharedView
    (shared_view.py), Namespace (namespace.py); the file versions' I/O is here.

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

    # -- files --------------------------------------------------------------------------

    # Version I/O lives in versions.py: one path that checks every version it opens.
    file_context = versions.file_context
    open_version = versions.open_version
    read_file = versions.read_file
    read_range = versions.read_range
    sources = versions.sources
    upload_version = versions.upload_version
    reencrypt_version = versions.reencrypt_version
    conflict_copy = versions.conflict_copy
    kept_for_uploads = versions.kept_for_uploads
    sources_in_flight = versions.sources_in_flight
    write_file = versions.write_file

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

def store_has(store: Store, key: str) -> bool:
    try:
        store.head(key)
    except NotFound:
        return False
    return True


def _state_dir(state_dir: str | None) -> str:
    return state_dir if state_dir is not None else default_state_dir()
