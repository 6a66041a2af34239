"""`csfs keygen`: make an identity (KEM key + Ed25519 signing key) as PEM files."""

from __future__ import annotations

import click

from csfs.cli.group import CsfsCommand
from csfs.cli.options import DEFAULT_KEY_DIR, DEFAULT_NAME, passphrase_option, read_passphrase
from csfs.cli.render import shown
from csfs.crypto import generate_identity, save_identity
from csfs.crypto.keys import KeyKind

CURVES: dict[str, KeyKind] = {"x25519": "x25519", "p256": "p256"}


@click.command(cls=CsfsCommand)
@click.option(
    "--dir",
    "directory",
    default=DEFAULT_KEY_DIR,
    show_default=True,
    help="Folder for the key files.",
)
@click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="Writes NAME_private_key.pem and NAME_public_key.pem.",
)
@click.option(
    "--curve",
    type=click.Choice(sorted(CURVES)),
    default="x25519",
    show_default=True,
    help="Elliptic curve of the key-encapsulation key.",
)
@click.option(
    "--pq", is_flag=True, help="Hybrid post-quantum key: ML-KEM-768 + X25519 (overrides --curve)."
)
@click.option(
    "--no-passphrase", is_flag=True, help="Store the private key unencrypted (not recommended)."
)
@passphrase_option
def keygen(
    directory: str,
    name: str,
    curve: str,
    pq: bool,
    no_passphrase: bool,
    passphrase_file: str | None,
) -> None:
    """Generate a key pair and an Ed25519 signing key, and print the fingerprint."""
    kind: KeyKind = "mlkem768x25519" if pq else CURVES[curve]
    passphrase = None if no_passphrase else read_passphrase(passphrase_file, confirm=True)
    identity = generate_identity(kind)
    private_path, public_path = save_identity(identity, directory, name, passphrase)
    click.echo(f"private key: {shown(private_path)}", err=True)
    click.echo(f"public key:  {shown(public_path)}", err=True)
    click.echo(identity.recipient.fingerprint)
