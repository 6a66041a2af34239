"""Share, unshare, and removing a member (which unshares first): format.md 7.5.

Sharing rewrites metadata only: the manifests of the subtree gain the new
reader, and each current file version's envelope is re-wrapped to the new
reader set. Payloads are never touched. Unsharing first appends the log entry
(which ends the member's authority to write at once), then re-seals every
manifest without the member; with ``reencrypt`` it also rewrites each file
under a new content key and deletes the old versions.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from csfs.crypto import Recipient, parse_envelope
from csfs.crypto.envelope import rewrap_envelope
from csfs.crypto.stream import payload_size
from csfs.errors import (
    AuthenticationError,
    ContentionError,
    CsfsError,
    IntegrityError,
    PreconditionFailed,
    UsageError,
)
from csfs.vault.access import (
    AccessState,
    Notice,
)
from csfs.vault.layout import (
    new_id,
)
from csfs.vault.links import linked_keys
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import VersionChange
from csfs.vault.members import (
    add_member,
    member_to_share_with,
    require_vault_owner,
    trust_member,
)
from csfs.vault.paths import split_path
from csfs.vault.tree_index import (
    Tree,
    find_paths,
    index_tree,
    log_readers,
    recipients_of,
    writers_of_roots,
)
from csfs.vault.vault import Vault

# The members' face is here too: csfs.vault.members.
__all__ = [
    "ShareInfo",
    "ShareReport",
    "add_member",
    "list_shares",
    "remove_member",
    "share",
    "trust_member",
    "unshare",
]

WORKERS = 16


@dataclass
class ShareReport:
    directories: int = 0  # manifests re-sealed
    envelopes: int = 0  # envelopes re-wrapped
    files_reencrypted: int = 0
    bytes_rewritten: int = 0  # payload bytes written anew (re-encryption only)
    versions_deleted: int = 0
    problems: list[str] = field(default_factory=list)  # aliases found and left alone
    # Share links whose version was re-encrypted and deleted, so ended: (id, path).
    links_ended: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ShareInfo:
    direction: str  # "out": the owner shares; "in": shared with this key
    path: str  # the owner's path for "out", the Shared/... path for "in"
    member: str  # grantee for "out", owner for "in"
    write: bool


# -- share and unshare -----------------------------------------------------------------------


def _reseal(
    vault: Vault,
    tree: Tree,
    items: list[tuple[str, Entry]],
    state: AccessState,
    resign: bytes | None,
    problems: list[str] | None = None,
) -> tuple[int, dict[str, list[Recipient]]]:
    """Set the readers of each directory among ``items`` from ``state`` (over the
    whole tree: log_readers); re-sign as the owner manifests signed by ``resign`` (a
    writer about to lose its authority). With ``problems``, a directory that cannot be
    re-sealed (unreadable, forged, at the highest version) is reported there and left
    alone instead of stopping: revocation must not be blocked by what the member wrote.
    Returns the number of manifests written and each node's recipients."""
    readers = log_readers(vault, tree, state)
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
    return count, {n: recipients_of(rs) for n, rs in readers.items()}


def _point(
    vault: Vault, tree: Tree, path: str, entry: Entry, state: AccessState
) -> tuple[int, dict[str, list[Recipient]]]:
    """Create or update a shared file's pointer (format.md 7.6): one entry, sealed to
    the file's directory readers plus the members granted the file. Returns the
    number of objects written and each node's recipients."""
    everyone = log_readers(vault, tree, state)
    readers = everyone[entry.id]
    name = posixpath.basename(path)
    try:
        vault.load_dir(entry.id, fresh=True)
    except IntegrityError:  # no pointer yet
        pointer = DirectoryManifest(
            entry.id, version=1, entries={name: entry}, readers=readers, mtime_ns=entry.mtime_ns
        )
        vault.create_manifest(pointer)
    else:

        def apply(m: DirectoryManifest) -> None:
            m.readers, m.entries = list(readers), {name: entry}

        vault.update_dir(entry.id, apply, sets_readers=True)
    return 1, {n: recipients_of(rs) for n, rs in everyone.items()}


