"""What the parts of a Vault share: its attributes, and the methods one part calls
on another. Vault (vault.py) composes the parts as mixins over this class:
Manifests, Authority, SharedView, Namespace, and the version I/O in vault.py.

The methods here only declare the interface: each is defined by the part named
in its docstring, which comes before VaultCore in Vault's method order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from cachetools import LRUCache, TTLCache

from csfs.crypto import Identity
from csfs.store import Store
from csfs.vault.layout import VaultHeader
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.state import VaultState

if TYPE_CHECKING:
    from csfs.vault.access import AccessLog

T = TypeVar("T")
# A folder as the mount shows it, given how to load the stored one (Vault.overlay).
Overlay = Callable[[str, Callable[[], DirectoryManifest]], DirectoryManifest | None]


class VaultCore:
    """The state every part of a Vault reads (set by Vault.__init__), and the
    methods the parts call on each other."""

    store: Store
    identity: Identity
    header: VaultHeader
    state: VaultState
    vault_id: bytes
    access: AccessLog
    commit_lock: threading.RLock
    tmp_dir: str | None
    overlay: Overlay | None
    offline_since: float | None
    pointer_errors: list[str]
    _lock: threading.RLock
    _manifests: TTLCache[str, tuple[DirectoryManifest, str]]
    _known: LRUCache[str, tuple[DirectoryManifest, str]]
    _store_view: threading.local
    _access_ttl: float
    _access_lock: threading.Lock
    _access_checked: float
    _parents: dict[str, set[str]]
    _children: dict[str, set[str]]
    _virtual: dict[str, DirectoryManifest]
    _discovering: bool

    # -- Manifests (manifests.py) ----------------------------------------------------

    @property
    def offline(self) -> bool:
        raise NotImplementedError

    def went_offline(self) -> None:
        raise NotImplementedError

    def load_dir(self, dir_id: str, *, fresh: bool = False) -> tuple[DirectoryManifest, str]:
        raise NotImplementedError

    def known_dir(self, dir_id: str) -> DirectoryManifest:
        raise NotImplementedError

    def view_dir(self, dir_id: str) -> DirectoryManifest:
        raise NotImplementedError

    def update_dir(
        self,
        dir_id: str,
        change: Callable[[DirectoryManifest], T],
        *,
        force: bool = False,
        sets_readers: bool = False,
        touch: bool = True,
    ) -> T:
        raise NotImplementedError

    def relist(self, dir_id: str, mode: int, parent_id: str, name: str) -> None:
        raise NotImplementedError

    # -- Authority (authority.py) ----------------------------------------------------

    @property
    def is_owner(self) -> bool:
        raise NotImplementedError

    def refresh_access(self, *, force: bool = False) -> None:
        raise NotImplementedError

    def note_parent(self, node_id: str, parent_id: str) -> None:
        raise NotImplementedError

    def share_roots_of(self, node_id: str) -> set[str | None]:
        raise NotImplementedError

    def _discover(self, node_id: str) -> None:
        raise NotImplementedError

    def signers_for(self, node_id: str) -> set[bytes]:
        raise NotImplementedError

    def _log_checked(self, node_id: str, readers: list[str]) -> list[str]:
        raise NotImplementedError

    def check_writable(self, dir_id: str) -> None:
        raise NotImplementedError

    # -- SharedView (shared_view.py) -------------------------------------------------

    @property
    def shared_view(self) -> bool:
        raise NotImplementedError

    @property
    def root_id(self) -> str:
        raise NotImplementedError

    def _build_virtual(self) -> dict[str, DirectoryManifest]:
        raise NotImplementedError

    # -- Namespace (namespace.py) ----------------------------------------------------

    def walk(
        self, path: str = "/", entry: Entry | None = None, *, fresh: bool = False
    ) -> Iterator[tuple[str, Entry]]:
        raise NotImplementedError

    # -- versions (vault.py) ---------------------------------------------------------

    def conflict_copy(self, parent_id: str, name: str, new: Entry) -> Entry:
        raise NotImplementedError
