"""Reads tests/vectors/*.vec (docs/format.md section 6)."""

from __future__ import annotations

import os
from dataclasses import dataclass

VECTOR_DIR = os.path.join(os.path.dirname(__file__), "..", "vectors")


@dataclass
class Vector:
    name: str
    expect: str
    description: str
    identity_pem: bytes
    envelope: bytes
    payload: bytes
    plaintext_sha256: str | None
    context: bytes | None = None  # the context a reader expects; None: offline (kind 1)
    object: str | None = None  # "manifest": the plaintext is also parsed as one (format.md 6)
    # A delta version's sources (format.md 2.6, 6): version -> its payload.
    sources: dict[int, bytes] | None = None


def load(path: str) -> Vector:
    with open(path, "rb") as f:
        data = f.read()
    head, _, body = data.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines())
    env_len, pay_len = int(fields["envelope-length"]), int(fields["payload-length"])
    sources: dict[int, bytes] | None = None
    at = env_len + pay_len
    if "sources" in fields:
        sources = {}
        for item in fields["sources"].split(","):
            version, length = item.split("=")
            sources[int(version, 16)] = body[at : at + int(length)]
            at += int(length)
    assert len(body) == at, path
    with open(os.path.join(VECTOR_DIR, "keys", fields["identity"] + ".pem"), "rb") as f:
        identity = f.read()
    return Vector(
        os.path.basename(path)[: -len(".vec")], fields["expect"], fields["description"],
        identity, body[:env_len], body[env_len : env_len + pay_len], fields.get("plaintext-sha256"),
        bytes.fromhex(fields["context"]) if "context" in fields else None,
        fields.get("object"), sources,
    )


def all_vectors() -> list[Vector]:
    names = sorted(n for n in os.listdir(VECTOR_DIR) if n.endswith(".vec"))
    return [load(os.path.join(VECTOR_DIR, n)) for n in names]
