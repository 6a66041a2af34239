"""What every layer of a mount session (csfs.vault.filesystem) shares: the
mount's state, lookups that see what is not committed yet, and the rule that
namespace changes run under the vault's commit lock."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import LRUCache

from csfs.crypto import ChunkCipher
from csfs.errors import BadHandle, ReadOnlyMount
from csfs.vault.cache import ObjectCache
from csfs.vault.manifest import Entry
from csfs.vault.upload_queue import UploadQueue, with_content
from csfs.vault.vault import Vault, split_path
from csfs.vault.versions import CacheSource

if TYPE_CHECKING:
    from csfs.vault.open_file import OpenFile

T = TypeVar("T")


def committing(method: Callable[..., T]) -> Callable[..., T]:
    """Run a namespace change under the vault's commit lock (see Vault.commit_lock)."""

    @functools.wraps(method)
    def wrapper(self: SessionState, *args: Any, **kwargs: Any) -> T:
        with self.vault.commit_lock:
            return method(self, *args, **kwargs)

    return wrapper


class SessionState:
    """The state of one mount's session, set up by FileSystem.__init__ (see there
    for what each holds), and the lookups every layer makes."""

    vault: Vault
    read_only: bool
    cache: ObjectCache
    source: CacheSource
    scratch_dir: str
    sealed_dir: str
    errors: list[str]
    touched: dict[str, int]
    queue: UploadQueue
    lock: threading.RLock
    open_files: dict[str, OpenFile]
    handles: dict[int, OpenFile]
    next_fh: int
    ciphers: LRUCache[tuple[str, int], ChunkCipher]
    allocated: LRUCache[tuple[str, int], int]
    stored_chunks: LRUCache[tuple[str, int], int]
    allocated_lock: threading.Lock
    created: dict[tuple[str, str], Entry]
    seen: LRUCache[tuple[str, str], tuple[str, int]]
    owner: tuple[int, int]
    hidden: dict[str, OpenFile]

    def note_error(self, msg: str) -> None:
        with self.lock:
            self.errors = [*self.errors[-50:], f"{time.strftime('%H:%M:%S')} {msg}"]

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyMount("read-only mount")

    def _online(self) -> bool:
        """Whether a namespace change goes to the store now. While it is unreachable,
        and then until the changes queued meanwhile have reached it (they stay in
        order), changes are queued."""
        return not self.vault.offline and not self.queue.pending_ops()

    def _handle(self, fh: int) -> OpenFile:
        with self.lock:
            of = self.handles.get(fh)
        if of is None:
            raise BadHandle("bad file handle")
        return of

    # -- lookups ------------------------------------------------------------------------

    def _overlay(self, entry: Entry) -> Entry:
        if entry.type != "f":
            return entry
        with self.lock:
            of = self.open_files.get(entry.id)
        if of is not None and (of.dirty or of.base_version != entry.version):
            return replace(
                entry,
                size=of.size,
                mtime_ns=of.mtime_ns,
                version=of.base_version,
                mode=of.mode,
                ctime_ns=of.ctime_ns or entry.ctime_ns,
                atime_ns=of.atime_ns or entry.atime_ns,
            )
        rec = self.queue.pending(entry.id)
        return entry if rec is None else with_content(entry, rec)

    def _raw_entry(self, path: str) -> tuple[str, str, Entry | None]:
        """(parent id, name, entry) of a path that is not the root; entry None if absent.

        A file created here and not committed yet comes first: renamed over a name,
        it hides the entry it replaces until its commit replaces that in the store."""
        parent_id, name = self.vault.parent_of(path)
        with self.lock:
            raw = self.created.get((parent_id, name))
        if raw is None:
            raw = self._stored_entry(parent_id, name)
        return parent_id, name, raw

    def _stored_entry(self, parent_id: str, name: str) -> Entry | None:
        return self.vault.view_dir(parent_id).entries.get(name)

    def lookup(self, path: str) -> Entry:
        if split_path(path):
            # A file created here and not committed yet hides what it will replace.
            parent_id, name = self.vault.parent_of(path)
            with self.lock:
                created = self.created.get((parent_id, name))
            if created is not None:
                return self._overlay(created)
        return self._overlay(self.vault.lookup(path))  # (it refuses a directory cycle)
