"""Vault members: adding, trusting a changed key, and the checks sharing makes on a
member (format.md 7.5). Removing a member unshares first: csfs.vault.sharing."""

from __future__ import annotations

import base64
from typing import Any

from csfs.crypto import Recipient
from csfs.errors import AuthenticationError, NotFound, UsageError
from csfs.vault.access import AccessState, Member, check_member_name, require_owner
from csfs.vault.vault import Vault


def require_vault_owner(vault: Vault) -> None:
    """Early, before any walking: AccessLog.append checks the same."""
    require_owner(vault.is_owner)


def add_member(vault: Vault, public_text: bytes, name: str) -> Member:
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    member = Member.create(vault.identity, vault.header.vault_id, name, public_text)
    log = vault.access
    pinned = log.pins.get(vault.header.vault_id, name)
    if pinned is not None and pinned != member.fingerprint:
        raise AuthenticationError(
            f"member {name!r} was known here with another key ({pinned}); "
            f"this key is {member.fingerprint}",
            hint=f"if {name} really has a new key: `csfs member rm {name}` (if still a member), "
            f"`csfs member trust {name}`, then add the new key",
        )
    current = log.current.members.get(member.fingerprint)
    if current is not None:
        if current.name == name:
            return current
        raise UsageError(f"this key is already a member, named {current.name!r}")
    for m in log.current.members.values():
        if m.name == name:
            raise UsageError(f"another key is already a member named {name!r}")

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
        return {"op": "member-add", "record": base64.b64encode(member.raw).decode()}, []

    log.append(make)
    return member


def trust_member(vault: Vault, name: str) -> str | None:
    """Accept the key the log now has for ``name``; if no member has that name,
    forget the pinned key so that a new one can be added. Returns the new pin."""
    vault.refresh_access(force=True)
    pins = vault.access.pins
    try:
        fingerprint: str | None = vault.access.current.by_name(name).fingerprint
    except NotFound:
        fingerprint = None
    if fingerprint is None:
        pins.forget(vault.header.vault_id, check_member_name(name))
    else:
        pins.pin(vault.header.vault_id, name, fingerprint)
    pins.save()
    vault.access.changed_keys.pop(name, None)
    return fingerprint


def member_to_share_with(vault: Vault, name: str) -> Member:
    member = vault.access.current.by_name(name)
    if vault.access.trusted(member.fingerprint) is None:
        pinned, now = vault.access.changed_keys[name]
        raise AuthenticationError(
            f"member {name!r} changed key: pinned {pinned}, now {now}",
            hint=f"check the new key with {name}, then run `csfs member trust {name}`",
        )
    return member
