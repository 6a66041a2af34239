"""An independent reader of csfs offline files, written only from docs/format.md.

It deliberately imports nothing from the csfs package: it exists to cross-check
the implementation against the specification (sections 1-4, and the envelope
contexts of vault objects, 3.2 and 5.3-5.4; delta payloads, 2.6, given the
payloads of their sources). Section numbers in
comments refer to docs/format.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class FormatFailure(Exception):  # noqa: N818 (names fixed by the brief)
    """Malformed input (vector `expect: format`)."""


class AuthFailure(Exception):  # noqa: N818 (names fixed by the brief)
    """Integrity or authenticity failure (vector `expect: authentication`)."""


class NoMatch(Exception):  # noqa: N818 (names fixed by the brief)
    """No stanza opens under the given identity (vector `expect: no match`)."""


# 1.1: kem_id -> (HPKE KEM, enc length)
KEMS = {
    0x0020: (hpke.KEM.X25519, 32),
    0x0010: (hpke.KEM.P256, 65),
    0x647A: (hpke.KEM.MLKEM768_X25519, 1120),
}
MAX_ENVELOPE = 2 * 1024 * 1024
STANZAS_AT = 139  # 3.1: offset of the first stanza
MAX_LENGTH = 2**48  # 3.4: a larger unsealed L is a format error
PEM_BLOCK = re.compile(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", re.S)


def padme(n: int) -> int:
    """2.3."""
    if n < 2:
        return n
    e = n.bit_length() - 1  # floor(log2(n))
    s = e.bit_length()  # floor(log2(e)) + 1
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def chunk_count(p: int, c: int) -> int:
    """2.4: n = max(1, ceil(P / C))."""
    return max(1, -(-p // c))


def payload_size(p: int, c: int) -> int:
    """2.4: size(P) = 32 + P + 16 n."""
    return 32 + p + 16 * chunk_count(p, c)


def load_identity(pem: bytes) -> tuple[int, object]:
    """1.2: an unencrypted key file -> (kem_id, HPKE private key)."""
    keys = [serialization.load_pem_private_key(b, password=None) for b in PEM_BLOCK.findall(pem)]
    if len(keys) == 2 and isinstance(keys[1], ed25519.Ed25519PrivateKey):
        if isinstance(keys[0], x25519.X25519PrivateKey):
            return 0x0020, keys[0]
        if isinstance(keys[0], ec.EllipticCurvePrivateKey) and keys[0].curve.name == "secp256r1":
            return 0x0010, keys[0]
    if (
        len(keys) == 3
        and isinstance(keys[0], mlkem.MLKEM768PrivateKey)
        and isinstance(keys[1], x25519.X25519PrivateKey)
        and isinstance(keys[2], ed25519.Ed25519PrivateKey)
    ):
        return 0x647A, hpke.MLKEM768X25519PrivateKey(keys[0], keys[1])
    raise ValueError("not a csfs identity: " + ", ".join(type(k).__name__ for k in keys))


def hkdf(k: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(k)


def parse_envelope(env: bytes) -> dict:
    """3.1-3.3 (step 1 of 3.6): every failure here is a format error."""
    if len(env) > MAX_ENVELOPE:
        raise FormatFailure("envelope larger than 2 MiB")
    if len(env) < STANZAS_AT + 96:
        raise FormatFailure("short envelope")
    if env[0:8] != b"csfs-ev1":
        raise FormatFailure("bad envelope magic")
    # 3.1 layout: magic 0/8, context 8/41, header_hash 49/32, sealed_length 81/24,
    # commitment 105/32, count 137/2, stanzas from 139.
    context, header_hash = env[8:49], env[49:81]
    sealed_length = env[81:105]
    commitment = env[105:137]
    (count,) = struct.unpack(">H", env[137:139])
    if context[0] not in (1, 2, 3, 4, 5, 6):  # 3.2: kinds 4 to 6 are used by 7.2, 7.4, 7.8
        raise FormatFailure("unknown context kind")
    if int.from_bytes(context[33:41], "big") >= 2**63:  # 3.2
        raise FormatFailure("context version 2^63 or more")
    if not 1 <= count <= 1024:
        raise FormatFailure("stanza count out of range")
    stanzas, pos = [], STANZAS_AT
    for _ in range(count):
        if pos + 4 > len(env):
            raise FormatFailure("short envelope")
        kem_id, sealed_len = struct.unpack(">HH", env[pos : pos + 4])
        if kem_id not in KEMS:
            raise FormatFailure("unknown kem_id")
        if sealed_len != KEMS[kem_id][1] + 48:
            raise FormatFailure("wrong sealed_len")
        sealed = env[pos + 4 : pos + 4 + sealed_len]
        if len(sealed) != sealed_len:
            raise FormatFailure("short envelope")
        stanzas.append((kem_id, sealed))
        pos += 4 + sealed_len
    if len(env) - pos < 96:
        raise FormatFailure("short envelope")
    if len(env) - pos > 96:
        raise FormatFailure("trailing bytes after the signature")
    return dict(
        context=context,
        header_hash=header_hash,
        sealed_length=sealed_length,
        commitment=commitment,
        stanzas=stanzas,
        signer=env[pos : pos + 32],
        signed=env[: pos + 32],
        signature=env[pos + 32 :],
    )


MAX_EXTENTS = 2**20


def map_block(k: int) -> int:
    """2.5: size of the encrypted map of k extents."""
    return padme(8 + 16 * k) + 16


MAX_SOURCES = 8


def delta_map_block(s: int, k: int) -> int:
    """2.6: size of the encrypted map of s sources and k extents."""
    return padme(16 + 80 * s + 24 * k) + 16


def parse_header(payload: bytes) -> tuple[bytes, int, bytes, int]:
    """2.1, 2.5 and 2.6 -> (header, chunk size C, payload_id, map_size (0: dense));
    failures are format errors. A delta's magic is header[0:8] == b"csfs-pl3"."""
    header = payload[:32]
    if len(header) != 32 or header[0:8] not in (b"csfs-pl1", b"csfs-pl2", b"csfs-pl3"):
        raise FormatFailure("bad payload header")
    if not 12 <= header[8] <= 20:
        raise FormatFailure("chunk_shift out of range")
    if header[0:8] == b"csfs-pl1":
        if any(header[9:16]):
            raise FormatFailure("non-zero reserved byte")
        return header, 1 << header[8], header[16:32], 0
    if any(header[9:12]):
        raise FormatFailure("non-zero reserved byte")
    map_size = int.from_bytes(header[12:16], "big")
    if header[0:8] == b"csfs-pl3":
        if not 136 <= map_size <= delta_map_block(MAX_SOURCES, MAX_EXTENTS):
            raise FormatFailure("delta map_size out of range")
    elif not 32 <= map_size <= map_block(MAX_EXTENTS):
        raise FormatFailure("map_size out of range")
    return header, 1 << header[8], header[16:32], map_size


