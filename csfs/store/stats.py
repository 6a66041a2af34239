"""A Store wrapper that counts calls and bytes, for benchmarks.

It counts calls into the store, one per method call: a multipart
``put_file`` or a paginated ``list`` is one call.  Failed calls count too,
since they cost a request all the same.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from csfs.store.base import ObjectInfo, Store


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of what went through a :class:`StatsStore`."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0  # downloaded from the store
    bytes_out: int = 0  # uploaded to the store

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class StatsStore:
    """Wrap ``inner`` and count requests per operation and bytes in each direction."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._bytes_in = 0
        self._bytes_out = 0

    def __repr__(self) -> str:
        return f"StatsStore({self.inner!r})"

    def _count(self, op: str, *, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._lock:
            self._requests[op] += 1
            self._bytes_in += bytes_in
            self._bytes_out += bytes_out

    def snapshot(self) -> StoreStats:
        with self._lock:
            return StoreStats(dict(self._requests), self._bytes_in, self._bytes_out)

    def reset(self) -> StoreStats:
        """Return the counts so far and start again from zero."""
        with self._lock:
            stats = StoreStats(dict(self._requests), self._bytes_in, self._bytes_out)
            self._requests.clear()
            self._bytes_in = self._bytes_out = 0
            return stats

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        self._count("put", bytes_out=len(data))
        return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)

    def put_file(self, key: str, path: str, *, if_none_match: bool = False) -> str:
        self._count("put_file", bytes_out=os.path.getsize(path))
        return self.inner.put_file(key, path, if_none_match=if_none_match)

    def put_parts(self, key: str, parts: Iterable[bytes], *, if_none_match: bool = False) -> str:
        def counted() -> Iterator[bytes]:
            for part in parts:
                self._count("put_part", bytes_out=len(part))
                yield part

        return self.inner.put_parts(key, counted(), if_none_match=if_none_match)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            data = self.inner.get(key, start, end)
        except BaseException:
            self._count("get")
            raise
        self._count("get", bytes_in=len(data))
        return data

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        try:
            data, etag = self.inner.get_with_etag(key, end=end)
        except BaseException:
            self._count("get_with_etag")
            raise
        self._count("get_with_etag", bytes_in=len(data))
        return data, etag

    def get_to_file(self, key: str, path: str, *, end: int | None = None) -> ObjectInfo:
        try:
            info = self.inner.get_to_file(key, path, end=end)
        except BaseException:
            self._count("get_to_file")
            raise
        self._count("get_to_file", bytes_in=info.size if end is None else min(end, info.size))
        return info

    def head(self, key: str) -> ObjectInfo:
        self._count("head")
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        listing = self.inner.list(prefix)  # a bad prefix raises here, uncounted
        self._count("list")
        return listing

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)