def _rewrap(
    vault: Vault,
    tree: Tree,
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
        for _ in range(5):
            raw, etag = vault.envelope_with_etag(entry.id, entry.version)
            env = parse_envelope(raw)
            env.verify(vault.signers_for(entry.id))
            if env.context != vault.file_context(entry.id, entry.version):
                raise AuthenticationError(f"{path}: key envelope belongs to another file")
            if only_signer is not None and env.signer != only_signer:
                return 0
            # A live share link of this version is one of its readers in the log
            # (7.7, 7.8): a change of members must not end it, nor extend an expired one.
            new = rewrap_envelope(
                env, vault.identity, to, vault.identity,
                tuple(links.get((entry.id, entry.version), ())),
            )
            try:
                vault.replace_envelope(entry.id, entry.version, new.encode(), etag)
                return 1
            except PreconditionFailed:
                continue
        raise ContentionError(f"{path}: its envelope keeps changing; try again")

    unique = {e.id: (p, e) for p, e in files if e.type == "f" and e.version}
    links = linked_keys(vault) if unique else {}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return sum(pool.map(one, unique.values()))


def share(vault: Vault, path: str, name: str, *, write: bool = False) -> ShareReport:
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    member = member_to_share_with(vault, name)
    if not split_path(path):
        raise UsageError("the vault root cannot be shared", hint="share a folder inside it")
    tree = index_tree(vault)
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
        vault.post_notice(notice, seq, member.recipient)
        body = {
            "op": "share",
            "node": entry.id,
            "member": member.fingerprint,
            "write": write,
            "notice": notice.id,
            "writers": writers_of_roots(tree, state, items),
        }
        if entry.type == "f":
            body["type"] = "f"
        return body, []

    vault.access.append(make)
    return report


def unshare(vault: Vault, path: str, name: str, *, reencrypt: bool = False) -> ShareReport:
    """Withdraw ``name``'s grant at ``path``.

    Revocation must go through whatever the member planted: aliases are reported
    (never used to compute readers: log_readers), and a manifest or envelope that
    cannot be re-sealed (unreadable, forged, at the highest version) is reported and
    left alone; the log entry, which ends the member's authority, is appended anyway.
    """
    require_vault_owner(vault)
    vault.refresh_access(force=True)
    member = vault.access.current.by_name(name)
    tree = index_tree(vault)
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
        writer_map = writers_of_roots(tree, state, items)
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


def _reencrypt(vault: Vault, files: list[tuple[str, Entry]], report: ShareReport) -> None:
    """New versions under new keys, one manifest switch per directory, then the
    old versions' objects deleted."""
    by_dir: dict[str, list[tuple[str, Entry]]] = {}
    for path, entry in files:
        try:
            by_dir.setdefault(vault.parent_of(path)[0], []).append((path, entry))
        except CsfsError as exc:
            report.problems.append(f"{path}: not re-encrypted: {exc.message}")

    paths = {entry.id: path for path, entry in files}
    # The earlier versions each old version draws on (a delta, format.md 2.6): they
    # hold its content under keys the revoked reader may have, so they go with it.
    sources: dict[tuple[str, int], list[int]] = {}

    def upload(item: tuple[str, Entry], parent: DirectoryManifest) -> tuple[str, Entry, Entry]:
        path, old = item
        sources[(old.id, old.version)] = [r.version for r in vault.open_version(old)[1].sources]
        version, length = vault.reencrypt_version(old, parent)
        return posixpath.basename(path), old, replace(old, version=version, size=length)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for dir_id, items in by_dir.items():
            try:
                parent = vault.load_dir(dir_id, fresh=True)[0]
                done = list(pool.map(lambda it, p=parent: upload(it, p), items))
            except CsfsError as exc:
                report.problems.append(f"{items[0][0]}: not re-encrypted: {exc.message}")
                continue

            # A file changed or removed meanwhile keeps its newer version (or stays
            # removed); ours becomes an orphan.
            changes = [
                VersionChange(name, new.id, new, old, restore=False) for name, old, new in done
            ]
            lost = {name for name, _ in vault.commit_versions(dir_id, changes, keep_lost=False)}
            switched = [(old, new) for name, old, new in done if name not in lost]
            old_versions = []
            for old, new in switched:
                gone = {old.version, *sources.get((old.id, old.version), [])}
                # Another client's upload in flight may draw on them (2.6, 5.5):
                # those are left to fsck, which keeps them as long as it does.
                drawn = vault.kept_for_uploads(old.id, gone | {new.version})
                kept = gone if drawn is None else gone & drawn
                if kept:
                    report.problems.append(
                        f"{paths[old.id]}: {len(kept)} old version(s) kept until "
                        "`csfs fsck --repair` deletes them: an upload in flight draws on them"
                    )
                old_versions += [(old.id, v) for v in sorted(gone - kept)]
            list(pool.map(lambda e: vault.delete_version(*e), old_versions))
            _end_links(vault, set(old_versions), paths, report)
            report.files_reencrypted += len(switched)
            report.versions_deleted += len(switched)
            report.bytes_rewritten += sum(payload_size(new.size) for _, new in switched)


def _end_links(
    vault: Vault, deleted: set[tuple[str, int]], paths: dict[str, str], report: ShareReport
) -> None:
    """End, in the log, the share links to versions just re-encrypted and deleted
    (7.7): their URLs name nothing now, so `csfs links` must not list them."""
    for link in sorted(vault.access.current.links.values(), key=lambda x: x.link):
        if (link.node, link.version) not in deleted:
            continue

        def make(
            state: AccessState, seq: int, link_id: str = link.link
        ) -> tuple[dict[str, Any], list[Recipient]]:
            return {"op": "link-remove", "link": link_id}, []

        vault.access.append(make)
        report.links_ended.append((link.link, paths.get(link.node, link.node)))


def remove_member(vault: Vault, name: str) -> list[str]:
    """Unshare everything shared with ``name``, then remove it. Returns the paths unshared."""
    require_vault_owner(vault)
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
