"""The whole vault tree as the owner sees it, and what the access log grants along
it: readers and writers of every node over every path that reaches it (format.md 7.5).

Share and unshare compute from this, never from one path alone, so that a node a
writer listed in a second folder (an alias) gains nothing."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from csfs.crypto import Recipient
from csfs.crypto.keys import load_recipient_pem
from csfs.errors import CsfsError
from csfs.vault.access import AccessState
from csfs.vault.manifest import Entry
from csfs.vault.paths import split_path
from csfs.vault.vault import Vault


@dataclass
class Tree:
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
        return [(p, e) for p, e in self.order if is_under(p, path)]

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


def index_tree(vault: Vault) -> Tree:
    tree = Tree()
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
    locations = index_tree(vault).locations
    return {n: locations[n][0] for n in nodes if n in locations}


def _writers_along(state: AccessState, chain: list[str]) -> list[str]:
    """Writers of a root: members with a "w" grant on it or on any directory above it."""
    out: list[str] = []
    for node in chain:
        for fp, mode in state.grants.get(node, {}).items():
            if mode == "w" and fp not in out:
                out.append(fp)
    return out


def writers_of_roots(
    tree: Tree, state: AccessState, items: list[tuple[str, Entry]]
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


def _meet(tree: Tree, own: Callable[[str], set[str]], at_root: set[str]) -> dict[str, set[str]]:
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


def log_readers(vault: Vault, tree: Tree, state: AccessState) -> dict[str, list[str]]:
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


def recipients_of(pems: list[str]) -> list[Recipient]:
    return [load_recipient_pem(r.encode(), "reader key") for r in pems]


def is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
