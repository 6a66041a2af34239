"""csfs: an encrypted filesystem for S3 buckets and local folders.

The public Python API; the `csfs` command is a thin layer over it.
"""

from csfs.crypto import (
    Identity,
    Recipient,
    decrypt_stream,
    encrypt_stream,
    generate_identity,
    load_identity,
    load_recipient,
)
from csfs.errors import CsfsError
from csfs.offline import decrypt_file, encrypt_file

__version__ = "0.1.0"

__all__ = [
    "CsfsError",
    "Identity",
    "Recipient",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "generate_identity",
    "load_identity",
    "load_recipient",
]
