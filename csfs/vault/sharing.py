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
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Recipient, parse_envelope
from csfs.crypto.envelope import MAX_ENVELOPE_SIZE, rewrap_envelope
from csfs.crypto.keys import load_recipient_pem
from csfs.crypto.stream import payload_size
from csfs.errors import (
    AuthenticationError,
    CsfsError,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    UsageError,
)
from csfs.vault.access import (
    AccessState,
    Member,
    Notice,
    check_member_name,
    notice_key,
    require_owner,
    seal_notice,
)
from csfs.vault.layout import (
    content_key,
    envelope_key,
    manifest_key,
    new_id,
    read_limited_with_etag,
)
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
    problems: list[str] = field(default_factory=list)  # aliases found and left alone


@dataclass(frozen=True)
class ShareInfo:
    direction: str  # "out": the owner shares; "in": shared with this key
    path: str  # the owner's path for "out", the Shared/... path for "in"
    member: str  # grantee for "out", owner for "in"
    write: bool


def _require_owner(vault: Vault) -> None:
    """Early, before any walking: AccessLog.append checks the same."""
    require_owner(vault.is_owner)


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


def remove_member(vault: Vault, name: str) -> list[str]:
    """Unshare everything shared with ``name``, then remove it. Returns the paths unshared."""
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    if member.recipient.verify_key_bytes == vault.header.owner:
        raise UsageError("the owner cannot be removed")
    nodes = [n for n, g in vault.access.current.grants.items() if member.fingerprint in g]
    paths = find_paths(vault, set(nodes))  # a folder the member forged must not stop this
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


# -- the tree as the owner sees it ----------------------------------------------------------


@dataclass
class _Tree:
    """Every place each node is listed, from a fresh walk of the whole vault.

    A node listed twice (or in a cycle) was put there by someone: csfs never
    links a node into two folders. Share and unshare look at the whole vault
    first, so that such an alias cannot smuggle another share's folder into
    the one being shared, and so that every directory is verified against the
    writers of every place it is listed (Vault.share_roots_of).
    """

    order: list[tuple[str, Entry]] = field(default_factory=list)  # parents before children
    ids: dict[str, str] = field(default_factory=dict)  # path -> node id
    locations: dict[str, list[str]] = field(default_factory=dict)  # node id -> paths
    parents: dict[str, set[str]] = field(default_factory=dict)  # node id -> listing folders
    problems: list[str] = field(default_factory=list)

    def chain(self, path: str) -> list[str]:
        """Node ids from the vault root down to ``path``."""
        parts = split_path(path)
        return [self.ids["/" + "/".join(parts[:i])] for i in range(len(parts) + 1)]

    def under(self, path: str) -> list[tuple[str, Entry]]:
        return [(p, e) for p, e in self.order if _under(p, path)]

    def aliased(self, items: list[tuple[str, Entry]]) -> list[tuple[str, str]]:
        return [
            (p, next(q for q in self.locations[e.id] if q != p))
            for p, e in items
            if len(self.locations[e.id]) > 1
        ]

    def reachable_twice(self) -> set[str]:
        """Nodes reachable by more than one path: those listed in two folders (or in
        a cycle) and everything below them. The walk lists their subtrees once only,
        so a path-based answer for them would be the answer for one place only."""
        children: dict[str, set[str]] = {}
        for child, ps in self.parents.items():
            for p in ps:
                children.setdefault(p, set()).add(child)
        todo = [n for n, ps in self.parents.items() if len(ps) > 1]
        out: set[str] = set()
        while todo:
            node = todo.pop()
            if node not in out:
                out.add(node)
                todo.extend(children.get(node, ()))
        return out


def _index(vault: Vault) -> _Tree:
    tree = _Tree()
    root = vault.root_entry()
    stack = [("/", root)]
    expanded: set[str] = set()
    while stack:
        path, entry = stack.pop()
        tree.order.append((path, entry))
        tree.ids[path] = entry.id
        tree.locations.setdefault(entry.id, []).append(path)
        if entry.type != "d" or entry.id in expanded:
            continue
        expanded.add(entry.id)
        try:
            manifest, _ = vault.load_dir(entry.id, fresh=True)
        except CsfsError as exc:
            # What does not verify vouches for nothing; fsck reports it too.
            tree.problems.append(f"{path}: {exc.message}")
            continue
        for name, child in sorted(manifest.entries.items(), reverse=True):
            tree.parents.setdefault(child.id, set()).add(entry.id)
            stack.append((posixpath.join(path, name), child))
    return tree


def find_paths(vault: Vault, nodes: set[str]) -> dict[str, str]:
    """The current path of each of ``nodes`` (those not found are left out), by the
    tolerant walk: a folder someone forged must not stop `csfs shares`."""
    locations = _index(vault).locations
    return {n: locations[n][0] for n in nodes if n in locations}


