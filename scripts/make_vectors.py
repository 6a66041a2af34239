#!/usr/bin/env python3
"""Generate tests/vectors/*.vec (docs/format.md section 6).

Run: .venv/bin/python scripts/make_vectors.py [OUTDIR]

Content keys, payload ids, signing keys and identities are fixed here and
passed to the library's private hooks, so each case is easy to reason about.
HPKE draws its own ephemeral keys, so regenerating changes the stanza bytes
but never the expected outcome.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519

from csfs.crypto.envelope import (
    KIND_DIRECTORY,
    KIND_FILE,
    KIND_LISTING,
    Context,
    Stanza,
    parse_envelope,
    seal_envelope,
    seal_envelope_stanzas,
    seal_length,
)
from csfs.crypto.keys import Identity
from csfs.crypto.sealed import _encrypt_stream, _seal_sparse
from csfs.vault.manifest import DirectoryManifest, Entry
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csfs.crypto.stream import (
    HEADER_SIZE,
    MAP_NONCE,
    TAG_SIZE,
    ChunkCipher,
    PayloadHeader,
    PayloadKeys,
    SourceRef,
    encode_delta_map,
    encode_map,
    hkdf,
    map_block_size,
    nonce,
)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "vectors")


def seed(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(b"csfs test vector " + label.encode()).digest()[:n]


def x25519_identity(label: str) -> Identity:
    return Identity(
        "x25519",
        (x25519.X25519PrivateKey.from_private_bytes(seed(label + " kem")),),
        ed25519.Ed25519PrivateKey.from_private_bytes(seed(label + " sig")),
    )


def p256_identity(label: str) -> Identity:
    scalar = int.from_bytes(seed(label + " kem"), "big") % (2**255)
    return Identity(
        "p256",
        (ec.derive_private_key(scalar, ec.SECP256R1()),),
        ed25519.Ed25519PrivateKey.from_private_bytes(seed(label + " sig")),
    )


def pq_identity(label: str) -> Identity:
    mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed(label + " mlkem", 32) * 2)
    return Identity(
        "mlkem768x25519",
        (mk, x25519.X25519PrivateKey.from_private_bytes(seed(label + " kem"))),
        ed25519.Ed25519PrivateKey.from_private_bytes(seed(label + " sig")),
    )


IDENTITIES = {
    "alice": x25519_identity("alice"),
    "bob": x25519_identity("bob"),
    "carol-p256": p256_identity("carol"),
    "dave-pq": pq_identity("dave"),
}
WRITER = ed25519.Ed25519PrivateKey.from_private_bytes(seed("writer"))


def plaintext(n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def encrypt(data: bytes, to: list[str], label: str, shift: int = 12,
            context: Context | None = None) -> tuple[bytes, bytes]:
    """(envelope, payload) of ``data`` with fixed content key and payload id."""
    header = PayloadHeader(shift, seed(label + " payload id", 16))
    dst = io.BytesIO()
    env = _encrypt_stream(
        io.BytesIO(data), dst, [IDENTITIES[n].recipient for n in to], WRITER,
        seed(label + " content key"), header, context or Context.offline(header.payload_id),
    )
    return env.encode(), dst.getvalue()


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def write(name: str, expect: str, description: str, identity: str, envelope: bytes,
          payload: bytes, plain: bytes | None = None, context: Context | None = None,
          obj: str | None = None, sources: list[tuple[int, bytes]] | None = None) -> None:
    lines = [
        f"expect: {expect}",
        f"description: {description}",
        f"identity: {identity}",
        f"envelope-length: {len(envelope)}",
        f"payload-length: {len(payload)}",
    ]
    if context is not None:
        lines.append(f"context: {context.encode().hex()}")
    if obj is not None:
        lines.append(f"object: {obj}")
    extra = b""
    if sources is not None:
        lines.append("sources: " + ",".join(f"{v:016x}={len(b)}" for v, b in sources))
        extra = b"".join(b for _, b in sources)
    if plain is not None:
        lines.append(f"plaintext-sha256: {hashlib.sha256(plain).hexdigest()}")
    with open(os.path.join(OUT, name + ".vec"), "wb") as f:
        f.write(("\n".join(lines) + "\n\n").encode() + envelope + payload + extra)


def resign(envelope: bytes, edit: Callable[[bytearray], None]) -> bytes:
    """Apply ``edit`` to the signed part and sign again with the writer key (valid signature)."""
    env = parse_envelope(envelope)
    body = bytearray(env.signed_part())
    edit(body)
    body_bytes = bytes(body)
    return body_bytes + WRITER.sign(b"csfs v1 envelope\0" + body_bytes)


def main() -> None:
    os.makedirs(os.path.join(OUT, "keys"), exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".vec"):
            os.unlink(os.path.join(OUT, old))
    for name, ident in IDENTITIES.items():
        with open(os.path.join(OUT, "keys", name + ".pem"), "wb") as f:
            f.write(ident.to_pem(None))

    c = 1 << 12
    small = plaintext(100)
    multi = plaintext(3 * c + 500)  # 4 chunks of 4 KiB after Padmé
    env, pay = encrypt(multi, ["alice"], "multi")
    write("success_multichunk", "success", "four 4 KiB chunks, X25519", "alice", env, pay, multi)
    e, p = encrypt(b"", ["alice"], "empty")
    write("success_empty", "success", "empty plaintext: one empty last chunk", "alice", e, p, b"")
    e, p = encrypt(small, ["alice"], "small", shift=16)
    write("success_small", "success", "100 bytes, 64 KiB chunks", "alice", e, p, small)
    e, p = encrypt(small, ["alice", "bob", "carol-p256", "dave-pq"], "all")
    for who in ("bob", "carol-p256", "dave-pq"):
        write(f"success_recipient_{who}", "success", f"four recipients, opened by {who}", who, e, p, small)
    e, p = encrypt(small, ["bob"], "bob only")
    write("no_match", "no match", "encrypted to bob only, opened by alice", "alice", e, p)
    e, p = encrypt(small, ["carol-p256"], "carol only")
    write("no_match_other_kem", "no match", "only a P-256 stanza, opened by X25519", "alice", e, p)

    # Bit flips, region by region.
    write("flip_payload_magic", "format", "bit flipped in payload magic", "alice", env, flip(pay, 0))
    write("flip_payload_chunk_shift", "format", "chunk_shift out of range", "alice", env, flip(pay, 8, 6))
    write("flip_payload_reserved", "format", "non-zero reserved header byte", "alice", env, flip(pay, 12))
    write("flip_payload_id", "authentication", "bit flipped in payload id", "alice", env, flip(pay, 20))
    ct_size = c + TAG_SIZE
    for i in range(4):
        start = HEADER_SIZE + i * ct_size
        write(f"flip_chunk_{i}", "authentication", f"bit flipped in chunk {i} body", "alice", env,
              flip(pay, start + 7))
        end = min(start + ct_size, len(pay))
        write(f"flip_chunk_{i}_tag", "authentication", f"bit flipped in chunk {i} tag", "alice",
              env, flip(pay, end - 3))
    env_regions = {
        "magic": 2, "context": 8 + 20, "header_hash": 55, "sealed_length": 90, "commitment": 110,
        "stanza": 150, "signer": len(env) - 80, "signature": len(env) - 10,
    }
    for region, off in env_regions.items():
        write(f"flip_envelope_{region}", "format" if region == "magic" else "authentication",
              f"bit flipped in envelope {region}", "alice", flip(env, off), pay)

    # Structure attacks.
    write("truncated_last_chunk", "authentication", "last chunk dropped at a chunk boundary",
          "alice", env, pay[: HEADER_SIZE + 3 * ct_size])
    write("truncated_mid_chunk", "authentication", "payload cut inside chunk 1", "alice", env,
          pay[: HEADER_SIZE + ct_size + 100])
    swapped = (pay[:HEADER_SIZE] + pay[HEADER_SIZE + ct_size : HEADER_SIZE + 2 * ct_size]
               + pay[HEADER_SIZE : HEADER_SIZE + ct_size] + pay[HEADER_SIZE + 2 * ct_size :])
    write("chunks_swapped", "authentication", "chunks 0 and 1 swapped", "alice", env, swapped)
    write("trailing_data", "authentication", "one byte after the last chunk", "alice", env, pay + b"\0")
    write("trailing_chunk", "authentication", "a copy of the last chunk appended", "alice", env,
          pay + pay[HEADER_SIZE + 3 * ct_size :])
    other_env, other_pay = encrypt(multi, ["alice"], "other file")
    write("envelope_moved", "authentication", "envelope of another file with this payload",
          "alice", other_env, pay)
    write("payload_swapped", "authentication", "payload of another file under this envelope "
          "(context and header hash differ)", "alice", env, other_pay)
    write("envelope_truncated", "format", "envelope cut in its stanza", "alice", env[:140], pay)
    write("envelope_trailing", "format", "one byte after the envelope signature", "alice",
          env + b"\0", pay)

    # Oversized and malformed length fields (parsed before the signature is checked).
    def set_bytes(data: bytes, off: int, value: bytes) -> bytes:
        return data[:off] + value + data[off + len(value):]

    write("oversized_stanza_count", "format", "stanza count 65535", "alice",
          set_bytes(env, 137, b"\xff\xff"), pay)
    write("zero_stanza_count", "format", "stanza count 0", "alice", set_bytes(env, 137, b"\0\0"), pay)
    write("oversized_sealed_len", "format", "stanza length 65535", "alice",
          set_bytes(env, 141, b"\xff\xff"), pay)
    write("unknown_kem", "format", "stanza KEM id 0x9999", "alice", set_bytes(env, 139, b"\x99\x99"), pay)
    write("unknown_context_kind", "format", "context kind 9", "alice", set_bytes(env, 8, b"\x09"), pay)
    write("context_version_overflow", "format", "context version 2^64-1 (at most 2^63-1)", "alice",
          set_bytes(env, 8 + 33, b"\xff" * 8), pay)

    # Validly signed but lying envelopes: only the later checks can catch these.
    write("signed_bad_commitment", "authentication", "re-signed envelope with a wrong commitment",
          "alice", resign(env, lambda b: b.__setitem__(slice(105, 137), bytes(32))), pay)

    # A writer who knows the content key re-seals the length and re-signs.
    mkey = seed("multi content key")
    mparsed = parse_envelope(env)

    def resealed(length: int) -> bytes:
        sealed = seal_length(mkey, mparsed.context, mparsed.header_hash, length)
        return resign(env, lambda b: b.__setitem__(slice(81, 105), sealed))

    write("signed_wrong_length", "authentication",
          "length re-sealed and re-signed as one byte less, same padded size", "alice",
          resealed(len(multi) - 1), pay)
    write("signed_longer_length", "authentication",
          "length re-sealed and re-signed as 10 bytes more, same padded size", "alice",
          resealed(len(multi) + 10), pay)
    write("oversized_plaintext_length", "format", "length re-sealed as 2^63 and re-signed",
          "alice", resign(env, lambda b: b.__setitem__(slice(81, 105), AESGCM(
              hkdf(mkey, mparsed.header_hash, b"csfs v1 length")).encrypt(
                  bytes(12), (1 << 63).to_bytes(8, "big"), mparsed.context.encode()))), pay)
    write("sealed_length_of_another_file", "authentication",
          "sealed length field copied from another envelope, re-signed", "alice",
          resign(env, lambda b: b.__setitem__(slice(81, 105), parse_envelope(
              encrypt(multi, ["alice"], "length donor")[0]).sealed_length)), pay)

    # Crafted payloads with the right key: only the stream rules can catch these.
    ckey = seed("multi content key")
    header = PayloadHeader.decode(pay[:HEADER_SIZE])
    keys = PayloadKeys(ckey, header)
    cipher = ChunkCipher(keys, len(multi))
    last = cipher.count - 1
    last_plain = multi[last * c :] + bytes(cipher.plain_len(last) - (len(multi) - last * c))
    no_flag = keys.aead.encrypt(nonce(last, False), last_plain, cipher.aad(last))
    write("last_flag_missing", "authentication", "final chunk encrypted without the last flag",
          "alice", env, pay[: cipher.offset(last)] + no_flag)
    dirty = last_plain[:-1] + b"\x01"
    dirty_pad = keys.aead.encrypt(nonce(last, True), dirty, cipher.aad(last))
    write("nonzero_padding", "authentication", "padding byte is 0x01", "alice", env,
          pay[: cipher.offset(last)] + dirty_pad)
    early = keys.aead.encrypt(nonce(0, True), multi[:c], keys.header_hash)
    write("early_last_flag", "authentication", "chunk 0 flagged last", "alice", env,
          pay[:HEADER_SIZE] + early + pay[HEADER_SIZE + ct_size :])

    # A stanza wrapped to alice under another context: valid signature, HPKE info differs.
    def moved_stanza() -> bytes:
        e = parse_envelope(env)
        other = parse_envelope(other_env)
        stanzas: tuple[Stanza, ...] = other.stanzas
        return seal_envelope_stanzas(e.context, e.header_hash, e.sealed_length, e.commitment, stanzas,
                                     WRITER).encode()

    write("stanza_from_other_file", "no match",
          "re-signed envelope holding a stanza wrapped for another file", "alice", moved_stanza(), pay)
    sparse_vectors()
    delta_vectors()
    vault_vectors()
    folder_listing_vectors()
    print(f"wrote {len([n for n in os.listdir(OUT) if n.endswith('.vec')])} vectors to {OUT}",
          file=sys.stderr)


def sparse_vectors() -> None:
    """Sparse payloads (format.md 2.5): holes that the writer meant, and a store's
    attempts to make holes out of data."""
    c = 1 << 12
    length = 6 * c + 100  # padme: 7 chunks of 4 KiB, the last one 100 bytes + padding
    data = {1: plaintext(c), 4: plaintext(c + 7)[7:]}
    last_plain = plaintext(100)
    count = 7

    def chunk(i: int) -> bytes:
        return last_plain if i == count - 1 else data.get(i, bytes(c))

    plain = b"".join(chunk(i) for i in range(count))[:length]
    ckey, pid = seed("sparse content key"), seed("sparse payload id", 16)
    ctx = Context.offline(pid)
    out = io.BytesIO()
    env_obj = _seal_sparse(out, ctx, length, [1, 4], chunk, [IDENTITIES["alice"].recipient],
                           WRITER, ckey, pid, 12)
    env, pay = env_obj.encode(), out.getvalue()
    assert pay[:8] == b"csfs-pl2"
    write("sparse_success", "success", "7 chunks, only 1, 4 and the last stored; 0, 2, 3, 5 are holes",
          "alice", env, pay, plain)
    out = io.BytesIO()
    e = _seal_sparse(out, ctx, 5 * c, [], lambda i: bytes(c), [IDENTITIES["alice"].recipient],
                     WRITER, ckey, pid, 12)
    write("sparse_all_holes", "success", "20 KiB of zeros: only the last chunk stored", "alice",
          e.encode(), out.getvalue(), bytes(5 * c))

    header = PayloadHeader.decode(pay[:HEADER_SIZE])
    keys = PayloadKeys(ckey, header)
    map_size = header.map_size
    body = pay[HEADER_SIZE + map_size :]
    slot = c + TAG_SIZE
    write("sparse_chunk_removed", "authentication", "the store drops stored chunk 1 (as if a hole)",
          "alice", env, pay[: HEADER_SIZE + map_size] + body[slot:])
    write("sparse_chunk_zeroed", "authentication", "the store replaces chunk 1 with zero bytes",
          "alice", env, pay[: HEADER_SIZE + map_size] + bytes(slot) + body[slot:])
    write("sparse_chunks_swapped", "authentication", "stored chunks 1 and 4 swapped", "alice", env,
          pay[: HEADER_SIZE + map_size] + body[slot : 2 * slot] + body[:slot] + body[2 * slot :])
    write("sparse_map_flipped", "authentication", "one bit of the encrypted map flipped", "alice",
          env, flip(pay, HEADER_SIZE + 9))
    write("sparse_densified", "authentication", "magic set to csfs-pl1, reserved bytes zeroed",
          "alice", env, b"csfs-pl1" + pay[8:9] + bytes(7) + pay[16:])
    write("sparse_reserved_nonzero", "format", "a reserved header byte is 1", "alice", env,
          flip(pay, 10))
    bad_size = pay[:12] + (16).to_bytes(4, "big") + pay[16:]
    write("sparse_map_size_too_small", "format", "map_size 16 (below the smallest map)", "alice",
          env, bad_size)

    def with_map(plain_map: bytes, chunks: list[int]) -> bytes:
        """A payload whose map the content key's holder wrote by hand (same header)."""
        block = keys.aead.encrypt(MAP_NONCE, plain_map, keys.header_hash + length.to_bytes(8, "big"))
        assert len(block) == map_size
        cipher = ChunkCipher(keys, length)
        return pay[:HEADER_SIZE] + block + b"".join(
            cipher.encrypt(i, chunk(i)[: cipher.plain_len(i)]) for i in chunks)

    # Same extent count as the good map (3), so map_size still fits the header.
    assert map_size == map_block_size(3)
    write("sparse_last_chunk_absent", "authentication", "map without the last chunk", "alice", env,
          with_map(encode_map([(1, 1), (3, 1), (5, 1)]), [1, 3, 5]))
    write("sparse_extents_touching", "authentication", "extents (1,1) and (2,1) touch", "alice", env,
          with_map(encode_map([(1, 1), (2, 1), (6, 1)]), [1, 2, 6]))
    write("sparse_extents_unordered", "authentication", "extents out of order", "alice", env,
          with_map(encode_map([(4, 1), (1, 1), (6, 1)]), [4, 1, 6]))
    # Eight extents: padme(8 + 128) = 144, so the map has 8 bytes of padding to spoil.
    runs = [(i, 1) for i in range(0, 14, 2)] + [(19, 1)]
    big_len = 19 * c + 1
    big_header = PayloadHeader(12, seed("sparse padded payload id", 16), map_block_size(len(runs)))
    big_keys = PayloadKeys(ckey, big_header)
    big_ctx = Context.offline(big_header.payload_id)
    padded_map = bytearray(encode_map(runs))
    assert len(padded_map) == 144
    padded_map[-1] = 1
    big_cipher = ChunkCipher(big_keys, big_len)
    big_pay = big_header.encode() + big_keys.aead.encrypt(
        MAP_NONCE, bytes(padded_map), big_keys.header_hash + big_len.to_bytes(8, "big")
    ) + b"".join(big_cipher.encrypt(f, plaintext(big_cipher.plain_len(f))[: 1 if f == 19 else c])
                 for f, _ in runs)
    big_env = seal_envelope(ckey, [IDENTITIES["alice"].recipient], big_ctx, big_keys.header_hash,
                            big_len, big_keys.commitment, WRITER)
    write("sparse_map_padding_nonzero", "authentication", "map padding byte is 1", "alice",
          big_env.encode(), big_pay)


