"""Identities (private) and recipients (public): generation, PEM files, fingerprints.

Protects against: key files readable by other local users (mode 0600, written
atomically), weak passphrase encryption (PBKDF2 rounds well above the
library's default), and a key silently swapped for another kind (the PEM
block sequence must match exactly one kind, docs/format.md 1.2).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, padding
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from csfs.errors import KeyFileError

KeyKind = Literal["x25519", "p256", "mlkem768x25519"]
KEM_IDS: dict[str, int] = {"x25519": 0x0020, "p256": 0x0010, "mlkem768x25519": 0x647A}
HPKE_KEMS = {
    0x0020: hpke.KEM.X25519,
    0x0010: hpke.KEM.P256,
    0x647A: hpke.KEM.MLKEM768_X25519,
}
PBKDF2_ROUNDS = 300_000
SELF_SIGNATURE_LABEL = "CSFS KEY SIGNATURE"
SELF_SIGNATURE_DOMAIN = b"csfs v1 key self-signature\0"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)

PublicKemKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey | hpke.MLKEM768X25519PublicKey
PrivateKemKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | hpke.MLKEM768X25519PrivateKey


def _raw_x25519(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


@dataclass(frozen=True, eq=False)
class Recipient:
    """A public identity: who can be encrypted to, and whose signatures to accept."""

    kind: KeyKind
    kem_parts: tuple[object, ...]  # public key objects, in PEM block order
    verify_key: ed25519.Ed25519PublicKey

    @property
    def kem_id(self) -> int:
        return KEM_IDS[self.kind]

    @property
    def hpke_public(self) -> PublicKemKey:
        if self.kind == "mlkem768x25519":
            mk, xk = self.kem_parts
            assert isinstance(mk, mlkem.MLKEM768PublicKey)
            assert isinstance(xk, x25519.X25519PublicKey)
            return hpke.MLKEM768X25519PublicKey(mk, xk)
        key = self.kem_parts[0]
        assert isinstance(key, x25519.X25519PublicKey | ec.EllipticCurvePublicKey)
        return key

    @property
    def kem_public_bytes(self) -> bytes:
        if self.kind == "x25519":
            key = self.kem_parts[0]
            assert isinstance(key, x25519.X25519PublicKey)
            return _raw_x25519(key)
        if self.kind == "p256":
            key = self.kem_parts[0]
            assert isinstance(key, ec.EllipticCurvePublicKey)
            return key.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        mk, xk = self.kem_parts
        assert isinstance(mk, mlkem.MLKEM768PublicKey)
        assert isinstance(xk, x25519.X25519PublicKey)
        return mk.public_bytes_raw() + _raw_x25519(xk)

    @property
    def verify_key_bytes(self) -> bytes:
        return self.verify_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)

    @property
    def rid(self) -> bytes:
        return hashlib.sha256(
            b"csfs v1 recipient\0"
            + self.kem_id.to_bytes(2, "big")
            + self.kem_public_bytes
            + self.verify_key_bytes
        ).digest()

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + base64.urlsafe_b64encode(self.rid).rstrip(b"=").decode()

    def to_pem(self) -> bytes:
        parts = [*self.kem_parts, self.verify_key]
        return b"".join(
            p.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
            for p in parts
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipient) and self.rid == other.rid

    def __hash__(self) -> int:
        return hash(self.rid)


@dataclass(frozen=True, eq=False)
class Identity:
    """A private identity: opens envelopes wrapped to it and signs what it writes."""

    kind: KeyKind
    kem_parts: tuple[object, ...]
    signing_key: ed25519.Ed25519PrivateKey

    @property
    def hpke_private(self) -> PrivateKemKey:
        if self.kind == "mlkem768x25519":
            mk, xk = self.kem_parts
            assert isinstance(mk, mlkem.MLKEM768PrivateKey)
            assert isinstance(xk, x25519.X25519PrivateKey)
            return hpke.MLKEM768X25519PrivateKey(mk, xk)
        key = self.kem_parts[0]
        assert isinstance(key, x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey)
        return key

    @property
    def recipient(self) -> Recipient:
        return Recipient(
            self.kind,
            tuple(k.public_key() for k in self.kem_parts),  # type: ignore[attr-defined]
            self.signing_key.public_key(),
        )

    def to_pem(self, passphrase: bytes | None) -> bytes:
        if passphrase is not None and not passphrase:
            raise KeyFileError("empty passphrase", hint="use --no-passphrase for no encryption")
        out = []
        for part in [*self.kem_parts, self.signing_key]:
            der = part.private_bytes(  # type: ignore[attr-defined]
                ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
            )
            if passphrase is None:
                out.append(_pem("PRIVATE KEY", der))
            else:
                out.append(_pem("ENCRYPTED PRIVATE KEY", pkcs8_encrypt(der, passphrase)))
        return b"".join(out)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"".join(
        [
            f"-----BEGIN {label}-----\n".encode(),
            *(ln + b"\n" for ln in lines),
            f"-----END {label}-----\n".encode(),
        ]
    )


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _oid(dotted: str) -> bytes:
    nums = [int(x) for x in dotted.split(".")]
    body = bytearray([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        enc = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            enc.append(0x80 | (n & 0x7F))
        body += bytes(reversed(enc))
    return _der(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def pkcs8_encrypt(private_key_info: bytes, passphrase: bytes) -> bytes:
    """EncryptedPrivateKeyInfo, PBES2 (RFC 8018): PBKDF2-HMAC-SHA256 and AES-256-CBC.

    Written here because cryptography's PKCS#8 encryption fixes PBKDF2 at
    2,048 rounds; this uses PBKDF2_ROUNDS. Readers (cryptography, OpenSSL)
    take the parameters from the structure.
    """
    salt, iv = os.urandom(16), os.urandom(16)
    kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, PBKDF2_ROUNDS).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(private_key_info) + padder.finalize()
    enc = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    rounds = PBKDF2_ROUNDS.to_bytes((PBKDF2_ROUNDS.bit_length() + 8) // 8, "big")
    pbkdf2 = _seq(
        _oid("1.2.840.113549.1.5.12"),
        _seq(_der(0x04, salt), _der(0x02, rounds), _seq(_oid("1.2.840.113549.2.9"), b"\x05\x00")),
    )
    aes = _seq(_oid("2.16.840.1.101.3.4.1.42"), _der(0x04, iv))
    algorithm = _seq(_oid("1.2.840.113549.1.5.13"), _seq(pbkdf2, aes))
    return _seq(algorithm, _der(0x04, ciphertext))


def generate_identity(kind: KeyKind = "x25519") -> Identity:
    parts: tuple[object, ...]
    if kind == "x25519":
        parts = (x25519.X25519PrivateKey.generate(),)
    elif kind == "p256":
        parts = (ec.generate_private_key(ec.SECP256R1()),)
    elif kind == "mlkem768x25519":
        parts = (mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    return Identity(kind, parts, ed25519.Ed25519PrivateKey.generate())


def _kind_of(parts: list[object]) -> KeyKind:
    """Recognise the identity kind from the algorithms of the PEM blocks (format.md 1.2)."""
    sig = ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey
    xk = x25519.X25519PrivateKey | x25519.X25519PublicKey
    mk = mlkem.MLKEM768PrivateKey | mlkem.MLKEM768PublicKey
    ek = ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey
    if len(parts) == 2 and isinstance(parts[1], sig):
        if isinstance(parts[0], xk):
            return "x25519"
        if isinstance(parts[0], ek) and isinstance(parts[0].curve, ec.SECP256R1):
            return "p256"
    if (
        len(parts) == 3
        and isinstance(parts[0], mk)
        and isinstance(parts[1], xk)
        and isinstance(parts[2], sig)
    ):
        return "mlkem768x25519"
    raise KeyFileError("not a csfs key file: unexpected sequence of key algorithms")


def _blocks(data: bytes, what: str) -> list[bytes]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFileError(f"no PEM blocks in {what}")
    return blocks


def load_identity_pem(data: bytes, passphrase: bytes | None, what: str = "key file") -> Identity:
    parts: list[object] = []
    blocks = _blocks(data, what)
    labels = [block.split(b"\n", 1)[0] for block in blocks]
    if not any(b"PRIVATE KEY" in label for label in labels) and any(
        b"PUBLIC KEY" in label or SELF_SIGNATURE_LABEL.encode() in label for label in labels
    ):
        raise KeyFileError(
            f"{what} is a public key file, not a private key",
            hint="give your private key (NAME_private_key.pem, made by `csfs keygen`)",
        )
    for block in blocks:
        encrypted = b"ENCRYPTED PRIVATE KEY" in block.split(b"\n", 1)[0]
        if encrypted and passphrase is None:
            raise KeyFileError(
                f"{what} is protected by a passphrase",
                hint="set CSFS_PASSPHRASE, pass --passphrase-file, or run on a terminal",
            )
        try:
            parts.append(ser.load_pem_private_key(block, passphrase if encrypted else None))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            if encrypted:
                raise KeyFileError(f"cannot unlock {what}: wrong passphrase?") from exc
            raise KeyFileError(f"{what} holds an unreadable private key block") from exc
    kind = _kind_of(parts)
    signing = parts[-1]
    assert isinstance(signing, ed25519.Ed25519PrivateKey)
    return Identity(kind, tuple(parts[:-1]), signing)


def public_key_file(identity: Identity) -> bytes:
    """The public key file text: the PUBLIC KEY blocks plus the self-signature (1.2)."""
    recipient = identity.recipient
    signature = identity.signing_key.sign(SELF_SIGNATURE_DOMAIN + recipient.rid)
    return recipient.to_pem() + _pem(SELF_SIGNATURE_LABEL, signature)


def load_recipient_pem(
    data: bytes, what: str = "public key file", *, require_self_signature: bool = False
) -> Recipient:
    parts: list[object] = []
    signature: bytes | None = None
    for block in _blocks(data, what):
        if signature is not None:
            raise KeyFileError(f"{what}: nothing may follow its self-signature block")
        if SELF_SIGNATURE_LABEL.encode() in block.split(b"\n", 1)[0]:
            body = b"".join(block.splitlines()[1:-1])
            try:
                signature = base64.b64decode(body, validate=True)
            except ValueError:
                raise KeyFileError(f"{what} has an unreadable self-signature block") from None
            continue
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            raise KeyFileError(f"{what} holds a private key where a public key was expected")
        try:
            parts.append(ser.load_pem_public_key(block))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{what} holds an unreadable public key block") from exc
    kind = _kind_of(parts)
    verify = parts[-1]
    assert isinstance(verify, ed25519.Ed25519PublicKey)
    recipient = Recipient(kind, tuple(parts[:-1]), verify)
    if signature is not None:
        try:
            verify.verify(signature, SELF_SIGNATURE_DOMAIN + recipient.rid)
        except InvalidSignature:
            raise KeyFileError(
                f"{what}: its self-signature does not verify (the key file was altered)"
            ) from None
    elif require_self_signature:
        raise KeyFileError(
            f"{what} has no self-signature",
            hint="its owner can re-export it with `csfs pubkey --key THEIR_PRIVATE_KEY`",
        )
    return recipient


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except FileNotFoundError:
        raise KeyFileError(
            f"key file not found: {path}", hint="create one with `csfs keygen`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def load_recipient(path: str) -> Recipient:
    return load_recipient_pem(read_key_file(path), what=path)


def load_identity(path: str, passphrase: bytes | None) -> Identity:
    return load_identity_pem(read_key_file(path), passphrase, what=path)


def loose_permissions(path: str) -> int | None:
    """The permission bits of a private key file that its group or others may use,
    or None if only its owner can. The caller decides how loudly to say so."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None  # reading it will report the problem
    return mode if mode & 0o077 else None


