"""`csfs keygen`, `csfs encrypt`, `csfs decrypt` as a user runs them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import click
import pytest

from csfs.cli.main import cli, main  # noqa: F401 - main registers the commands

CSFS = [sys.executable, "-c", "from csfs.cli.main import main; main()"]


def run(*args: str, env: dict[str, str] | None = None, input: bytes | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "CSFS_PASSPHRASE": "pw", **(env or {})}
    return subprocess.run([*CSFS, *args], env=full_env, input=input, capture_output=True, cwd=cwd)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("keys"))
    for extra in ([], ["--name", "p256", "--curve", "p256"], ["--name", "pq", "--pq"],
                  ["--name", "mallory"]):
        r = run("keygen", "--dir", d, *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"SHA256:")
    return d


def test_every_command_has_help() -> None:
    from csfs.cli import keys_cmd, offline_cmd  # noqa: F401

    for name, cmd in cli.commands.items():
        assert cmd.help, f"command {name} has no help text"
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"option {p.name} of {name} has no help text"


def test_keygen_files_and_refusal(keys: str) -> None:
    assert sorted(os.listdir(keys)) == sorted(
        f"{n}_{k}_key.pem" for n in ("recipient", "p256", "pq", "mallory") for k in ("private", "public")
    )
    r = run("keygen", "--dir", keys)
    assert r.returncode == 6 and b"refusing to overwrite" in r.stderr
    r = run("keygen", "--dir", keys, "--name", "nopass", env={"CSFS_PASSPHRASE": ""})
    assert r.returncode != 0 and b"passphrase" in r.stderr
    assert not os.path.exists(os.path.join(keys, "nopass_private_key.pem"))


@pytest.mark.parametrize("name", ["recipient", "p256", "pq"])
def test_round_trip_each_kind(keys: str, tmp_path: str, name: str) -> None:
    src = os.path.join(tmp_path, "doc.bin")
    data = os.urandom(300_000)
    open(src, "wb").write(data)
    r = run("encrypt", src, "-r", os.path.join(keys, f"{name}_public_key.pem"))
    assert r.returncode == 0, r.stderr
    assert os.path.exists(src + ".enc") and os.path.exists(os.path.join(tmp_path, "doc.bin.key.enc"))
    os.unlink(src)
    r = run("decrypt", src + ".enc", "-k", os.path.join(keys, f"{name}_private_key.pem"))
    assert r.returncode == 0, r.stderr
    assert open(src, "rb").read() == data


def test_stdin_stdout(keys: str, tmp_path: str) -> None:
    env_path = os.path.join(tmp_path, "e.key")
    data = os.urandom(200_000)
    r = run("encrypt", "-", "-o", "-", "--envelope", env_path, "-r",
            os.path.join(keys, "recipient_public_key.pem"), input=data)
    assert r.returncode == 0, r.stderr
    r2 = run("decrypt", "-", "--envelope", env_path, "-k",
             os.path.join(keys, "recipient_private_key.pem"), input=r.stdout)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == data


def test_wrong_key_exit_code_and_no_output(keys: str, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "s.txt")
    open(src, "wb").write(b"secret words")
    assert run("encrypt", src, "-r", os.path.join(keys, "recipient_public_key.pem")).returncode == 0
    r = run("decrypt", src + ".enc", "-o", os.path.join(tmp_path, "out"), "-k",
            os.path.join(keys, "mallory_private_key.pem"))
    assert r.returncode == 5
    assert r.stderr.startswith(b"csfs: error: no matching key")
    assert b"csfs: hint:" in r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "out"))


def test_tampered_file_leaves_nothing(keys: str, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "t.bin")
    open(src, "wb").write(os.urandom(1_000_000))
    assert run("encrypt", src, "-r", os.path.join(keys, "recipient_public_key.pem")).returncode == 0
    blob = bytearray(open(src + ".enc", "rb").read())
    blob[-100] ^= 1  # in the last chunk: every earlier chunk verifies first
    open(src + ".enc", "wb").write(blob)
    out = os.path.join(tmp_path, "t.out")
    r = run("decrypt", src + ".enc", "-o", out, "-k", os.path.join(keys, "recipient_private_key.pem"))
    assert r.returncode == 4, r.stderr
    assert r.stderr.count(b"\n") <= 2 and b"Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["t.bin", "t.bin.enc", "t.bin.key.enc"]


def test_signed_and_expected_signer(keys: str, tmp_path: str) -> None:
    src = os.path.join(tmp_path, "m.txt")
    open(src, "wb").write(b"from mallory")
    pub = os.path.join(keys, "recipient_public_key.pem")
    r = run("encrypt", src, "-r", pub, "--sign", "-k", os.path.join(keys, "mallory_private_key.pem"))
    assert r.returncode == 0, r.stderr
    priv = os.path.join(keys, "recipient_private_key.pem")
    ok = run("decrypt", src + ".enc", "-o", "-", "-k", priv, "--expect-signer",
             os.path.join(keys, "mallory_public_key.pem"))
    assert ok.returncode == 0 and ok.stdout == b"from mallory"
    bad = run("decrypt", src + ".enc", "-o", "-", "-k", priv, "--expect-signer",
              os.path.join(keys, "p256_public_key.pem"))
    assert bad.returncode == 4 and bad.stdout == b""


def test_missing_input_is_one_line(keys: str, tmp_path: str) -> None:
    r = run("encrypt", os.path.join(tmp_path, "nope"), "-r", os.path.join(keys, "recipient_public_key.pem"))
    assert r.returncode == 2 and r.stderr == b"csfs: error: no such file: " + os.path.join(
        str(tmp_path), "nope").encode() + b"\n"


def test_large_stream_digest(keys: str, tmp_path: str) -> None:
    """40 MiB through both directions: many batches, padding spanning chunks."""
    src = os.path.join(tmp_path, "big")
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(40):
            block = os.urandom(1 << 20)
            h.update(block)
            f.write(block)
        f.write(b"x")
        h.update(b"x")
    assert run("encrypt", src, "-r", os.path.join(keys, "recipient_public_key.pem")).returncode == 0
    r = run("decrypt", src + ".enc", "-o", "-", "-k", os.path.join(keys, "recipient_private_key.pem"))
    assert r.returncode == 0
    assert hashlib.sha256(r.stdout).hexdigest() == h.hexdigest()
