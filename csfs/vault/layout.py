"""Where vault objects live in a store, and the vault header (docs/format.md 5).

Object keys are built from random ids only: no name, depth or parent is
visible to the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

from csfs.crypto.keys import Identity
from csfs.crypto.signing import MAX_BLOB, sign_blob, verify_blob
from csfs.errors import AuthenticationError, FormatError
from csfs.store.base import Store

HEADER_KEY = "csfs-vault"
HEADER_FORMAT = "csfs-vault-1"
HEADER_DOMAIN = b"csfs v1 vault header\0"
_ID = re.compile(r"[0-9a-f]{32}")
_OWNER = re.compile(r"[0-9a-f]{64}")
_HEADER_FIELDS = {"format", "owner", "root_id", "vault_id"}
MAX_SIGNED_BLOB = 4 + MAX_BLOB + 96  # the largest signed blob (format.md 5.1)


def new_id() -> str:
    """A random 128-bit node id, as 32 lowercase hex digits."""
    return os.urandom(16).hex()


def check_id(node_id: str) -> str:
    if not isinstance(node_id, str) or not _ID.fullmatch(node_id):
        raise FormatError("malformed node id in vault metadata")
    return node_id


def read_limited(store: Store, key: str, limit: int, what: str) -> bytes:
    """The object at ``key``, which is valid only if at most ``limit`` bytes long.

    Every object's largest valid size is known before it is read, so a store
    that swaps in a huge object costs a reader ``limit + 1`` bytes, never more.
    """
    data = store.get(key, 0, limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is larger than any valid one ({limit} bytes): replaced?")
    return data


def read_limited_with_etag(store: Store, key: str, limit: int, what: str) -> tuple[bytes, str]:
    """:func:`read_limited`, with the etag of the version read."""
    data, etag = store.get_with_etag(key, end=limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is larger than any valid one ({limit} bytes): replaced?")
    return data, etag


def manifest_key(dir_id: str) -> str:
    return f"m/{check_id(dir_id)}"


def content_key(file_id: str, version: int) -> str:
    return f"c/{check_id(file_id)}/{version:016x}"


def envelope_key(file_id: str, version: int) -> str:
    return f"k/{check_id(file_id)}/{version:016x}"


def new_version() -> int:
    """Random, not sequential: two writers never pick the same version key."""
    return int.from_bytes(os.urandom(8), "big") >> 1 or 1


@dataclass(frozen=True)
class VaultHeader:
    """The one plaintext object: the vault id, the root directory, the owner's signing key."""

    vault_id: str
    root_id: str
    owner: bytes  # Ed25519 public key, 32 bytes
    raw: bytes

    @property
    def vault_id_bytes(self) -> bytes:
        return bytes.fromhex(self.vault_id)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @classmethod
    def create(cls, owner: Identity) -> VaultHeader:
        body = {
            "format": HEADER_FORMAT,
            "vault_id": new_id(),
            "root_id": new_id(),
            "owner": owner.recipient.verify_key_bytes.hex(),
        }
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        raw = sign_blob(owner.signing_key, HEADER_DOMAIN, payload)
        return cls.decode(raw)

    @classmethod
    def decode(cls, raw: bytes) -> VaultHeader:
        """Parse and check a header; every malformation is one FormatError (format.md 5.2)."""
        payload, signer = verify_blob(raw, HEADER_DOMAIN, "vault header")
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict) or body.get("format") != HEADER_FORMAT:
            raise FormatError("not a csfs vault header (unknown format)")
        if set(body) != _HEADER_FIELDS:
            raise FormatError("vault header has missing or unknown fields")
        owner_hex = body["owner"]
        if not isinstance(owner_hex, str) or not _OWNER.fullmatch(owner_hex):
            raise FormatError("vault header owner is not a 64-digit lowercase hex key")
        owner = bytes.fromhex(owner_hex)
        vault_id, root_id = check_id(body["vault_id"]), check_id(body["root_id"])
        if owner != signer:
            raise AuthenticationError("vault header is not signed by its owner")
        return cls(vault_id, root_id, owner, raw)
