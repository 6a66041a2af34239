"""The durable upload queue: sealed versions waiting to reach the store.

A record is written (atomically, fsynced) only after its ciphertext and
envelope are complete in the cache, so after a crash or kill -9 every record
on disk names a complete version: the next mount re-uploads it (conditional
PUTs make that idempotent) and then switches the manifest. The manifest is
switched last, so other clients never see a version whose objects are
missing.

Records hold file names, so on disk they are sealed to the mount's own key
(format.md 9): the local disk holds no plaintext name. A record that can never
upload is quarantined (kept with its objects, listed by `csfs status`, exportable)
so that it does not hold up the rest of the queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from csfs.errors import (
    AccessDenied,
    CsfsError,
    NotFound,
    TransientStoreError,
    UploadImpossible,
)
from csfs.vault.cache import ObjectCache
from csfs.vault.crashpoint import crash_point
from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.manifests import VersionChange
from csfs.vault.queue_ops import QueuedChanges
from csfs.vault.queue_records import (
    CHAIN_MAX,
    NamespaceOp,
    Record,
    RecordSealer,
    with_content,
    write_atomic,
)
from csfs.vault.vault import Vault

log = logging.getLogger("csfs.upload")
PROBE_INTERVAL = 1.0  # seconds between probes of an unreachable store


class UploadQueue(QueuedChanges):
    """Sealed versions on their way to the store, durable across a crash or kill -9.

    Owns the on-disk records (sealed to the mount's key), the worker threads
    that upload each version's content and envelope and then switch its
    manifest, and the quarantine of versions that can never upload.

    Never switches a manifest before the version's objects are in the store,
    never writes a record before its ciphertext is complete in the cache, never
    drops a version silently (a lost race becomes a conflict copy, a hopeless
    upload is quarantined), and never holds a plaintext name on disk.
    """

    def __init__(
        self,
        vault: Vault,
        cache: ObjectCache,
        directory: str,
        on_error: Callable[[str], None] | None = None,
        workers: int = 8,
        before_upload: Callable[[Record], None] | None = None,
        apply_op: Callable[[NamespaceOp], None] | None = None,
    ) -> None:
        self.vault = vault
        self.cache = cache
        self.sealer = RecordSealer(vault.vault_id, vault.identity)
        self.dir = os.path.join(directory, "queue")
        self.quarantine_dir = os.path.join(self.dir, "quarantine")
        os.makedirs(self.quarantine_dir, mode=0o700, exist_ok=True)
        self.lock = threading.Condition()
        self.records: dict[str, Record] = {}  # file_id -> newest record
        self.inflight: set[str] = set()  # file ids the uploader is working on
        self.inflight_seqs: set[int] = set()  # and exactly which records
        self.seq = 0
        # What renames of not yet queued files replaced: file id -> [node id, version].
        self.replacing: dict[str, list[Any]] = {}
        self.ops: list[NamespaceOp] = []  # in seq order
        # Applies one namespace change to the store (the file system's; set before
        # the uploader starts, as changes queued by the last mount go at once).
        self.apply_op = apply_op
        self.errors: dict[str, str] = {}  # message -> when last seen; cleared once uploads work
        self.quarantined: dict[str, dict[str, Any]] = {}
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
        return os.path.join(self.dir, f"{rec.file_id}.rec")

    def _load(self) -> None:
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            try:
                if name.endswith(".rec"):
                    rec = Record(**self.sealer.open(path))
                elif name.endswith(".json"):  # written in clear by earlier versions
                    with open(path) as f:
                        rec = Record(**json.load(f))
                else:
                    continue
            except (CsfsError, OSError, ValueError, TypeError):
                continue  # a record is written atomically; a bad one is not ours
            if name.endswith(".json"):
                self._write(rec)
                os.unlink(path)
            self.records[rec.file_id] = rec
            self.seq = max(self.seq, rec.seq)
            for key in rec.keys:
                self.cache.set_pinned(key, True)
        self._load_ops()
        for name in sorted(os.listdir(self.quarantine_dir)):
            try:
                q = self.sealer.open(os.path.join(self.quarantine_dir, name))
            except (CsfsError, OSError, ValueError):
                continue
            self.quarantined[name.removesuffix(".rec")] = q
            for key in Record(**q["record"]).keys:
                self.cache.set_pinned(key, True)

    def _write(self, rec: Record) -> None:
        write_atomic(self._path(rec), self.sealer.seal(rec.file_id, asdict(rec)))

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
            if rec.replaces is None:
                rec.replaces = self.replacing.get(rec.file_id)
            # A record that is queued but not being uploaded never reaches the store:
            # replace it, unless a failed attempt switched it in (its reply lost): it is
            # in the chain. One being uploaded will land first, so it is our base; if it
            # does not (a failure or a crash), its own base is still ours to replace.
            if old is not None and old.seq not in self.inflight_seqs:
                rec.base_version = old.base_version  # the store never saw ``old``...
                rec.chain = list(dict.fromkeys([old.version, *old.chain]))[:CHAIN_MAX]
                rec.replaces = old.replaces
                for key in old.keys:
                    if key not in rec.keys:
                        # Not dropped: a reader may still have that version open.
                        self.cache.set_pinned(key, False)
            elif old is not None:
                rec.chain = list(dict.fromkeys([old.version, old.base_version, *old.chain]))
                rec.chain = rec.chain[:CHAIN_MAX]
                rec.replaces = rec.replaces or old.replaces
            self._write(rec)
            self.records[rec.file_id] = rec
            self.lock.notify_all()
        crash_point("sealed")

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

    def renamed(
        self, file_id: str, parent_id: str, name: str, replaces: list[Any] | None
    ) -> None:
        """A file not yet in any manifest moved to ``name``, replacing ``replaces``
        (what the store holds there); its commit will replace that entry."""
        with self.lock:
            if replaces is None:
                self.replacing.pop(file_id, None)
            else:
                self.replacing[file_id] = replaces
            rec = self.records.get(file_id)
            if rec is not None:
                rec.parent_id, rec.name, rec.replaces = parent_id, name, replaces
                self._write(rec)

    def replacing_of(self, file_id: str) -> list[Any] | None:
        with self.lock:
            rec = self.records.get(file_id)
            if rec is not None and rec.replaces is not None:
                return rec.replaces
            return self.replacing.get(file_id)

    def own_versions(self, file_id: str) -> set[int]:
        """Versions of ``file_id`` that this queue may still commit or has built on."""
        with self.lock:
            rec = self.records.get(file_id)
            return rec.own_versions() if rec is not None else set()

    def wait(self, file_id: str | None = None, timeout: float | None = None) -> bool:
        """Block until ``file_id`` (or everything) is in the store; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while (file_id in self.records) if file_id else (self.records or self.ops):
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
                "pending_changes": len(self.ops),
                "pending_bytes": sum(r.size for r in recs),
                "errors": [f"{when} upload failed: {msg}" for msg, when in self.errors.items()],
                "quarantined": [
                    {"id": qid, "path": q["path"], "reason": q["reason"], "size": q["size"]}
                    for qid, q in sorted(self.quarantined.items())
                ],
            }

    def _note_error(self, msg: str) -> None:
        with self.lock:
            self.errors.pop(msg, None)
            self.errors[msg] = time.strftime("%H:%M:%S")
            while len(self.errors) > 20:
                del self.errors[next(iter(self.errors))]

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
                while not self.stopping and not (set(self.records) - self.inflight) and not (
                    self.ops
                ):
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
                self._apply_ops()  # first: a queued file may be in a folder made offline
                self._process(batch)
                backoff = 0.2
            except Exception as exc:
                msg = exc.message if isinstance(exc, CsfsError) else f"{type(exc).__name__}: {exc}"
                self._note_error(msg)
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
        uploads = [r for r in snap if not r.deleted]
        failed: list[BaseException] = []
        done = set()
        for r, exc in zip(uploads, self.pool.map(self._try_upload, uploads), strict=True):
            if exc is None:
                continue
            if isinstance(exc, UploadImpossible):
                self._quarantine(r, exc)
            else:
                failed.append(exc)  # retried with the next batch
            done.add(r.seq)
        snap = [r for r in snap if r.seq not in done]
        crash_point("uploaded")
        with self.vault.commit_lock:
            # Where each file is now, and its latest mode and times: a rename or a
            # chmod may have come while the objects were uploading.
            current: list[Record] = []
            with self.lock:
                for r in snap:
                    latest = self.records.get(r.file_id, r)
                    now = Record(**asdict(r))
                    now.parent_id, now.name = latest.parent_id, latest.name
                    now.deleted, now.replaces = latest.deleted, latest.replaces
                    if latest.seq == r.seq:
                        now.mode, now.mtime_ns = latest.mode, latest.mtime_ns
                        now.ctime_ns, now.atime_ns = latest.ctime_ns, latest.atime_ns
                    if not now.deleted:
                        current.append(now)
            by_parent: dict[str, list[Record]] = {}
            for r in current:
                by_parent.setdefault(r.parent_id, []).append(r)
            for parent_id, recs in by_parent.items():
                try:
                    lost = self.vault.commit_versions(
                        parent_id,
                        [self._change(r) for r in recs],
                        also=self._folder_times,
                        touch=False,
                        keep_lost=False,
                    )
                except AccessDenied as exc:
                    # No longer ours to write (write access revoked): kept, not retried.
                    for r in recs:
                        self._quarantine(r, exc)
                    current = [r for r in current if r.parent_id != parent_id]
                    continue
                for name, entry in lost:
                    self.vault.conflict_copy(parent_id, name, entry)
            crash_point("committed")
            if self.on_commit is not None:
                self.on_commit(current)
            with self.lock:
                for r in snap:
                    self.replacing.pop(r.file_id, None)
                    cur = self.records.get(r.file_id)
                    if cur is not None and cur.seq == r.seq:
                        del self.records[r.file_id]
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self._path(r))
                        cur = None
                    elif cur is not None and cur.replaces is not None:
                        cur.replaces = None  # the name holds this file now
                        self._write(cur)
                    for key in r.keys:
                        self.cache.set_pinned(key, cur is not None and key in cur.keys)
        if failed:
            raise failed[0]
        with self.lock:
            if not self.records:
                self.errors.clear()  # what failed before has gone through since

    def _try_upload(self, rec: Record) -> BaseException | None:
        try:
            self._upload_objects(rec)
        except Exception as exc:
            return exc
        return None

    def _quarantine(self, rec: Record, why: BaseException) -> None:
        """Set aside a record that can never commit; its objects stay in the cache."""
        reason = why.message if isinstance(why, CsfsError) else str(why)
        try:
            path = self.vault.path_of(rec.parent_id)
        except CsfsError:
            path = None
        full = (path.rstrip("/") if path else "?") + "/" + rec.name
        qid = f"{rec.file_id}-{rec.version:x}"
        body = {
            "record": asdict(rec),
            "path": full,
            "reason": reason,
            "size": rec.size,
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        log.warning("upload of %s quarantined: %s", qid, reason)
        with self.lock:
            sealed = self.sealer.seal(rec.file_id, body)
            write_atomic(os.path.join(self.quarantine_dir, qid + ".rec"), sealed)
            self.quarantined[qid] = body
            for key in rec.keys:
                self.cache.set_pinned(key, True)
            cur = self.records.get(rec.file_id)
            if cur is not None and cur.seq == rec.seq:
                del self.records[rec.file_id]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(rec))
            self.lock.notify_all()

    def drop_quarantined(self, qid: str) -> None:
        """Discard a quarantined version for good (the user exported it, or does not
        want it): its record goes, and its objects become ordinary cache entries."""
        rec = self.quarantined_record(qid)
        with self.lock:
            self.quarantined.pop(qid, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.quarantine_dir, qid + ".rec"))
            for key in rec.keys:
                self.cache.set_pinned(key, False)

    def quarantined_record(self, qid: str) -> Record:
        with self.lock:
            q = self.quarantined.get(qid)
        if q is None:
            raise NotFound(f"nothing quarantined under {qid!r}", hint="see `csfs quarantine ls`")
        return Record(**q["record"])

    def _upload_objects(self, rec: Record) -> None:
        if self.before_upload is not None and rec.version:
            self.before_upload(rec)
        for key in rec.keys:
            path = self.cache.local_path(key)
            if path is None:
                raise UploadImpossible(f"a pending upload lost its local ciphertext ({key})")
            self.vault.put_version_object(key, path)

    def _metadata(self, m: DirectoryManifest, r: Record) -> Entry:
        """What the new entry keeps of the file's metadata: the manifest's entry for
        it (a chown or setxattr since), else what the file system made it with."""
        for e in m.entries.values():
            if e.id == r.file_id and e.type == "f":
                return e
        made = self.metadata_for(r.file_id) if self.metadata_for is not None else None
        return made if made is not None else Entry(r.file_id, "f")

    def _folder_times(self, m: DirectoryManifest) -> None:
        """A new version leaves the folder's times alone (POSIX: writing a file does not
        change its folder); a new name takes the time it was made here."""
        changed = self.folder_time(m.dir_id) if self.folder_time is not None else None
        if changed is not None:
            m.mtime_ns = max(m.mtime_ns, changed)
            m.ctime_ns = max(m.ctime_ns or m.mtime_ns, changed)

    def _change(self, r: Record) -> VersionChange:
        """The manifest change a record commits: its own versions count as its base,
        and it follows the file if it was renamed in its folder meanwhile."""
        return VersionChange(
            r.name,
            r.file_id,
            lambda m: with_content(self._metadata(m, r), r),
            Entry(r.file_id, "f", version=r.base_version),
            own=frozenset(r.own_versions()),
            follow=True,
            replaces=r.replaces,
        )


