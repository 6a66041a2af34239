"""`csfs mount`, `umount`, `sync` and `status`."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import click

from csfs.cli.group import CsfsCommand, CsfsGroup
from csfs.cli.options import pop_store_opts, store_options, trusted_owners, unlock
from csfs.cli.render import shown, shown_message
from csfs.errors import NotFound, StoreError, UsageError

CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
DEFAULT_CACHE_SIZE = "2G"


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise UsageError(f"invalid size {text!r} (examples: 512M, 2G)") from None
    if value < 16 << 20:
        raise UsageError("the cache needs at least 16M")
    return value


def _override(owner_override: bool) -> list[str]:
    """libfuse's own uid=/gid= options replace st_uid/st_gid in every answer."""
    return [f"uid={os.getuid()},gid={os.getgid()}"] if owner_override else []


@click.command(cls=CsfsCommand)
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option(
    "--cache-dir",
    help="Folder for the ciphertext cache and upload queue. Default: ~/.cache/csfs/<vault>-<key>.",
)
@click.option(
    "--cache-size",
    help="Bound on the cache (dirty files are kept beyond it until uploaded). "
    "Default: 2G, or less if the cache folder's disk has less room.",
)
@click.option("--read-only", is_flag=True, help="Mount read-only.")
@click.option(
    "--ttl",
    default=5.0,
    show_default=True,
    help="Seconds before other clients' changes are noticed.",
)
@click.option(
    "--owner-override",
    is_flag=True,
    help="Show every file as owned by you (the stored owners are kept; chown still sets them).",
)
@click.option("-o", "options", multiple=True, help="FUSE options, e.g. -o allow_other.")
@click.option(
    "--log-paths",
    is_flag=True,
    help="Debugging: write file paths, in clear, into the mount log (by default it "
    "names files only by their random node ids, so no name reaches the local disk).",
)
@store_options
def mount(
    mountpoint: str,
    foreground: bool,
    cache_dir: str | None,
    cache_size: str | None,
    read_only: bool,
    ttl: float,
    owner_override: bool,
    options: tuple[str, ...],
    log_paths: bool,
    **kw: Any,
) -> None:
    """Mount the vault at MOUNTPOINT; returns once the mount is ready."""
    from csfs.fuse.mount import check_mountpoint, lock_cache_dir, run_mount
    from csfs.store import open_store
    from csfs.vault import Vault
    from csfs.vault.cache import fit_limit
    from csfs.vault.filesystem import FileSystem
    from csfs.vault.layout import HEADER_KEY
    from csfs.vault.vault import store_has

    opts = pop_store_opts(kw)
    limit = parse_size(cache_size or DEFAULT_CACHE_SIZE)
    store_url = opts["store"]
    check_mountpoint(mountpoint)
    # Before any local folder is made for it: a mistyped store leaves nothing behind.
    store = open_store(store_url, endpoint_url=opts["endpoint_url"])
    if not store_has(store, HEADER_KEY):
        raise NotFound(f"no csfs vault at {store.url}", hint="create one with `csfs init`")
    identity = unlock(opts["key"], opts["passphrase_file"])  # asked once, before forking
    owners = trusted_owners(opts["trust_owner"])
    if cache_dir is None:
        tag = hashlib.sha256(f"{store_url}\0{identity.recipient.fingerprint}".encode()).hexdigest()
        cache_dir = os.path.join(CACHE_HOME, "csfs", tag[:24])
    cache_dir = os.path.abspath(cache_dir)
    lock_fd = lock_cache_dir(cache_dir, mountpoint)
    os.close(lock_fd)  # checked early for a clear error; the daemon takes it for good
    fit = fit_limit(cache_dir, limit)
    if fit < limit and cache_size is None:
        click.echo(
            f"csfs: warning: the disk of {cache_dir} has room for {fit >> 20} MiB of cache: "
            f"the cache is bounded to that, not {limit >> 20} MiB",
            err=True,
        )
        limit = fit
    elif fit < limit:
        click.echo(
            f"csfs: warning: --cache-size {cache_size} is more than the disk of {cache_dir} "
            f"holds ({fit >> 20} MiB); when it is full, clean entries are evicted early",
            err=True,
        )

    def make_fs() -> FileSystem:
        lock_cache_dir(cache_dir, mountpoint)  # held for the daemon's lifetime
        store = open_store(store_url, endpoint_url=opts["endpoint_url"])
        vault = Vault.open(store, identity, ttl=ttl, tmp_dir=cache_dir, trusted_owners=owners)
        return FileSystem(vault, cache_dir, limit, read_only=read_only)

    run_mount(
        make_fs,
        mountpoint,
        foreground=foreground,
        read_only=read_only,
        options=[*options, *_override(owner_override)],
        log_file=os.path.join(cache_dir, "mount.log"),
        log_paths=log_paths,
    )
    if not foreground:
        log_file = os.path.join(cache_dir, "mount.log")
        click.echo(f"mounted at {shown(mountpoint)} (log: {shown(log_file)})", err=True)