def key_file_is_encrypted(path: str) -> bool:
    return b"ENCRYPTED PRIVATE KEY" in read_key_file(path)


def write_exclusive(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` and ``data``; refuse to overwrite anything."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # umask may have narrowed or widened nothing; be explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def key_paths(directory: str, name: str) -> tuple[str, str]:
    return (
        os.path.join(directory, f"{name}_private_key.pem"),
        os.path.join(directory, f"{name}_public_key.pem"),
    )


def save_identity(
    identity: Identity, directory: str, name: str, passphrase: bytes | None
) -> tuple[str, str]:
    """Write NAME_private_key.pem (0600) and NAME_public_key.pem (0644) into directory."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise KeyFileError(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-'")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    priv_path, pub_path = key_paths(directory, name)
    for p in (priv_path, pub_path):
        if os.path.lexists(p):
            raise KeyFileError(
                f"refusing to overwrite existing key {p}", hint="choose another --name or --dir"
            )
    private_pem = identity.to_pem(passphrase)
    try:
        write_exclusive(priv_path, private_pem, 0o600)
        write_exclusive(pub_path, public_key_file(identity), 0o644)
    except FileExistsError:
        raise KeyFileError(f"refusing to overwrite existing key in {directory}") from None
    return priv_path, pub_path
