"""Key generation, PEM files, passphrases, and what OpenSSL can read."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from csfs.crypto.keys import (
    generate_identity,
    load_identity,
    load_recipient,
    load_recipient_pem,
    save_identity,
)
from csfs.errors import KeyFileError

KINDS = ["x25519", "p256", "mlkem768x25519"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(tmp_path: str, kind: str) -> None:
    ident = generate_identity(kind)  # type: ignore[arg-type]
    priv, pub = save_identity(ident, str(tmp_path), "k", b"correct horse")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    loaded = load_identity(priv, b"correct horse")
    assert loaded.kind == kind
    assert loaded.recipient == ident.recipient == load_recipient(pub)
    assert loaded.recipient.fingerprint.startswith("SHA256:")
    assert len(loaded.recipient.fingerprint) == 7 + 43


def test_wrong_passphrase_and_missing_passphrase(tmp_path: str) -> None:
    priv, _ = save_identity(generate_identity(), str(tmp_path), "k", b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_identity(priv, b"wrong")
    with pytest.raises(KeyFileError, match="protected by a passphrase"):
        load_identity(priv, None)


def test_refuses_to_overwrite(tmp_path: str) -> None:
    save_identity(generate_identity(), str(tmp_path), "k", None)
    before = open(os.path.join(tmp_path, "k_private_key.pem"), "rb").read()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_identity(generate_identity(), str(tmp_path), "k", None)
    assert open(os.path.join(tmp_path, "k_private_key.pem"), "rb").read() == before


def test_public_file_is_not_a_private_key(tmp_path: str) -> None:
    priv, _ = save_identity(generate_identity(), str(tmp_path), "k", None)
    with pytest.raises(KeyFileError, match="private key where a public key"):
        load_recipient(priv)


def test_unknown_block_sequence_rejected() -> None:
    a = generate_identity().recipient.to_pem()
    with pytest.raises(KeyFileError, match="unexpected sequence"):
        load_recipient_pem(a + a)


def test_passphrase_encryption_is_strong(tmp_path: str) -> None:
    priv, _ = save_identity(generate_identity(), str(tmp_path), "k", b"pw")
    asn1 = subprocess.run(["openssl", "asn1parse", "-in", priv], capture_output=True, text=True,
                          check=True).stdout
    assert "PBES2" in asn1 and "hmacWithSHA256" in asn1 and "aes-256-cbc" in asn1
    rounds = [ln for ln in asn1.splitlines() if "INTEGER" in ln][0].split(":")[-1]
    assert int(rounds, 16) >= 100_000


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("kind,name", [("x25519", "X25519"), ("p256", "EC")])
def test_openssl_reads_both_files(tmp_path: str, kind: str, name: str) -> None:
    priv, pub = save_identity(generate_identity(kind), str(tmp_path), "k", b"s3cret")  # type: ignore[arg-type]
    out = subprocess.run(["openssl", "pkey", "-in", priv, "-passin", "pass:s3cret", "-noout",
                          "-text"], capture_output=True, text=True, check=True).stdout
    assert name in out or "Private-Key" in out
    subprocess.run(["openssl", "pkey", "-pubin", "-in", pub, "-noout"], check=True)
    bad = subprocess.run(["openssl", "pkey", "-in", priv, "-passin", "pass:nope", "-noout"],
                         capture_output=True)
    assert bad.returncode != 0