@click.command(cls=CsfsCommand)
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option(
    "--timeout", default=3600.0, show_default=True, help="Seconds to wait for pending uploads."
)
def umount(mountpoint: str, timeout: float) -> None:
    """Wait for pending uploads, then unmount."""
    from csfs.fuse.mount import unmount

    unmount(mountpoint, timeout=timeout)


@click.command(cls=CsfsCommand)
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait.")
def sync(mountpoint: str, timeout: float) -> None:
    """Block until every file closed so far is in the store."""
    from csfs.fuse.control import request

    reply = request(mountpoint, "sync", timeout=timeout + 5, wait=timeout)
    if not reply.get("ok"):
        raise StoreError(f"sync did not finish: {reply.get('error')}")
    if reply.get("quarantined"):
        click.echo(
            f"csfs: warning: {len(reply['quarantined'])} upload(s) could not be stored and "
            f"are quarantined; see `csfs status {mountpoint}`",
            err=True,
        )


@click.group(cls=CsfsGroup)
def quarantine() -> None:
    """Uploads that can never reach the store, kept locally (see `csfs status`)."""


@quarantine.command("ls")
@click.argument("mountpoint", type=click.Path(file_okay=False))
def quarantine_ls(mountpoint: str) -> None:
    """List quarantined versions: id, path, size, reason."""
    from csfs.fuse.control import request

    r = request(mountpoint, "status", timeout=30)
    for q in r.get("quarantined") or []:
        click.echo(f"{q['id']} {q['path']} {q['size']} {q['reason']}")


@quarantine.command("export")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.argument("qid")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def quarantine_export(mountpoint: str, qid: str, dest: str, force: bool) -> None:
    """Decrypt the quarantined version QID into the local file DEST."""
    from csfs.fuse.control import request

    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and not force:
        raise UsageError(f"refusing to overwrite {dest}", hint="remove it first, or pass --force")
    r = request(mountpoint, "quarantine-export", timeout=3600, id=qid, dest=dest)
    if not r.get("ok"):
        raise UsageError(f"export failed: {r.get('error')}", hint=r.get("hint"))
    click.echo(f"wrote {r['size']} bytes to {dest}", err=True)


@quarantine.command("drop")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.argument("qid")
def quarantine_drop(mountpoint: str, qid: str) -> None:
    """Discard the quarantined version QID for good (export it first to keep it)."""
    from csfs.fuse.control import request

    r = request(mountpoint, "quarantine-drop", timeout=60, id=qid)
    if not r.get("ok"):
        raise UsageError(f"drop failed: {r.get('error')}", hint=r.get("hint"))
    click.echo(f"dropped {qid}", err=True)


@click.command(cls=CsfsCommand)
@click.argument("mountpoint", type=click.Path(file_okay=False))
def status(mountpoint: str) -> None:
    """Show pending uploads, cache use and recent errors of a mount."""
    from csfs.fuse.control import request

    r = request(mountpoint, "status", timeout=30)
    since = r.get("offline_since")
    if since is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        click.echo(
            f"store: offline since {when}: serving the cache, "
            f"{r['pending_files']} uploads waiting for the store"
        )
    else:
        click.echo("store: online")
    click.echo(f"pending uploads: {r['pending_files']} files, {r['pending_bytes']} bytes")
    click.echo(f"pending changes: {r.get('pending_changes', 0)} (mkdir, mv, rm, chmod)")
    held = r.get("quarantined") or []
    click.echo(f"quarantined: {len(held)}")
    for q in held:
        click.echo(f"  {q['id']} {q['path']} ({q['size']} bytes): {q['reason']}")
        click.echo(f"    recover: csfs quarantine export {mountpoint} {q['id']} LOCAL_PATH")
        click.echo(f"    then discard: csfs quarantine drop {mountpoint} {q['id']}")
    click.echo(f"cache: {r['cache_bytes']} of {r['cache_limit']} bytes")
    click.echo(f"open files: {r['open_files']}")
    errors = r.get("errors") or []
    click.echo(f"errors: {len(errors)}")
    for e in errors:
        click.echo(f"  {shown_message(str(e))}")
    sys.stdout.flush()
