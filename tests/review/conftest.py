"""Reuse the vault tests' fixtures (identities, CLI environment)."""

from tests.vault.conftest import *  # noqa: F403