def read_map(aead: AESGCM, block: bytes, h: bytes, length: int, n: int) -> list[range]:
    """2.5: the present chunks, as ranges; every breach after the tag is an
    authentication failure."""
    try:
        plain = aead.decrypt(bytes(11) + b"\x02", block, h + length.to_bytes(8, "big"))
    except InvalidTag as exc:
        raise AuthFailure("chunk map does not authenticate") from exc
    k = int.from_bytes(plain[:8], "big")
    if not 1 <= k <= MAX_EXTENTS or len(block) != map_block(k):
        raise AuthFailure("map size does not match its extent count")
    if any(plain[8 + 16 * k :]):
        raise AuthFailure("non-zero map padding")
    runs: list[range] = []
    for j in range(k):
        first = int.from_bytes(plain[8 + 16 * j : 16 + 16 * j], "big")
        count = int.from_bytes(plain[16 + 16 * j : 24 + 16 * j], "big")
        if count < 1 or (runs and first <= runs[-1].stop):
            raise AuthFailure("extents empty, unordered, overlapping or touching")
        runs.append(range(first, first + count))
    if runs[-1].stop != n:
        raise AuthFailure("the last chunk is not present")
    return runs


def read_delta_map(
    aead: AESGCM, block: bytes, h: bytes, length: int, n: int, c: int, own_version: int
) -> tuple[list[tuple[int, int, bytes, bytes]], dict[int, int]]:
    """2.6 -> (sources as (version, length, header_hash, key), chunk -> origin for every
    chunk that is not a hole); every breach after the tag is an authentication failure."""
    try:
        plain = aead.decrypt(bytes(11) + b"\x02", block, h + length.to_bytes(8, "big"))
    except InvalidTag as exc:
        raise AuthFailure("delta map does not authenticate") from exc

    def num(at: int) -> int:
        return int.from_bytes(plain[at : at + 8], "big")

    s, k = num(0), num(8)
    if not 1 <= s <= MAX_SOURCES or not 1 <= k <= MAX_EXTENTS:
        raise AuthFailure("source or extent count out of range")
    if len(block) != delta_map_block(s, k):
        raise AuthFailure("map size does not match its counts")
    if any(plain[16 + 80 * s + 24 * k :]):
        raise AuthFailure("non-zero map padding")
    sources = []
    for j in range(s):
        at = 16 + 80 * j
        version, src_len = num(at), num(at + 8)
        if not 1 <= version < 2**63 or version == own_version:
            raise AuthFailure("bad source version")
        if sources and version <= sources[-1][0]:
            raise AuthFailure("source versions not strictly increasing")
        if src_len > MAX_LENGTH:
            raise AuthFailure("source length above 2^48")
        sources.append((version, src_len, plain[at + 16 : at + 48], plain[at + 48 : at + 80]))
    origin_of: dict[int, int] = {}
    prev_stop, prev_origin = None, None
    for j in range(k):
        at = 16 + 80 * s + 24 * j
        first, count, origin = num(at), num(at + 8), num(at + 16)
        if count < 1 or origin > s:
            raise AuthFailure("empty extent or unknown origin")
        if prev_stop is not None and (
            first < prev_stop or (first == prev_stop and origin == prev_origin)
        ):
            raise AuthFailure("extents unordered, overlapping, or touching with one origin")
        if origin and first + count > chunk_count(padme(sources[origin - 1][1]), c) - 1:
            raise AuthFailure("reference beyond the source's chunks or to its last chunk")
        for i in range(first, first + count):
            origin_of[i] = origin
        prev_stop, prev_origin = first + count, origin
    if prev_stop != n or prev_origin != 0:
        raise AuthFailure("the last chunk is not stored in the delta")
    if set(origin_of.values()) - {0} != set(range(1, s + 1)):
        raise AuthFailure("a source is never used")
    return sources, origin_of


