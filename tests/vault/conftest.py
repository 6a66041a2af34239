"""Vault fixtures: a fresh vault on each backend (local folder, moto S3 over HTTP).

Everything is real: real crypto, a real LocalStore on disk, a real moto
server reached through boto3. Each test gets its own store, identity and
state directory, so rollback memory never leaks between tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import Identity, generate_identity
from csfs.store import Store, open_store
from csfs.vault import Vault
from tests.servers import MotoServer


@pytest.fixture
def identity() -> Identity:
    return generate_identity()


@pytest.fixture
def other_identity() -> Identity:
    return generate_identity()


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def _open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, str]:
    if kind == "local":
        url = str(tmp_path / "store")
        return open_store(url), url
    server: MotoServer = request.getfixturevalue("moto_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    url = f"s3://{bucket}"
    return open_store(url, endpoint_url=server.endpoint_url, path_style=True), url


@pytest.fixture(params=["local", "moto"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store of the parametrised backend (through the retry wrapper)."""
    return _open_store(backend, request, tmp_path)[0]


@pytest.fixture
def vault(store: Store, identity: Identity, state_dir: str) -> Iterator[Vault]:
    v = Vault.create(store, identity, state_dir=state_dir)
    yield v
    v.close()


@pytest.fixture
def reopen(store: Store, identity: Identity, tmp_path: Path) -> Callable[..., Vault]:
    """Open the same vault again as another client: a new Vault object and,
    unless told otherwise, its own empty state directory."""
    counter = iter(range(1000))

    def _open(ident: Identity | None = None, state: str | None = None, **kw: Any) -> Vault:
        sd = state or str(tmp_path / f"state-client-{next(counter)}")
        return Vault.open(store, ident or identity, state_dir=sd, **kw)

    return _open


# -- moto only (security tests scan the bucket directly) -------------------------


@pytest.fixture
def moto_store(moto_server: MotoServer, s3_bucket: str) -> Store:
    return open_store(f"s3://{s3_bucket}", endpoint_url=moto_server.endpoint_url, path_style=True)


@pytest.fixture
def moto_vault(moto_store: Store, identity: Identity, state_dir: str) -> Iterator[Vault]:
    v = Vault.create(moto_store, identity, state_dir=state_dir)
    yield v
    v.close()


@pytest.fixture
def s3_client(moto_server: MotoServer) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def write_bytes(vault: Vault, path: str, data: bytes, **kw: Any) -> Any:
    import io

    return vault.write_file(path, io.BytesIO(data), **kw)


def read_bytes(vault: Vault, path: str) -> bytes:
    import io

    buf = io.BytesIO()
    vault.read_file(path, buf)
    return buf.getvalue()


def make_tree(root: str, files: dict[str, bytes], *, dirs: tuple[str, ...] = (),
              links: dict[str, str] | None = None) -> None:
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    for d in dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for rel, target in (links or {}).items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)
