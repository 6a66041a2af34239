"""CLI fixtures: the vault tests' key file and subprocess environment, reused."""

from __future__ import annotations

from tests.vault.conftest import (  # noqa: F401 - fixtures
    backend,
    cli_env,
    identity,
    key_file,
    moto_cli_env,
)
