"""Members, share and unshare: the owner's side of format.md 7.5.

Sharing rewrites metadata only: the manifests of the subtree gain the new
reader, and each current file version's envelope is re-wrapped to the new
reader set. Payloads are never touched. Unsharing first appends the log entry
(which ends the member's authority to write at once), then re-seals every
manifest without the member; with ``reencrypt`` it also rewrites each file
under a new content key and deletes the old versions.
"""

from __future__ import annotations

import base64
import io
import posixpath
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from csfs.crypto import Recipient, parse_envelope
from csfs.crypto.envelope import rewrap_envelope
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.stream import payload_size
from csfs.errors import AccessDenied, AuthenticationError, NotFound, PreconditionFailed, UsageError
from csfs.vault.access import AccessState, Member, Notice, notice_key, seal_notice
from csfs.vault.layout import content_key, envelope_key, new_id
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.vault import Vault, same_version, split_path

WORKERS = 16


@dataclass
class ShareReport:
    directories: int = 0  # manifests re-sealed
    envelopes: int = 0  # envelopes re-wrapped
    files_reencrypted: int = 0
    bytes_rewritten: int = 0  # payload bytes written anew (re-encryption only)
    versions_deleted: int = 0


@dataclass(frozen=True)
class ShareInfo:
    direction: str  # "out": the owner shares; "in": shared with this key
    path: str  # the owner's path for "out", the Shared/... path for "in"
    member: str  # grantee for "out", owner for "in"
    write: bool


def _require_owner(vault: Vault) -> None:
    if not vault.is_owner:
        raise AccessDenied(
            "only the vault owner can change members and shares",
            hint="ask the owner to run this command",
        )


# -- members -------------------------------------------------------------------------


