"""Delta payloads (format.md 2.6) written and read by the library: random access and
streaming agree with the plaintext across runs longer than one batch, holes, sources
that are themselves deltas, and the independent decoder reads the same bytes."""

from __future__ import annotations

import io
import os
import random

import pytest

from csfs.crypto import generate_identity
from csfs.crypto.envelope import KIND_FILE, Context
from csfs.crypto.sealed import _seal_sparse, decrypt_opened, open_envelope
from csfs.crypto.stream import HEADER_SIZE, PayloadHeader, SourceRef, SourceSet
from csfs.errors import AuthenticationError
from tests.crypto import independent_decoder

C = 1 << 12
VAULT, NODE = os.urandom(16), os.urandom(16)


def seal(ident, version, length, present, chunk, inherit=None):  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    key = os.urandom(32)
    env = _seal_sparse(out, Context(KIND_FILE, VAULT, NODE, version), length, present, chunk,
                       [ident.recipient], ident, key, os.urandom(16), 12, inherit)
    pay = out.getvalue()
    ref = SourceRef(version, length, PayloadHeader.decode(pay[:HEADER_SIZE]).hash, key)
    return env.encode(), pay, ref


def test_delta_of_a_delta_reads_back_whole_and_in_pieces() -> None:
    ident = generate_identity()
    rng = random.Random(5)  # noqa: S311 (test data, seeded)
    n1 = 50
    data1 = rng.randbytes(n1 * C)
    _, pay1, ref1 = seal(ident, 1, len(data1), list(range(n1)), lambda i: data1[i * C:(i + 1) * C])
    # v2: chunks 10..12 rewritten, 30..33 holes, the rest from v1.
    data2 = bytearray(data1)
    data2[10 * C:13 * C] = rng.randbytes(3 * C)
    data2[30 * C:34 * C] = bytes(4 * C)
    keep2 = [i for i in range(n1 - 1) if not 10 <= i < 13 and not 30 <= i < 34]
    _, pay2, ref2 = seal(ident, 2, len(data2), [10, 11, 12, n1 - 1],
                         lambda i: bytes(data2[i * C:(i + 1) * C]), dict.fromkeys(keep2, ref1))
    # v3: longer; chunk 40 rewritten; from v2 what it stores, from v1 what v2 inherits.
    data3 = bytearray(data2) + rng.randbytes(5 * C + 77)
    data3[40 * C:41 * C] = rng.randbytes(C)
    inherit3 = {i: ref2 if 10 <= i < 13 else ref1 for i in range(n1 - 1)
                if not 30 <= i < 34 and i != 40}
    n3 = -(-len(data3) // C)
    present3 = [40, *range(n1 - 1, n3)]
    env3, pay3, _ = seal(ident, 3, len(data3), present3,
                         lambda i: bytes(data3[i * C:(i + 1) * C]), inherit3)
    assert pay3[:8] == b"csfs-pl3" and len(pay3) < 12 * (C + 16)
    payloads = {1: pay1, 2: pay2}
    ctx3 = Context(KIND_FILE, VAULT, NODE, 3)
    _, cipher = open_envelope(env3, pay3[:HEADER_SIZE], ident, context=ctx3)
    cipher.load_map(pay3[HEADER_SIZE:HEADER_SIZE + cipher.map_size])
    sources = SourceSet(cipher, lambda v: lambda a, b: payloads[v][a:b])
    out = io.BytesIO()
    decrypt_opened(io.BytesIO(pay3[HEADER_SIZE + cipher.map_size:]), out, cipher, sources)
    assert out.getvalue() == data3
    for _ in range(200):
        at = rng.randrange(len(data3))
        size = rng.randrange(1, 30 * C)
        got = cipher.read_range(lambda a, b: pay3[a:b], at, size, sources)
        assert got == data3[at:at + size]
    spec = independent_decoder.decrypt(env3, pay3, ident.to_pem(None), ctx3.encode(),
                                       sources=payloads)
    assert spec == data3
    # A chunk of v1 flipped: both readers refuse.
    bad = bytearray(pay1)
    bad[HEADER_SIZE + 45 * (C + 16) + 3] ^= 1
    payloads[1] = bytes(bad)
    cipher.opened.clear()
    with pytest.raises(AuthenticationError):
        cipher.read_range(lambda a, b: pay3[a:b], 44 * C, 3 * C, sources)
    with pytest.raises(independent_decoder.AuthFailure):
        independent_decoder.decrypt(env3, pay3, ident.to_pem(None), ctx3.encode(),
                                    sources=payloads)
