"""Share links: `csfs link`, `csfs links`, `csfs unlink` (format.md 7.7, 7.8)."""

from __future__ import annotations

import time
from typing import Any

import click

from csfs.cli.group import CsfsCommand
from csfs.cli.options import pop_store_opts, store_options, vault_from
from csfs.cli.render import shown
from csfs.vault import links as vault_links
from csfs.vault.folder_links import make_folder_link
from csfs.vault.link_common import parse_duration


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


@click.command(cls=CsfsCommand)
@click.argument("path")
@click.option("--expires", default="7d", show_default=True,
              help="How long the link works: a number and s, m, h or d; at most 7d.")
@click.option("--folder", is_flag=True,
              help="Link the folder PATH and everything below it, read-only, as it is now "
                   "(`csfs links --refresh` shows later changes).")
@click.option("--reader", envvar="CSFS_WEB_URL", default="http://127.0.0.1:8470/",
              show_default=True, help="Where the reader page is served (`csfs web`, or your site).")
@store_options
def link(path: str, expires: str, folder: bool, reader: str, **kw: Any) -> None:
    """Make a link that shows PATH in a browser, without a key, until it expires.

    Whoever has the link can read the file (or, with --folder, the folder) as it is
    now. `csfs unlink` ends it."""
    seconds = parse_duration(expires)
    make = make_folder_link if folder else vault_links.make_link
    with vault_from(pop_store_opts(kw)) as vault:
        info = make(vault, path, seconds, reader)
    click.echo(info.url)
    what = f"folder {shown(path)} ({info.files} files)" if folder else shown(path)
    click.echo(f"link {info.id[:12]} to {what}, until {_when(info.expires)}", err=True)


@click.command(cls=CsfsCommand)
@click.option("--refresh", is_flag=True,
              help="Show each folder link the folder as it is now: new files and versions "
                   "in, removed files out.")
@store_options
def links(refresh: bool, **kw: Any) -> None:
    """List the share links that have not been ended."""
    with vault_from(pop_store_opts(kw)) as vault:
        if refresh:
            for r in vault_links.refresh_folder_links(vault):
                where = shown(r.info.path) if r.info.path else "(folder moved or removed)"
                if r.problem:
                    click.echo(f"csfs: warning: link {r.info.id[:12]} to {where} not "
                               f"refreshed: {r.problem}", err=True)
                else:
                    click.echo(f"refreshed link {r.info.id[:12]} to {where}: {r.info.files} "
                               f"files, {r.added} new versions in, {r.dropped} out", err=True)
        for info in vault_links.list_links(vault):
            state = (f"ended: {info.ended}" if info.ended else
                     "expired" if info.expired else f"until {_when(info.expires)}")
            gone = "(folder moved or removed)" if info.folder else "(file moved or removed)"
            where = shown(info.path) if info.path else gone
            if info.folder:
                where = f"{where}/ (folder, {info.files} files)"
            click.echo(f"{info.id[:12]}  {where}  {state}")


@click.command(cls=CsfsCommand)
@click.argument("link_id", metavar="ID")
@store_options
def unlink(link_id: str, **kw: Any) -> None:
    """End the link ID (from `csfs links`): its files' objects are replaced, so the
    link reads nothing even if its holder kept what it fetched. Running it again
    finishes an unlink that was interrupted."""
    with vault_from(pop_store_opts(kw)) as vault:
        done = vault_links.remove_link(vault, link_id)
    short = done.info.id[:12]
    kind = "folder" if done.info.folder else "file"
    where = shown(done.info.path) if done.info.path else f"a {kind} moved out of reach or removed"
    steps = []
    if done.moved:
        steps.append(f"{_count(len(done.moved), 'file')} moved to a new version (re-encrypted)")
    if done.kept:
        steps.append(f"{_count(done.kept, 'version')} kept until `csfs fsck --repair` (an "
                     "upload in flight draws on it) but no longer opened by the link's key")
    if done.deleted:
        steps.append(f"{_count(done.deleted, 'linked version')} deleted")
    if done.listing_deleted:
        steps.append("its listing deleted")
    for problem in done.problems:
        click.echo(f"csfs: warning: {problem}", err=True)
    if done.logged:
        click.echo(f"ended link {short} to {where}: {'; '.join(steps) or 'nothing was stored'}",
                   err=True)
    elif steps:
        click.echo(f"link {short} was already ended in the log; finished: {'; '.join(steps)}",
                   err=True)
    else:
        click.echo(f"link {short} was already ended; nothing was left to do", err=True)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
