"""Who may read and write what (docs/format.md 7): the access log's view of share
roots, writers and readers, the parents each node was seen under, and keeping
file shares' pointers in step after a switch (7.6)."""

from __future__ import annotations

import functools
import time

from csfs.crypto import Recipient
from csfs.crypto.keys import load_recipient_pem
from csfs.errors import AccessDenied, CsfsError, NoMatchingKeyError, TransientStoreError
from csfs.vault.core import VaultCore
from csfs.vault.manifest import DirectoryManifest, Entry


class Authority(VaultCore):
    """The access log applied to the tree: share roots, signers, writers, recipients.

    Owns the refresh of the access log and the graph of parents each node was
    seen listed in (with the manifests' _remember). Never trusts a signer or a
    reader the log does not grant; a manifest's own readers list is never the
    authority.
    """

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

    def note_parent(self, node_id: str, parent_id: str) -> None:
        with self._lock:
            self._parents.setdefault(node_id, set()).add(parent_id)

    def _listing_parents(self, node: str) -> set[str]:
        """The folders known to list ``node``. A node no walk in this process reached
        (an upload queued before a remount, say) is looked up once."""
        with self._lock:
            parents = set(self._parents.get(node, ()))
        if not parents and not self._discovering:
            self._discover(node)
            with self._lock:
                parents = set(self._parents.get(node, ()))
        return parents

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
            parents = self._listing_parents(node)
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
            parents = self._listing_parents(node)
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

    def _after_switch(self, old: DirectoryManifest, new: DirectoryManifest) -> None:
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


@functools.lru_cache(maxsize=1024)
def _fingerprint(pem: str) -> str:
    return load_recipient_pem(pem.encode(), "reader key").fingerprint