def delta_vectors() -> None:
    """Delta versions (format.md 2.6) of one vault file, with their sources: a reader
    fetches source V where c/F/V would be."""
    c = 1 << 12
    vault_id, node = seed("delta vault id", 16), seed("delta file node", 16)
    v1, v2, v3 = 0x1111_0000_0000_0001, 0x2222_0000_0000_0002, 0x3333_0000_0000_0003
    alice = [IDENTITIES["alice"].recipient]

    def ctx(version: int) -> Context:
        return Context(KIND_FILE, vault_id, node, version)

    # v1: dense, 9 chunks (padme(8c + 50) = 8.5c). Chunks 0..7 are full.
    len1 = 8 * c + 50
    data1 = plaintext(len1)
    k1, pid1 = seed("delta v1 key"), seed("delta v1 payload id", 16)
    out = io.BytesIO()
    _seal_sparse(out, ctx(v1), len1, list(range(9)), lambda i: data1[i * c : (i + 1) * c], alice,
                 WRITER, k1, pid1, 12)
    pay1 = out.getvalue()
    assert pay1[:8] == b"csfs-pl1"
    ref1 = SourceRef(v1, len1, PayloadHeader.decode(pay1[:HEADER_SIZE]).hash, k1)

    # v2: a delta of v1 with 9 chunks: 2, 3 and the last stored, 6 a hole, the rest from v1.
    len2 = len1
    new2 = {2: plaintext(c + 11)[11:], 3: plaintext(c + 13)[13:], 8: data1[8 * c :]}

    def chunk2(i: int) -> bytes:
        return bytes(c) if i == 6 else new2.get(i, data1[i * c : (i + 1) * c])

    data2 = b"".join(chunk2(i) for i in range(9))[:len2]
    k2, pid2 = seed("delta v2 key"), seed("delta v2 payload id", 16)
    out = io.BytesIO()
    _seal_sparse(out, ctx(v2), len2, [2, 3, 8], chunk2, alice, WRITER, k2, pid2, 12,
                 {i: ref1 for i in (0, 1, 4, 5, 7)})
    pay2 = out.getvalue()
    assert pay2[:8] == b"csfs-pl3"
    ref2 = SourceRef(v2, len2, PayloadHeader.decode(pay2[:HEADER_SIZE]).hash, k2)

    # v3, under test: 11 chunks (padme(10c + 10) = 10.5c). 0 from v1, 1 stored, 2-3 from
    # v2, 4 a hole, 5 from v1, 6-7 stored, 8-9 holes, 10 stored.
    len3 = 10 * c + 10
    own3 = {1: plaintext(c + 17)[17:], 6: plaintext(c + 19)[19:], 7: plaintext(c + 23)[23:],
            10: plaintext(10)}
    src3 = {0: data1[:c], 2: data2[2 * c : 3 * c], 3: data2[3 * c : 4 * c], 5: data1[5 * c : 6 * c]}

    def chunk3(i: int) -> bytes:
        return own3.get(i, src3.get(i, bytes(c)))

    data3 = b"".join(chunk3(i) for i in range(11))[:len3]
    k3, pid3 = seed("delta v3 key"), seed("delta v3 payload id", 16)
    inherit3 = {0: ref1, 2: ref2, 3: ref2, 5: ref1}
    out = io.BytesIO()
    env3 = _seal_sparse(out, ctx(v3), len3, [1, 6, 7, 10], chunk3, alice, WRITER, k3, pid3, 12,
                        inherit3).encode()
    pay3 = out.getvalue()
    assert pay3[:8] == b"csfs-pl3"
    good = [(v1, pay1), (v2, pay2)]
    write("delta_success", "success",
          "chunks stored, inherited from two sources (one itself a delta), and holes", "alice",
          env3, pay3, data3, ctx(v3), sources=good)

    # The store's attacks on the sources.
    slot = c + TAG_SIZE
    body1 = pay1[HEADER_SIZE:]
    swapped = pay1[:HEADER_SIZE] + body1[5 * slot : 6 * slot] + body1[slot : 5 * slot] + \
        body1[:slot] + body1[6 * slot :]
    write("delta_source_chunks_swapped", "authentication",
          "chunks 0 and 5 of source v1 swapped by the store", "alice", env3, pay3, None, ctx(v3),
          sources=[(v1, swapped), (v2, pay2)])
    write("delta_source_replaced", "authentication",
          "source v1's object replaced by v2's payload", "alice", env3, pay3, None, ctx(v3),
          sources=[(v1, pay2), (v2, pay2)])
    write("delta_source_chunk_flipped", "authentication",
          "a bit flipped in chunk 5 of source v1", "alice", env3, pay3, None, ctx(v3),
          sources=[(v1, flip(pay1, HEADER_SIZE + 5 * slot + 9)), (v2, pay2)])

    # Maps a holder of v3's key wrote by hand: a signed envelope, a valid map tag.
    def delta(label: str, sources: list[SourceRef], extents: list[tuple[int, int, int]],
              context: Context | None = None) -> tuple[bytes, bytes]:
        plain_map = encode_delta_map(sources, extents)
        header = PayloadHeader(12, seed("delta " + label + " payload id", 16),
                               len(plain_map) + TAG_SIZE, True)
        keys = PayloadKeys(k3, header)
        cipher = ChunkCipher(keys, len3)
        block = keys.aead.encrypt(MAP_NONCE, plain_map,
                                  keys.header_hash + len3.to_bytes(8, "big"))
        stored = [i for f, n, o in extents if o == 0 for i in range(f, f + n)]
        pay = header.encode() + block + b"".join(
            cipher.encrypt(i, chunk3(i)[: cipher.plain_len(i)]) for i in stored)
        env = seal_envelope(k3, alice, context or ctx(v3), keys.header_hash, len3,
                            keys.commitment, WRITER)
        return env.encode(), pay

    good_extents = [(0, 1, 1), (1, 1, 0), (2, 2, 2), (5, 1, 1), (6, 2, 0), (10, 1, 0)]
    e, p = delta("rebuilt", [ref1, ref2], good_extents)
    write("delta_rebuilt", "success", "the same delta with its map written by hand", "alice", e,
          p, data3, ctx(v3), sources=good)
    wrong_key = SourceRef(v1, len1, ref1.header_hash, seed("not v1's key"))
    e, p = delta("wrong key", [wrong_key, ref2], good_extents)
    write("delta_wrong_source_key", "authentication", "the map gives a wrong key for v1",
          "alice", e, p, None, ctx(v3), sources=good)
    e, p = delta("beyond", [ref1, ref2], [(0, 1, 1), (1, 1, 0), (2, 2, 2), (5, 1, 1),
                                          (6, 2, 0), (8, 1, 1), (10, 1, 0)])
    write("delta_reference_beyond_source", "authentication",
          "chunk 8 named from v1, whose last chunk it is", "alice", e, p, None, ctx(v3),
          sources=good)
    e, p = delta("hole", [ref1, ref2], [(0, 1, 1), (1, 1, 0), (2, 2, 2), (5, 1, 1),
                                        (6, 1, 2), (7, 1, 0), (10, 1, 0)])
    write("delta_reference_to_hole", "authentication", "chunk 6 named from v2, a hole there",
          "alice", e, p, None, ctx(v3), sources=good)
    e, p = delta("inherited", [ref1, ref2], [(0, 1, 2), (1, 1, 0), (2, 2, 2), (5, 1, 1),
                                             (6, 2, 0), (10, 1, 0)])
    write("delta_reference_to_inherited", "authentication",
          "chunk 0 named from v2, which itself inherits it from v1", "alice", e, p, None,
          ctx(v3), sources=good)
    many = [SourceRef(v1 + 0x100 * j, len3, ref1.header_hash, k1) for j in range(9)]
    e, p = delta("many", many, [(j, 1, j + 1) for j in range(8)] + [(8, 1, 9), (10, 1, 0)])
    write("delta_too_many_sources", "authentication", "nine sources (at most eight)", "alice",
          e, p, None, ctx(v3), sources=good)
    e, p = delta("touching", [ref1, ref2], [(0, 1, 1), (1, 1, 0), (2, 1, 2), (3, 1, 2),
                                            (5, 1, 1), (6, 2, 0), (10, 1, 0)])
    write("delta_extents_touching", "authentication", "extents (2,1) and (3,1) of one origin",
          "alice", e, p, None, ctx(v3), sources=good)
    e, p = delta("unused", [ref1, ref2], [(0, 1, 1), (1, 1, 0), (5, 1, 1), (6, 2, 0),
                                          (10, 1, 0)])
    write("delta_unused_source", "authentication", "v2 named but never used", "alice", e, p,
          None, ctx(v3), sources=good)
    e, p = delta("last", [ref1, ref2], [(0, 1, 1), (1, 1, 0), (2, 2, 2), (5, 1, 1),
                                        (6, 2, 0), (10, 1, 1)])
    write("delta_last_chunk_inherited", "authentication", "the last chunk named from v1",
          "alice", e, p, None, ctx(v3), sources=good)
    self_ref = SourceRef(v3, len1, ref1.header_hash, k1)
    e, p = delta("self", [ref1, self_ref], [(0, 1, 1), (1, 1, 0), (2, 2, 2), (5, 1, 1),
                                            (6, 2, 0), (10, 1, 0)])
    write("delta_names_itself", "authentication", "v3 names itself as a source", "alice", e, p,
          None, ctx(v3), sources=good)
    off_pid = seed("delta offline payload id", 16)
    e, p = delta("offline", [ref1, ref2], good_extents, Context.offline(off_pid))
    # The offline context must name the payload's id: rebuild with that id.
    header = PayloadHeader.decode(p[:HEADER_SIZE])
    off_header = PayloadHeader(12, off_pid, header.map_size, True)
    keys = PayloadKeys(k3, off_header)
    env = seal_envelope(k3, alice, Context.offline(off_pid), keys.header_hash, len3,
                        keys.commitment, WRITER)
    write("delta_offline", "format", "a delta payload as an offline file (kind 1)", "alice",
          env.encode(), off_header.encode() + p[HEADER_SIZE:])


