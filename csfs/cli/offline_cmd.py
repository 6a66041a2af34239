"""`csfs encrypt` and `csfs decrypt`: single files, no vault, no store."""

from __future__ import annotations

import os

import click

from csfs.cli.group import CsfsCommand
from csfs.cli.options import default_private_key, default_public_key, passphrase_option, unlock
from csfs.cli.render import shown
from csfs.crypto import load_recipient
from csfs.offline import decrypt_file, encrypt_file


@click.command(cls=CsfsCommand)
@click.argument("file")
@click.option(
    "-r",
    "--recipient",
    "recipients",
    multiple=True,
    metavar="PUB.pem",
    help="Public key to encrypt to; repeat for several. Default: your own key.",
)
@click.option(
    "-o",
    "--output",
    help="Write OUT and OUT.key instead of FILE.enc and FILE.key.enc; "
    "'-' for stdout (then --envelope is required).",
)
@click.option("--envelope", help="Where to write the key envelope.")
@click.option("--sign", is_flag=True, help="Sign with your key (--key) instead of a throwaway key.")
@click.option(
    "-k",
    "--key",
    envvar="CSFS_KEY",
    default=default_private_key,
    help="Private key used by --sign.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@passphrase_option
def encrypt(
    file: str,
    recipients: tuple[str, ...],
    output: str | None,
    envelope: str | None,
    sign: bool,
    key: str,
    force: bool,
    passphrase_file: str | None,
) -> None:
    """Encrypt FILE ('-' for stdin) to one or more public keys."""
    pubs = [load_recipient(p) for p in (recipients or (default_public_key(),))]
    signer = unlock(key, passphrase_file) if sign else None
    out, env = encrypt_file(
        file, pubs, out=output, envelope_out=envelope, signer=signer, force=force
    )
    if out != "-":
        click.echo(f"wrote {shown(out)} and {shown(env)}", err=True)


@click.command(cls=CsfsCommand)
@click.argument("file")
@click.option(
    "-k",
    "--key",
    envvar="CSFS_KEY",
    default=default_private_key,
    help="Your private key (env CSFS_KEY).",
)
@click.option("-o", "--output", help="Output file ('-' for stdout). Default: FILE without .enc.")
@click.option("--envelope", help="The key envelope. Default: the sidecar next to FILE.")
@click.option(
    "--expect-signer",
    metavar="PUB.pem",
    help="Fail unless the envelope is signed by this public key.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
@passphrase_option
def decrypt(
    file: str,
    key: str,
    output: str | None,
    envelope: str | None,
    expect_signer: str | None,
    force: bool,
    passphrase_file: str | None,
) -> None:
    """Decrypt FILE ('-' for stdin) with your private key."""
    identity = unlock(key, passphrase_file)
    allowed = {load_recipient(expect_signer).verify_key_bytes} if expect_signer else None
    out, _env = decrypt_file(
        file, identity, out=output, envelope=envelope, force=force, allowed_signers=allowed
    )
    if out != "-":
        click.echo(f"wrote {shown(os.path.normpath(out))}", err=True)
