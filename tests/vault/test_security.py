"""What the storage provider sees and what it can get away with (moto, scanned with boto3).

The provider can read every object, change, swap, truncate, delete and
replay them. These tests act as that provider through a boto3 client of
their own and check that csfs (the API, the CLI and fsck) notices.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import Identity, generate_identity, padme, payload_size
from csfs.errors import (
    AuthenticationError,
    CsfsError,
    IntegrityError,
    NoMatchingKeyError,
)
from csfs.vault import DirectoryManifest, Vault
from csfs.vault import transfer
from csfs.vault.fsck import fsck
from csfs.vault.layout import (
    HEADER_KEY,
    VaultHeader,
    content_key,
    envelope_key,
    manifest_key,
    new_id,
)
from tests.vault.conftest import assert_one_line_error, make_tree, read_bytes, run_csfs, write_bytes

MARKER = b"ZQX-PLAINTEXT-MARKER-93761-"
SECRET_NAMES = ["SECRETNAME_alpha.txt", "SECRETDIR_beta", "SECRETNAME_gamma.bin",
                "SECRETDIR_delta", "SECRETNAME_epsilon.dat", "SECRETLINK_zeta",
                "SECRETTARGET_eta", "SECRETDIR_empty"]
# Sizes that Padmé rounds up: no object may have exactly these sizes.
EXACT_SIZES = {"SECRETNAME_alpha.txt": 10_000, "SECRETDIR_beta/SECRETNAME_gamma.bin": 12_345,
               "SECRETDIR_beta/SECRETDIR_delta/SECRETNAME_epsilon.dat": 100_000,
               "SECRETDIR_beta/small.txt": 5_000}
_OBJECT_KEY = re.compile(
    r"csfs-vault|m/[0-9a-f]{32}|[ck]/[0-9a-f]{32}/[0-9a-f]{16}|a/[0-9a-f]{16}|n/[0-9a-f]{32}"
)


def _content(n: int) -> bytes:
    return (MARKER * (n // len(MARKER) + 1))[:n]


def all_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


@pytest.fixture
def secret_tree(moto_vault: Vault, tmp_path: Path) -> Vault:
    src = str(tmp_path / "secret")
    make_tree(src, {rel: _content(n) for rel, n in EXACT_SIZES.items()},
              dirs=("SECRETDIR_empty",),
              links={"SECRETDIR_beta/SECRETLINK_zeta": "SECRETTARGET_eta"})
    assert transfer.put_tree(moto_vault, src, "/SECRETDIR_top") == len(EXACT_SIZES)
    link = moto_vault.lookup("/SECRETDIR_top/SECRETDIR_beta/SECRETLINK_zeta")
    assert link.target == "SECRETTARGET_eta"
    assert moto_vault.listdir("/SECRETDIR_top/SECRETDIR_empty") == {}
    return moto_vault


def test_no_plaintext_in_store(secret_tree: Vault, s3_client: Any, s3_bucket: str) -> None:
    objects = all_objects(s3_client, s3_bucket)
    assert len(objects) >= 1 + 4 + 2 * len(EXACT_SIZES)
    needles = [n.encode() for n in [*SECRET_NAMES, "SECRETDIR_top"]] + [MARKER, MARKER[:12]]
    needles += [n.encode("utf-16-le") for n in SECRET_NAMES]
    for key, body in objects.items():
        assert _OBJECT_KEY.fullmatch(key), key  # keys are random ids only
        assert "SECRET" not in key
        for needle in needles:
            assert needle not in body, (key, needle)
        assert len(body) not in EXACT_SIZES.values(), (key, len(body))
    # every content object is exactly the padded payload size of its plaintext
    sizes = sorted(len(b) for k, b in objects.items() if k.startswith("c/"))
    assert sizes == sorted(payload_size(n) for n in EXACT_SIZES.values())
    for n in EXACT_SIZES.values():
        assert padme(n) != n  # the test sizes really are rounded
    # the one plaintext object names no directory either
    assert b"SECRET" not in objects[HEADER_KEY]


def test_exact_size_not_in_clear_in_envelopes(secret_tree: Vault, s3_client: Any,
                                              s3_bucket: str) -> None:
    objects = all_objects(s3_client, s3_bucket)
    for n in EXACT_SIZES.values():
        for key, body in objects.items():
            assert n.to_bytes(8, "big") not in body, (key, n)


# -- tampering ----------------------------------------------------------------------------


@dataclass
class Setup:
    vault: Vault
    s3: Any
    bucket: str

    def key_of(self, path: str, kind: str = "c") -> str:
        e = self.vault.lookup(path)
        return (content_key if kind == "c" else envelope_key)(e.id, e.version)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def flip(self, key: str, offset: int) -> None:
        data = bytearray(self.get(key))
        data[offset if offset >= 0 else len(data) + offset] ^= 0x01
        self.put(key, bytes(data))


A = os.urandom(100_000)  # two chunks
B = os.urandom(100_000)  # same size as A: swaps get past the size check and hit the crypto


@pytest.fixture
def setup(moto_vault: Vault, s3_client: Any, s3_bucket: str) -> Setup:
    moto_vault.mkdir("/d")
    write_bytes(moto_vault, "/d/a.bin", A)
    write_bytes(moto_vault, "/d/b.bin", B)
    return Setup(moto_vault, s3_client, s3_bucket)


def _swap(s: Setup, k1: str, k2: str) -> None:
    d1, d2 = s.get(k1), s.get(k2)
    s.put(k1, d2)
    s.put(k2, d1)


def _replay_file_version(s: Setup) -> None:
    old_c, old_k = s.key_of("/d/a.bin", "c"), s.key_of("/d/a.bin", "k")
    write_bytes(s.vault, "/d/a.bin", os.urandom(len(A)))  # same size: only the crypto can tell
    s.put(s.key_of("/d/a.bin", "c"), s.get(old_c))
    s.put(s.key_of("/d/a.bin", "k"), s.get(old_k))


def _replay_manifest(s: Setup) -> None:
    mkey = manifest_key(s.vault.lookup("/d").id)
    old = s.get(mkey)
    write_bytes(s.vault, "/d/c.bin", b"newer")  # the vault sees version n+1
    s.vault.listdir("/d")
    s.put(mkey, old)


# (name, tamper, path to read, exact error class, why that class)
CASES: list[tuple[str, Callable[[Setup], None], str, type[CsfsError]]] = [
    # a GCM tag inside chunk 0 fails: data was altered
    ("flip-content-chunk", lambda s: s.flip(s.key_of("/d/a.bin"), 32 + 1000), "/d/a.bin",
     AuthenticationError),
    # a payload_id byte: the header hash no longer matches the signed envelope
    ("flip-content-header", lambda s: s.flip(s.key_of("/d/a.bin"), 20), "/d/a.bin",
     AuthenticationError),
    # a byte inside the stanzas: the Ed25519 signature over the envelope fails
    ("flip-envelope", lambda s: s.flip(s.key_of("/d/a.bin", "k"), 130), "/d/a.bin",
     AuthenticationError),
    # the envelope's length field: parsed fine, but no longer the size in the manifest
    ("flip-envelope-length", lambda s: s.flip(s.key_of("/d/a.bin", "k"), 88), "/d/a.bin",
     AuthenticationError),
    # the last byte of the manifest object is its final GCM tag
    ("flip-manifest", lambda s: s.flip(manifest_key(s.vault.lookup("/d").id), -1), "/d/a.bin",
     AuthenticationError),
    # the vault header is a signed blob: its Ed25519 signature fails
    ("flip-header", lambda s: s.flip(HEADER_KEY, 10), "/d/a.bin", AuthenticationError),
    # a short last chunk (docs/format.md 2.4: authentication error)
    ("truncate-payload", lambda s: s.put(s.key_of("/d/a.bin"), s.get(s.key_of("/d/a.bin"))[:-10]),
     "/d/a.bin", AuthenticationError),
    ("truncate-payload-to-header",
     lambda s: s.put(s.key_of("/d/a.bin"), s.get(s.key_of("/d/a.bin"))[:32]), "/d/a.bin",
     AuthenticationError),
    # same-size ciphertexts swapped: header hashes differ from the signed envelopes
    ("swap-content", lambda s: _swap(s, s.key_of("/d/a.bin"), s.key_of("/d/b.bin")), "/d/a.bin",
     AuthenticationError),
    # envelopes swapped: each names the other node id in its context
    ("swap-envelopes", lambda s: _swap(s, s.key_of("/d/a.bin", "k"), s.key_of("/d/b.bin", "k")),
     "/d/a.bin", AuthenticationError),
    # an old version's objects under the current version's keys: the context's version differs
    ("replay-file-version", _replay_file_version, "/d/a.bin", AuthenticationError),
    # the store serves an older, validly signed manifest to a client that saw a newer one
    ("replay-manifest", _replay_manifest, "/d/a.bin", AuthenticationError),
    # objects that a manifest references but that are gone: a structural problem
    ("delete-content", lambda s: s.s3.delete_object(Bucket=s.bucket, Key=s.key_of("/d/a.bin")),
     "/d/a.bin", IntegrityError),
    ("delete-envelope",
     lambda s: s.s3.delete_object(Bucket=s.bucket, Key=s.key_of("/d/a.bin", "k")), "/d/a.bin",
     IntegrityError),
    ("delete-manifest", lambda s: s.s3.delete_object(
        Bucket=s.bucket, Key=manifest_key(s.vault.lookup("/d").id)), "/d/a.bin", IntegrityError),
]
IDS = [c[0] for c in CASES]


def _reader(s: Setup) -> Vault:
    """A client that has seen the vault before the tampering (for the replay: the newer
    manifest), reopened as a new object so no cached manifest hides the change."""
    s.vault.close()  # persists the pinned header and the highest versions seen
    assert s.vault.state.path
    return Vault.open(s.vault.store, s.vault.identity,
                      state_dir=os.path.dirname(s.vault.state.path))


@pytest.mark.parametrize(("name", "tamper", "path", "expected"), CASES, ids=IDS)
def test_tampering_detected(setup: Setup, name: str, tamper: Callable[[Setup], None], path: str,
                            expected: type[CsfsError], moto_cli_env: dict[str, str],
                            tmp_path: Path) -> None:
    """One tampering case, seen three ways: the API, `csfs get`, and fsck (--repair)."""
    write_bytes(setup.vault, "/d/b.bin", B[::-1])  # leaves an orphan (b's first version)
    if name == "replay-manifest":
        # as _replay_manifest, with a CLI run in between so that the CLI, too, has seen
        # the newer manifest (its state directory is its own)
        mkey = manifest_key(setup.vault.lookup("/d").id)
        old = setup.get(mkey)
        write_bytes(setup.vault, "/d/c.bin", b"newer")
        setup.vault.listdir("/d")
        assert run_csfs("ls", "/d", env=moto_cli_env).returncode == 0
        before = {o.key for o in setup.vault.store.list()}
        setup.put(mkey, old)
    else:
        before = {o.key for o in setup.vault.store.list()}
        tamper(setup)

    # 1. the API raises the exact class
    with pytest.raises(CsfsError) as info:
        read_bytes(_reader(setup), path)
    assert type(info.value) is expected, (type(info.value), info.value.message)

    # 2. the CLI: exit code of that class, one error line, no output file, no temp file
    out = tmp_path / "out.bin"
    r = run_csfs("get", path, str(out), env=moto_cli_env)
    assert_one_line_error(r, expected.exit_code)
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".csfs-tmp-")]

    # 3. fsck reports it, and --repair deletes nothing while there are problems
    if name == "flip-header":
        # fsck opens the vault first, and a forged header stops it before any listing
        assert_one_line_error(run_csfs("fsck", "--repair", env=moto_cli_env), 4)
    else:
        report = fsck(_reader(setup), repair=True, grace=0)
        assert not report.ok and report.problems, report
        assert report.orphans and report.deleted == 0
    after = {o.key for o in setup.vault.store.list()}
    assert len(before - after) == (1 if name.startswith("delete") else 0)


def test_fresh_client_cannot_detect_manifest_replay(setup: Setup, tmp_path: Path) -> None:
    """Documented limitation (csfs/vault/state.py): rollback detection needs memory.

    A client with an empty state directory has never seen the newer manifest,
    so an older but validly signed manifest replayed by the store is accepted:
    it shows the directory as it was. Only clients that saw the newer version
    (test_tampering_detected[replay-manifest]) can tell.
    """
    _replay_manifest(setup)
    fresh = Vault.open(setup.vault.store, setup.vault.identity,
                       state_dir=str(tmp_path / "never-used-before"))
    assert sorted(fresh.listdir("/d")) == ["a.bin", "b.bin"]  # c.bin silently gone
    assert read_bytes(fresh, "/d/a.bin") == A


def test_replay_detected_across_restarts(setup: Setup, tmp_path: Path) -> None:
    """Rollback memory survives a restart: it is saved in the state directory."""
    _replay_manifest(setup)
    setup.vault.close()
    again = Vault.open(setup.vault.store, setup.vault.identity,
                       state_dir=os.path.dirname(setup.vault.state.path or ""))
    with pytest.raises(AuthenticationError, match="rolled back"):
        again.listdir("/d")


def _forged_header(vault_id: str | None) -> bytes:
    """A header validly signed by someone else (its owner), optionally reusing a vault id."""
    import json

    from csfs.crypto.signing import sign_blob
    from csfs.vault.layout import HEADER_DOMAIN, HEADER_FORMAT

    mallory = generate_identity()
    body = {"format": HEADER_FORMAT, "vault_id": vault_id or new_id(), "root_id": new_id(),
            "owner": mallory.recipient.verify_key_bytes.hex()}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return sign_blob(mallory.signing_key, HEADER_DOMAIN, payload)


def test_pinned_header_replacement_detected(setup: Setup) -> None:
    """A client that has seen the vault refuses a different (validly signed) header
    that keeps the vault id."""
    setup.put(HEADER_KEY, _forged_header(setup.vault.header.vault_id))
    with pytest.raises(AuthenticationError, match="header changed"):
        _reader(setup)


def test_pinned_header_replacement_with_new_vault_id_detected(setup: Setup) -> None:
    setup.put(HEADER_KEY, _forged_header(None))
    with pytest.raises(AuthenticationError):
        _reader(setup)


def test_fresh_client_rejects_substituted_vault(setup: Setup, identity: Identity,
                                                tmp_path: Path) -> None:
    """The store swaps in a vault of its own (its key as owner and as a reader):
    a client that never saw the real vault refuses it instead of writing into it."""
    mallory = generate_identity()
    header = VaultHeader.create(mallory)
    root = DirectoryManifest(header.root_id, version=1, readers=[
        identity.recipient.to_pem().decode(), mallory.recipient.to_pem().decode()])
    for key in [o["Key"] for o in setup.s3.list_objects_v2(Bucket=setup.bucket)["Contents"]]:
        setup.s3.delete_object(Bucket=setup.bucket, Key=key)
    setup.put(HEADER_KEY, header.raw)
    setup.put(manifest_key(header.root_id), root.seal(header.vault_id_bytes, mallory))
    with pytest.raises(AuthenticationError, match="not trusted"):
        Vault.open(setup.vault.store, identity, state_dir=str(tmp_path / "new-machine"))
    # Trusting the owner explicitly is the user's decision, and then it opens.
    Vault.open(setup.vault.store, identity, state_dir=str(tmp_path / "new-machine"),
               trusted_owners={mallory.recipient.verify_key_bytes})


# -- wrong key ----------------------------------------------------------------------------


def test_wrong_key(setup: Setup, other_identity: Identity, tmp_path: Path,
                   moto_cli_env: dict[str, str]) -> None:
    other = Vault.open(setup.vault.store, other_identity, state_dir=str(tmp_path / "other"),
                       trusted_owners={setup.vault.header.owner})
    with pytest.raises(NoMatchingKeyError, match="no matching key"):
        other.listdir("/")
    # even with a directory entry in hand, the file itself does not open
    entry = setup.vault.lookup("/d/a.bin")
    with pytest.raises(NoMatchingKeyError, match="no matching key"):
        other.read_file(entry, io.BytesIO())
    from csfs.crypto import save_identity

    key, _ = save_identity(other_identity, str(tmp_path / "okeys"), "other", None)
    owner_pub = tmp_path / "owner.pem"
    owner_pub.write_bytes(setup.vault.identity.recipient.to_pem())
    out = tmp_path / "x"
    r = run_csfs("get", "/d/a.bin", str(out),
                 env={**moto_cli_env, "CSFS_KEY": key, "CSFS_TRUST_OWNER": str(owner_pub)})
    assert_one_line_error(r, NoMatchingKeyError.exit_code)
    assert "no matching key" in r.stderr and not out.exists()


def test_writer_not_authorised(setup: Setup, other_identity: Identity) -> None:
    """A member who can write to the bucket but is not a writer: a validly encrypted
    envelope signed by another key is rejected (signer check), even when readable."""
    e = setup.vault.lookup("/d/a.bin")
    from csfs.crypto import Context, encrypt_stream
    from csfs.crypto.envelope import KIND_FILE

    buf = io.BytesIO()
    env = encrypt_stream(io.BytesIO(A), buf, [setup.vault.identity.recipient], other_identity,
                         context=Context(KIND_FILE, setup.vault.vault_id, bytes.fromhex(e.id),
                                         e.version))
    setup.put(content_key(e.id, e.version), buf.getvalue())
    setup.put(envelope_key(e.id, e.version), env.encode())
    with pytest.raises(AuthenticationError):
        read_bytes(setup.vault, "/d/a.bin")


# -- fsck orphans -------------------------------------------------------------------------


def test_fsck_orphans_and_repair(setup: Setup) -> None:
    v = setup.vault
    assert fsck(v, grace=0).ok and not fsck(v, grace=0).orphans
    a, b = v.lookup("/d/a.bin"), v.lookup("/d/b.bin")
    v.mkdir("/d/sub")
    sub = v.lookup("/d/sub")
    v.remove("/d/a.bin")
    v.remove("/d/sub")
    write_bytes(v, "/d/b.bin", b"new b")  # b's old version becomes an orphan
    setup.put("not-csfs.txt", b"left alone")
    # Within the grace period they are only reported: they could be another
    # client's upload in flight.
    young = fsck(v, repair=True)
    assert young.ok and young.deleted == 0 and not young.orphans and len(young.recent) == 5
    report = fsck(v, grace=0)
    assert report.ok
    assert sorted(report.orphans) == sorted([
        content_key(a.id, a.version), envelope_key(a.id, a.version),
        content_key(b.id, b.version), envelope_key(b.id, b.version), manifest_key(sub.id)])
    assert report.unknown == ["not-csfs.txt"]
    repaired = fsck(v, repair=True, grace=0)
    assert repaired.deleted == 5
    clean = fsck(v, grace=0)
    assert clean.ok and clean.orphans == [] and clean.files == 1 and clean.directories == 2
    assert read_bytes(v, "/d/b.bin") == b"new b"
    assert setup.get("not-csfs.txt") == b"left alone"


def test_fsck_orphans_after_recursive_rm(setup: Setup) -> None:
    v = setup.vault
    v.remove("/d", recursive=True)
    report = fsck(v, grace=0)
    assert report.ok and len(report.orphans) == 5  # m/d, and c/ + k/ of two files
    fsck(v, repair=True, grace=0)
    assert sorted(o["Key"] for o in setup.s3.list_objects_v2(Bucket=setup.bucket)["Contents"]) \
        == sorted([HEADER_KEY, manifest_key(v.header.root_id), "a/0000000000000001"])


def test_new_id_is_random() -> None:
    assert len({new_id() for _ in range(1000)}) == 1000
