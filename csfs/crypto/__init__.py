"""Cryptography for csfs: the only package that imports cryptography.hazmat."""

from csfs.crypto.envelope import Context, Envelope, parse_envelope
from csfs.crypto.keys import (
    Identity,
    Recipient,
    generate_identity,
    load_identity,
    load_recipient,
    save_identity,
)
from csfs.crypto.sealed import decrypt_stream, encrypt_stream, open_envelope
from csfs.crypto.stream import padme, payload_size

__all__ = [
    "Context",
    "Envelope",
    "Identity",
    "Recipient",
    "decrypt_stream",
    "encrypt_stream",
    "generate_identity",
    "load_identity",
    "load_recipient",
    "open_envelope",
    "padme",
    "parse_envelope",
    "payload_size",
    "save_identity",
]