def vault_vectors() -> None:
    """Vault objects (format.md 5): a file version and a directory manifest."""
    vault_id, node, version = seed("vault id", 16), seed("file node", 16), 0x1234_5678_9ABC_DEF0
    ctx = Context(KIND_FILE, vault_id, node, version)
    data = plaintext(70_000)
    e, p = encrypt(data, ["alice"], "vault file", shift=16, context=ctx)
    write("vault_file_version", "success", "file version, context kind 2", "alice", e, p, data, ctx)
    older = Context(KIND_FILE, vault_id, node, version - 1)
    write("vault_file_other_version", "authentication",
          "file version served for another version number (replay)", "alice", e, p, None, older)
    other_vault = Context(KIND_FILE, seed("other vault", 16), node, version)
    write("vault_file_other_vault", "authentication", "file version from another vault",
          "alice", e, p, None, other_vault)
    dir_id = seed("dir node", 16)
    manifest = DirectoryManifest(
        dir_id.hex(), version=7, mtime_ns=1_700_000_000_000_000_000, readers=[
            IDENTITIES["alice"].recipient.to_pem().decode()],
        entries={"notes.txt": Entry(node.hex(), "f", 0o644, len(data), 1_700_000_000_000_000_000,
                                    version),
                 "sub": Entry(seed("sub dir", 16).hex(), "d", 0o755, 0, 1_700_000_000_000_000_000),
                 "link": Entry(seed("link", 16).hex(), "l", 0o777, 0, 1_700_000_000_000_000_000,
                               target="notes.txt")})
    plain = manifest.encode_plain()
    mctx = Context(KIND_DIRECTORY, vault_id, dir_id, 7)
    e, p = encrypt(plain, ["alice"], "manifest", shift=16, context=mctx)
    write("vault_manifest", "success", "directory manifest (JSON inside), context kind 3",
          "alice", e, p, plain, mctx, "manifest")
    moved = Context(KIND_DIRECTORY, vault_id, seed("another dir", 16), 7)
    write("vault_manifest_moved", "authentication", "manifest put under another directory id",
          "alice", e, p, None, moved, "manifest")
    manifest_rejections(json.loads(plain), vault_id, dir_id)
    # POSIX metadata (format.md 5.3): owner, times, xattrs, special files, folder times.
    t = 1_700_000_000_000_000_000
    posix_id = seed("posix dir", 16)
    posix = DirectoryManifest(
        posix_id.hex(), version=3, mtime_ns=t, ctime_ns=t + 5, atime_ns=t - 5, uid=1000, gid=100,
        readers=[
            IDENTITIES["alice"].recipient.to_pem().decode()],
        entries={
            "owned.txt": Entry(node.hex(), "f", 0o4750, len(data), t, version, uid=1000,
                               gid=100, atime_ns=t + 1, ctime_ns=t + 2,
                               xattrs=(("user.bin", bytes(range(5))), ("user.color", b"blue"))),
            "fifo": Entry(seed("fifo", 16).hex(), "p", 0o600, 0, t, uid=0, gid=0),
            "sock": Entry(seed("sock", 16).hex(), "s", 0o755, 0, t),
            "tty": Entry(seed("tty", 16).hex(), "c", 0o620, 0, t, rdev=0x0501, uid=0, gid=5),
            "disk": Entry(seed("disk", 16).hex(), "b", 0o660, 0, t, rdev=0x0800),
        })
    plain = posix.encode_plain()
    pctx = Context(KIND_DIRECTORY, vault_id, posix_id, 3)
    e, p = encrypt(plain, ["alice"], "posix manifest", shift=16, context=pctx)
    write("vault_manifest_posix", "success",
          "directory manifest with owner, times, xattrs and special files (5.3)",
          "alice", e, p, plain, pctx, "manifest")
    # A folder an rmdir removed (5.3, 5.5): no entries, and where it was listed.
    gone_id = seed("removed dir", 16)
    gone = DirectoryManifest(
        gone_id.hex(), version=4, mtime_ns=t, readers=[
            IDENTITIES["alice"].recipient.to_pem().decode()],
        removed=(dir_id.hex(), "old folder"))
    plain = gone.encode_plain()
    gctx = Context(KIND_DIRECTORY, vault_id, gone_id, 4)
    e, p = encrypt(plain, ["alice"], "removed manifest", shift=16, context=gctx)
    write("vault_manifest_removed", "success",
          "directory manifest of a removed folder: removed names its parent and name (5.3)",
          "alice", e, p, plain, gctx, "manifest")


