"""Fixtures shared by every test package."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy
from tests.servers import DUMMY_ENV, MotoServer, make_bucket, start_moto_server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto S3 server for the session; dummy AWS credentials are set in os.environ."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_ENV.items():
            mp.setenv(name, value)
        with start_moto_server() as server:
            yield server


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    """A fresh, empty bucket on the moto server."""
    return make_bucket(moto_server.endpoint_url, f"csfs-test-{uuid.uuid4().hex[:16]}")


@pytest.fixture(autouse=True)
def _private_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member pins (~/.config/csfs) go to a folder of each test's own, never the real home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the moto server (tests/faultproxy.py): point
    AWS_ENDPOINT_URL at ``fault_proxy.endpoint_url``, then inject faults from the test."""
    with FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy
