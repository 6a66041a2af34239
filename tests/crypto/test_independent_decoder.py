"""Cross-check the test vectors and docs/format.md with an independent reader.

Nothing here imports csfs: see independent_decoder.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.crypto.independent_decoder import (
    AuthFailure,
    FormatFailure,
    NoMatch,
    chunk_count,
    decrypt,
    padme,
    payload_size,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FAILURES = {"format": FormatFailure, "authentication": AuthFailure, "no match": NoMatch}


def read_vector(path: Path) -> tuple[dict[str, str], bytes, bytes]:
    """Section 6: `name: value` lines, an empty line, envelope || payload."""
    text, _, body = path.read_bytes().partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in text.decode("ascii").splitlines())
    env_len, pl_len = int(fields["envelope-length"]), int(fields["payload-length"])
    assert len(body) == env_len + pl_len, "vector body length disagrees with its header"
    return fields, body[:env_len], body[env_len:]


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.vec")), ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    fields, envelope, payload = read_vector(path)
    identity = (VECTORS / "keys" / f"{fields['identity']}.pem").read_bytes()
    expect = fields["expect"]
    context = bytes.fromhex(fields["context"]) if "context" in fields else None
    if expect == "success":
        plaintext = decrypt(envelope, payload, identity, context)
        assert hashlib.sha256(plaintext).hexdigest() == fields["plaintext-sha256"]
    else:
        with pytest.raises(FAILURES[expect]):
            decrypt(envelope, payload, identity, context)


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
