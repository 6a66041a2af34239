"""Messages that used to mislead, and help text for every command and option."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tests.vault.conftest import assert_one_line_error, run_csfs


def ok(env: dict[str, str], *args: str) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout + r.stderr


def test_mv_onto_itself_is_a_no_op(cli_env: dict[str, str], tmp_path: Path) -> None:
    """rename(2) of a path onto itself succeeds and changes nothing, shared or not."""
    from tests.cli.test_sharing_cli import _user, pub

    store = str(tmp_path / "store")
    alice = _user(tmp_path, "alice", store)
    bob = _user(tmp_path, "bob", store)
    ok(alice, "init", "--name", "alice")
    (tmp_path / "f").write_bytes(b"data")
    ok(alice, "mkdir", "/A")
    ok(alice, "put", str(tmp_path / "f"), "/A/f")
    ok(alice, "put", str(tmp_path / "f"), "/g")
    ok(alice, "member", "add", pub(bob), "--name", "bob")
    ok(alice, "share", "/A", "--with", "bob")
    for src, dst in (("/A", "/A"), ("/A", "/A/"), ("/A/f", "/A/f"), ("/g", "/g"),
                     ("A", "/A"), ("/A/./f", "/A/f")):
        assert ok(alice, "mv", src, dst) == "", (src, dst)
    assert sorted(ok(alice, "ls").split()) == ["A/", "g"]
    assert ok(alice, "cat", "/A/f") == "data"
    r = run_csfs("mv", "/missing", "/missing", env=alice)
    assert_one_line_error(r, 8)


def _all_commands() -> list[tuple[str, click.Command]]:
    from csfs.cli import keys_cmd, mount_cmd, offline_cmd, share_cmd, vault_cmd  # noqa: F401
    from csfs.cli.main import cli, main  # noqa: F401 - main's imports register every command

    found: list[tuple[str, click.Command]] = [("csfs", cli)]
    todo: list[tuple[str, click.Group]] = [("csfs", cli)]
    while todo:
        prefix, group = todo.pop()
        for name, cmd in group.commands.items():
            found.append((f"{prefix} {name}", cmd))
            if isinstance(cmd, click.Group):
                todo.append((f"{prefix} {name}", cmd))
    return found


@pytest.mark.parametrize("name,cmd", _all_commands(), ids=lambda x: x if isinstance(x, str)
                         else "")
def test_every_command_and_option_has_help(name: str, cmd: click.Command) -> None:
    assert cmd.help and cmd.help.strip(), f"`{name}` has no help text"
    for p in cmd.params:
        if isinstance(p, click.Option):
            assert p.help, f"option {p.opts[0]} of `{name}` has no help text"


def test_help_runs_for_every_command(cli_env: dict[str, str]) -> None:
    from click.testing import CliRunner

    from csfs.cli.main import cli

    runner = CliRunner()
    for name, _ in _all_commands():
        args = [*name.split()[1:], "--help"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output
