"""Whole trees between the local disk and the vault: `csfs put` and `csfs get`.

Uploads check the whole local tree first and switch each folder's manifest once;
downloads never follow a link and never write outside their destination (localfs)."""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from csfs.errors import AlreadyExists, IntegrityError, NotADirectory
from csfs.vault.layout import new_id
from csfs.vault.localfs import (
    LocalItem,
    current_umask,
    local_mode,
    open_destination,
    scan_local_tree,
)
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import VersionChange
from csfs.vault.paths import cycle_message, split_path
from csfs.vault.vault import Vault


def put_tree(
    vault: Vault,
    local_dir: str,
    path: str,
    *,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Upload a local tree: all file objects in parallel, then one manifest switch
    per directory. Returns the number of files. The whole tree is checked first
    (UTF-8 names; only files, folders and symbolic links, a link stored as a link
    and never followed), so a refusal leaves the vault as it was."""
    items = scan_local_tree(local_dir)
    by_folder: dict[tuple[str, ...], list[LocalItem]] = {(): []}
    for item in items:
        by_folder.setdefault(tuple(item.parts[:-1]), []).append(item)
        if item.type == "d":
            by_folder.setdefault(tuple(item.parts), [])
    if not vault.exists(path):
        vault.mkdir(path, parents=True)
    count = 0
    for rel, children in by_folder.items():  # parents first: dicts keep insertion order
        root = os.path.join(local_dir, *rel)
        vpath = posixpath.join(path, *rel)
        dir_entry = vault.lookup(vpath)
        if dir_entry.type != "d":
            raise NotADirectory(f"{vpath} exists in the vault and is not a folder")
        manifest, _ = vault.load_dir(dir_entry.id)
        for item in children:
            name = item.parts[-1]
            cur = manifest.entries.get(name)
            if cur is not None and cur.type != item.type:
                raise AlreadyExists(
                    f"{posixpath.join(vpath, name)} exists in the vault as another kind "
                    "of entry; not replaced"
                )
        for item in children:
            name = item.parts[-1]
            if item.type == "d" and name not in manifest.entries:
                vault.mkdir(posixpath.join(vpath, name), mode=stat.S_IMODE(item.st.st_mode))
        regular = [i.parts[-1] for i in children if i.type == "f"]
        links = {i.parts[-1]: i.target for i in children if i.type == "l"}

        def upload(
            name: str, root: str = root, manifest: DirectoryManifest = manifest
        ) -> tuple[str, Entry, Entry | None]:
            local = os.path.join(root, name)
            st = os.stat(local)
            base = manifest.entries.get(name)
            file_id = base.id if base is not None and base.type == "f" else new_id()
            with open(local, "rb") as f:
                version, length = vault.upload_version(file_id, f, manifest)
            if progress:
                progress(length)
            return (
                name,
                Entry(
                    file_id,
                    "f",
                    mode=stat.S_IMODE(st.st_mode),
                    size=length,
                    mtime_ns=st.st_mtime_ns,
                    version=version,
                ),
                base,
            )

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(upload, regular))
        link_entries = sorted(links.items())

        def add_links(
            m: DirectoryManifest, link_entries: list[tuple[str, str]] = link_entries
        ) -> None:
            for name, target in link_entries:
                cur = m.entries.get(name)
                if cur is None or (cur.type == "l" and cur.target != target):
                    m.entries[name] = Entry(
                        new_id(), "l", mode=0o777, mtime_ns=time.time_ns(), target=target
                    )

        if results or link_entries:
            changes = [VersionChange(name, new.id, new, base) for name, new, base in results]
            vault.commit_versions(dir_entry.id, changes, also=add_links)
        count += len(results)
    return count


def download_plan(vault: Vault, path: str) -> list[tuple[list[str], Entry]]:
    """Every (parts below ``path``, entry) to download, parents first. A folder met
    again on its own path (a cycle) or listed twice is refused, before anything
    is written: a tree written by someone else must not make a download endless,
    exponential, or silently incomplete."""
    top = vault.lookup(path)
    base = "/" + "/".join(split_path(path))
    plan: list[tuple[list[str], Entry]] = []
    first_seen: dict[str, str] = {top.id: base}
    stack: list[tuple[list[str], Entry, frozenset[str]]] = [([], top, frozenset({top.id}))]
    while stack:
        parts, entry, above = stack.pop()
        plan.append((parts, entry))
        if entry.type != "d":
            continue
        manifest = vault.load_dir(entry.id)[0]
        for name, child in sorted(manifest.entries.items(), reverse=True):
            shown = posixpath.join(base, *parts, name)
            if child.type == "d":
                if child.id in above:
                    raise IntegrityError(cycle_message(shown))
                if child.id in first_seen:
                    raise IntegrityError(
                        f"a folder is listed twice in the vault: {shown} and "
                        f"{first_seen[child.id]}; nothing downloaded",
                        hint="a writer made this tree; run csfs fsck",
                    )
                first_seen[child.id] = shown
                stack.append(([*parts, name], child, above | {child.id}))
            else:
                stack.append(([*parts, name], child, above))
    return plan


def get_tree(
    vault: Vault,
    path: str,
    local_dir: str,
    *,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Download a tree into ``local_dir`` (docs/design.md, downloads): nothing below
    ``local_dir`` is followed if it is a symbolic link, each file lands via a temp
    file and a rename, modes are masked by the umask, and folder modes are set
    once their contents are in. Files and links replace files and links of an
    earlier download; a folder is never replaced. Returns the file count."""
    plan = download_plan(vault, path)
    umask = current_umask()
    dest, _ = open_destination(local_dir, tree=True)
    failed = True
    try:
        jobs: list[tuple[list[str], Entry]] = []
        folders: list[tuple[list[str], Entry]] = []
        for parts, entry in plan:
            if entry.type == "d":
                if parts:
                    dest.make_folder(parts)
                folders.append((parts, entry))
            elif entry.type == "l":
                dest.place_link(parts, entry.target, overwrite=True)
            elif entry.type == "f":
                jobs.append((parts, entry))
            # FIFOs, sockets and devices have no content to download: skipped.

        def download(job: tuple[list[str], Entry]) -> None:
            parts, entry = job
            dest.write_file(
                parts,
                entry,
                lambda f: vault.read_file(entry, f),
                umask=umask,
                overwrite=True,
            )
            if progress:
                progress(entry.size)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(download, jobs))
        for parts, entry in reversed(folders):  # children first: a read-only folder last
            dest.set_folder(parts, local_mode(entry.mode, umask), entry.mtime_ns)
        failed = False
    finally:
        dest.close(failed=failed)
    return len(jobs)


def download_to(vault: Vault, entry: Entry, local: str, *, overwrite: bool = False) -> None:
    """Decrypt ``entry`` into ``local`` atomically: no partial plaintext on failure,
    the mode masked by the umask, an existing file replaced only with ``overwrite``."""
    dest, parts = open_destination(local, tree=False)
    try:
        if entry.type == "l":
            dest.place_link(parts, entry.target, overwrite=overwrite)
        else:
            dest.write_file(
                parts,
                entry,
                lambda f: vault.read_file(entry, f),
                umask=current_umask(),
                overwrite=overwrite,
            )
    finally:
        dest.close(failed=False)
