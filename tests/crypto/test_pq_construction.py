"""The hybrid KEM of format.md 1.1, rebuilt from its definition and checked on a vector.

Nothing here uses an HPKE library: ML-KEM-768 decapsulation and X25519 are the
only primitives taken from `cryptography`; the X-Wing combiner and the RFC 9180
key schedule are written out. Opening the dave-pq stanza of
tests/vectors/success_recipient_dave-pq.vec with them proves that the KEM id
(0x647A), the combiner and the key schedule in the spec are what csfs writes,
so a reader in another language can implement them from the text.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.crypto.independent_decoder import PEM_BLOCK, parse_envelope

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEM_ID, KDF_ID, AEAD_ID = 0x647A, 0x0001, 0x0002  # format.md 1.1: HKDF-SHA256, AES-256-GCM
XWING_LABEL = b"\\.//^\\"  # 5c 2e 2f 2f 5e 5c


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, n: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:n]


SUITE = b"HPKE" + struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + SUITE + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _expand(prk, struct.pack(">H", n) + b"HPKE-v1" + SUITE + label + info, n)


def xwing_decap(sk_m: mlkem.MLKEM768PrivateKey, sk_x: x25519.X25519PrivateKey,
                enc: bytes) -> bytes:
    """X-Wing Decaps (draft-connolly-cfrg-xwing-kem-06 section 5.4, the same as
    MLKEM768-X25519 of draft-irtf-cfrg-concrete-hybrid-kems), from the two component
    keys that a csfs key file holds (1.2)."""
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = sk_m.decapsulate(ct_m)
    ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk_x.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def hpke_open_base(shared_secret: bytes, info: bytes, ct: bytes) -> bytes:
    """RFC 9180 5.1 KeySchedule (mode_base, no PSK) and 5.2 Open of the first message."""
    ksc = (b"\x00" + _labeled_extract(b"", b"psk_id_hash", b"")
           + _labeled_extract(b"", b"info_hash", info))
    secret = _labeled_extract(shared_secret, b"secret", b"")
    key = _labeled_expand(secret, b"key", ksc, 32)
    nonce = _labeled_expand(secret, b"base_nonce", ksc, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")


def test_dave_pq_stanza_opens_with_the_specified_construction() -> None:
    raw = (VECTORS / "success_recipient_dave-pq.vec").read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines())
    env = parse_envelope(body[: int(fields["envelope-length"])])
    pem = (VECTORS / "keys" / "dave-pq.pem").read_bytes()
    sk_m, sk_x = (serialization.load_pem_private_key(b, None) for b in PEM_BLOCK.findall(pem)[:2])
    assert isinstance(sk_m, mlkem.MLKEM768PrivateKey)
    assert isinstance(sk_x, x25519.X25519PrivateKey)
    pq = [sealed for kem_id, sealed in env["stanzas"] if kem_id == KEM_ID]
    assert len(pq) == 1 and len(pq[0]) == 1120 + 48  # 3.3: sealed_len 1168
    enc, ct = pq[0][:1120], pq[0][1120:]
    info = b"csfs v1 wrap\0" + env["context"] + env["header_hash"]
    content_key = hpke_open_base(xwing_decap(sk_m, sk_x, enc), info, ct)
    assert len(content_key) == 32
    # The key is the file's: it reproduces the envelope's commitment (2.2).
    payload_id = body[int(fields["envelope-length"]) + 16 : int(fields["envelope-length"]) + 32]
    prk = hmac.new(payload_id, content_key, hashlib.sha256).digest()
    assert _expand(prk, b"csfs v1 commitment", 32) == env["commitment"]
