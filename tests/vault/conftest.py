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

    from tests.servers import DUMMY_ENV

    return boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
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


# -- the CLI as a user runs it ---------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

CSFS = [sys.executable, "-c", "from csfs.cli.main import main; main()"]


def run_csfs(*args: str, env: dict[str, str], cwd: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CSFS, *args], env=env, capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int | None = None) -> None:
    """Non-zero exit, exactly one `csfs: error:` line, at most a hint, no traceback."""
    assert r.returncode != 0, (r.returncode, r.stderr)
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in lines if ln.startswith("csfs: error: ")] and len(
        [ln for ln in lines if ln.startswith("csfs: error: ")]) == 1, r.stderr
    assert all(ln.startswith(("csfs: error: ", "csfs: hint: ")) for ln in lines), r.stderr


@pytest.fixture
def key_file(identity: Identity, tmp_path: Path) -> str:
    """The fixture identity as an unencrypted key file for the CLI."""
    from csfs.crypto import save_identity

    private, _ = save_identity(identity, str(tmp_path / "keys"), "me", None)
    return private


@pytest.fixture
def cli_env(key_file: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI subprocess: our key, a private state dir, no AWS leakage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CSFS_"))}
    env.update({"CSFS_KEY": key_file, "XDG_STATE_HOME": str(tmp_path / "cli-state"),
                "XDG_DATA_HOME": str(tmp_path / "cli-data"),
                "XDG_CONFIG_HOME": str(tmp_path / "cli-config")})
    return env


@pytest.fixture
def moto_cli_env(cli_env: dict[str, str], moto_server: MotoServer,
                 s3_bucket: str) -> dict[str, str]:
    from tests.servers import DUMMY_ENV

    return {**cli_env, **DUMMY_ENV, "AWS_ENDPOINT_URL": moto_server.endpoint_url,
            "CSFS_S3_PATH_STYLE": "1", "CSFS_STORE": f"s3://{s3_bucket}"}