def source_chunk(source: tuple[int, int, bytes, bytes], payload: bytes, i: int, c: int) -> bytes:
    """2.6 steps 1-4: the C bytes of chunk i, stored in the source's own payload."""
    version, src_len, src_hash, key = source
    header = payload[:32]
    if len(header) != 32 or not hmac.compare_digest(hashlib.sha256(header).digest(), src_hash):
        raise AuthFailure("source header hash differs")
    try:
        _, src_c, src_pid, src_map = parse_header(header)
    except FormatFailure as exc:
        raise AuthFailure("source header is not a payload header") from exc
    if src_c != c:
        raise AuthFailure("source has another chunk size")
    aead = AESGCM(hkdf(key, src_pid, b"csfs v1 payload"))
    n_src = chunk_count(padme(src_len), c)
    if header[0:8] == b"csfs-pl1":
        stored = list(range(n_src))
    elif header[0:8] == b"csfs-pl2":
        runs = read_map(aead, payload[32 : 32 + src_map], src_hash, src_len, n_src)
        stored = [x for r in runs for x in r]
    else:
        _, origins = read_delta_map(
            aead, payload[32 : 32 + src_map], src_hash, src_len, n_src, c, version
        )
        stored = sorted(x for x, o in origins.items() if o == 0)
    if i not in stored or i >= n_src - 1:
        raise AuthFailure("the source does not store that chunk")
    at = 32 + src_map + stored.index(i) * (c + 16)
    try:
        plain = aead.decrypt(i.to_bytes(11, "big") + b"\x00", payload[at : at + c + 16], src_hash)
    except InvalidTag as exc:
        raise AuthFailure(f"source chunk {i} does not authenticate") from exc
    if any(plain[max(0, src_len - i * c) :]):
        raise AuthFailure("non-zero padding in the source")
    return plain