def _writers_along(state: AccessState, chain: list[str]) -> list[str]:
    """Writers of a root: members with a "w" grant on it or on any directory above it."""
    out: list[str] = []
    for node in chain:
        for fp, mode in state.grants.get(node, {}).items():
            if mode == "w" and fp not in out:
                out.append(fp)
    return out


def _writer_map(
    tree: _Tree, state: AccessState, items: list[tuple[str, Entry]]
) -> dict[str, list[str]]:
    """The writer list of every share root among ``items``, under ``state``: the
    members with a "w" grant on it or above *on every path* to it, so that a writer
    who lists another share's root in its own gains no authority there."""
    common = _meet(
        tree,
        lambda n: {fp for fp, mode in state.grants.get(n, {}).items() if mode == "w"},
        set(),
    )
    return {
        e.id: [fp for fp in _writers_along(state, tree.chain(p)) if fp in common.get(e.id, ())]
        for p, e in items
        if e.type in ("d", "f") and e.id in state.grants
    }


def _meet(tree: _Tree, own: Callable[[str], set[str]], at_root: set[str]) -> dict[str, set[str]]:
    """For every node: the intersection, over the folders that list it, of their
    value, plus ``own(node)``; the root's value is ``at_root``. The greatest fixed
    point, i.e. the meet over every path from the root (a cycle only adds)."""
    root = tree.order[0][1].id if tree.order else ""
    values: dict[str, set[str]] = {root: set(at_root)}
    nodes = list(dict.fromkeys(e.id for _, e in tree.order))
    for _ in range(len(nodes) + 2):  # each round can only shrink a set; it settles
        changed = False
        for node in nodes:
            if node == root:
                continue
            known = [values[p] for p in tree.parents.get(node, ()) if p in values]
            if not known:
                continue
            now = set.intersection(*known) | own(node)
            if values.get(node) != now:
                values[node], changed = now, True
        if not changed:
            break
    return values


def _log_readers(vault: Vault, tree: _Tree, state: AccessState) -> dict[str, list[str]]:
    """Who may read each node of the tree, from the log alone (format.md 7.5): the
    vault-wide readers (the root's, owner-signed) plus members granted on the node or
    above it, on *every* path that reaches it. A node listed in two folders gets only
    the readers common to both, so a writer who lists another folder's id in its own
    share gains nothing; a key a writer added to a manifest by hand counts nowhere.

    The greatest fixed point of readers(n) = (intersection over the folders p that list
    n of readers(p)) + grants(n), with the root fixed: the meet over all paths, cycles
    included (a path through a cycle only adds grants)."""
    base = list(vault.load_dir(vault.header.root_id, fresh=True)[0].readers)

    def granted(node: str) -> list[str]:
        out = []
        for fp in sorted(state.grants.get(node, {})):
            member = vault.access.trusted(fp)
            if member is not None:
                out.append(member.recipient.to_pem().decode())
        return out

    readers = _meet(tree, lambda n: set(granted(n)), set(base))
    order = [*base, *sorted({k for ks in readers.values() for k in ks} - set(base))]
    return {n: [k for k in order if k in ks] for n, ks in readers.items()}


def _recipients(pems: list[str]) -> list[Recipient]:
    return [load_recipient_pem(r.encode(), "reader key") for r in pems]


# -- share and unshare -----------------------------------------------------------------------


def _reseal(
    vault: Vault,
    tree: _Tree,
    items: list[tuple[str, Entry]],
    state: AccessState,
    resign: bytes | None,
    problems: list[str] | None = None,
) -> tuple[int, dict[str, list[Recipient]]]:
    """Set the readers of each directory among ``items`` from ``state`` (over the
    whole tree: _log_readers); re-sign as the owner manifests signed by ``resign`` (a
    writer about to lose its authority). With ``problems``, a directory that cannot be
    re-sealed (unreadable, forged, at the highest version) is reported there and left
    alone instead of stopping: revocation must not be blocked by what the member wrote.
    Returns the number of manifests written and each node's recipients."""
    readers = _log_readers(vault, tree, state)
    count = 0
    for dir_id in dict.fromkeys(e.id for _, e in items if e.type == "d"):
        if dir_id not in readers:
            continue

        def apply(m: DirectoryManifest, mine: list[str] = readers[dir_id]) -> None:
            m.readers = list(mine)

        try:
            current = vault.load_dir(dir_id)[0]
            force = resign is not None and current.signer == resign
            vault.update_dir(dir_id, apply, force=force, sets_readers=True)
            count += vault.load_dir(dir_id)[0].version != current.version
        except CsfsError as exc:
            if problems is None:
                raise
            where = tree.locations.get(dir_id, [dir_id])[0]
            problems.append(f"{where}: left alone: {exc.message}")
    return count, {n: _recipients(rs) for n, rs in readers.items()}


