"""Share links: `csfs link`, `csfs links`, `csfs unlink` (format.md 7.7)."""

from __future__ import annotations

import time
from typing import Any

import click

from csfs.cli.group import CsfsCommand
from csfs.cli.options import pop_store_opts, store_options, vault_from
from csfs.cli.render import shown
from csfs.vault import links as vault_links


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


@click.command(cls=CsfsCommand)
@click.argument("path")
@click.option("--expires", default="7d", show_default=True,
              help="How long the link works: a number and s, m, h or d; at most 7d.")
@click.option("--reader", envvar="CSFS_WEB_URL", default="http://127.0.0.1:8470/",
              show_default=True, help="Where the reader page is served (`csfs web`, or your site).")
@store_options
def link(path: str, expires: str, reader: str, **kw: Any) -> None:
    """Make a link that shows PATH in a browser, without a key, until it expires.

    Whoever has the link can read the file as it is now. `csfs unlink` ends it."""
    seconds = vault_links.parse_duration(expires)
    with vault_from(pop_store_opts(kw)) as vault:
        info = vault_links.make_link(vault, path, seconds, reader)
    click.echo(info.url)
    click.echo(f"link {info.id[:12]} to {shown(path)}, until {_when(info.expires)}", err=True)


@click.command(cls=CsfsCommand)
@store_options
def links(**kw: Any) -> None:
    """List the share links that have not been ended."""
    with vault_from(pop_store_opts(kw)) as vault:
        for info in vault_links.list_links(vault):
            state = (f"ended: {info.ended}" if info.ended else
                     "expired" if info.expired else f"until {_when(info.expires)}")
            where = shown(info.path) if info.path else "(file moved or removed)"
            click.echo(f"{info.id[:12]}  {where}  {state}")


@click.command(cls=CsfsCommand)
@click.argument("link_id", metavar="ID")
@store_options
def unlink(link_id: str, **kw: Any) -> None:
    """End the link ID (from `csfs links`): its file's objects are replaced, so the
    link reads nothing even if its holder kept what it fetched. Running it again
    finishes an unlink that was interrupted."""
    with vault_from(pop_store_opts(kw)) as vault:
        done = vault_links.remove_link(vault, link_id)
    short = done.info.id[:12]
    where = shown(done.info.path) if done.info.path else "a file moved out of reach or removed"
    steps = []
    if done.moved_to is not None:
        steps.append(f"{where} moved to a new version (re-encrypted)")
    if done.kept:
        steps.append("the linked version is kept until `csfs fsck --repair` (an upload in "
                     "flight draws on it) but no longer opens with the link's key")
    else:
        steps.append("the linked version deleted" if done.deleted
                     else "the linked version was already gone")
    if done.logged:
        click.echo(f"ended link {short} to {where}: {'; '.join(steps)}", err=True)
    elif done.deleted or done.kept or done.moved_to is not None:
        click.echo(f"link {short} was already ended in the log; finished: {'; '.join(steps)}",
                   err=True)
    else:
        click.echo(f"link {short} was already ended; nothing was left to do", err=True)
