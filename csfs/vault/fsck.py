"""`csfs fsck`: verify that every reachable object authenticates; find orphans.

Every file version reachable from the root is fully decrypted (to nowhere),
so a flipped bit anywhere is found. Objects that nothing references are
orphans: old versions, removed files, uploads a crash cut short. `--repair`
deletes them, but only those older than a grace period: an upload another
client has in flight looks like an orphan until its manifest switch lands,
and deleting it would break that file; so would deleting a version such an
upload draws on (a delta's source), which is kept with it. What a live share
link reads (its version, a folder link's listing and the versions it names)
is referenced too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from csfs.errors import AccessDenied, CsfsError, NotFound
from csfs.vault.access import log_key, notice_key
from csfs.vault.layout import HEADER_KEY, content_key, envelope_key, manifest_key
from csfs.vault.links import live_link_objects
from csfs.vault.manifest import Entry
from csfs.vault.vault import Vault

_PAYLOAD = re.compile(r"c/([0-9a-f]{32})/([0-9a-f]{16})")
_OBJECT = re.compile(r"([mnl]/[0-9a-f]{32}|[ck]/[0-9a-f]{32}/[0-9a-f]{16})")


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)

    def skip_zeros(self, n: int) -> None:
        """A hole needs no checking (its map was authenticated): a file truncated to
        2^48 bytes is verified in the time its data takes, not 256 TiB of zeros."""


@dataclass
class FsckReport:
    files: int = 0
    directories: int = 0
    bytes_verified: int = 0
    problems: list[str] = field(default_factory=list)  # "path: what is wrong"
    orphans: list[str] = field(default_factory=list)  # object keys
    recent: list[str] = field(default_factory=list)  # orphans within the grace period: kept
    unknown: list[str] = field(default_factory=list)  # keys that are not csfs objects
    deleted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


GRACE_SECONDS = 3600.0


def fsck(
    vault: Vault,
    *,
    repair: bool = False,
    grace: float = GRACE_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> FsckReport:
    """Check the vault; with ``repair``, delete orphans older than ``grace`` seconds.

    An object whose age the store does not report counts as old.
    """
    report = FsckReport()
    reachable = {HEADER_KEY}
    seen_nodes: dict[str, tuple[str, str | None]] = {}  # node -> (first path, its folder)

    def visit(path: str, entry: Entry, parent: str | None = None) -> None:
        if progress:
            progress(path)
        if entry.id in seen_nodes and entry.type != "l":
            other, other_parent = seen_nodes[entry.id]
            what = _alias(vault, other_parent, parent)
            report.problems.append(f"{path}: same node as {other}: {what}")
            return  # checked once; and a cycle must not recurse forever
        seen_nodes[entry.id] = (path, parent)
        if entry.type == "d":
            reachable.add(manifest_key(entry.id))
            try:
                manifest, _ = vault.load_dir(entry.id, fresh=True)
            except CsfsError as exc:
                report.problems.append(f"{path}/: {exc.message}")
                return
            report.directories += 1
            for name, child in sorted(manifest.entries.items()):
                visit(f"{path.rstrip('/')}/{name}", child, entry.id)
        elif entry.type == "f":
            report.files += 1
            if vault.is_file_share(entry.id) and not vault.shared_view:
                # (A grantee's entry is the pointer's own, shown read-only: nothing to
                # compare; its pointer verified when it was listed.)
                reachable.add(manifest_key(entry.id))
                try:
                    pointer = vault.load_dir(entry.id, fresh=True)[0]
                    if entry not in pointer.entries.values():
                        report.problems.append(f"{path}: its share pointer is out of date")
                except CsfsError as exc:
                    report.problems.append(f"{path} (share pointer): {exc.message}")
            if entry.version == 0:
                return
            reachable.add(content_key(entry.id, entry.version))
            reachable.add(envelope_key(entry.id, entry.version))
            try:
                # A delta version's sources hold some of its chunks (format.md 2.6, 5.5).
                # Marked before the read, so that a damaged one is never taken for garbage.
                for ref in vault.open_version(entry)[1].sources:
                    reachable.add(content_key(entry.id, ref.version))
                vault.read_file(entry, _Discard())  # type: ignore[arg-type]
                report.bytes_verified += entry.size
            except CsfsError as exc:
                report.problems.append(f"{path}: {exc.message}")

    try:
        for entry, body in vault.access.verify_all():
            reachable.add(log_key(entry.seq))
            if body is not None and body["op"] == "share":
                reachable.add(notice_key(str(body["notice"])))
        for seq in sorted(vault.access.planted):
            # Ignored by every client (format.md 7.2). Kept, not deleted as an orphan:
            # it is evidence, and removing it changes nothing for the chain.
            reachable.add(log_key(seq))
            report.problems.append(
                f"access log: object {log_key(seq)} is not signed by the owner "
                "(planted by a member or the store; ignored)"
            )
    except CsfsError as exc:
        report.problems.append(f"access log: {exc.message}")
    if vault.is_owner:
        # A live share link names what it reads (7.7, 7.8): kept while the link works,
        # even once the files have moved on. An expired link's versions are orphans.
        try:
            linked, problems = live_link_objects(vault)
            reachable |= linked
            report.problems += problems
        except CsfsError as exc:
            report.problems.append(f"share links: {exc.message}")
    try:
        visit("/", vault.root_entry())
    except CsfsError as exc:
        report.problems.append(f"/: {exc.message}")
        return report  # without the root, everything would look orphaned: delete nothing
    if not vault.is_owner:
        # A member sees only its shares: everything else would look orphaned.
        if repair:
            raise AccessDenied("only the vault owner can repair the vault")
        return report
    listing = list(vault.store.list(""))
    unlisted = [
        info.key[2:]
        for info in listing
        if info.key.startswith("m/") and info.key not in reachable and _OBJECT.fullmatch(info.key)
    ]
    for dir_id in _folders_to_keep(vault, unlisted):
        n = len(vault.load_dir(dir_id)[0].entries)
        report.problems.append(
            f"folder {dir_id} is listed nowhere but holds {n} entr{'y' if n == 1 else 'ies'} "
            "(kept; it was removed while another client wrote in it)"
        )
        visit(f"/(unlisted {dir_id})", Entry(dir_id, "d"))
    now = time.time()
    reachable |= _drawn_on_in_flight(
        vault,
        [i.key for i in listing if i.key not in reachable and i.mtime and now - i.mtime < grace],
        [i.key for i in listing],
    )
    for info in listing:
        if info.key in reachable:
            continue
        if _OBJECT.fullmatch(info.key):
            young = info.mtime and now - info.mtime < grace
            (report.recent if young else report.orphans).append(info.key)
        else:
            report.unknown.append(info.key)
    if repair and report.ok:
        for key in report.orphans:
            try:
                vault.store.delete(key)
                report.deleted += 1
            except NotFound:
                pass
    return report



def _folders_to_keep(vault: Vault, unlisted: list[str]) -> list[str]:
    """Of the folders nothing lists, those that hold names and are not inside a tree
    a recursive removal marked (format.md 5.5): a crash between a writer's switch and
    its check after a concurrent rmdir leaves one. Their files are someone's data,
    not garbage. Only the top folder of such a subtree is returned."""
    loaded = {}
    for dir_id in unlisted:
        try:
            loaded[dir_id] = vault.load_dir(dir_id, fresh=True)[0]
        except CsfsError:
            continue  # not ours to read, or damaged: left to the orphan rules
    removed_tree: set[str] = set()
    stack = [d for d, m in loaded.items() if m.removed is not None]
    while stack:
        dir_id = stack.pop()
        if dir_id in removed_tree:
            continue
        removed_tree.add(dir_id)
        try:
            manifest = loaded.get(dir_id) or vault.load_dir(dir_id, fresh=True)[0]
        except CsfsError:
            continue
        stack.extend(e.id for e in manifest.entries.values() if e.type == "d")
    keep = {d: m for d, m in loaded.items() if d not in removed_tree and m.entries}
    inner = {e.id for m in keep.values() for e in m.entries.values() if e.type == "d"}
    return sorted(d for d in keep if d not in inner)
def _drawn_on_in_flight(vault: Vault, young: list[str], every: list[str]) -> set[str]:
    """The payloads that uploads in flight draw on (format.md 5.5): a version stored
    within the grace period and named by no manifest may be another client's delta
    (2.6), about to be committed; its sources are kept with it. A version that cannot
    be read yet keeps every payload of its file."""
    by_file: dict[str, list[int]] = {}
    for key in young:
        m = _PAYLOAD.fullmatch(key)
        if m:
            by_file.setdefault(m[1], []).append(int(m[2], 16))
    keep: set[str] = set()
    for file_id, versions in by_file.items():
        drawn = vault.sources_in_flight(file_id, versions)
        if drawn is None:
            keep.update(k for k in every if k.startswith(f"c/{file_id}/"))
        else:
            keep.update(content_key(file_id, v) for v in drawn)
    return keep


def _alias(vault: Vault, first: str | None, second: str | None) -> str:
    """What a node listed twice is. A move cut short leaves it in two folders under
    the same share roots (moves across a share boundary are refused); anything else,
    the vault root listed in a folder included, was planted by a writer."""
    if first is None or second is None or (
        vault.share_roots_of(first) != vault.share_roots_of(second)
    ):
        return "an alias planted by a writer"
    return "an alias (planted by a writer, or left by a move cut short)"
