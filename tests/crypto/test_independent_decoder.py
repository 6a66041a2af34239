"""Cross-check the test vectors and docs/format.md with an independent reader.

Nothing here imports csfs: see independent_decoder.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.crypto.independent_decoder import (
    check_entry_metadata,
    STANZAS_AT,
    VAULT_HEADER_DOMAIN,
    AuthFailure,
    FormatFailure,
    NoMatch,
    chunk_count,
    decrypt,
    padme,
    parse_folder_listing,
    parse_manifest,
    parse_signed_blob,
    payload_size,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FAILURES = {"format": FormatFailure, "authentication": AuthFailure, "no match": NoMatch}


def read_vector(path: Path) -> tuple[dict[str, str], bytes, bytes]:
    """Section 6: `name: value` lines, an empty line, envelope || payload (|| sources)."""
    text, _, body = path.read_bytes().partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in text.decode("ascii").splitlines())
    env_len, pl_len = int(fields["envelope-length"]), int(fields["payload-length"])
    extra = sum(int(item.split("=")[1]) for item in fields.get("sources", "").split(",") if item)
    assert len(body) == env_len + pl_len + extra, "vector body length disagrees with its header"
    return fields, body[:env_len], body[env_len : env_len + pl_len]


def read_sources(path: Path) -> dict[int, bytes] | None:
    """Section 6: a delta vector's source payloads by version, after the payload."""
    text, _, body = path.read_bytes().partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in text.decode("ascii").splitlines())
    if "sources" not in fields:
        return None
    at = int(fields["envelope-length"]) + int(fields["payload-length"])
    out = {}
    for item in fields["sources"].split(","):
        version, length = item.split("=")
        out[int(version, 16)] = body[at : at + int(length)]
        at += int(length)
    return out


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.vec")), ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    fields, envelope, payload = read_vector(path)
    identity = (VECTORS / "keys" / f"{fields['identity']}.pem").read_bytes()
    expect = fields["expect"]
    context = bytes.fromhex(fields["context"]) if "context" in fields else None

    def read() -> bytes:
        plaintext = decrypt(envelope, payload, identity, context, sources=read_sources(path))
        if fields.get("object") == "manifest":  # section 6: parse it as 5.3 says
            assert context is not None
            parse_manifest(plaintext, context[17:33].hex(), int.from_bytes(context[33:], "big"))
        if fields.get("object") == "folder-listing":  # section 6: parse it as 7.8 says
            assert context is not None
            parse_folder_listing(plaintext, context[17:33].hex(),
                                 int.from_bytes(context[33:], "big"))
        return plaintext

    if expect == "success":
        assert hashlib.sha256(read()).hexdigest() == fields["plaintext-sha256"]
    else:
        with pytest.raises(FAILURES[expect]):
            read()


def test_vectors_present() -> None:
    assert len(list(VECTORS.glob("*.vec"))) > 0


@pytest.mark.parametrize(
    ("length", "padded"),
    [(1_000_000, 1_015_808), (4096, 4096), (5000, 5120)],
)
def test_padme_examples(length: int, padded: int) -> None:
    """The examples in section 2.3."""
    assert padme(length) == padded


def test_padme_overhead_claim() -> None:
    """Section 2.3: 'Padme adds at most about 12%'."""
    assert max((padme(n) - n) / n for n in range(1, 1 << 16)) < 0.125


# Section 2.4's worked table, C = 65536, read from the spec itself: (L, P, n, size).
def _worked_sizes() -> list[tuple[int, int, int, int]]:
    spec = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "format.md")
    text = open(spec, encoding="utf-8").read()
    table = text[text.index("Worked sizes") :].split("\n\n")[1]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        nums = []
        for cell in cells:
            if "GiB" in cell or "^" in cell:
                nums.append(2**30)
            else:
                nums.append(int(cell.replace(",", "")))
        rows.append((nums[0], nums[1], nums[2], nums[3]))
    return rows


WORKED_SIZES = _worked_sizes()


@pytest.mark.parametrize(("length", "padded", "n", "size"), WORKED_SIZES, ids=lambda v: str(v))
def test_worked_size_table(length: int, padded: int, n: int, size: int) -> None:
    c = 65536
    computed = (padme(length), chunk_count(padme(length), c), payload_size(padme(length), c))
    assert computed == (padded, n, size), f"row L={length}: spec says {(padded, n, size)}"


