"""Every vector behaves as its `expect:` header says, through the file API and the stream API."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from csfs.crypto.envelope import Context
from csfs.crypto.keys import load_identity_pem
from csfs.vault.folder_listing import Listing
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.crypto.sealed import decrypt_stream
from csfs.crypto.stream import ChunkCipher, SourceOpener, SourceSet
from csfs.errors import AuthenticationError, FormatError, NoMatchingKeyError, NotFound
from csfs.offline import decrypt_file
from tests.crypto.independent_decoder import check_entry_metadata
from tests.crypto.test_independent_decoder import BAD_ENTRIES
from tests.crypto.vectors import Vector, all_vectors

EXPECT = {
    "format": FormatError,
    "authentication": AuthenticationError,
    "no match": NoMatchingKeyError,
}
VECTORS = all_vectors()


def test_vector_set_covers_every_outcome() -> None:
    outcomes = {v.expect for v in VECTORS}
    assert outcomes == {"success", "format", "authentication", "no match"}
    assert len(VECTORS) >= 40


OFFLINE = [v for v in VECTORS if v.context is None]


def context_of(vec: Vector) -> Context | None:
    return Context.decode(vec.context) if vec.context is not None else None


@pytest.mark.parametrize("vec", OFFLINE, ids=lambda v: v.name)
def test_vector_file_api(vec: Vector, tmp_path: str) -> None:
    payload = os.path.join(tmp_path, "f.enc")
    with open(payload, "wb") as f:
        f.write(vec.payload)
    with open(os.path.join(tmp_path, "f.key.enc"), "wb") as f:
        f.write(vec.envelope)
    out = os.path.join(tmp_path, "f")
    identity = load_identity_pem(vec.identity_pem, None)
    if vec.expect == "success":
        decrypt_file(payload, identity, out=out)
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == vec.plaintext_sha256
    else:
        with pytest.raises(EXPECT[vec.expect]) as info:
            decrypt_file(payload, identity, out=out)
        # Exactly the expected class: an authentication failure must not pose as a format one.
        assert not (vec.expect == "format" and isinstance(info.value, AuthenticationError))
        assert sorted(os.listdir(tmp_path)) == ["f.enc", "f.key.enc"], "output left behind"


class NonSeekable(io.RawIOBase):
    """A pipe-like source: no size check up front, so the stream rules alone must hold."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        return self._buf.readinto(b)


def source_of(vec: Vector) -> Callable[[ChunkCipher], SourceOpener] | None:
    """A delta vector's sources, found where c/F/V would be (format.md 6); a version
    the vector does not list is missing."""
    if vec.sources is None:
        return None
    sources = vec.sources

    def fetch_for(version: int) -> Callable[[int, int], bytes]:
        if version not in sources:
            raise NotFound(f"no source {version:016x}")
        return lambda a, b: sources[version][a:b]

    return lambda cipher: SourceSet(cipher, fetch_for)


def read_object(vec: Vector, src: io.BufferedReader, out: io.BytesIO) -> None:
    """Decrypt; for an `object: manifest` vector, also parse the plaintext as one."""
    identity = load_identity_pem(vec.identity_pem, None)
    env = decrypt_stream(
        src, vec.envelope, out, identity, context=context_of(vec), source=source_of(vec)
    )
    if vec.object == "manifest":
        DirectoryManifest.decode_plain(out.getvalue(), env.context.node_id.hex(),
                                       env.context.version)
    if vec.object == "folder-listing":
        Listing.decode_plain(out.getvalue(), env.context.node_id.hex(), env.context.version)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v.name)
def test_vector_stream_api_unseekable(vec: Vector) -> None:
    out = io.BytesIO()
    src = io.BufferedReader(NonSeekable(vec.payload))
    if vec.expect == "success":
        read_object(vec, src, out)
        assert hashlib.sha256(out.getvalue()).hexdigest() == vec.plaintext_sha256
    else:
        with pytest.raises(EXPECT[vec.expect]) as info:
            read_object(vec, src, out)
        assert not (vec.expect == "format" and isinstance(info.value, AuthenticationError))
        if vec.object is None:
            # Streaming may release verified chunks, never a failed one: whatever came
            # out must be a whole number of chunks.
            assert len(out.getvalue()) % 4096 == 0


def test_manifest_rejections_covered() -> None:
    """Each way a writer's manifest can break 5.3 has a vector (format.md 6)."""
    names = {v.name for v in VECTORS if v.object == "manifest" and v.expect == "format"}
    assert len(names) >= 18, sorted(names)


def test_folder_listing_rejections_covered() -> None:
    """Each way an owner's listing can break 7.8 has a vector (format.md 6)."""
    names = {v.name for v in VECTORS if v.object == "folder-listing" and v.expect == "format"}
    assert len(names) >= 19, sorted(names)


def test_folder_listing_vector_decodes_as_a_listing() -> None:
    vec = next(v for v in VECTORS if v.name == "folder_listing")
    out = io.BytesIO()
    ctx = context_of(vec)
    assert ctx is not None
    decrypt_stream(io.BytesIO(vec.payload), vec.envelope, out,
                   load_identity_pem(vec.identity_pem, None), context=ctx)
    listing = Listing.decode_plain(out.getvalue(), ctx.node_id.hex(), ctx.version)
    assert sorted(listing.entries) == ["notes.txt", "sub", "sub/deep.txt", "sub/empty",
                                       "sub/ünïcode ✓"]
    assert listing.version == 3 and len(listing.versions()) == 2


def test_manifest_vector_decodes_as_a_manifest() -> None:
    vec = next(v for v in VECTORS if v.name == "vault_manifest")
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(vec.payload), vec.envelope, out,
                   load_identity_pem(vec.identity_pem, None), context=context_of(vec))
    ctx = context_of(vec)
    assert ctx is not None
    manifest = DirectoryManifest.decode_plain(out.getvalue(), ctx.node_id.hex(), ctx.version)
    assert sorted(manifest.entries) == ["link", "notes.txt", "sub"]
    assert manifest.entries["link"].target == "notes.txt"


def test_posix_manifest_vector_decodes_with_metadata() -> None:
    """format.md 5.3: owner, times, xattrs and special files, as the spec reader sees them."""
    vec = next(v for v in VECTORS if v.name == "vault_manifest_posix")
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(vec.payload), vec.envelope, out,
                   load_identity_pem(vec.identity_pem, None), context=context_of(vec))
    ctx = context_of(vec)
    assert ctx is not None
    plain = out.getvalue()
    lib = DirectoryManifest.decode_plain(plain, ctx.node_id.hex(), ctx.version)
    spec = {n: check_entry_metadata(e) for n, e in json.loads(plain)["entries"].items()}
    assert set(spec) == set(lib.entries)
    for name, meta in spec.items():
        e = lib.entries[name]
        assert (e.uid, e.gid, e.atime_ns, e.ctime_ns, e.rdev, dict(e.xattrs)) == (
            meta["uid"], meta["gid"], meta["atime_ns"], meta["ctime_ns"], meta["rdev"],
            meta["xattrs"])
    assert {e.type for e in lib.entries.values()} == {"f", "p", "s", "c", "b"}
    assert lib.encode_plain() == plain  # the canonical form round-trips byte for byte


@pytest.mark.parametrize("extra", BAD_ENTRIES, ids=[str(e)[:40] for e in BAD_ENTRIES])
def test_bad_entry_metadata_is_a_format_error(extra: dict[str, Any]) -> None:
    entry = {"id": "00" * 16, "type": "p", "mode": 0o644, "mtime_ns": 1, **extra}
    with pytest.raises(FormatError):
        Entry.from_json(entry)