def add_member(vault: Vault, public_text: bytes, name: str) -> Member:
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = Member.create(vault.identity, vault.header.vault_id, name, public_text)
    log = vault.access
    pinned = log.pins.get(vault.header.vault_id, name)
    if pinned is not None and pinned != member.fingerprint:
        raise AuthenticationError(
            f"member {name!r} was known here with another key ({pinned}); "
            f"this key is {member.fingerprint}",
            hint=f"if {name} really has a new key, run `csfs member trust {name}` first",
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


def trust_member(vault: Vault, name: str) -> str:
    """Forget the pinned key for ``name`` and pin the one the log has now."""
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    vault.access.pins.pin(vault.header.vault_id, name, member.fingerprint)
    vault.access.pins.save()
    vault.access.changed_keys.pop(name, None)
    return member.fingerprint


def remove_member(vault: Vault, name: str) -> list[str]:
    """Unshare everything shared with ``name``, then remove it. Returns the paths unshared."""
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    if member.recipient.verify_key_bytes == vault.header.owner:
        raise UsageError("the owner cannot be removed")
    nodes = [n for n, g in vault.access.current.grants.items() if member.fingerprint in g]
    paths = find_paths(vault, set(nodes))
    # Outermost first, so that inner grants are not refused as "covered by an outer one".
    done = []
    for node in sorted(nodes, key=lambda n: len(paths.get(n, ""))):
        if node in paths:
            unshare(vault, paths[node], name)
            done.append(paths[node])

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
        return {"op": "member-remove", "member": member.fingerprint}, []

    vault.access.append(make)
    return done


def _member(vault: Vault, name: str) -> Member:
    member = vault.access.current.by_name(name)
    if vault.access.trusted(member.fingerprint) is None:
        pinned, now = vault.access.changed_keys[name]
        raise AuthenticationError(
            f"member {name!r} changed key: pinned {pinned}, now {now}",
            hint=f"check the new key with {name}, then run `csfs member trust {name}`",
        )
    return member


# -- walking ---------------------------------------------------------------------------


def find_paths(vault: Vault, nodes: set[str]) -> dict[str, str]:
    """The current path of each of ``nodes`` (those not found are left out)."""
    out: dict[str, str] = {}
    for path, entry in vault.walk("/"):
        if entry.id in nodes:
            out[entry.id] = path
            if len(out) == len(nodes):
                break
    return out


def _chain(vault: Vault, path: str) -> list[str]:
    """Node ids from the vault root down to ``path``."""
    parts = split_path(path)
    return [vault.lookup("/" + "/".join(parts[:i])).id for i in range(len(parts) + 1)]


def _writers_along(state: AccessState, chain: list[str]) -> list[str]:
    """Writers of a root: members with a "w" grant on it or on any directory above it."""
    out: list[str] = []
    for node in chain:
        for fp, mode in state.grants.get(node, {}).items():
            if mode == "w" and fp not in out:
                out.append(fp)
    return out


def _subtree(vault: Vault, path: str) -> tuple[list[tuple[str, Entry]], list[tuple[str, Entry]]]:
    """(directories, files) under ``path``, the directory itself first."""
    dirs, files = [], []
    for p, entry in vault.walk(path, fresh=True):
        if entry.type == "d":
            dirs.append((p, entry))
        elif entry.type == "f" and entry.version:
            files.append((p, entry))
    return dirs, files


def _writer_map(
    vault: Vault, state: AccessState, path: str, dirs: list[tuple[str, Entry]]
) -> dict[str, list[str]]:
    """The writer list of every share root in the subtree, under ``state``."""
    out = {}
    base = _chain(vault, path)
    for p, entry in dirs:
        if entry.id in state.grants:
            rel = split_path(p)[len(split_path(path)) :]
            chain = list(base)
            for i in range(1, len(rel) + 1):
                chain.append(vault.lookup("/" + "/".join(split_path(path) + rel[:i])).id)
            out[entry.id] = _writers_along(state, chain)
    return out


# -- share and unshare -----------------------------------------------------------------------


def _set_readers(
    vault: Vault,
    dirs: list[tuple[str, Entry]],
    change: Callable[[list[str]], list[str]],
    resign: bytes | None = None,
) -> int:
    """Apply ``change`` to the readers of each directory; also re-sign, as the
    owner, manifests signed by ``resign`` (a writer about to lose its authority)."""
    count = 0
    for _, entry in dirs:

        def apply(m: DirectoryManifest) -> None:
            m.readers = change(m.readers)

        current = vault.load_dir(entry.id)[0]
        vault.update_dir(entry.id, apply, force=resign is not None and current.signer == resign)
        count += vault.load_dir(entry.id)[0].version != current.version
    return count


def _rewrap(
    vault: Vault,
    files: list[tuple[str, Entry]],
    parents: dict[str, str],
    only_signer: bytes | None = None,
) -> int:
    """Re-wrap the current version of each file to its directory's readers
    (only those signed by ``only_signer``, if given), signed by the owner."""

    def one(item: tuple[str, Entry]) -> int:
        path, entry = item
        parent = vault.load_dir(parents[path])[0]
        key = envelope_key(entry.id, entry.version)
        for _ in range(5):
            raw, etag = vault.store.get_with_etag(key)
            env = parse_envelope(raw)
            env.verify(vault.signers_for(entry.id))
            if env.context != vault.file_context(entry.id, entry.version):
                raise AuthenticationError(f"{path}: key envelope belongs to another file")
            if only_signer is not None and env.signer != only_signer:
                return 0
            new = rewrap_envelope(env, vault.identity, parent.recipients(), vault.identity)
            try:
                vault.store.put(key, new.encode(), if_match=etag)
                return 1
            except PreconditionFailed:
                continue
        raise UsageError(f"{path}: its envelope keeps changing; try again")

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return sum(pool.map(one, files))


def _parents(vault: Vault, files: list[tuple[str, Entry]]) -> dict[str, str]:
    return {p: vault.parent_of(p)[0] for p, _ in files}


def share(vault: Vault, path: str, name: str, *, write: bool = False) -> ShareReport:
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = _member(vault, name)
    entry = vault.lookup(path)
    if entry.type != "d":
        raise UsageError(f"{path} is not a folder", hint="share the folder that holds it")
    if not split_path(path):
        raise UsageError("the vault root cannot be shared", hint="share a folder inside it")
    pem = member.recipient.to_pem().decode()
    dirs, files = _subtree(vault, path)
    report = ShareReport()
    report.directories = _set_readers(vault, dirs, lambda rs: _with(rs, member.recipient, pem))
    report.envelopes = _rewrap(vault, files, _parents(vault, files))

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
        state.grants.setdefault(entry.id, {})[member.fingerprint] = "w" if write else "r"
        notice = Notice(
            new_id(), entry.id, "d", split_path(path)[-1], vault.access.owner_name(), write
        )
        vault.store.put(
            notice_key(notice.id),
            seal_notice(notice, seq, vault.header, vault.identity, member.recipient),
            if_none_match=True,
        )
        body = {
            "op": "share",
            "node": entry.id,
            "member": member.fingerprint,
            "write": write,
            "notice": notice.id,
            "writers": _writer_map(vault, state, path, dirs),
        }
        return body, []

    vault.access.append(make)
    return report


def unshare(vault: Vault, path: str, name: str, *, reencrypt: bool = False) -> ShareReport:
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    entry = vault.lookup(path)
    chain = _chain(vault, path)
    grants = vault.access.current.grants
    for node in chain[:-1]:
        if member.fingerprint in grants.get(node, {}):
            outer = find_paths(vault, {node}).get(node, "an enclosing folder")
            raise UsageError(
                f"{name} has access to {path} through {outer}", hint=f"unshare {outer} instead"
            )
    dirs, files = _subtree(vault, path)
    # Re-seal without the member, except below a folder still shared with it.
    kept = [p for p, e in dirs if p != path and member.fingerprint in grants.get(e.id, {})]
    cut = [(p, e) for p, e in dirs if not any(_under(p, k) for k in kept)]
    report = ShareReport()
    # While the member is still a writer, take over (re-sign as the owner) what it
    # signed: once the log says it is not, its signatures no longer count. A
    # member that could not write here signed nothing that counted.
    writers = vault.access.current.writers
    was_writer = any(member.fingerprint in writers.get(e.id, []) for _, e in dirs) or any(
        member.fingerprint in writers.get(n, []) for n in chain
    )
    leaving = member.recipient.verify_key_bytes if was_writer else None
    report.directories = _set_readers(
        vault, cut, lambda rs: _without(rs, member.recipient), resign=leaving
    )
    if leaving is not None:
        report.directories += _set_readers(vault, [d for d in dirs if d not in cut], list, leaving)
        report.envelopes = _rewrap(vault, files, _parents(vault, files), only_signer=leaving)
    if member.fingerprint in grants.get(entry.id, {}):

        def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
            g = state.grants.get(entry.id, {})
            g.pop(member.fingerprint, None)
            if not g:
                state.grants.pop(entry.id, None)
            writers = _writer_map(vault, state, path, dirs)
            writers.setdefault(entry.id, [])
            return {
                "op": "unshare",
                "node": entry.id,
                "member": member.fingerprint,
                "writers": writers,
            }, []

        vault.access.append(make)
    if reencrypt:
        cut_ids = {e.id for _, e in cut}
        targets = [(p, e) for p, e in files if vault.parent_of(p)[0] in cut_ids]
        _reencrypt(vault, targets, report)
    return report


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _reencrypt(vault: Vault, files: list[tuple[str, Entry]], report: ShareReport) -> None:
    """New versions under new keys, one manifest switch per directory, then the
    old versions' objects deleted."""
    by_dir: dict[str, list[tuple[str, Entry]]] = {}
    for path, entry in files:
        by_dir.setdefault(vault.parent_of(path)[0], []).append((path, entry))

    def upload(item: tuple[str, Entry], parent: DirectoryManifest) -> tuple[str, Entry, Entry]:
        path, old = item
        buf = io.BytesIO()
        vault.read_file(old, buf)
        buf.seek(0)
        version, length = vault.upload_version(old.id, buf, parent)
        return posixpath.basename(path), old, replace(old, version=version, size=length)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for dir_id, items in by_dir.items():
            parent = vault.load_dir(dir_id, fresh=True)[0]
            done = list(pool.map(lambda it, p=parent: upload(it, p), items))

            def switch(m: DirectoryManifest, done: list[tuple[str, Entry, Entry]] = done) -> list:
                switched = []
                for name, old, new in done:
                    cur = m.entries.get(name)
                    if cur is not None and same_version(cur, old):
                        m.entries[name] = new
                        switched.append((old, new))
                return switched

            # A file changed meanwhile keeps its newer version; ours becomes an orphan.
            switched = vault.update_dir(dir_id, switch)
            old_keys = [
                k
                for old, _ in switched
                for k in (content_key(old.id, old.version), envelope_key(old.id, old.version))
            ]
            list(pool.map(lambda k: _delete(vault, k), old_keys))
            report.files_reencrypted += len(switched)
            report.versions_deleted += len(switched)
            report.bytes_rewritten += sum(payload_size(new.size) for _, new in switched)


def _delete(vault: Vault, key: str) -> None:
    try:
        vault.store.delete(key)
    except NotFound:
        pass


def _with(readers: list[str], who: Recipient, pem: str) -> list[str]:
    if any(_same(r, who) for r in readers):
        return readers
    return [*readers, pem]


def _without(readers: list[str], who: Recipient) -> list[str]:
    return [r for r in readers if not _same(r, who)]


def _same(pem: str, who: Recipient) -> bool:
    return load_recipient_pem(pem.encode(), "reader key in a manifest") == who


# -- listing ---------------------------------------------------------------------------------


def list_shares(vault: Vault) -> list[ShareInfo]:
    vault.refresh_access(force=True)
    out = []
    state = vault.access.current
    if vault.is_owner:
        paths = find_paths(vault, set(state.grants))
        for node, grant in state.grants.items():
            for fp, mode in grant.items():
                m = state.members.get(fp)
                out.append(
                    ShareInfo(
                        "out",
                        paths.get(node, f"(moved or removed: {node})"),
                        m.name if m else fp,
                        mode == "w",
                    )
                )
    else:
        names = {e.id: n for n, e in vault.listdir(f"/Shared/{vault.access.owner_name()}").items()}
        for notice in vault.access.notices.values():
            out.append(
                ShareInfo(
                    "in",
                    f"/Shared/{notice.owner}/{names.get(notice.node, notice.name)}",
                    notice.owner,
                    notice.write,
                )
            )
    return sorted(out, key=lambda s: (s.direction, s.path, s.member))
