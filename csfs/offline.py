"""Offline files: `FILE.enc` plus its sidecar envelope `FILE.key.enc` (docs/format.md 4).

Outputs are written to a temporary file beside the destination and renamed
into place only once everything verified, so a failure never leaves partial
plaintext (or a half-written ciphertext) under the destination name.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from csfs.crypto import Envelope, Identity, Recipient, decrypt_stream, encrypt_stream
from csfs.errors import UsageError

STDIO = "-"


def sidecar_for(payload_path: str) -> str:
    """The envelope path that `csfs encrypt` writes next to ``payload_path``."""
    if payload_path.endswith(".enc"):
        return payload_path[: -len(".enc")] + ".key.enc"
    return payload_path + ".key"


def find_sidecar(payload_path: str) -> str:
    """Locate the envelope of ``payload_path``: FILE.key.enc for FILE.enc, else OUT.key."""
    candidates = [sidecar_for(payload_path), payload_path + ".key"]
    for c in candidates:
        if os.path.exists(c):
            return c
    raise UsageError(
        f"no key envelope found for {payload_path} (looked for {' and '.join(candidates)})",
        hint="pass the envelope with --envelope PATH",
    )


@contextlib.contextmanager
def atomic_output(path: str, *, force: bool, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a temp file that replaces ``path`` only if the block succeeds."""
    if path == STDIO:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.lexists(path) and not force:
        raise UsageError(f"refusing to overwrite {path}", hint="remove it first, or pass --force")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".csfs-tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory") from None
    except PermissionError:
        raise UsageError(f"permission denied: {path}") from None
    with f:
        yield f


def encrypt_file(
    src: str,
    recipients: list[Recipient],
    *,
    out: str | None = None,
    envelope_out: str | None = None,
    signer: Identity | None = None,
    force: bool = False,
) -> tuple[str, str]:
    """Encrypt ``src`` to ``out`` (default SRC.enc) and its envelope; return both paths."""
    if out is None:
        if src == STDIO:
            raise UsageError("reading stdin needs an output: pass -o OUT (or -o - with --envelope)")
        out = src + ".enc"
    if envelope_out is None:
        if out == STDIO:
            raise UsageError("writing to stdout needs --envelope PATH for the key envelope")
        envelope_out = sidecar_for(out) if out == src + ".enc" else out + ".key"
    if envelope_out == STDIO:
        raise UsageError("the key envelope cannot go to stdout")
    with open_input(src) as fin, atomic_output(out, force=force, mode=0o644) as fout:
        envelope = encrypt_stream(fin, fout, recipients, signer)
        with atomic_output(envelope_out, force=force, mode=0o644) as fenv:
            fenv.write(envelope.encode())
    return out, envelope_out


def default_plain_name(src: str) -> str:
    if src.endswith(".enc"):
        return src[: -len(".enc")]
    raise UsageError(f"cannot guess an output name for {src}", hint="pass -o OUT")


def decrypt_file(
    src: str,
    identity: Identity,
    *,
    out: str | None = None,
    envelope: str | None = None,
    force: bool = False,
    allowed_signers: set[bytes] | None = None,
) -> tuple[str, Envelope]:
    """Decrypt ``src`` (with its sidecar) to ``out``; nothing is left at ``out`` on failure."""
    if envelope is None:
        if src == STDIO:
            raise UsageError("reading stdin needs --envelope PATH for the key envelope")
        envelope = find_sidecar(src)
    if out is None:
        out = STDIO if src == STDIO else default_plain_name(src)
    with open_input(envelope) as fenv:
        env_bytes = fenv.read(4 << 20)
    with open_input(src) as fin, atomic_output(out, force=force) as fout:
        env = decrypt_stream(fin, env_bytes, fout, identity, allowed_signers=allowed_signers)
    return out, env
