"""The storage protocol: opaque bytes under validated keys.

A store never sees keys or plaintext; it moves ciphertext.  The protocol is
deliberately small (restic's Backend is the model) so that every backend and
every wrapper (retry, stats) can be checked by one conformance suite.

Conditional writes are the only concurrency primitive the layers above get:
``if_none_match`` creates an object only if it is absent, ``if_match`` replaces
it only if nobody changed it since it was read.  Both raise
:class:`~csfs.errors.PreconditionFailed` when they lose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Names the local backend uses for its own bookkeeping.  They are rejected on
# every backend so that a vault behaves the same on a folder and on S3.
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]*")


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object, without its contents."""

    key: str
    size: int
    etag: str  # opaque, unquoted; equal etag <=> same version of the contents
    # When the object was written (Unix seconds), where the backend says; 0 if unknown.
    mtime: float = field(default=0.0, compare=False)


@runtime_checkable
class Store(Protocol):
    """Opaque-bytes storage.  Every method validates its key with :func:`validate_key`.

    Errors: :class:`~csfs.errors.NotFound` for a missing object,
    :class:`~csfs.errors.PreconditionFailed` for a lost conditional write,
    :class:`~csfs.errors.TransientStoreError` for something worth retrying, and
    :class:`~csfs.errors.StoreError` for the rest.  Bad keys raise ValueError.
    """

    url: str

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Store ``data`` atomically and return its new etag.

        ``if_none_match``: fail if the key exists.  ``if_match``: fail unless the
        current etag equals it (an absent key fails too).
        """
        ...

    def put_file(self, key: str, path: str, *, if_none_match: bool = False) -> str:
        """Store a (large) local file atomically and return its etag."""
        ...

    def put_parts(self, key: str, parts: Iterable[bytes], *, if_none_match: bool = False) -> str:
        """Store the concatenation of ``parts``, uploading while they are produced.

        Parts other than the last are at least 5 MiB (S3's multipart minimum).
        Not retried as a whole: the iterator can only be consumed once.
        """
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` clamped to the object like a slice; ``end=None``: to the end."""
        ...

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        """The object (only bytes ``[0, end)`` if ``end`` is given) and the etag of
        exactly the version that was read.

        ``end`` bounds what a hostile store can make a reader hold in memory: a
        caller that knows an object's largest valid size asks for one byte more
        and rejects the object if it gets it.
        """
        ...

    def get_to_file(self, key: str, path: str, *, end: int | None = None) -> ObjectInfo:
        """Download to ``path`` (via a temp file and a rename); describe the version read.

        With ``end``, only bytes ``[0, end)`` are downloaded; the ObjectInfo still
        gives the object's whole size, so the caller can tell it was longer.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size and etag of an object."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise ValueError.

    Keys are relative, '/'-separated paths over ``[A-Za-z0-9._/-]`` with no
    empty, '.' or '..' segments.  That keeps them safe as local file names and
    identical, byte for byte, as S3 keys, so listings sort the same everywhere.
    """
    if not isinstance(key, str):
        raise TypeError(f"store key must be str, not {type(key).__name__}")
    if not key or not _KEY_CHARS.fullmatch(key):
        raise ValueError(f"invalid store key {key!r}: use only A-Z a-z 0-9 . _ - /")
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"invalid store key {key!r}: empty, '.' or '..' path segment")
        if segment.startswith(TEMP_PREFIX):
            raise ValueError(f"invalid store key {key!r}: {TEMP_PREFIX!r} names are reserved")
    if key == LOCK_NAME:
        raise ValueError(f"invalid store key {key!r}: reserved name")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if some valid key could start with it, else raise ValueError."""
    if prefix:
        # A prefix is a key cut anywhere, so completing it with one letter must
        # give a valid key ("a/" -> "a/x", "ab" -> "abx").
        try:
            validate_key(prefix + "x")
        except ValueError:
            raise ValueError(f"invalid store prefix {prefix!r}") from None
    return prefix


def check_range(start: int, end: int | None) -> None:
    """Reject negative offsets: a caller mistake, not a store failure."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError(f"invalid byte range [{start}, {end})")


def put_parts_via_file(
    store: Store, key: str, parts: Iterable[bytes], directory: str, *, if_none_match: bool = False
) -> str:
    """put_parts for backends without streaming uploads: spool to a temp file."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=directory, prefix=TEMP_PREFIX) as tmp:
        for part in parts:
            tmp.write(part)
        tmp.flush()
        return store.put_file(key, tmp.name, if_none_match=if_none_match)
