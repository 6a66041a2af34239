"""The member keys this user has seen, per vault and name: trust on first use.

A name whose logged key differs from the pinned one is reported, and its member
is not trusted (no writes accepted, no shares made) until `csfs member trust`.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading


class Pins:
    """Member keys this user has seen, per vault and name (trust on first use)."""

    def __init__(self, config_dir: str | None) -> None:
        self.path = os.path.join(config_dir, "pins.json") if config_dir else None
        self.lock = threading.Lock()
        self.dirty = False
        self.data: dict[str, dict[str, str]] = {}
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError):
                self.data = {}

    def get(self, vault_id: str, name: str) -> str | None:
        return self.data.get(vault_id, {}).get(name)

    def pin(self, vault_id: str, name: str, fingerprint: str) -> None:
        with self.lock:
            if self.data.setdefault(vault_id, {}).get(name) != fingerprint:
                self.data[vault_id][name] = fingerprint
                self.dirty = True

    def forget(self, vault_id: str, name: str) -> None:
        with self.lock:
            if self.data.get(vault_id, {}).pop(name, None) is not None:
                self.dirty = True

    def save(self) -> None:
        with self.lock:
            if not self.path or not self.dirty:
                return
            directory = os.path.dirname(self.path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pins-")
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            self.dirty = False


def default_config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "csfs")