def manifest_rejections(good: dict[str, Any], vault_id: bytes, dir_id: bytes) -> None:
    """Validly encrypted and signed manifests whose JSON breaks a rule of 5.3: what a
    writer with its own key could sign. Every reader rejects them as format errors."""
    drop = object()

    def entry(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def edit(m: dict[str, Any]) -> None:
            if value is drop:
                del m["entries"][name][key]
            else:
                m["entries"][name][key] = value
        return edit

    def top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def edit(m: dict[str, Any]) -> None:
            if value is drop:
                del m[key]
            else:
                m[key] = value
        return edit

    def deep(m: dict[str, Any]) -> None:
        m["entries"]["notes.txt"]["x"] = "NESTED"

    cases: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
        ("entry_missing_size", "file entry without size", entry("notes.txt", "size", drop)),
        ("entry_missing_version", "file entry without version",
         entry("notes.txt", "version", drop)),
        ("entry_float_mtime", "mtime_ns 1.7e18 (a float)", entry("notes.txt", "mtime_ns", 1.7e18)),
        ("entry_bool_mode", "mode true (a bool)", entry("notes.txt", "mode", True)),
        ("entry_string_size", 'size "70000" (a string)', entry("notes.txt", "size", "70000")),
        ("entry_mode_out_of_range", "mode 0o10000", entry("notes.txt", "mode", 0o10000)),
        ("entry_version_overflow", "file version 2^64-1", entry("notes.txt", "version", 2**64 - 1)),
        ("entry_unknown_key", "file entry with an extra key", entry("notes.txt", "owner", "x")),
        ("entry_dir_with_size", "directory entry with a size", entry("sub", "size", 0)),
        ("entry_symlink_without_target", "symlink entry without target",
         entry("link", "target", drop)),
        ("entry_symlink_target_too_long", "symlink target of 4096 bytes",
         entry("link", "target", "a" * 4096)),
        ("writers_not_empty", "writers holds a key", top("writers", ["00" * 32])),
        ("no_readers", "readers is empty", top("readers", [])),
        ("missing_mode", "manifest without mode", top("mode", drop)),
        ("unknown_key", "manifest with an extra key", top("comment", "hi")),
        ("entries_not_an_object", "entries is a list", top("entries", [])),
        ("deeply_nested", "an extra key holding arrays nested 100,000 deep", deep),
        ("removed_not_an_object", "removed is a string", top("removed", "yes")),
        ("removed_extra_key", "removed with a third key",
         top("removed", {"parent": "ab" * 16, "name": "x", "when": 1})),
        ("removed_bad_parent", "removed names a parent that is not an id",
         top("removed", {"parent": "AB" * 16, "name": "x"})),
        ("removed_bad_name", "removed names a name holding a slash",
         top("removed", {"parent": "ab" * 16, "name": "a/b"})),
    ]
    for name, description, edit in cases:
        m = json.loads(json.dumps(good))
        edit(m)
        text = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        text = text.replace(b'"NESTED"', b"[" * 100_000 + b"]" * 100_000)
        ctx = Context(KIND_DIRECTORY, vault_id, dir_id, 7)
        e, p = encrypt(text, ["alice"], "manifest " + name, shift=16, context=ctx)
        write("manifest_" + name, "format", description, "alice", e, p, None, ctx, "manifest")
    version_zero = Context(KIND_DIRECTORY, vault_id, dir_id, 0)
    text = json.dumps(good, sort_keys=True, separators=(",", ":")).encode()
    e, p = encrypt(text, ["alice"], "manifest version zero", shift=16, context=version_zero)
    write("manifest_version_zero", "format", "manifest version 0 (the first is 1)", "alice", e, p,
          None, version_zero, "manifest")


