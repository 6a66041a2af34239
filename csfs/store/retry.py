"""A Store wrapper that retries transient failures of whole operations.

botocore already retries single HTTP requests; this layer retries what it
cannot: a multipart upload or parallel download that failed halfway, a
download whose object changed underneath it, or a listing cut off mid-way.
Backoff is capped exponential with full jitter, and attempts are bounded so a
dead server turns into an error instead of a hang.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from csfs.errors import PreconditionFailed, StoreError, TransientStoreError
from csfs.store.base import ObjectInfo, Store, validate_prefix

T = TypeVar("T")


class RetryStore:
    """Wrap ``inner``; try each operation at most ``attempts`` times on TransientStoreError."""

    def __init__(
        self,
        inner: Store,
        *,
        attempts: int = 4,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._jitter = jitter

    def __repr__(self) -> str:
        return f"RetryStore({self.inner!r})"

    def _backoff(self, failures: int) -> None:
        # Full jitter: spreads out clients that failed together.
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        self._sleep(self._jitter() * ceiling)

    def _retry(self, operation: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return operation()
            except TransientStoreError:
                failures += 1
                if failures >= self.attempts:
                    raise
                self._backoff(failures)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        failures = 0
        while True:
            try:
                return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)
            except TransientStoreError:
                failures += 1
                if failures >= self.attempts:
                    raise
                self._backoff(failures)
            except PreconditionFailed:
                # After a transient failure the earlier attempt may have
                # landed, and this one lost against it: that is a success.
                if failures:
                    try:
                        current, etag = self.inner.get_with_etag(key)
                    except StoreError:
                        raise PreconditionFailed(f"conditional write of {key} lost") from None
                    if current == data:
                        return etag
                raise

    def put_file(self, key: str, path: str, *, if_none_match: bool = False) -> str:
        return self._retry(lambda: self.inner.put_file(key, path, if_none_match=if_none_match))

    def put_parts(self, key: str, parts: Iterable[bytes], *, if_none_match: bool = False) -> str:
        # Not retried as a whole (the parts are gone); the backend retries each request.
        return self.inner.put_parts(key, parts, if_none_match=if_none_match)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._retry(lambda: self.inner.get(key, start, end))

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        return self._retry(lambda: self.inner.get_with_etag(key, end=end))

    def get_to_file(self, key: str, path: str, *, end: int | None = None) -> ObjectInfo:
        return self._retry(lambda: self.inner.get_to_file(key, path, end=end))

    def head(self, key: str) -> ObjectInfo:
        return self._retry(lambda: self.inner.head(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # eagerly, not on the first next()
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Listings are sorted, so a retry resumes after the last key yielded.
        last: str | None = None
        failures = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if last is not None and info.key <= last:
                        continue
                    yield info
                    last = info.key
                    failures = 0  # progress: only consecutive failures count
                return
            except TransientStoreError:
                failures += 1
                if failures >= self.attempts:
                    raise
                self._backoff(failures)

    def delete(self, key: str) -> None:
        self._retry(lambda: self.inner.delete(key))
