"""Key files as users get them wrong: too open permissions, a public key given as --key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vault.conftest import assert_one_line_error, run_csfs


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {**cli_env, "CSFS_STORE": str(tmp_path / "store")}
    r = run_csfs("init", env=env)
    assert r.returncode == 0, r.stderr
    return env


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=lambda m: f"{m:04o}")
def test_private_key_readable_by_others_warns(env: dict[str, str], mode: int) -> None:
    key = env["CSFS_KEY"]
    os.chmod(key, mode)
    r = run_csfs("ls", env=env)
    assert r.returncode == 0, r.stderr  # a warning, as ssh gives, not a refusal
    lines = r.stderr.splitlines()
    assert lines[0].startswith("csfs: warning: ") and key in lines[0], r.stderr
    assert f"{mode:04o}" in lines[0]
    assert lines[1] == f"csfs: hint: chmod 600 {key}", r.stderr


def test_private_key_0600_is_quiet(env: dict[str, str]) -> None:
    os.chmod(env["CSFS_KEY"], 0o600)
    r = run_csfs("ls", env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_encrypted_key_warns_before_the_passphrase_is_used(tmp_path: Path,
                                                          cli_env: dict[str, str]) -> None:
    from csfs.crypto import generate_identity, save_identity

    key, _ = save_identity(generate_identity(), str(tmp_path / "pk"), "pw", b"s3cret")
    os.chmod(key, 0o644)
    env = {**cli_env, "CSFS_KEY": key, "CSFS_PASSPHRASE": "wrong"}
    r = run_csfs("pubkey", env=env)
    assert r.returncode == 6
    assert r.stderr.startswith("csfs: warning: "), r.stderr
    assert "chmod 600" in r.stderr and "wrong passphrase" in r.stderr


def test_public_key_as_key_says_so(env: dict[str, str]) -> None:
    public = env["CSFS_KEY"].replace("_private_key.pem", "_public_key.pem")
    for args in (("ls", "--key"), ("pubkey", "--key"), ("decrypt", "x.enc", "-k")):
        r = run_csfs(*args, public, env=env)
        assert_one_line_error(r, 6)
        assert "is a public key file" in r.stderr, r.stderr
        assert "unreadable" not in r.stderr
        assert "private key" in r.stderr.splitlines()[-1]  # the hint
        assert "warning" not in r.stderr  # a public key may be world-readable
