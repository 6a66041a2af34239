"""Vault commands: init, put, get, ls, mkdir, rm, mv, cat, fsck."""

from __future__ import annotations

import os
import posixpath
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from csfs.cli.group import CsfsCommand
from csfs.cli.options import DEFAULT_STORE, pop_store_opts, store_options, unlock, vault_from
from csfs.cli.render import shown, shown_message
from csfs.crypto import load_recipient
from csfs.errors import NotFound, UsageError
from csfs.store import open_store
from csfs.vault import Entry, Vault, transfer
from csfs.vault.fsck import fsck
from csfs.vault.paths import split_path
from csfs.vault.state import forget_store_state

PROGRESS_MIN = 4 << 20


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr, only on a terminal and for transfers worth it."""
    if total < PROGRESS_MIN or not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@click.command(cls=CsfsCommand)
@click.option(
    "-r",
    "--reader",
    "readers",
    multiple=True,
    metavar="PUB.pem",
    help="Another public key that may read the whole vault; repeat for several.",
)
@click.option(
    "--name",
    default="owner",
    show_default=True,
    help="Your name as members see it (their view is Shared/NAME/...).",
)
@click.option(
    "--replace-pin",
    is_flag=True,
    help="This client remembers another vault at this store (you wiped and re-created "
    "it): forget that vault's pinned header, rollback floors and access state, and "
    "create the new vault. Only if you are sure nobody else replaced it.",
)
@store_options
def init(readers: tuple[str, ...], name: str, replace_pin: bool, **kw: Any) -> None:
    """Create an empty vault in the store, owned by your key."""
    opts = pop_store_opts(kw)
    identity = unlock(opts["key"], opts["passphrase_file"])
    backend = open_store(opts["store"], endpoint_url=opts["endpoint_url"])
    vault = Vault.create(
        backend,
        identity,
        readers=[load_recipient(p) for p in readers],
        name=name,
        replace_pin=replace_pin,
    )
    vault.close()
    click.echo(f"created vault {vault.header.vault_id} at {shown(vault.store.url)}", err=True)


@click.command(cls=CsfsCommand, name="forget-store")
@click.option(
    "--store",
    envvar="CSFS_STORE",
    default=DEFAULT_STORE,
    show_default=True,
    help="The store to forget (env CSFS_STORE).",
)
@click.option(
    "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 endpoint (env AWS_ENDPOINT_URL)."
)
def forget_store(store: str, endpoint_url: str | None) -> None:
    """Forget what this client remembers about a store: the vault header it pinned,
    the rollback floors of its folders and its access-log state. For a store you
    wiped and re-created on purpose; the next open trusts it like a new one."""
    url = open_store(store, endpoint_url=endpoint_url).url
    if forget_store_state(url):
        click.echo(f"forgot the vault at {shown(url)}", err=True)
    else:
        click.echo(f"nothing remembered about {shown(url)}", err=True)


def local_size(paths: list[str]) -> int:
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                total += sum(
                    os.path.getsize(os.path.join(root, f))
                    for f in files
                    if os.path.isfile(os.path.join(root, f))
                )
        elif os.path.isfile(p):
            total += os.path.getsize(p)
    return total


@click.command(cls=CsfsCommand)
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively.")
@store_options
def put(sources: tuple[str, ...], dest: str, recursive: bool, **kw: Any) -> None:
    """Encrypt local files into the vault at DEST (a vault path such as /docs/)."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        dest_is_dir = dest.endswith("/") or (vault.exists(dest) and vault.lookup(dest).type == "d")
        if len(sources) > 1 and not dest_is_dir:
            raise UsageError(f"target {dest} is not a directory")
        with progress_bar(local_size(list(sources)), "uploading") as bar:
            for src in sources:
                target = (
                    posixpath.join(dest, os.path.basename(src.rstrip("/"))) if dest_is_dir else dest
                )
                try:
                    st = os.stat(src)
                except FileNotFoundError:
                    raise UsageError(f"no such file: {src}") from None
                if stat.S_ISDIR(st.st_mode):
                    if not recursive:
                        raise UsageError(f"{src} is a directory", hint="use put -r")
                    transfer.put_tree(vault, src, target, progress=bar)
                elif stat.S_ISREG(st.st_mode):
                    with open(src, "rb") as f:
                        vault.write_file(
                            target, f, mode=stat.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns
                        )
                    bar(st.st_size)
                else:
                    raise UsageError(f"not a regular file: {src}")


