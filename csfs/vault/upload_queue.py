"""The durable upload queue: sealed versions waiting to reach the store.

A record is written (atomically, fsynced) only after its ciphertext and
envelope are complete in the cache, so after a crash or kill -9 every record
on disk names a complete version: the next mount re-uploads it (conditional
PUTs make that idempotent) and then switches the manifest. The manifest is
switched last, so other clients never see a version whose objects are
missing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from csfs.errors import CsfsError, NotFound, PreconditionFailed, StoreError, TransientStoreError
from csfs.vault.cache import ObjectCache
from csfs.vault.layout import content_key, envelope_key
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.vault import Vault

log = logging.getLogger("csfs.upload")
PROBE_INTERVAL = 1.0  # seconds between probes of an unreachable store


@dataclass
class Record:
    seq: int
    file_id: str
    version: int  # 0: an empty file, no objects
    base_version: int  # the version this one replaces; a mismatch at commit is a conflict
    parent_id: str
    name: str
    size: int
    mode: int
    mtime_ns: int
    deleted: bool = False  # unlinked locally: upload nothing, commit nothing
    ctime_ns: int = 0  # 0: keep the entry's (records written by older code have neither)
    atime_ns: int = 0

    @property
    def keys(self) -> list[str]:
        if self.version == 0:
            return []
        return [content_key(self.file_id, self.version), envelope_key(self.file_id, self.version)]


class UploadQueue:
    def __init__(
        self,
        vault: Vault,
        cache: ObjectCache,
        directory: str,
        on_error: Callable[[str], None] | None = None,
        workers: int = 8,
        before_upload: Callable[[Record], None] | None = None,
    ) -> None:
        self.vault = vault
        self.cache = cache
        self.dir = os.path.join(directory, "queue")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.lock = threading.Condition()
        self.records: dict[str, Record] = {}  # file_id -> newest record
        self.inflight: set[str] = set()  # file ids the uploader is working on
        self.inflight_seqs: set[int] = set()  # and exactly which records
        self.seq = 0
        # Each file's versions that its newest record derives from besides its base:
        # ones replaced in the queue (an attempt may have switched one in, its reply
        # lost) and the base of one whose upload was under way (it may fail). Finding
        # one of them in the directory is no conflict.
        self.superseded: dict[str, set[int]] = {}
        self.errors: list[str] = []
        self.on_error = on_error
        self.on_commit: Callable[[list[Record]], None] | None = None
        # Called before a version's objects are uploaded (re-wraps a stale envelope);
        # set before the uploader starts, as records from the last mount go at once.
        self.before_upload = before_upload
        # The metadata (owner, xattrs) of a file that no manifest holds yet.
        self.metadata_for: Callable[[str], Entry | None] | None = None
        # When a folder's content last changed locally (a file created or removed),
        # which its manifest takes with the commit; None: unchanged.
        self.folder_time: Callable[[str], int | None] | None = None
        self.stopping = False
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csfs-upload")
        self._load()
        self.thread = threading.Thread(target=self._run, name="csfs-uploader", daemon=True)
        self.thread.start()
        self.prober = threading.Thread(target=self._probe, name="csfs-probe", daemon=True)
        self.prober.start()

    def _path(self, rec: Record) -> str:
        return os.path.join(self.dir, f"{rec.file_id}.json")

    def _load(self) -> None:
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    rec = Record(**json.load(f))
            except (OSError, ValueError, TypeError):
                continue  # a record is written atomically; a bad one is not ours
            self.records[rec.file_id] = rec
            self.seq = max(self.seq, rec.seq)
            for key in rec.keys:
                self.cache.set_pinned(key, True)

    def _write(self, rec: Record) -> None:
        path = self._path(rec)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(rec), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- API used by the file system -----------------------------------------------------

    def pending(self, file_id: str) -> Record | None:
        with self.lock:
            rec = self.records.get(file_id)
            return None if rec is None or rec.deleted else rec

    def enqueue(self, rec: Record) -> None:
        """Add a sealed version; a newer version of a file not yet uploading replaces the older."""
        with self.lock:
            self.seq += 1
            rec.seq = self.seq
            old = self.records.get(rec.file_id)
            # A record that is queued but not being uploaded never reaches the store:
            # replace it. One being uploaded will land first, so it is our base.
            chain = self.superseded.setdefault(rec.file_id, set())
            if old is not None and old.seq in self.inflight_seqs:
                chain.add(old.base_version)  # if that upload fails, the store keeps this
            if old is not None and old.seq not in self.inflight_seqs:
                rec.base_version = old.base_version  # the store never saw ``old``...
                chain.add(old.version)  # ...unless a failed attempt switched it in
                for key in old.keys:
                    if key not in rec.keys:
                        # Not dropped: a reader may still have that version open.
                        self.cache.set_pinned(key, False)
            self._write(rec)
            self.records[rec.file_id] = rec
            self.lock.notify_all()

    def update(self, file_id: str, **changes: object) -> bool:
        """Change a pending record (rename, chmod, utimens, unlink); False if none pending."""
        with self.lock:
            rec = self.records.get(file_id)
            if rec is None:
                return False
            for k, v in changes.items():
                setattr(rec, k, v)
            self._write(rec)
            return True

    def wait(self, file_id: str | None = None, timeout: float | None = None) -> bool:
        """Block until ``file_id`` (or everything) is in the store; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while (file_id in self.records) if file_id else self.records:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.lock.wait(timeout=min(remaining or 1.0, 1.0))
            return True

    def status(self) -> dict[str, object]:
        with self.lock:
            recs = [r for r in self.records.values() if not r.deleted]
            return {
                "pending_files": len(recs),
                "pending_bytes": sum(r.size for r in recs),
                "errors": list(self.errors[-20:]),
            }

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self.thread.join(timeout=30)
        self.prober.join(timeout=30)
        self.pool.shutdown(wait=True)

    # -- the uploader ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while True:
            with self.lock:
                while not self.stopping and not (set(self.records) - self.inflight):
                    self.lock.wait(timeout=1.0)
                if self.stopping:
                    return
                batch = sorted(
                    (r for r in self.records.values() if r.file_id not in self.inflight),
                    key=lambda r: r.seq,
                )[:256]
                self.inflight.update(r.file_id for r in batch)
                self.inflight_seqs.update(r.seq for r in batch)
            try:
                self._process(batch)
                backoff = 0.2
            except Exception as exc:
                msg = exc.message if isinstance(exc, CsfsError) else f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} upload failed: {msg}")
                if self.on_error:
                    self.on_error(msg)
                if isinstance(exc, TransientStoreError):
                    # The store is unreachable: wait for the prober to hear from it
                    # again, then upload at once (no backoff left to sit out).
                    self.vault.went_offline()
                    with self.lock:
                        while not self.stopping and self.vault.offline:
                            self.lock.wait(timeout=PROBE_INTERVAL)
                else:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            finally:
                with self.lock:
                    self.inflight.difference_update(r.file_id for r in batch)
                    self.inflight_seqs.difference_update(r.seq for r in batch)
                    self.lock.notify_all()

    def _probe(self) -> None:
        """While the store is unreachable, ask it cheaply every PROBE_INTERVAL; wake the
        uploader as soon as it answers."""
        while True:
            with self.lock:
                if self.stopping:
                    return
                self.lock.wait(timeout=PROBE_INTERVAL)
                if self.stopping:
                    return
            if self.vault.offline and self.vault.probe():
                log.info("the store answers again: uploading what is pending")
                with self.lock:
                    self.lock.notify_all()

    def _process(self, batch: list[Record]) -> None:
        snap = [Record(**asdict(r)) for r in batch]  # records may change while we upload
        list(self.pool.map(self._upload_objects, [r for r in snap if not r.deleted]))
        with self.vault.commit_lock:
            # Where each file is now, and its latest mode and times: a rename or a
            # chmod may have come while the objects were uploading.
            current: list[Record] = []
            with self.lock:
                for r in snap:
                    latest = self.records.get(r.file_id, r)
                    now = Record(**asdict(r))
                    now.parent_id, now.name = latest.parent_id, latest.name
                    now.deleted = latest.deleted
                    if latest.seq == r.seq:
                        now.mode, now.mtime_ns = latest.mode, latest.mtime_ns
                        now.ctime_ns, now.atime_ns = latest.ctime_ns, latest.atime_ns
                    if not now.deleted:
                        current.append(now)
            by_parent: dict[str, list[Record]] = {}
            for r in current:
                by_parent.setdefault(r.parent_id, []).append(r)
            for parent_id, recs in by_parent.items():
                lost = self.vault.update_dir(
                    parent_id, functools.partial(self._switch, recs=recs), touch=False
                )
                for name, entry in lost:
                    self.vault.conflict_copy(parent_id, name, entry)
            if self.on_commit is not None:
                self.on_commit(current)
            with self.lock:
                for r in snap:
                    cur = self.records.get(r.file_id)
                    if cur is not None and cur.seq == r.seq:
                        del self.records[r.file_id]
                        self.superseded.pop(r.file_id, None)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self._path(r))
                        cur = None
                    for key in r.keys:
                        self.cache.set_pinned(key, cur is not None and key in cur.keys)

    def _upload_objects(self, rec: Record) -> None:
        if self.before_upload is not None and rec.version:
            self.before_upload(rec)
        for key in rec.keys:
            path = self.cache.local_path(key)
            if path is None:
                raise StoreError(f"a pending upload lost its local ciphertext ({key})")
            try:
                if os.path.getsize(path) > 8 << 20:
                    self.vault.store.put_file(key, path, if_none_match=True)
                else:
                    with open(path, "rb") as f:
                        self.vault.store.put(key, f.read(), if_none_match=True)
            except PreconditionFailed:
                # Already there: an upload before a crash, or a retry. Same key, same bytes.
                try:
                    if self.vault.store.head(key).size != os.path.getsize(path):
                        raise StoreError(f"object {key} exists with other contents") from None
                except NotFound:
                    raise

    def _metadata(self, m: DirectoryManifest, r: Record) -> Entry:
        """What the new entry keeps of the file's metadata: the manifest's entry for
        it (a chown or setxattr since), else what the file system made it with."""
        for e in m.entries.values():
            if e.id == r.file_id and e.type == "f":
                return e
        made = self.metadata_for(r.file_id) if self.metadata_for is not None else None
        return made if made is not None else Entry(r.file_id, "f")

    def _switch(self, m: DirectoryManifest, recs: list[Record]) -> list[tuple[str, Entry]]:
        """Point each record's entry at its new version; return the ones that lost a race.

        A new version leaves the folder's times alone (POSIX: writing a file does not
        change its folder); a new name takes the time it was made here."""
        changed = self.folder_time(m.dir_id) if self.folder_time is not None else None
        if changed is not None:
            m.mtime_ns = max(m.mtime_ns, changed)
            m.ctime_ns = max(m.ctime_ns or m.mtime_ns, changed)
        lost = []
        for r in recs:
            with self.lock:
                ours = (r.base_version, r.version, *self.superseded.get(r.file_id, ()))
            found = m.entries.get(r.name)
            new = _with_content(self._metadata(m, r), r)
            if found is not None and found.id == r.file_id and found.version in ours:
                m.entries[r.name] = new
                continue
            moved = [n for n, e in m.entries.items() if e.id == r.file_id and e.version in ours]
            if moved:
                m.entries[moved[0]] = new
            elif found is None and not any(e.id == r.file_id for e in m.entries.values()):
                m.entries[r.name] = new  # removed or moved elsewhere meanwhile: keep ours
            else:
                log.warning(
                    "conflict on %s: the directory has version %x, this upload replaces %x",
                    r.name,
                    found.version if found else 0,
                    r.base_version,
                )
                lost.append((r.name, new))
        return lost


def _with_content(meta: Entry, r: Record) -> Entry:
    return replace(
        meta,
        mode=r.mode,
        size=r.size,
        mtime_ns=r.mtime_ns,
        version=r.version,
        ctime_ns=r.ctime_ns or meta.ctime_ns,
        atime_ns=r.atime_ns or meta.atime_ns,
    )
