"""The local ciphertext cache: immutable store objects, fetched in blocks on demand.

Holds ciphertext only: what it stores is byte-for-byte what the store holds,
so it needs no revalidation (version objects never change) and leaks nothing
that the store does not already see. Bounded by a byte limit; clean entries
are evicted least-recently-used first, pinned ones (pending uploads) never.
Block maps are kept on disk, so the cache survives a remount.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from csfs.crypto.envelope import MAX_ENVELOPE_SIZE
from csfs.errors import FormatError, NotFound
from csfs.store import Store

BLOCK = 1 << 20
# Read-ahead for sequential readers. S3 servers charge a fixed cost per request
# (seen: moto ~90 ms for any range of a large object, 130 ms for 32 MiB), so
# prefetch in large runs, several at once.
READ_AHEAD = 64  # blocks fetched ahead of a sequential reader
FETCH_RUN = 32  # blocks per ranged GET when prefetching
MIN_LIMIT = 16 << 20  # the smallest cache a mount accepts
ROOM = 32 << 20  # free space an emergency eviction (on ENOSPC) tries to leave
T = TypeVar("T")
log = logging.getLogger("csfs.cache")


def fit_limit(directory: str, wanted: int) -> int:
    """A cache bound that the disk under ``directory`` can hold: ``wanted``, or less if
    what is free there (plus what the cache already uses) is less. The cache must not
    fill its disk before it evicts anything."""
    usage = shutil.disk_usage(directory)
    have = 0
    for d, _, files in os.walk(directory):
        for f in files:
            with contextlib.suppress(OSError):
                have += os.lstat(os.path.join(d, f)).st_blocks * 512
    # Some room is left for the queue, scratch files and block maps.
    return min(wanted, max(MIN_LIMIT, (usage.free + have) * 9 // 10))


class _Entry:
    def __init__(self, path: str) -> None:
        self.path = path
        self.blocks: set[int] = set()
        self.size: int | None = None  # object size, once known
        self.pinned = False
        self.readers = 0  # reads between "blocks present" and pread: not evicted meanwhile
        self.bytes = 0
        self.last_block = -1  # for sequential-read detection
        self.frontier = -1  # highest block read ahead so far


class ObjectCache:
    """The local copy of immutable store objects (version content and envelopes),
    fetched in blocks on demand and bounded by a byte limit.

    Owns the cached files, their block maps and the LRU order; pins the objects
    of pending uploads so they are never evicted before they reach the store.

    Holds ciphertext only, byte for byte what the store holds: never plaintext,
    never a key, never a mutable object (a manifest), so nothing it holds needs
    revalidating and nothing leaks that the store does not already see.
    """

    def __init__(self, directory: str, store: Store, limit: int) -> None:
        self.dir = os.path.join(directory, "objects")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.store = store
        self.limit = limit
        self.lock = threading.RLock()
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.inflight: dict[tuple[str, int], Future[None]] = {}
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="csfs-fetch")
        self.total = 0  # bytes of all entries, kept up to date (eviction runs often)
        self.hits = 0
        self.misses = 0
        self._load()

    # -- persistence -------------------------------------------------------------------

    def _file(self, key: str) -> str:
        return os.path.join(self.dir, hashlib.sha256(key.encode()).hexdigest()[:40])

    def _load(self) -> None:
        found = []
        for name in os.listdir(self.dir):
            if not name.endswith(".map"):
                continue
            path = os.path.join(self.dir, name[:-4])
            try:
                with open(path + ".map") as f:
                    key, size, blocks = f.read().split("\n", 2)
                e = _Entry(path)
                e.size = int(size) if size != "-" else None
                e.blocks = {int(b) for b in blocks.split()}
                e.bytes = os.path.getsize(path)
                found.append((os.path.getmtime(path + ".map"), key, e))
            except (OSError, ValueError):
                self._remove_files(path)
        for _, key, e in sorted(found, key=lambda t: t[0]):
            self.entries[key] = e
            self.total += e.bytes

    def _save_map(self, key: str, e: _Entry) -> None:
        tmp = e.path + ".map.tmp"
        with open(tmp, "w") as f:
            f.write(
                f"{key}\n{e.size if e.size is not None else '-'}\n"
                + " ".join(map(str, sorted(e.blocks)))
            )
        os.replace(tmp, e.path + ".map")

    @staticmethod
    def _remove_files(path: str) -> None:
        for p in (path, path + ".map", path + ".map.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    # -- reading ------------------------------------------------------------------------

    def _entry(self, key: str) -> _Entry:
        with self.lock:
            e = self.entries.get(key)
            if e is None:
                e = _Entry(self._file(key))
                self.entries[key] = e
            self.entries.move_to_end(key)
            return e

    def _fetch(self, key: str, first: int, count: int) -> None:
        """GET blocks first..first+count-1 in one ranged request and store them."""
        e = self._entry(key)
        start = first * BLOCK
        data = self.store.get(key, start, start + count * BLOCK)

        def store_blocks() -> None:
            fd = os.open(e.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                view, at = memoryview(data), start
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
            finally:
                os.close(fd)

        # Room first: one ranged GET may bring up to FETCH_RUN MiB, and evicting only
        # after writing it let the cache pass its limit by that much.
        self._evict(room=len(data))
        self.roomy(store_blocks)
        with self.lock:
            got = -(-len(data) // BLOCK) if data else 0
            if 0 < len(data) < count * BLOCK and e.size is None:
                e.size = start + len(data)  # a short answer marks the end of the object
            if len(data) < count * BLOCK:
                got = count  # blocks past the end are "present" (empty)
            e.blocks.update(range(first, first + got))
            grown = max(e.bytes, start + len(data))
            self.total += grown - e.bytes
            e.bytes = grown
            self._save_map(key, e)
        self._evict()

    def _ensure(self, key: str, first: int, last: int) -> None:
        """Make blocks first..last present, fetching missing runs in parallel."""
        e = self._entry(key)
        waits: list[Future[None]] = []
        with self.lock:
            missing = [
                b
                for b in range(first, last + 1)
                if b not in e.blocks and (e.size is None or b * BLOCK < e.size)
            ]
            run: list[int] = []
            for b in missing:
                if (key, b) in self.inflight:
                    waits.append(self.inflight[(key, b)])
                    continue
                if run and (b != run[-1] + 1 or len(run) >= FETCH_RUN):
                    waits.append(self._submit(key, run))
                    run = []
                run.append(b)
            if run:
                waits.append(self._submit(key, run))
            if missing:
                self.misses += 1
            else:
                self.hits += 1
        for w in waits:
            w.result()

    def _submit(self, key: str, run: list[int]) -> Future[None]:
        fut = self.pool.submit(self._fetch, key, run[0], len(run))
        for b in run:
            self.inflight[(key, b)] = fut

        def done(_: Future[None]) -> None:
            with self.lock:
                for b in run:
                    self.inflight.pop((key, b), None)

        fut.add_done_callback(done)
        return fut

    def read(self, key: str, start: int, end: int, size: int | None = None) -> bytes:
        """Bytes [start, end) of the immutable object ``key``, from the cache or the store.

        ``size``, the object's size when the caller knows it, bounds read-ahead.
        """
        if end <= start:
            return b""
        first, last = start // BLOCK, (end - 1) // BLOCK
        e = self._entry(key)
        with self.lock:
            e.readers += 1
            if size is not None and e.size is None:
                e.size = size
        try:
            self._ensure(key, first, last)
            self._read_ahead(key, e, first, last)
            fd = os.open(e.path, os.O_RDONLY)
            try:
                data = os.pread(fd, end - start, start)
            finally:
                os.close(fd)
        finally:
            with self.lock:
                e.readers -= 1
        if e.size is not None and end > e.size:
            end = e.size
        if len(data) < end - start and e.size is None:
            raise NotFound("cached object is shorter than expected")
        return data

    def _read_ahead(self, key: str, e: _Entry, first: int, last: int) -> None:
        """Keep READ_AHEAD blocks in flight ahead of a sequential reader, in FETCH_RUN runs."""
        with self.lock:
            sequential = first <= e.last_block + 1 and last >= e.last_block
            e.last_block = last
            if not sequential:
                return
            frontier = max(e.frontier, last)
            end_block = None if e.size is None else -(-e.size // BLOCK)
            if end_block is None:
                end_block = last + 2  # unknown size: a little ahead only
            while frontier - last < READ_AHEAD and frontier + 1 < end_block:
                run = [
                    b
                    for b in range(frontier + 1, min(frontier + 1 + FETCH_RUN, end_block))
                    if b not in e.blocks and (key, b) not in self.inflight
                ]
                if run and run[-1] - run[0] + 1 == len(run):
                    self._submit(key, run)
                else:
                    for b in run:
                        self._submit(key, [b])
                frontier = min(frontier + FETCH_RUN, end_block - 1)
            e.frontier = frontier

    def get_small(self, key: str, limit: int = MAX_ENVELOPE_SIZE) -> bytes:
        """A whole small object (an envelope), cached like any other; one longer than
        ``limit`` is a FormatError, and no more than ``limit + 1`` bytes are read."""
        e = self._entry(key)
        with self.lock:
            complete = e.size is not None and all(b in e.blocks for b in range(-(-e.size // BLOCK)))
        if not complete:
            data = self.store.get(key, 0, limit + 1)
            if len(data) > limit:
                raise FormatError(f"{key} is larger than any valid one ({limit} bytes): replaced?")
            self.put_local(key, data, pinned=False)
            return data
        with open(e.path, "rb") as f:
            return f.read()

    # -- local objects (pending uploads) -------------------------------------------------

    def path_for_new(self, key: str) -> str:
        """Where to write a new local object before :meth:`adopt`."""
        return self._file(key) + ".new"

    def adopt(self, key: str, pinned: bool = True, *, src: str | None = None) -> None:
        """Take the file at ``src`` (default path_for_new(key)) as the complete object ``key``."""
        e = self._entry(key)
        with self.lock:
            os.replace(src or self.path_for_new(key), e.path)
            size = os.path.getsize(e.path)
            self.total += size - e.bytes
            e.size = e.bytes = size
            e.blocks = set(range(-(-e.size // BLOCK)))
            e.pinned = pinned
            self._save_map(key, e)
        self._evict()

    def put_local(self, key: str, data: bytes, pinned: bool = True) -> None:
        # A temp file of this call's own: parallel first reads of one file all fetch
        # its envelope, and a shared temp name let one rename away another's file.
        tmp = f"{self.path_for_new(key)}.{threading.get_ident()}"
        try:
            f = self.open_new(tmp)
            try:
                f.write(data)
            finally:
                f.close()
            self.adopt(key, pinned, src=tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def local_path(self, key: str) -> str | None:
        with self.lock:
            e = self.entries.get(key)
            if e is None or e.size is None:
                return None
            return e.path if len(e.blocks) * BLOCK >= e.size else None

    def set_pinned(self, key: str, pinned: bool) -> None:
        with self.lock:
            e = self.entries.get(key)
            if e is not None:
                e.pinned = pinned
        self._evict()

    def drop(self, key: str) -> None:
        with self.lock:
            e = self.entries.pop(key, None)
            if e is not None:
                self.total -= e.bytes
        if e is not None:
            self._remove_files(e.path)

    # -- bounds -------------------------------------------------------------------------

    def open_new(self, path: str) -> RoomyFile:
        """A new file in the cache folder whose writes make room when the disk is full."""
        return RoomyFile(path, self)

    def roomy(self, write: Callable[[], T]) -> T:
        """Run ``write`` (which must be safe to repeat); on ENOSPC make room, then retry."""
        while True:
            try:
                return write()
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self.make_room():
                    raise

    def make_room(self) -> bool:
        """The disk is full: evict clean entries, least recently used first, until
        ROOM is free or none is left, and keep the bound below what fits from now
        on. False if nothing could be evicted (everything left is pending upload)."""
        freed = False
        with self.lock:
            busy = {k for k, _ in self.inflight}
            for key in list(self.entries):
                if shutil.disk_usage(self.dir).free >= ROOM and freed:
                    break
                e = self.entries[key]
                if e.pinned or e.readers or key in busy or not e.bytes:
                    continue
                self.total -= e.bytes
                del self.entries[key]
                self._remove_files(e.path)
                freed = True
            lowered = max(MIN_LIMIT, self.total + shutil.disk_usage(self.dir).free * 9 // 10)
            if lowered < self.limit:
                log.warning(
                    "cache disk full: cache bound lowered from %d to %d bytes", self.limit, lowered
                )
                self.limit = lowered
        return freed

    def used(self) -> int:
        with self.lock:
            return self.total

    def _evict(self, room: int = 0) -> None:
        """Evict clean entries, least recently used first, until ``room`` more bytes
        fit under the limit (or nothing more can go)."""
        with self.lock:
            total = self.total
            if total + room <= self.limit:
                return
            busy = {k for k, _ in self.inflight}
            for key in list(self.entries):
                if total + room <= self.limit:
                    break
                e = self.entries[key]
                if e.pinned or e.readers or key in busy:
                    continue
                total -= e.bytes
                self.total -= e.bytes
                del self.entries[key]
                self._remove_files(e.path)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RoomyFile:
    """A write-only file in the cache folder: a write that finds the disk full makes
    room (evicts clean cache entries) and goes on where it stopped."""

    def __init__(self, path: str, cache: ObjectCache) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.cache = cache

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self.cache.make_room():
                    raise
                continue
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass  # unbuffered

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
