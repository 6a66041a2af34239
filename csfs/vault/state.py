"""What this client remembers about a vault between runs: the pinned header and
the highest manifest version seen per directory.

Protects against: the store swapping the vault header (a different owner or
root), and replaying an older, validly signed directory manifest (rollback).
A client that has never seen a vault cannot detect a rollback; docs/design.md
says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from typing import Any

from csfs.errors import AuthenticationError


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "csfs", "vaults")


def state_path(directory: str, store_url: str) -> str:
    # Keyed by where the vault is, not by the id inside its (untrusted) header.
    name = hashlib.sha256(store_url.encode()).hexdigest()[:32]
    return os.path.join(directory, f"{name}.json")


def forget_store_state(store_url: str, directory: str | None = None) -> bool:
    """Delete everything this client remembers about the vault at ``store_url``
    (pinned header, rollback floors, access-log state of every key); True if
    there was something. The next open is a first open: the owner must be
    trusted again, and rollback is undetectable until the client has seen the
    vault anew."""
    path = state_path(directory if directory is not None else default_state_dir(), store_url)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class VaultState:
    def __init__(self, directory: str | None, store_url: str) -> None:
        self.store_url = store_url
        self.path = state_path(directory, store_url) if directory else None
        self.lock = threading.Lock()
        self.header_digest: str | None = None
        self.seen: dict[str, int] = {}
        # Per key fingerprint: the verified access-log head and what it derived. Two
        # keys used on one machine (an owner and a member) each keep their own.
        self.access: dict[str, dict[str, Any]] = {}
        # Directory id -> the folders this client has seen listing it (any key it used).
        # Remembered so that "listed in two folders" (format.md 7.3) holds across runs:
        # a writer who lists an owner-only folder in its share cannot sign for it in a
        # later run that reaches it only through the share.
        self.listed_in: dict[str, list[str]] = {}
        # Key fingerprints whose user accepted this vault's owner. The header pin is
        # about the store (per URL, whatever key saw it); trusting an owner is a
        # decision per key: a second key of the same OS user is asked again.
        self.trusted_by: set[str] = set()
        self.dirty = False
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    data = json.load(f)
                self.header_digest = data.get("header")
                # A floor of 2^63 or more came from a manifest that readers now reject
                # (format.md 3.2); kept, it would refuse every valid manifest forever.
                self.seen = {
                    str(k): int(v) for k, v in data.get("dirs", {}).items() if int(v) < 1 << 63
                }
                self.access = dict(data.get("access", {}))
                self.listed_in = {
                    str(k): [str(p) for p in v] for k, v in data.get("parents", {}).items()
                }
                # A file from before "trusted" was kept: every key with access state
                # opened the vault, so had passed the owner check then.
                self.trusted_by = {
                    str(fp) for fp in data.get("trusted", list(self.access))
                }
            except (OSError, ValueError):
                # A damaged state file loses rollback memory, never data.
                self.seen = {}

    def pin_header(self, digest: str) -> None:
        with self.lock:
            if self.header_digest is None:
                self.header_digest = digest
                self.dirty = True
            elif self.header_digest != digest:
                raise AuthenticationError(
                    "the vault header changed since this client last saw it",
                    hint=f"if you wiped and re-created {self.store_url} yourself, run "
                    f"`csfs forget-store --store {self.store_url}`; otherwise someone "
                    "replaced the vault's header: do not trust this store",
                )

    def forget(self) -> None:
        """Drop the pinned header and everything learnt under it (saved by :meth:`save`)."""
        with self.lock:
            self.header_digest = None
            self.seen = {}
            self.access = {}
            self.trusted_by = set()
            self.dirty = True

    def floor(self, dir_id: str) -> int:
        """The highest version of this directory's manifest seen so far."""
        with self.lock:
            return self.seen.get(dir_id, 0)

    def observe(self, dir_id: str, version: int) -> None:
        with self.lock:
            if version > self.seen.get(dir_id, 0):
                self.seen[dir_id] = version
                self.dirty = True

    def set_listed_in(self, dir_id: str, parents: set[str]) -> None:
        with self.lock:
            now = sorted(parents)
            if self.listed_in.get(dir_id, []) != now:
                if now:
                    self.listed_in[dir_id] = now
                else:
                    self.listed_in.pop(dir_id, None)
                self.dirty = True

    def owner_trusted_by(self, fingerprint: str) -> bool:
        with self.lock:
            return fingerprint in self.trusted_by

    def trust_owner(self, fingerprint: str) -> None:
        with self.lock:
            if fingerprint not in self.trusted_by:
                self.trusted_by.add(fingerprint)
                self.dirty = True

    def access_for(self, fingerprint: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.access.get(fingerprint, {}))

    def set_access(self, fingerprint: str, access: dict[str, Any]) -> None:
        with self.lock:
            self.access[fingerprint] = access
            self.dirty = True

    def save(self) -> None:
        if not self.path or not self.dirty:
            return
        with self.lock:
            data = json.dumps(
                {
                    "header": self.header_digest,
                    "dirs": self.seen,
                    "access": self.access,
                    "parents": self.listed_in,
                    "trusted": sorted(self.trusted_by),
                }
            )
            self.dirty = False
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".state-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
