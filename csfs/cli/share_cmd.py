"""Sharing commands: member add/ls/rm/trust, share, unshare, shares, log, pubkey."""

from __future__ import annotations

import base64
import sys
import time
from typing import Any

import click

from csfs.cli.group import CsfsCommand, CsfsGroup
from csfs.cli.options import (
    default_private_key,
    passphrase_option,
    pop_store_opts,
    store_options,
    unlock,
    vault_from,
)
from csfs.cli.render import shown, shown_message
from csfs.crypto.keys import public_key_file, read_key_file
from csfs.vault import sharing
from csfs.vault.access_records import read_member_record


@click.command(cls=CsfsCommand)
@click.option(
    "--key", "key", envvar="CSFS_KEY", default=default_private_key, help="Your private key."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not to stdout.")
@passphrase_option
def pubkey(key: str, output: str | None, passphrase_file: str | None) -> None:
    """Print your public key file, self-signed, as `csfs member add` needs it."""
    text = public_key_file(unlock(key, passphrase_file))
    if output:
        with open(output, "wb") as f:
            f.write(text)
    else:
        sys.stdout.buffer.write(text)


@click.group(cls=CsfsGroup)
def member() -> None:
    """The vault's members: who can be shared with (owner only, except `ls`)."""


@member.command("add")
@click.argument("public_key", metavar="PUB.pem")
@click.option("--name", required=True, help="The member's name in this vault, e.g. bob.")
@store_options
def member_add(public_key: str, name: str, **kw: Any) -> None:
    """Add the holder of PUB.pem (made by `csfs keygen`) as a member."""
    with vault_from(pop_store_opts(kw)) as vault:
        m = sharing.add_member(vault, read_key_file(public_key), name)
    click.echo(f"member {shown(m.name)}: {m.fingerprint}")


@member.command("ls")
@store_options
def member_ls(**kw: Any) -> None:
    """List members, with fingerprints; a changed key is flagged."""
    with vault_from(pop_store_opts(kw)) as vault:
        vault.refresh_access(force=True)
        log = vault.access
        for m in sorted(log.current.members.values(), key=lambda m: m.name):
            role = "owner" if m.recipient.verify_key_bytes == vault.header.owner else "member"
            flag = "  KEY CHANGED (see `csfs member trust`)" if m.name in log.changed_keys else ""
            name = shown(m.name)
            click.echo(f"{name:<16} {role:<7} {m.recipient.kind:<15} {m.fingerprint}{flag}")


@member.command("rm")
@click.argument("name")
@store_options
def member_rm(name: str, **kw: Any) -> None:
    """Unshare everything shared with NAME, then remove the member."""
    with vault_from(pop_store_opts(kw)) as vault:
        for path in sharing.remove_member(vault, name):
            click.echo(f"unshared {shown(path)}", err=True)
    click.echo(f"removed member {shown(name)}", err=True)


@member.command("trust")
@click.argument("name")
@store_options
def member_trust(name: str, **kw: Any) -> None:
    """Accept NAME's new key after checking it with them: re-pin the key the vault
    now has for NAME, or, if NAME is no member, forget its old key so that a new
    one can be added."""
    with vault_from(pop_store_opts(kw)) as vault:
        fingerprint = sharing.trust_member(vault, name)
    click.echo(
        f"{shown(name)}: now trusting {fingerprint}"
        if fingerprint
        else f"{shown(name)}: pin forgotten"
    )


@click.command(cls=CsfsCommand)
@click.argument("path")
@click.option("--with", "name", required=True, help="The member to share with.")
@click.option("--write", is_flag=True, help="Also let the member change files here.")
@store_options
def share(path: str, name: str, write: bool, **kw: Any) -> None:
    """Share the folder PATH with a member (read-only unless --write)."""
    start = time.monotonic()
    with vault_from(pop_store_opts(kw)) as vault:
        r = sharing.share(vault, path, name, write=write)
    click.echo(
        f"shared {shown(path)} with {shown(name)} ({'read-write' if write else 'read-only'}): "
        f"{r.directories} manifests and {r.envelopes} envelopes re-wrapped, "
        f"no content rewritten, {time.monotonic() - start:.1f}s",
        err=True,
    )


@click.command(cls=CsfsCommand)
@click.argument("path")
@click.option("--with", "name", required=True, help="The member to unshare from.")
@click.option(
    "--reencrypt", is_flag=True, help="Also re-encrypt the existing files and delete old versions."
)
@store_options
def unshare(path: str, name: str, reencrypt: bool, **kw: Any) -> None:
    """Stop sharing PATH with a member; new versions are unreadable to its key."""
    start = time.monotonic()
    with vault_from(pop_store_opts(kw)) as vault:
        r = sharing.unshare(vault, path, name, reencrypt=reencrypt)
    for problem in r.problems:
        click.echo(f"csfs: warning: {shown_message(problem)}; run `csfs fsck`", err=True)
    for link_id, where in r.links_ended:
        click.echo(
            f"ended share link {link_id[:12]} to {shown(where)}: its version was re-encrypted",
            err=True,
        )
    extra = (
        f"; {r.files_reencrypted} files re-encrypted, {r.bytes_rewritten} bytes rewritten, "
        f"{r.versions_deleted} old versions deleted"
        if reencrypt
        else f"; existing versions stay readable to copies {shown(name)} may hold (use --reencrypt)"
    )
    click.echo(
        f"unshared {shown(path)} from {shown(name)}: {r.directories} manifests re-sealed{extra}, "
        f"{time.monotonic() - start:.1f}s",
        err=True,
    )


@click.command(cls=CsfsCommand)
@store_options
def shares(**kw: Any) -> None:
    """List shares: what you share and with whom, and what is shared with you."""
    with vault_from(pop_store_opts(kw)) as vault:
        for s in sharing.list_shares(vault):
            mode = "rw" if s.write else "r "
            arrow = f"-> {shown(s.member)}" if s.direction == "out" else f"<- {shown(s.member)}"
            click.echo(f"{mode} {shown(s.path)}  {arrow}")


def describe_entry(body: dict[str, Any] | None, names: dict[str, str]) -> str:
    """One line for `csfs log`; node ids are shown, never paths (the log has none)."""
    if body is None:
        return "(not readable by your key)"
    op = body["op"]
    if op == "member-add":
        m = read_member_record(base64.b64decode(body["record"]))
        return f"member-add {m.name} {m.fingerprint}"
    who = names.get(str(body.get("member")), str(body.get("member")))
    if op == "member-remove":
        return f"member-remove {who}"
    mode = " (write)" if body.get("write") else ""
    what = "file" if body.get("type") == "f" else "folder"
    return f"{op} {what} {str(body['node'])[:12]} {'with' if op == 'share' else 'from'} {who}{mode}"


@click.command(cls=CsfsCommand)
@store_options
def log(**kw: Any) -> None:
    """Show the access log and verify its whole hash chain."""
    with vault_from(pop_store_opts(kw)) as vault:
        vault.refresh_access(force=True)
        entries = vault.access.verify_all()
        names = {fp: m.name for fp, m in vault.access.current.members.items()}
        for entry, body in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.time_ns / 1e9))
            what = shown_message(describe_entry(body, names))
            click.echo(f"{entry.seq:>5} {when} {entry.hash[:12]} {what}")
    click.echo(f"log verified: {len(entries)} entries, chain intact", err=True)
