"""The `csfs` command: parse, call one library function, render errors.

Only this package prints. Library errors become `csfs: error: ...` plus an
optional `csfs: hint: ...` line and the error's stable exit code.
"""

from __future__ import annotations

from typing import Any

import click

from csfs.cli import keys_cmd, link_cmd, mount_cmd, offline_cmd, share_cmd, vault_cmd, web_cmd
from csfs.cli.group import CsfsGroup


@click.group(cls=CsfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="csfs", prog_name="csfs")
@click.option("--store", metavar="URL", help="The store, for every command that takes --store.")
@click.option("--endpoint-url", metavar="URL", help="S3 endpoint, for every command that takes it.")
@click.option(
    "--trust-owner",
    "trust_owner",
    multiple=True,
    metavar="PUB.pem",
    help="An owner key to trust, for every command that takes --trust-owner.",
)
@click.option("--key", metavar="PRIV.pem", help="Your private key, for every command.")
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="The key passphrase file, for every command.",
)
def cli(**_group_options: Any) -> None:
    """csfs: an encrypted filesystem for S3 buckets and local folders.

    The store and key options may come before the command (csfs --key K ls /)
    or after it; after it wins.
    """


for _command in (
    keys_cmd.keygen,
    offline_cmd.encrypt,
    offline_cmd.decrypt,
    vault_cmd.init,
    vault_cmd.forget_store,
    vault_cmd.put,
    vault_cmd.get,
    vault_cmd.cat,
    vault_cmd.ls,
    vault_cmd.mkdir,
    vault_cmd.rm,
    vault_cmd.mv,
    vault_cmd.fsck_cmd,
    share_cmd.pubkey,
    share_cmd.member,
    share_cmd.share,
    share_cmd.unshare,
    share_cmd.shares,
    share_cmd.log,
    mount_cmd.mount,
    mount_cmd.umount,
    mount_cmd.sync,
    mount_cmd.quarantine,
    mount_cmd.status,
    web_cmd.web,
    link_cmd.link, link_cmd.links, link_cmd.unlink,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="csfs")
