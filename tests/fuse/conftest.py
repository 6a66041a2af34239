"""Fixtures for real FUSE mounts through the `csfs mount` CLI (local store and moto S3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fuse.helpers import Mount, Vault


@pytest.fixture(params=["local", "moto"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_vault(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[[str], Vault]]:
    """Factory: keys + an initialised vault on ``backend``; every mount is undone at teardown."""
    made: list[Vault] = []

    def make(backend: str) -> Vault:
        moto = request.getfixturevalue("moto_server") if backend == "moto" else None
        root = tmp_path / f"v{len(made)}"
        root.mkdir()
        v = Vault(str(root), backend, moto)
        made.append(v)
        return v

    yield make
    for v in made:
        v.cleanup()


@pytest.fixture
def vault(backend: str, make_vault: Callable[[str], Vault]) -> Vault:
    return make_vault(backend)


@pytest.fixture
def mounted(vault: Vault) -> Mount:
    """A live mount (parametrized over the local store and moto S3); unmounted at teardown."""
    return vault.mount()


@pytest.fixture
def local_mounted(make_vault: Callable[[str], Vault]) -> Mount:
    return make_vault("local").mount()


@pytest.fixture
def moto_vault(make_vault: Callable[[str], Vault]) -> Vault:
    return make_vault("moto")
