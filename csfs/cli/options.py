"""Options and helpers the command modules share: default key and store
locations, the passphrase, unlocking a key, the store options, opening a vault."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from csfs.cli.render import shown, warn
from csfs.crypto import Identity, load_recipient
from csfs.crypto.keys import load_identity_pem, loose_permissions, read_key_file
from csfs.errors import KeyFileError
from csfs.store import open_store
from csfs.vault import Vault

DEFAULT_KEY_DIR = os.path.join(
    os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "csfs", "keys"
)
DEFAULT_NAME = "recipient"


def default_private_key() -> str:
    return os.path.join(DEFAULT_KEY_DIR, f"{DEFAULT_NAME}_private_key.pem")


def default_public_key() -> str:
    return os.path.join(DEFAULT_KEY_DIR, f"{DEFAULT_NAME}_public_key.pem")


def read_passphrase(passphrase_file: str | None, *, confirm: bool = False) -> bytes:
    """CSFS_PASSPHRASE, then --passphrase-file, then a prompt on the terminal."""
    env = os.environ.get("CSFS_PASSPHRASE")
    if env:
        return env.encode()
    if passphrase_file:
        try:
            with open(passphrase_file, "rb") as f:
                value = f.readline().rstrip(b"\r\n")
        except OSError as exc:
            raise KeyFileError(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror}"
            ) from None
        if not value:
            raise KeyFileError(f"passphrase file {passphrase_file} is empty")
        return value
    if not sys.stdin.isatty():
        raise KeyFileError(
            "a passphrase is needed but there is no terminal to ask on",
            hint="set CSFS_PASSPHRASE or pass --passphrase-file",
        )
    typed = click.prompt(
        "Passphrase",
        hide_input=True,
        confirmation_prompt=confirm,
        err=True,
        default="",
        show_default=False,
    )
    if not typed:
        raise KeyFileError(
            "empty passphrase", hint="use --no-passphrase to store the key unencrypted"
        )
    return str(typed).encode()


def passphrase_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        help="Read the key passphrase from the first line of this file "
        "(CSFS_PASSPHRASE takes precedence).",
    )(f)


def unlock(key_path: str, passphrase_file: str | None) -> Identity:
    data = read_key_file(key_path)
    mode = loose_permissions(key_path)
    if mode is not None and b"PRIVATE KEY" in data:
        # As ssh does; a warning, not a refusal, so a shared or odd setup keeps working.
        warn(
            f"private key file {shown(key_path)} can be read or changed by other users "
            f"(mode {mode:04o})",
            hint=f"chmod 600 {shown(key_path)}",
        )
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    passphrase = read_passphrase(passphrase_file) if encrypted else None
    return load_identity_pem(data, passphrase, what=key_path)


DEFAULT_STORE = os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "csfs", "store"
)


def store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--store",
        envvar="CSFS_STORE",
        default=DEFAULT_STORE,
        show_default=True,
        help="Where the vault lives: a folder, file:///path or s3://bucket/prefix "
        "(env CSFS_STORE).",
    )(f)
    f = click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        help="S3 endpoint for S3-compatible stores (env AWS_ENDPOINT_URL).",
    )(f)
    f = click.option(
        "--trust-owner",
        "trust_owner",
        multiple=True,
        envvar="CSFS_TRUST_OWNER",
        metavar="PUB.pem",
        help="Accept a vault owned by this public key the first time you open it "
        "(env CSFS_TRUST_OWNER). Not needed for your own vaults.",
    )(f)
    f = click.option(
        "--key",
        "key",
        envvar="CSFS_KEY",
        default=default_private_key,
        help="Your private key (env CSFS_KEY).",
    )(f)
    return passphrase_option(f)


def trusted_owners(paths: tuple[str, ...]) -> set[bytes]:
    return {load_recipient(p).verify_key_bytes for p in paths}


def open_vault(opts: dict[str, Any]) -> Vault:
    identity = unlock(opts["key"], opts["passphrase_file"])
    return Vault.open(
        open_store(opts["store"], endpoint_url=opts["endpoint_url"]),
        identity,
        trusted_owners=trusted_owners(opts["trust_owner"]),
    )


@contextmanager
def vault_from(opts: dict[str, Any]) -> Iterator[Vault]:
    vault = open_vault(opts)
    try:
        yield vault
    finally:
        vault.close()


def pop_store_opts(kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("store", "endpoint_url", "key", "passphrase_file", "trust_owner")
    return {k: kwargs.pop(k) for k in names}
