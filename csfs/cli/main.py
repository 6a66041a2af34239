"""The `csfs` command: parse, call one library function, render errors.

Only this package prints. Library errors become `csfs: error: ...` plus an
optional `csfs: hint: ...` line and the error's stable exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from csfs.errors import CsfsError, KeyFileError

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


def fail(err: CsfsError) -> None:
    click.echo(f"csfs: error: {err.message}", err=True)
    if err.hint:
        click.echo(f"csfs: hint: {err.hint}", err=True)
    sys.exit(err.exit_code)


class CsfsGroup(click.Group):
    """A click group that renders library errors in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CsfsError as err:
            fail(err)
        except ValueError as err:
            # Caller mistakes that the library reports as ValueError (bad URL, bad key name).
            click.echo(f"csfs: error: {err}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            sys.exit(141)
        except OSError as err:
            # Local file-system trouble (disk full, permissions): one line, no traceback.
            where = f": {err.filename}" if err.filename else ""
            click.echo(f"csfs: error: {err.strerror or err}{where}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("csfs: interrupted", err=True)
            sys.exit(130)


@click.group(cls=CsfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="csfs", prog_name="csfs")
def cli() -> None:
    """csfs: an encrypted filesystem for S3 buckets and local folders."""


def passphrase_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        help="Read the key passphrase from the first line of this file "
        "(CSFS_PASSPHRASE takes precedence).",
    )(f)


def main() -> None:
    # Importing the command modules registers them on the group.
    from csfs.cli import keys_cmd, mount_cmd, offline_cmd, share_cmd, vault_cmd  # noqa: F401

    cli(prog_name="csfs")