def _spec() -> str:
    return (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text(encoding="utf-8")


def test_envelope_layout_table() -> None:
    """Section 3.1's layout table agrees with the offsets the decoder uses."""
    section = _spec().split("### 3.1 Layout")[1].split("###")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows[cells[2]] = (int(cells[0]), cells[1])
    assert rows == {
        "magic": (0, "8"),
        "context": (8, "41"),
        "header_hash": (49, "32"),
        "sealed_length": (81, "24"),
        "commitment": (105, "32"),
        "count": (137, "2"),
        "stanzas": (STANZAS_AT, "…"),
    }
    # Consecutive fields: each starts where the previous one ends.
    fixed = sorted((off, int(size)) for off, size in rows.values() if size.isdigit())
    assert all(
        a + n == b for (a, n), (b, _) in zip(fixed, [*fixed[1:], (STANZAS_AT, 0)], strict=True)
    )


def test_vault_vectors_agree_with_each_other() -> None:
    """Sections 5.3-5.4 across the vault vectors: the manifest names the file version."""
    identity = (VECTORS / "keys" / "alice.pem").read_bytes()
    fields, envelope, payload = read_vector(VECTORS / "vault_manifest.vec")
    m_ctx = bytes.fromhex(fields["context"])
    manifest = json.loads(decrypt(envelope, payload, identity, m_ctx))
    assert manifest["format"] == "csfs-dir-1"
    assert manifest["dir_id"] == m_ctx[17:33].hex()  # 5.3: dir_id inside = the key's id
    fields, envelope, payload = read_vector(VECTORS / "vault_file_version.vec")
    f_ctx = bytes.fromhex(fields["context"])
    assert f_ctx[0] == 2 and f_ctx[1:17] == m_ctx[1:17]  # same vault
    entry = next(e for e in manifest["entries"].values() if e["type"] == "f")
    assert (entry["id"], entry["version"]) == (
        f_ctx[17:33].hex(),
        int.from_bytes(f_ctx[33:41], "big"),
    )
    plaintext = decrypt(envelope, payload, identity, f_ctx)
    assert len(plaintext) == entry["size"]  # 5.4: unsealed L equals the entry's size


def test_signed_blob() -> None:
    """5.1: accepted as written; a flipped byte or a trailing byte is rejected."""
    key = ed25519.Ed25519PrivateKey.generate()
    signer = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = struct.pack(">I", 5) + b"hello" + signer
    blob = body + key.sign(VAULT_HEADER_DOMAIN + body)
    assert parse_signed_blob(blob, VAULT_HEADER_DOMAIN) == (b"hello", signer)
    with pytest.raises(AuthFailure):
        parse_signed_blob(blob[:4] + b"j" + blob[5:], VAULT_HEADER_DOMAIN)
    with pytest.raises(FormatFailure):
        parse_signed_blob(blob + b"\0", VAULT_HEADER_DOMAIN)


def test_posix_manifest_vector_metadata() -> None:
    """5.3: the POSIX metadata vector read by the spec alone, and by the library, agree."""
    identity = (VECTORS / "keys" / "alice.pem").read_bytes()
    fields, envelope, payload = read_vector(VECTORS / "vault_manifest_posix.vec")
    ctx = bytes.fromhex(fields["context"])
    plain = decrypt(envelope, payload, identity, ctx)
    body = json.loads(plain)
    ours = {n: check_entry_metadata(e) for n, e in body["entries"].items()}
    assert ours["owned.txt"]["uid"] == 1000 and ours["owned.txt"]["gid"] == 100
    assert ours["owned.txt"]["xattrs"] == {"user.bin": bytes(range(5)), "user.color": b"blue"}
    assert ours["tty"]["rdev"] == 0x0501 and ours["sock"]["uid"] is None
    assert body["ctime_ns"] == body["mtime_ns"] + 5
    assert (body["uid"], body["gid"]) == (1000, 100)


BAD_ENTRIES = [
    {"uid": True},
    {"uid": 1.0},
    {"uid": -1},
    {"gid": 4294967295},
    {"ctime_ns": 1 << 63},
    {"rdev": 1},
    {"xattrs": {}},
    {"xattrs": {"security.x": "AA=="}},
    {"xattrs": {"user.": "AA=="}},
    {"xattrs": {"user.a": "AA"}},
    {"xattrs": {"user.a": "AB=="}},
    {"xattrs": {"user.a": 1}},
    {"xattrs": {"user." + "n" * 251: "AA=="}},
    {"xattrs": {"user.a": base64.b64encode(bytes(65536)).decode(), "user.b": "AA=="}},
]


@pytest.mark.parametrize("extra", BAD_ENTRIES, ids=[str(e)[:40] for e in BAD_ENTRIES])
def test_bad_entry_metadata_rejected(extra: dict) -> None:
    """The same cases are rejected by the library (tests/crypto/test_vectors.py)."""
    entry = {"id": "00" * 16, "type": "p", "mode": 0o644, "mtime_ns": 1, **extra}
    with pytest.raises(FormatFailure):
        check_entry_metadata(entry)