def _point(
    vault: Vault, tree: _Tree, path: str, entry: Entry, state: AccessState
) -> tuple[int, dict[str, list[Recipient]]]:
    """Create or update a shared file's pointer (format.md 7.6): one entry, sealed to
    the file's directory readers plus the members granted the file. Returns the
    number of objects written and each node's recipients."""
    everyone = _log_readers(vault, tree, state)
    readers = everyone[entry.id]
    name = posixpath.basename(path)
    try:
        vault.load_dir(entry.id, fresh=True)
    except IntegrityError:  # no pointer yet
        pointer = DirectoryManifest(
            entry.id, version=1, entries={name: entry}, readers=readers, mtime_ns=entry.mtime_ns
        )
        vault.store.put(
            manifest_key(entry.id), pointer.seal(vault.vault_id, vault.identity),
            if_none_match=True,
        )  # fmt: skip
        vault.state.observe(entry.id, 1)
    else:

        def apply(m: DirectoryManifest) -> None:
            m.readers, m.entries = list(readers), {name: entry}

        vault.update_dir(entry.id, apply, sets_readers=True)
    return 1, {n: _recipients(rs) for n, rs in everyone.items()}


def _rewrap(
    vault: Vault,
    tree: _Tree,
    files: list[tuple[str, Entry]],
    recipients: dict[str, list[Recipient]],
    only_signer: bytes | None = None,
    problems: list[str] | None = None,
) -> int:
    """Re-wrap the current version of each file to its readers from the log, over
    the whole tree (only those signed by ``only_signer``, if given), signed by the
    owner. With ``problems``, a file that cannot be re-wrapped is reported there."""

    def one(item: tuple[str, Entry]) -> int:
        try:
            return attempt(item)
        except CsfsError as exc:
            if problems is None:
                raise
            problems.append(f"{item[0]}: left alone: {exc.message}")
            return 0

    def attempt(item: tuple[str, Entry]) -> int:
        path, entry = item
        to = recipients.get(entry.id)
        if to is None:
            return 0  # listed only in a folder that does not verify: vouches for nothing
        key = envelope_key(entry.id, entry.version)
        for _ in range(5):
            raw, etag = read_limited_with_etag(vault.store, key, MAX_ENVELOPE_SIZE, "key envelope")
            env = parse_envelope(raw)
            env.verify(vault.signers_for(entry.id))
            if env.context != vault.file_context(entry.id, entry.version):
                raise AuthenticationError(f"{path}: key envelope belongs to another file")
            if only_signer is not None and env.signer != only_signer:
                return 0
            new = rewrap_envelope(env, vault.identity, to, vault.identity)
            try:
                vault.store.put(key, new.encode(), if_match=etag)
                return 1
            except PreconditionFailed:
                continue
        raise UsageError(f"{path}: its envelope keeps changing; try again")

    unique = {e.id: (p, e) for p, e in files if e.type == "f" and e.version}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return sum(pool.map(one, unique.values()))


def share(vault: Vault, path: str, name: str, *, write: bool = False) -> ShareReport:
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = _member(vault, name)
    if not split_path(path):
        raise UsageError("the vault root cannot be shared", hint="share a folder inside it")
    tree = _index(vault)
    entry = vault.lookup(path)
    if entry.type == "f" and write:
        raise UsageError(
            "a shared file is read-only", hint="share the folder that holds it with --write"
        )
    if entry.type not in ("d", "f"):
        raise UsageError(f"{path} is a symbolic link", hint="share what it points to")
    items = tree.under(path)
    for where, other in tree.aliased(items)[:1]:
        raise IntegrityError(
            f"cannot share {path}: {where} is the same node as {other} (planted by a writer?)",
            hint=f"remove the wrong entry with `csfs rm -r {where}`, then run `csfs fsck`",
        )
    after = vault.access.current.copy()
    after.grants.setdefault(entry.id, {})[member.fingerprint] = "w" if write else "r"
    report = ShareReport()
    if entry.type == "f":
        after.files.add(entry.id)
        report.directories, recipients = _point(vault, tree, path, entry, after)
    else:
        report.directories, recipients = _reseal(vault, tree, items, after, None)
    report.envelopes = _rewrap(vault, tree, items, recipients)

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
        state.grants.setdefault(entry.id, {})[member.fingerprint] = "w" if write else "r"
        notice = Notice(
            new_id(), entry.id, entry.type, split_path(path)[-1], vault.access.owner_name(), write
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
            "writers": _writer_map(tree, state, items),
        }
        if entry.type == "f":
            body["type"] = "f"
        return body, []

    vault.access.append(make)
    return report


