"""The namespace changes the mount queues while the store is unreachable (or while
earlier ones still wait): each a sealed ``.op`` record on disk, applied in
order before the next upload commit (docs/format.md 5.5, 8.1, 9)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict

from csfs.errors import CsfsError, TransientStoreError
from csfs.vault.crashpoint import crash_point
from csfs.vault.queue_records import NamespaceOp, RecordSealer, write_atomic
from csfs.vault.vault import Vault

log = logging.getLogger("csfs.upload")


class QueuedChanges:
    """The queued namespace changes of an UploadQueue (a mixin: it shares the
    queue's lock, sequence numbers and directory).

    Never reorders changes, and never lets one that fails for good hold up the
    rest: it is dropped and reported, the store keeps the entries it has.
    """

    vault: Vault
    dir: str
    lock: threading.Condition
    seq: int
    ops: list[NamespaceOp]
    sealer: RecordSealer
    apply_op: Callable[[NamespaceOp], None] | None

    def _note_error(self, msg: str) -> None:
        raise NotImplementedError  # UploadQueue's

    def _op_path(self, op: NamespaceOp) -> str:
        return os.path.join(self.dir, f"{op.node_id}-{op.seq:016x}.op")

    def _load_ops(self) -> None:
        """The changes queued by the last mount, in order."""
        for name in os.listdir(self.dir):
            if name.endswith(".op"):
                try:
                    op = NamespaceOp(**self.sealer.open(os.path.join(self.dir, name)))
                except (CsfsError, OSError, ValueError, TypeError):
                    continue
                self.ops.append(op)
                self.seq = max(self.seq, op.seq)
        self.ops.sort(key=lambda op: op.seq)

    def add_op(self, op: NamespaceOp) -> None:
        """Queue a namespace change durably, after everything queued before it."""
        with self.lock:
            self.seq += 1
            op.seq = self.seq
            write_atomic(self._op_path(op), self.sealer.seal(op.node_id, asdict(op)))
            self.ops.append(op)
            self.lock.notify_all()
        crash_point("queued-change")

    def pending_ops(self) -> list[NamespaceOp]:
        with self.lock:
            return list(self.ops)

    def _apply_ops(self) -> None:
        """Apply the queued namespace changes in order. One the store refuses for good
        (a conflict it cannot merge) is dropped with an error: the entries stay as the
        store has them, nothing is removed, and the rest go on."""
        while True:
            with self.lock:
                if not self.ops or self.apply_op is None:
                    return
                op = self.ops[0]
            with self.vault.commit_lock:
                try:
                    self.apply_op(op)
                except TransientStoreError:
                    raise
                except Exception as exc:  # one bad change must not hold up the queue
                    why = exc.message if isinstance(exc, CsfsError) else repr(exc)
                    # (no name in the log: mount logs hold no paths unless asked)
                    log.warning("a queued %s could not be applied: %s", op.kind, type(exc).__name__)
                    self._note_error(f"a queued {op.kind} of {op.name!r} failed: {why}")
                with self.lock:
                    self.ops.remove(op)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._op_path(op))
                    self.lock.notify_all()
