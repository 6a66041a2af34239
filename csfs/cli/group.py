"""The click classes every csfs command uses: group options, errors rendered once."""

from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource
from click.exceptions import NoArgsIsHelpError

from csfs.cli.render import fail, shown_message
from csfs.errors import CsfsError

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