@click.command(cls=CsfsCommand)
@click.argument("source")
@click.argument("dest")
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively.")
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Replace an existing local file. Without it, get refuses to overwrite. "
    "(get -r always updates files and links of an earlier download, never a folder.)",
)
@store_options
def get(source: str, dest: str, recursive: bool, force: bool, **kw: Any) -> None:
    """Decrypt SOURCE from the vault into the local path DEST.

    Modes are masked by your umask; setuid, setgid and sticky bits are never
    restored. Nothing below DEST is followed if it is a symbolic link."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        entry = vault.lookup(source)
        if os.path.isdir(dest):
            dest = os.path.join(dest, posixpath.basename(source.rstrip("/")) or "vault")
        if entry.type == "d":
            if not recursive:
                raise UsageError(f"{source} is a directory", hint="use get -r")
            total = sum(e.size for _, e in vault.walk(source) if e.type == "f")
            with progress_bar(total, "downloading") as bar:
                transfer.get_tree(vault, source, dest, progress=bar)
        else:
            with progress_bar(entry.size, "downloading") as bar:
                transfer.download_to(vault, entry, dest, overwrite=force)
                bar(entry.size)


@click.command(cls=CsfsCommand)
@click.argument("path")
@store_options
def cat(path: str, **kw: Any) -> None:
    """Decrypt a vault file to standard output."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        vault.read_file(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()


def mode_string(entry: Entry) -> str:
    kind = {"d": stat.S_IFDIR, "l": stat.S_IFLNK, "f": stat.S_IFREG}[entry.type]
    return stat.filemode(kind | (entry.mode & 0o7777))


@click.command(cls=CsfsCommand, name="ls")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing: mode, size, time.")
@store_options
def ls(path: str, long: bool, **kw: Any) -> None:
    """List a vault directory (one GET of its manifest)."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        entry = vault.lookup(path)
        items = (
            vault.listdir(path).items()
            if entry.type == "d"
            else [(posixpath.basename(path), entry)]
        )
        for name, e in sorted(items):
            label = shown(name) + ("/" if e.type == "d" and not long else "")
            if long:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns / 1e9))
                target = f" -> {shown(e.target)}" if e.type == "l" else ""
                click.echo(f"{mode_string(e)} {e.size:>12} {when} {label}{target}")
            else:
                click.echo(label)


@click.command(cls=CsfsCommand)
@click.argument("paths", nargs=-1, required=True)
@click.option("-p", "--parents", is_flag=True, help="Make parent directories as needed.")
@store_options
def mkdir(paths: tuple[str, ...], parents: bool, **kw: Any) -> None:
    """Create vault directories."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        for p in paths:
            vault.mkdir(p, parents=parents)


@click.command(cls=CsfsCommand)
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and their contents.")
@click.option("-f", "--force", is_flag=True, help="Ignore paths that do not exist.")
@store_options
def rm(paths: tuple[str, ...], recursive: bool, force: bool, **kw: Any) -> None:
    """Remove vault files (their objects are collected by `csfs fsck --repair`)."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        for p in paths:
            try:
                vault.remove(p, recursive=recursive, expect_dir=None if recursive else False)
            except NotFound:
                if not force:
                    raise


@click.command(cls=CsfsCommand)
@click.argument("source")
@click.argument("dest")
@store_options
def mv(source: str, dest: str, **kw: Any) -> None:
    """Move or rename within the vault (rewrites manifests only, never content)."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        if split_path(source) == split_path(dest):
            vault.lookup(source)  # as rename(2): a path onto itself is a no-op, if it exists
            return
        if dest.endswith("/") or (vault.exists(dest) and vault.lookup(dest).type == "d"):
            dest = posixpath.join(dest, posixpath.basename(source.rstrip("/")))
        vault.rename(source, dest)


@click.command(cls=CsfsCommand, name="fsck")
@click.option(
    "--grace",
    default=60.0,
    show_default=True,
    help="With --repair, keep orphans younger than this many minutes: another client's "
    "upload in flight looks like an orphan until it lands.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Delete orphaned objects (old versions, "
    "removed files, interrupted uploads). Run it while no one else writes.",
)
@store_options
def fsck_cmd(repair: bool, grace: float, **kw: Any) -> None:
    """Verify that every object authenticates; report tampering, loss and orphans."""
    opts = pop_store_opts(kw)
    with vault_from(opts) as vault:
        report = fsck(vault, repair=repair, grace=grace * 60)
    for problem in report.problems:
        click.echo(f"csfs: fsck: {shown_message(problem)}", err=True)
    for key in report.orphans:
        click.echo(f"orphan {shown(key)}" + (" (deleted)" if repair and report.ok else ""))
    for key in report.recent:
        click.echo(f"orphan {shown(key)} (younger than --grace: kept, may be an upload in flight)")
    for key in report.unknown:
        click.echo(f"unknown object {shown(key)} (not written by csfs; left alone)")
    click.echo(
        f"{report.directories} directories, {report.files} files, "
        f"{report.bytes_verified} bytes verified, {len(report.problems)} problems, "
        f"{len(report.orphans)} orphans" + (f", {report.deleted} deleted" if repair else ""),
        err=True,
    )
    if repair and not report.ok:
        click.echo("csfs: hint: nothing was deleted because problems were found", err=True)
    if not report.ok:
        sys.exit(4)