def decrypt(
    envelope: bytes,
    payload: bytes,
    identity_pem: bytes,
    context: bytes | None = None,
    signers: set[bytes] | None = None,
    sources: dict[int, bytes] | None = None,
) -> bytes:
    """3.6. `context`: the expected context (default: an offline file, 4).
    `signers`: if given, the accepted envelope signers (3.5, 5.3); otherwise the
    signer is only reported policy and any valid signature passes. `sources`:
    payloads of the same file by version, where a delta (2.6) finds c/F/V."""
    kem_id, private_key = load_identity(identity_pem)
    # 3.6 step 1. The payload header is parsed here too: the spec does not say
    # where its format checks fall, but step 3 needs its fields.
    env = parse_envelope(envelope)
    header, c, payload_id, map_size = parse_header(payload)
    h = hashlib.sha256(header).digest()
    is_delta = header[0:8] == b"csfs-pl3"
    if is_delta and (context is None or context[0] != 2):
        raise FormatFailure("a delta payload outside a vault file version")  # 2.6

    # Step 2: the signature (3.5).
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(env["signer"]).verify(
            env["signature"], b"csfs v1 envelope\0" + env["signed"]
        )
    except (InvalidSignature, ValueError) as exc:
        raise AuthFailure("bad envelope signature") from exc
    if signers is not None and env["signer"] not in signers:
        raise AuthFailure("envelope signer is not an accepted writer")

    # Step 3: context (3.2, section 4) and header hash.
    expected = context if context is not None else bytes([1]) + bytes(16) + payload_id + bytes(8)
    if not hmac.compare_digest(env["context"], expected):
        raise AuthFailure("envelope context does not match this payload")
    if not hmac.compare_digest(env["header_hash"], h):
        raise AuthFailure("header_hash does not match this payload")

    # Step 4: open the first stanza that opens (3.3, 3.4), then the commitment.
    suite = hpke.Suite(KEMS[kem_id][0], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    info = b"csfs v1 wrap\0" + env["context"] + env["header_hash"]
    k = None
    for stanza_kem, sealed in env["stanzas"]:
        if stanza_kem != kem_id:
            continue
        try:
            k = suite.decrypt(sealed, private_key, info=info)
            break
        except (InvalidTag, ValueError):
            continue
    if k is None:
        raise NoMatch("no stanza opens with this identity")
    if len(k) != 32:
        raise FormatFailure("wrapped content key is not 32 bytes")
    if not hmac.compare_digest(hkdf(k, payload_id, b"csfs v1 commitment"), env["commitment"]):
        raise AuthFailure("commitment mismatch")

    # Still step 4: unseal L (2.2 length_key, 3.4). H here is the hash of the
    # parsed header, equal to header_hash after step 3.
    try:
        sealed = AESGCM(hkdf(k, h, b"csfs v1 length")).decrypt(
            bytes(12), env["sealed_length"], env["context"]
        )
    except InvalidTag as exc:
        raise AuthFailure("sealed_length does not authenticate") from exc
    length = int.from_bytes(sealed, "big")  # 24 - 16 = 8 bytes, always
    if length > MAX_LENGTH:
        raise FormatFailure("plaintext length above 2^48")

    # Step 5: payload size, then chunks in order (2.2-2.4; 2.5 if sparse).
    p = padme(length)
    n = chunk_count(p, c)
    aead = AESGCM(hkdf(k, payload_id, b"csfs v1 payload"))
    last_len = p - (n - 1) * c
    origin_of: dict[int, int] = {}
    delta_sources: list[tuple[int, int, bytes, bytes]] = []
    if is_delta:
        assert context is not None
        own = int.from_bytes(context[33:41], "big")
        delta_sources, origin_of = read_delta_map(
            aead, payload[32 : 32 + map_size], h, length, n, c, own
        )
        stored = sum(1 for o in origin_of.values() if o == 0)
        if len(payload) != 32 + map_size + (stored - 1) * (c + 16) + last_len + 16:
            raise AuthFailure("delta payload size does not match its map")
        present = {i for i, o in origin_of.items() if o == 0}
    elif map_size:
        runs = read_map(aead, payload[32 : 32 + map_size], h, length, n)
        stored = sum(len(r) for r in runs)
        if len(payload) != 32 + map_size + (stored - 1) * (c + 16) + last_len + 16:
            raise AuthFailure("sparse payload size does not match its map")
        present = {i for r in runs for i in r}
    else:
        if len(payload) != payload_size(p, c):
            raise AuthFailure("payload size is not size(padme(L))")
        present = set(range(n))
    out = bytearray()
    start = 32 + map_size
    for i in range(n):
        last = i == n - 1
        size = last_len if last else c
        if origin_of.get(i, 0) > 0:
            src = delta_sources[origin_of[i] - 1]
            if sources is None or src[0] not in sources:
                raise KeyError(f"source c/F/{src[0]:016x} is missing")
            out += source_chunk(src, sources[src[0]], i, c)
            continue
        if i not in present:
            out += bytes(size)  # a hole the writer meant: the map says so
            continue
        end = start + size + 16
        nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        aad = h + length.to_bytes(8, "big") if last else h
        try:
            out += aead.decrypt(nonce, payload[start:end], aad)
        except InvalidTag as exc:
            raise AuthFailure(f"chunk {i} does not authenticate") from exc
        start = end
    if any(out[length:]):
        raise AuthFailure("non-zero padding")
    return bytes(out[:length])


# Section 5: enough of the vault to list a directory and read a file from the
# objects of a store. Store access is left to the caller: `get(key)` returns the
# bytes of one object key (5, table) or raises KeyError.

VAULT_HEADER_DOMAIN = b"csfs v1 vault header\0"
MAX_BLOB = 2**20


def parse_signed_blob(blob: bytes, domain: bytes) -> tuple[bytes, bytes]:
    """5.1 -> (payload, signer); format errors, then the signature."""
    if len(blob) < 4 + 96:
        raise FormatFailure("short signed blob")
    (n,) = struct.unpack(">I", blob[:4])
    if n > MAX_BLOB:
        raise FormatFailure("signed blob payload above 2^20")
    if len(blob) != 4 + n + 96:
        raise FormatFailure("signed blob length does not match n")
    payload, signer, signature = blob[4 : 4 + n], blob[4 + n : 4 + n + 32], blob[4 + n + 32 :]
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(signer).verify(
            signature, domain + blob[: 4 + n + 32]
        )
    except (InvalidSignature, ValueError) as exc:
        raise AuthFailure("bad blob signature") from exc
    return payload, signer


def parse_vault_header(blob: bytes) -> dict:
    """5.2: the signed vault header; the signer must be the owner."""
    import json

    payload, signer = parse_signed_blob(blob, VAULT_HEADER_DOMAIN)
    try:
        header = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise FormatFailure("vault header is not JSON") from exc
    if not isinstance(header, dict) or header.get("format") != "csfs-vault-1":
        raise FormatFailure("not a csfs-vault-1 header")
    if set(header) != {"format", "owner", "root_id", "vault_id"}:
        raise FormatFailure("vault header keys")
    if not all(isinstance(header[k], str) for k in ("owner", "root_id", "vault_id")):
        raise FormatFailure("vault header value types")
    if not re.fullmatch("[0-9a-f]{64}", header["owner"]):
        raise FormatFailure("vault header owner")
    if not all(re.fullmatch("[0-9a-f]{32}", header[k]) for k in ("root_id", "vault_id")):
        raise FormatFailure("vault header ids")
    if bytes.fromhex(header["owner"]) != signer:
        raise AuthFailure("vault header not signed by its owner")
    return header


def context_bytes(kind: int, vault_id: str, node_id: str, version: int) -> bytes:
    """3.2, from the hex ids of section 5."""
    return (
        bytes([kind])
        + bytes.fromhex(vault_id)
        + bytes.fromhex(node_id)
        + version.to_bytes(8, "big")
    )


def read_manifest(obj: bytes, vault: dict, dir_id: str, identity_pem: bytes) -> tuple[int, dict]:
    """5.3 -> (manifest version, manifest JSON).

    The spec does not say where the expected `version` of a kind-3 context comes
    from (a "d" entry carries none): it is taken from the envelope here, and the
    caller must apply the rollback rule to it.
    """

    if len(obj) < 4:
        raise FormatFailure("short manifest object")
    (env_len,) = struct.unpack(">I", obj[:4])
    if env_len > MAX_ENVELOPE or 4 + env_len > len(obj):
        raise FormatFailure("manifest env_len out of range")
    envelope, payload = obj[4 : 4 + env_len], obj[4 + env_len :]
    version = int.from_bytes(envelope[41:49], "big") if len(envelope) >= 49 else 0
    expected = context_bytes(3, vault["vault_id"], dir_id, version)
    plaintext = decrypt(
        envelope, payload, identity_pem, expected, signers={bytes.fromhex(vault["owner"])}
    )
    return version, parse_manifest(plaintext, dir_id, version)


ENTRY_KEYS = {
    "f": {"id", "type", "mode", "mtime_ns", "size", "version"},
    "d": {"id", "type", "mode", "mtime_ns"},
    "l": {"id", "type", "mode", "mtime_ns", "target"},
    "p": {"id", "type", "mode", "mtime_ns"},
    "s": {"id", "type", "mode", "mtime_ns"},
    "c": {"id", "type", "mode", "mtime_ns", "rdev"},
    "b": {"id", "type", "mode", "mtime_ns", "rdev"},
}
ENTRY_OPTIONAL = {"uid", "gid", "atime_ns", "ctime_ns", "xattrs"}
MANIFEST_KEYS = {"format", "dir_id", "mode", "mtime_ns", "readers", "writers", "entries"}
MANIFEST_OPTIONAL = {"ctime_ns", "atime_ns", "uid", "gid", "removed"}


def _int(value: object, low: int, high: int) -> int:
    # 5.3: a JSON number without fraction or exponent; bool is not one.
    if type(value) is not int or not low <= value <= high:
        raise FormatFailure(f"not an integer in [{low}, {high}]: {value!r}")
    return value


def _unique(pairs: list) -> dict:
    if len({k for k, _ in pairs}) != len(pairs):
        raise FormatFailure("duplicate key")
    return dict(pairs)


def parse_manifest(plaintext: bytes, dir_id: str, version: int) -> dict:
    """5.3, strictly: every rule of the list there, in no particular order."""
    import json

    if len(plaintext) > 32 * 2**20:
        raise FormatFailure("manifest above 32 MiB")
    if not 1 <= version < 2**63:
        raise FormatFailure("manifest version out of range")
    try:
        m = json.loads(plaintext.decode("utf-8"), object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:
        raise FormatFailure("manifest is not JSON (or nested too deeply)") from exc
    if not isinstance(m, dict) or m.get("format") != "csfs-dir-1" \
            or not MANIFEST_KEYS <= set(m) <= MANIFEST_KEYS | MANIFEST_OPTIONAL:
        raise FormatFailure("manifest keys")
    for key in ("uid", "gid"):
        if key in m:
            _int(m[key], 0, 4294967294)
    for key in ("ctime_ns", "atime_ns"):
        if key in m:
            _int(m[key], 0, 2**63 - 1)
    _int(m["mode"], 0, 0o7777)
    _int(m["mtime_ns"], -(2**63), 2**63 - 1)
    if "removed" in m:  # 5.3: {"name", "parent"} of a folder an rmdir removed
        mark = m["removed"]
        if not isinstance(mark, dict) or set(mark) != {"name", "parent"}:
            raise FormatFailure("removed keys")
        if not isinstance(mark["parent"], str) or not re.fullmatch("[0-9a-f]{32}", mark["parent"]):
            raise FormatFailure("removed parent")
        n = mark["name"]
        if not isinstance(n, str) or not 0 < len(n.encode("utf-8")) <= 255 \
                or n in (".", "..") or "/" in n or "\0" in n:
            raise FormatFailure("removed name")
    readers, entries = m["readers"], m["entries"]
    if not isinstance(readers, list) or not 1 <= len(readers) <= 1024:
        raise FormatFailure("readers")
    if not all(isinstance(r, str) and 1 <= len(r) <= 16384 for r in readers):
        raise FormatFailure("reader")
    if m["writers"] != []:
        raise FormatFailure("writers is reserved")
    if not isinstance(entries, dict) or len(entries) > 100_000:
        raise FormatFailure("entries")
    for name, e in entries.items():
        raw = name.encode("utf-8")
        if not raw or len(raw) > 255 or name in (".", "..") or "/" in name or "\0" in name:
            raise FormatFailure("bad name")
        if not isinstance(e, dict) or e.get("type") not in ENTRY_KEYS:
            raise FormatFailure("entry type")
        if not ENTRY_KEYS[e["type"]] <= set(e) <= ENTRY_KEYS[e["type"]] | ENTRY_OPTIONAL:
            raise FormatFailure("entry keys")
        check_entry_metadata(e)
        if not isinstance(e["id"], str) or not re.fullmatch("[0-9a-f]{32}", e["id"]):
            raise FormatFailure("entry id")
        _int(e["mode"], 0, 0o7777)
        _int(e["mtime_ns"], -(2**63), 2**63 - 1)
        if e["type"] == "f":
            size, ver = _int(e["size"], 0, 2**48), _int(e["version"], 0, 2**63 - 1)
            if ver == 0 and size != 0:
                raise FormatFailure("empty file with a size")
        if e["type"] == "l":
            t = e["target"]
            if not isinstance(t, str) or not t or "\0" in t or len(t.encode("utf-8")) > 4095:
                raise FormatFailure("symlink target")
    if m["dir_id"] != dir_id:
        raise AuthFailure("manifest dir_id differs from its key")
    return m


def read_folder_listing(obj: bytes, vault_id: str, link: str, identity_pem: bytes,
                        owner: bytes) -> tuple[int, dict]:
    """7.8 -> (listing version, its items by path): a laid-out object (5.3) with
    context kind 6, node_id the link id, the version from the envelope itself."""
    if len(obj) < 4:
        raise FormatFailure("short listing object")
    (env_len,) = struct.unpack(">I", obj[:4])
    if env_len > MAX_ENVELOPE or 4 + env_len > len(obj):
        raise FormatFailure("listing env_len out of range")
    envelope, payload = obj[4 : 4 + env_len], obj[4 + env_len :]
    version = int.from_bytes(envelope[41:49], "big") if len(envelope) >= 49 else 0
    expected = context_bytes(6, vault_id, link, version)
    plaintext = decrypt(envelope, payload, identity_pem, expected, signers={owner})
    return version, parse_folder_listing(plaintext, link, version)


LISTED_FILE_KEYS = {"envelope", "mtime_ns", "node", "payload", "size", "type", "version"}


def _listed_url(value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 4096 \
            or not (value.startswith("https://") or value.startswith("http://")):
        raise FormatFailure("listing URL")


def parse_folder_listing(plaintext: bytes, link: str, version: int) -> dict:
    """7.8, strictly: every rule of the listing, then `link` against the context."""
    import json

    if len(plaintext) > 32 * 2**20:
        raise FormatFailure("listing above 32 MiB")
    if not 1 <= version < 2**63:
        raise FormatFailure("listing version out of range")
    try:
        body = json.loads(plaintext.decode("utf-8"), object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:
        raise FormatFailure("listing is not JSON (or nested too deeply)") from exc
    if not isinstance(body, dict) or body.get("format") != "csfs-folder-1" \
            or set(body) != {"entries", "format", "link", "made_ns"}:
        raise FormatFailure("listing keys")
    _int(body["made_ns"], 0, 2**63 - 1)
    if not isinstance(body["link"], str):
        raise FormatFailure("listing link")
    entries = body["entries"]
    if not isinstance(entries, dict) or len(entries) > 10_000:
        raise FormatFailure("listing entries")
    nodes = set()
    for path, item in entries.items():
        names = path.split("/")
        if len(path.encode("utf-8")) > 4096 or len(names) > 64:
            raise FormatFailure("listing path too long or deep")
        for name in names:
            raw = name.encode("utf-8")
            if not raw or len(raw) > 255 or name in (".", "..") or "\0" in name:
                raise FormatFailure("bad name in a listing path")
        if not isinstance(item, dict) or item.get("type") not in ("d", "f"):
            raise FormatFailure("listing item type")
        if item["type"] == "d":
            if set(item) != {"type"}:
                raise FormatFailure("listing folder keys")
            continue
        ver = _int(item.get("version"), 0, 2**63 - 1)
        if set(item) != (LISTED_FILE_KEYS if ver else LISTED_FILE_KEYS - {"envelope", "payload"}):
            raise FormatFailure("listing file keys")
        if _int(item["size"], 0, 2**48) and not ver:
            raise FormatFailure("empty listed file with a size")
        _int(item["mtime_ns"], -(2**63), 2**63 - 1)
        if not isinstance(item["node"], str) or not re.fullmatch("[0-9a-f]{32}", item["node"]):
            raise FormatFailure("listing node id")
        if item["node"] in nodes:
            raise FormatFailure("a file listed twice")
        nodes.add(item["node"])
        if ver:
            _listed_url(item["envelope"])
            _listed_url(item["payload"])
    for path in entries:
        parent = path.rpartition("/")[0]
        if parent and entries.get(parent, {}).get("type") != "d":
            raise FormatFailure("a listed item whose folder is not listed")
    if body["link"] != link:
        raise AuthFailure("listing link differs from its context")
    return entries


def read_file_version(get, vault: dict, entry: dict, identity_pem: bytes) -> bytes:
    """5.4: the plaintext of a file entry."""
    if entry["version"] == 0:
        return b""
    key = f"{entry['id']}/{entry['version']:016x}"
    expected = context_bytes(2, vault["vault_id"], entry["id"], entry["version"])
    plaintext = decrypt(
        get("k/" + key),
        get("c/" + key),
        identity_pem,
        expected,
        signers={bytes.fromhex(vault["owner"])},
    )
    if len(plaintext) != entry["size"]:
        raise AuthFailure("unsealed length differs from the entry's size")
    return plaintext


# 5.3: an entry's optional POSIX metadata.
ENTRY_TYPES = {"f", "d", "l", "p", "s", "c", "b"}
ENTRY_RANGES = {
    "uid": 4294967294,
    "gid": 4294967294,
    "atime_ns": (1 << 63) - 1,
    "ctime_ns": (1 << 63) - 1,
    "rdev": (1 << 32) - 1,
}


def check_entry_metadata(entry: dict) -> dict:
    """5.3 -> {"uid", "gid", "atime_ns", "ctime_ns", "rdev", "xattrs" (name -> bytes)};
    absent fields as None (rdev 0, xattrs {}). Raises FormatFailure on any broken rule."""
    import base64
    import binascii

    kind = entry.get("type")
    if kind not in ENTRY_TYPES:
        raise FormatFailure("unknown entry type")
    out: dict = {}
    for key, high in ENTRY_RANGES.items():
        value = entry.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= high):
            raise FormatFailure(f"{key} is not an integer in range")
        out[key] = value
    if (out["rdev"] is None) == (kind in ("c", "b")):
        raise FormatFailure("rdev on a non-device entry, or missing on a device")
    out["rdev"] = out["rdev"] or 0
    xattrs = entry.get("xattrs")
    out["xattrs"] = {}
    if xattrs is None:
        return out
    if type(xattrs) is not dict or not xattrs:
        raise FormatFailure("xattrs must be a non-empty object")
    total = 0
    for name, text in xattrs.items():
        raw_name = name.encode("utf-8")
        if not name.startswith("user.") or len(raw_name) == 5 or len(raw_name) > 255 \
                or "\0" in name:
            raise FormatFailure("bad xattr name")
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise FormatFailure("xattr value is not base64") from None
        if base64.b64encode(value).decode() != text or len(value) > 65536:
            raise FormatFailure("xattr value not canonical or too long")
        total += len(raw_name) + len(value)
        out["xattrs"][name] = value
    if total > 65536:
        raise FormatFailure("xattrs over 65536 bytes")
    return out