def unshare(vault: Vault, path: str, name: str, *, reencrypt: bool = False) -> ShareReport:
    """Withdraw ``name``'s grant at ``path``.

    Revocation must go through whatever the member planted: aliases are reported
    (never used to compute readers: _log_readers), and a manifest or envelope that
    cannot be re-sealed (unreadable, forged, at the highest version) is reported and
    left alone; the log entry, which ends the member's authority, is appended anyway.
    """
    _require_owner(vault)
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    tree = _index(vault)
    entry = vault.lookup(path)
    grants = vault.access.current.grants
    for node in tree.chain(path)[:-1]:
        if member.fingerprint in grants.get(node, {}):
            outer = tree.locations[node][0]
            raise UsageError(
                f"{name} has access to {path} through {outer}", hint=f"unshare {outer} instead"
            )
    if member.fingerprint not in grants.get(entry.id, {}):
        raise UsageError(f"{path} is not shared with {name}", hint="see `csfs shares`")
    items = tree.under(path)
    twice = tree.reachable_twice()
    report = ShareReport(
        problems=[
            *(f"{p} is the same node as {o} (an alias)" for p, o in tree.aliased(items)),
            *tree.problems,
        ]
    )
    # While the member is still a writer, take over (re-sign as the owner) what it
    # signed: once the log says it is not, its signatures no longer count. A
    # member that could not write here signed nothing that counted.
    writers = vault.access.current.writers
    was_writer = any(member.fingerprint in writers.get(e.id, []) for _, e in items) or any(
        member.fingerprint in writers.get(n, []) for n in tree.chain(path)
    )
    leaving = member.recipient.verify_key_bytes if was_writer else None
    before = vault.access.current
    if leaving is not None:
        _, current = _reseal(vault, tree, items, before, leaving, report.problems)
        report.envelopes = _rewrap(
            vault, tree, items, current, only_signer=leaving, problems=report.problems
        )

    def make(state: AccessState, seq: int) -> tuple[dict[str, Any], list[Recipient]]:
        g = state.grants.get(entry.id, {})
        g.pop(member.fingerprint, None)
        if not g:
            state.grants.pop(entry.id, None)
        writer_map = _writer_map(tree, state, items)
        writer_map.setdefault(entry.id, [])
        return {
            "op": "unshare",
            "node": entry.id,
            "member": member.fingerprint,
            "writers": writer_map,
        }, []

    vault.access.append(make)
    if entry.type == "f":
        try:
            report.directories, _ = _point(vault, tree, path, entry, vault.access.current)
        except CsfsError as exc:
            report.problems.append(f"{path} (share pointer): left alone: {exc.message}")
    else:
        report.directories, _ = _reseal(
            vault, tree, items, vault.access.current, None, report.problems
        )
    if reencrypt:
        files = {}
        for p, e in items:
            if e.type != "f" or not e.version:
                continue
            if e.id in twice:
                # Its versions are also reached from elsewhere: a new version here
                # would be wrapped to this folder's readers, and deleting the old one
                # would break the other place. The owner removes the alias first.
                report.problems.append(f"{p}: not re-encrypted: also listed elsewhere")
                continue
            files[e.id] = (p, e)
        _reencrypt(vault, list(files.values()), report)
    return report


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _reencrypt(vault: Vault, files: list[tuple[str, Entry]], report: ShareReport) -> None:
    """New versions under new keys, one manifest switch per directory, then the
    old versions' objects deleted."""
    by_dir: dict[str, list[tuple[str, Entry]]] = {}
    for path, entry in files:
        try:
            by_dir.setdefault(vault.parent_of(path)[0], []).append((path, entry))
        except CsfsError as exc:
            report.problems.append(f"{path}: not re-encrypted: {exc.message}")

    # The earlier versions each old version draws on (a delta, format.md 2.6): they
    # hold its content under keys the revoked reader may have, so they go with it.
    sources: dict[tuple[str, int], list[int]] = {}

    def upload(item: tuple[str, Entry], parent: DirectoryManifest) -> tuple[str, Entry, Entry]:
        path, old = item
        sources[(old.id, old.version)] = [r.version for r in vault.open_version(old)[1].sources]
        buf = io.BytesIO()
        vault.read_file(old, buf)
        buf.seek(0)
        version, length = vault.upload_version(old.id, buf, parent)
        return posixpath.basename(path), old, replace(old, version=version, size=length)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for dir_id, items in by_dir.items():
            try:
                parent = vault.load_dir(dir_id, fresh=True)[0]
                done = list(pool.map(lambda it, p=parent: upload(it, p), items))
            except CsfsError as exc:
                report.problems.append(f"{items[0][0]}: not re-encrypted: {exc.message}")
                continue

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
                for v in (old.version, *sources.get((old.id, old.version), []))
                for k in (content_key(old.id, v), envelope_key(old.id, v))
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
