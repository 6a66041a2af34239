"""Local folder backend: one file per object under a root folder.

Protects against: torn or partial objects after a crash (data goes to a
``.tmp-`` file that is fsynced, renamed into place, then the directory is
fsynced; ``list``/``get`` never see temp files), and lost conditional writes
between processes (every change to the namespace happens under an ``flock``
on ``root/.lock``).

The root folder is created by the first write (only `csfs init` writes to a
store that holds no vault yet), never by opening or reading: a mistyped store
path used with `ls` or `cat` leaves no folders behind.

Temp files live in the root folder rather than next to the object so that a
concurrent ``delete`` (which prunes empty parent folders) can never pull a
folder out from under a writer, and so crash leftovers sit in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from csfs.errors import NotFound, PreconditionFailed, StoreError
from csfs.store.base import (
    LOCK_NAME,
    TEMP_PREFIX,
    ObjectInfo,
    check_range,
    put_parts_via_file,
    validate_key,
    validate_prefix,
)

_COPY_CHUNK = 1 << 20

_Filler = Callable[[BinaryIO], object]


def _etag(st: os.stat_result) -> str:
    # Every write renames a fresh temp file into place, so the inode changes
    # with each version; mtime and size guard against inode reuse.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return  # pruned by a concurrent delete: nothing left to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A :class:`~csfs.store.base.Store` over a folder (created, mode 0700, by the
    first write)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        if os.path.lexists(self.root) and not os.path.isdir(self.root):
            raise StoreError(f"store path {self.root} is not a folder")
        self.url = "file://" + self.root

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    # -- helpers -----------------------------------------------------------

    def _ensure_root(self) -> None:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {self.root}: {exc.strerror}") from None

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store-wide lock; flock excludes other threads and processes alike."""
        fd = os.open(os.path.join(self.root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _current_etag(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _etag(st) if stat.S_ISREG(st.st_mode) else None

    def _commit(
        self, key: str, tmp: str, etag: str, *, if_none_match: bool, if_match: str | None
    ) -> str:
        """Check the condition and rename ``tmp`` into place, atomically with respect to others."""
        path = self._path(key)
        parent = os.path.dirname(path)
        renamed = False
        try:
            with self._locked():
                if if_none_match or if_match is not None:
                    current = self._current_etag(path)
                    if if_none_match and current is not None:
                        raise PreconditionFailed(f"{key} already exists")
                    if if_match is not None and current != if_match.strip('"'):
                        raise PreconditionFailed(f"{key} changed (or is gone) since it was read")
                os.makedirs(parent, mode=0o700, exist_ok=True)
                os.replace(tmp, path)
                renamed = True
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            # A folder cannot also be a file: "a" and "a/b" cannot coexist here.
            raise StoreError(
                f"cannot store {key}: it clashes with another key (a folder cannot be an object)"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot store {key}: {exc.strerror}") from None
        finally:
            if not renamed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        _fsync_dir(parent)
        return etag

    def _write_temp(self, fill: _Filler) -> tuple[str, str]:
        """Write a temp file with ``fill``, fsync it, and return (path, etag)."""
        self._ensure_root()
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.root}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
                etag = _etag(os.fstat(f.fileno()))
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write to {self.root}: {exc.strerror}") from None
            raise
        return tmp, etag

    # -- Store -------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        validate_key(key)
        tmp, etag = self._write_temp(lambda f: f.write(data))
        return self._commit(key, tmp, etag, if_none_match=if_none_match, if_match=if_match)

    def put_parts(self, key: str, parts: Iterable[bytes], *, if_none_match: bool = False) -> str:
        self._ensure_root()
        return put_parts_via_file(self, key, parts, self.root, if_none_match=if_none_match)

    def put_file(self, key: str, path: str, *, if_none_match: bool = False) -> str:
        validate_key(key)
        try:
            src = open(path, "rb")
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None

        def copy(f: BinaryIO) -> None:
            while chunk := src.read(_COPY_CHUNK):
                f.write(chunk)

        with src:
            tmp, etag = self._write_temp(copy)
        return self._commit(key, tmp, etag, if_none_match=if_none_match, if_match=None)

    def _open(self, key: str) -> int:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} not found in {self.url}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {key}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(f"{key} not found in {self.url}")
        return fd

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        if end is not None and end <= start:
            validate_key(key)
            return b""
        fd = self._open(key)
        with os.fdopen(fd, "rb") as f:
            f.seek(start)
            return f.read() if end is None else f.read(end - start)

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        check_range(0, end)
        fd = self._open(key)
        with os.fdopen(fd, "rb") as f:
            # The fstat and the read use one descriptor, so one inode: the
            # etag describes exactly these bytes even if a writer renames a
            # new version into place meanwhile.
            etag = _etag(os.fstat(fd))
            return (f.read() if end is None else f.read(end)), etag

    def get_to_file(self, key: str, path: str, *, end: int | None = None) -> ObjectInfo:
        check_range(0, end)
        fd = self._open(key)
        dest = os.path.abspath(path)
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(fd)
            out_fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(dest))
            try:
                with os.fdopen(out_fd, "wb") as out:
                    left = st.st_size if end is None else min(end, st.st_size)
                    while left > 0 and (chunk := src.read(min(_COPY_CHUNK, left))):
                        out.write(chunk)
                        left -= len(chunk)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return ObjectInfo(key=key, size=st.st_size, etag=_etag(st), mtime=st.st_mtime)

    def head(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} not found in {self.url}") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{key} not found in {self.url}")
        return ObjectInfo(key=key, size=st.st_size, etag=_etag(st), mtime=st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # eagerly, not on the first next()
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Start at the deepest folder the prefix names in full.
        base = prefix.rpartition("/")[0]
        start_dir = os.path.join(self.root, *base.split("/")) if base else self.root
        yield from self._walk(start_dir, base + "/" if base else "", prefix)

    def _walk(self, folder: str, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        """Yield objects under ``folder`` in key order, lazily.

        Sorting each folder's entries by ``name + "/"`` for subfolders makes a
        depth-first walk produce exactly the byte order of the full keys
        ("a-b" < "a/c" < "a0"), which is the order S3 lists in.
        """
        try:
            with os.scandir(folder) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                    for e in it
                    if not e.name.startswith(TEMP_PREFIX)
                    and not (rel == "" and e.name == LOCK_NAME)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda pair: pair[0])
        for name, entry in entries:
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(entry.path, key, prefix)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we were listing
                yield ObjectInfo(key=key, size=st.st_size, etag=_etag(st), mtime=st.st_mtime)

    def delete(self, key: str) -> None:
        path = self._path(key)
        parent = os.path.dirname(path)
        if not os.path.isdir(self.root):
            return  # no store folder, so no object: already gone
        with self._locked():
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return  # already gone (a folder is not an object)
            except OSError as exc:
                raise StoreError(f"cannot delete {key}: {exc.strerror}") from None
            # Prune folders the object leaves empty, so that "a" can be stored
            # after "a/b" is deleted, as on S3.  Under the lock, no writer can
            # be about to rename into them.
            folder = parent
            while folder != self.root:
                try:
                    os.rmdir(folder)
                except OSError:
                    break
                folder = os.path.dirname(folder)
        _fsync_dir(parent if os.path.isdir(parent) else folder)