def folder_listing_vectors() -> None:
    """Folder-link listings (format.md 7.8): one that parses, and listings the owner
    signed that break a rule each (format errors) or name another link."""
    vault_id, link = seed("vault id", 16), seed("folder link", 16)
    t = 1_700_000_000_000_000_000

    def file(label: str, size: int, version: int) -> dict[str, Any]:
        node = seed(label, 16).hex()
        vhex = f"{version:016x}"
        return {"envelope": f"https://s3.example.org/vault/k/{node}/{vhex}?X-Amz-Signature=1",
                "mtime_ns": t, "node": node,
                "payload": f"https://s3.example.org/vault/c/{node}/{vhex}?X-Amz-Signature=2",
                "size": size, "type": "f", "version": version}

    good: dict[str, Any] = {
        "entries": {
            "notes.txt": file("listed notes", 70_000, 0x1234_5678_9ABC_DEF0),
            "sub": {"type": "d"},
            "sub/deep.txt": file("listed deep", 4, 7),
            "sub/empty": {"mtime_ns": t, "node": seed("listed empty", 16).hex(), "size": 0,
                          "type": "f", "version": 0},
            "sub/ünïcode ✓": {"type": "d"},
        },
        "format": "csfs-folder-1", "link": link.hex(), "made_ns": t,
    }

    def text(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    ctx = Context(KIND_LISTING, vault_id, link, 3)
    plain = text(good)
    e, p = encrypt(plain, ["alice"], "folder listing", shift=16, context=ctx)
    write("folder_listing", "success", "a folder link's listing, context kind 6 (7.8)",
          "alice", e, p, plain, ctx, "folder-listing")
    other = text({**good, "link": seed("another link", 16).hex()})
    e, p = encrypt(other, ["alice"], "folder listing other link", shift=16, context=ctx)
    write("folder_listing_other_link", "authentication",
          "a listing whose link is not its context's node id", "alice", e, p, None, ctx,
          "folder-listing")

    def entries(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        return lambda m: edit(m["entries"])

    def drop_key(path: str, key: str) -> Callable[[dict[str, Any]], None]:
        return entries(lambda es: es[path].pop(key))

    def set_key(path: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return entries(lambda es: es[path].__setitem__(key, value))

    def add(path: str, item: Any) -> Callable[[dict[str, Any]], None]:
        return entries(lambda es: es.__setitem__(path, item))

    def deep_path(m: dict[str, Any]) -> None:
        for n in range(1, 66):
            m["entries"]["/".join(["d"] * n)] = {"type": "d"}

    cases: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
        ("missing_parent", "an item whose folder is not listed", add("gone/x", {"type": "d"})),
        ("parent_is_a_file", "an item below a file", add("notes.txt/x", {"type": "d"})),
        ("dot_dot", "a path with ..", add("sub/../x", {"type": "d"})),
        ("empty_name", "a path with an empty name", add("sub//x", {"type": "d"})),
        ("absolute_path", "a path starting with /", add("/x", {"type": "d"})),
        ("file_twice", "one node listed at two paths",
         add("sub/again.txt", file("listed deep", 4, 7))),
        ("folder_with_keys", "a folder item with a node", set_key("sub", "node", "00" * 16)),
        ("file_without_payload", "a file without its payload URL",
         drop_key("notes.txt", "payload")),
        ("empty_file_with_urls", "a version-0 file with URLs",
         set_key("sub/empty", "envelope", "https://s3.example.org/x")),
        ("empty_file_with_size", "a version-0 file of size 1", set_key("sub/empty", "size", 1)),
        ("url_not_http", "a URL that is not http(s)",
         set_key("notes.txt", "payload", "ftp://s3.example.org/x")),
        ("string_version", 'version "7" (a string)', set_key("sub/deep.txt", "version", "7")),
        ("float_size", "size 4.0 (a float)", set_key("sub/deep.txt", "size", 4.0)),
        ("unknown_type", 'an item of type "l"', set_key("sub", "type", "l")),
        ("unknown_key", "a listing with an extra key", lambda m: m.__setitem__("name", "x")),
        ("other_format", "format csfs-folder-2",
         lambda m: m.__setitem__("format", "csfs-folder-2")),
        ("entries_not_an_object", "entries is a list", lambda m: m.__setitem__("entries", [])),
        ("path_too_deep", "a path of 65 names (every folder above it listed)", deep_path),
    ]
    for name, description, edit in cases:
        m = json.loads(json.dumps(good))
        edit(m)
        e, p = encrypt(text(m), ["alice"], "folder listing " + name, shift=16, context=ctx)
        write("folder_listing_" + name, "format", description, "alice", e, p, None, ctx,
              "folder-listing")
    version_zero = Context(KIND_LISTING, vault_id, link, 0)
    e, p = encrypt(plain, ["alice"], "folder listing version zero", shift=16,
                   context=version_zero)
    write("folder_listing_version_zero", "format", "listing version 0 (the first is 1)",
          "alice", e, p, None, version_zero, "folder-listing")


if __name__ == "__main__":
    main()
