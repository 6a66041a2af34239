"""The `csfs` command: parse, call one library function, render errors.

Only this package prints. Library errors become `csfs: error: ...` plus an
optional `csfs: hint: ...` line and the error's stable exit code.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from click.exceptions import NoArgsIsHelpError

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


# What a terminal would act on rather than show: C0 and C1 controls (ESC starts
# escape sequences that can rewrite the screen or the title), DEL, bidi and other
# invisible format characters (they reorder or hide what follows), line and
# paragraph separators, and lone surrogates (undecodable local file names).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """A name or path as the CLI prints it: every character a terminal would act on
    is written as a backslash escape (a newline as \\n, ESC as \\x1b), and a
    backslash as \\\\, so a name can neither forge output lines nor drive the
    terminal, and different names never print alike."""
    return _UNPRINTABLE.sub(_escape, text.replace("\\", "\\\\"))


def shown_message(text: str) -> str:
    """A whole message line (an error, a warning, a status line): controls escaped
    as in :func:`shown`; backslashes are left alone, as messages are read, not parsed."""
    return _UNPRINTABLE.sub(_escape, text)


def warn(message: str, hint: str | None = None) -> None:
    click.echo(f"csfs: warning: {shown_message(message)}", err=True)
    if hint:
        click.echo(f"csfs: hint: {shown_message(hint)}", err=True)


def fail(err: CsfsError) -> None:
    click.echo(f"csfs: error: {shown_message(err.message)}", err=True)
    if err.hint:
        click.echo(f"csfs: hint: {shown_message(err.hint)}", err=True)
    sys.exit(err.exit_code)


# Options a user may give before the subcommand (`csfs --key K ls /`) as well as
# after it; the subcommand's own value wins when both are given.
GROUP_OPTIONS = ("store", "endpoint_url", "trust_owner", "key", "passphrase_file")


class CsfsCommand(click.Command):
    """A command that also takes the store options given before its name."""

    def invoke(self, ctx: click.Context) -> Any:
        root = ctx.find_root()
        for name in GROUP_OPTIONS:
            if name not in ctx.params or name not in root.params:
                continue
            here = ctx.get_parameter_source(name)
            there = root.get_parameter_source(name)
            if there == ParameterSource.COMMANDLINE and here != ParameterSource.COMMANDLINE:
                ctx.params[name] = root.params[name]
        return super().invoke(ctx)


def _escaped(exc: click.ClickException) -> click.ClickException:
    """click's own error, with the arguments it quotes escaped like any name."""
    if isinstance(exc, NoArgsIsHelpError):
        return exc  # it shows the help text, nothing typed
    if isinstance(exc, click.UsageError):
        return click.UsageError(shown_message(exc.format_message()), ctx=exc.ctx)
    return click.ClickException(shown_message(exc.format_message()))  # exit code 1, as before


class CsfsGroup(click.Group):
    """A click group that renders library errors in one place."""

    command_class = CsfsCommand
    group_class = type  # subgroups (`member`) are CsfsGroups too

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            raise _escaped(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _escaped(exc) from None
        except CsfsError as err:
            fail(err)
        except ValueError as err:
            # Caller mistakes that the library reports as ValueError (bad URL, bad key name).
            click.echo(f"csfs: error: {shown_message(str(err))}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            sys.exit(141)
        except OSError as err:
            # Local file-system trouble (disk full, permissions): one line, no traceback.
            where = f": {err.filename}" if err.filename else ""
            click.echo(f"csfs: error: {shown_message(f'{err.strerror or err}{where}')}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("csfs: interrupted", err=True)
            sys.exit(130)


@click.group(cls=CsfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="csfs", prog_name="csfs")
@click.option("--store", metavar="URL", help="The store, for every command that takes --store.")
@click.option(
    "--endpoint-url", metavar="URL", help="S3 endpoint, for every command that takes it."
)
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
    from csfs.cli import web_cmd as _web  # noqa: F401

    cli(prog_name="csfs")
