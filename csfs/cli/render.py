"""How the CLI writes to the terminal: names escaped, `csfs: error:`/`hint:` lines.

Every line the CLI prints that holds a name, a path or a library message goes
through :func:`shown` or :func:`shown_message`, so no stored name can forge
output lines or drive the terminal.
"""

from __future__ import annotations

import re
import sys

import click

from csfs.errors import CsfsError

# What a terminal would act on rather than show: C0 and C1 controls (ESC starts
# escape sequences that can rewrite the screen or the title), DEL, bidi and other
# invisible format characters (they reorder or hide what follows), line and
# paragraph separators, and lone surrogates (undecodable local file names).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
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
