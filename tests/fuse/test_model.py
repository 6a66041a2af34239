"""Random file operations on the mount and on a plain folder must agree (Hypothesis)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    multiple,
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.fuse.helpers import Mount, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

NAMES = ["a", "b", "c"]
CHUNK = 64 * 1024
offsets = st.one_of(st.integers(0, 300_000),
                    st.sampled_from([0, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 3, 3 * CHUNK]))
sizes = st.one_of(st.integers(0, 4096), st.integers(0, 140_000))


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", e.errno)


# The local store only: the model checks file semantics, which do not depend on the backend,
# and moto's latency would make the bounded run too slow.
def test_model_against_plain_folder(local_mounted: Mount, tmp_path: Path) -> None:
    counter = itertools.count()

    class Model(RuleBasedStateMachine):
        fds = Bundle("fds")

        def __init__(self) -> None:
            super().__init__()
            n = next(counter)
            self.roots = [local_mounted.p(f"case{n}"), str(tmp_path / f"ref{n}")]
            for r in self.roots:
                os.mkdir(r)
            self.open: list[tuple[int, int]] = []

        def both(self, fn, *args):  # type: ignore[no-untyped-def]
            got = [outcome(fn, *a) for a in args]
            assert got[0] == got[1], (fn.__name__, got)
            return got[0]

        @rule(target=fds, name=st.sampled_from(NAMES), trunc=st.booleans(), create=st.booleans())
        def open_file(self, name: str, trunc: bool, create: bool):  # type: ignore[no-untyped-def]
            flags = os.O_RDWR | (os.O_TRUNC if trunc else 0) | (os.O_CREAT if create else 0)
            res = [outcome(os.open, os.path.join(r, name), flags, 0o644) for r in self.roots]
            assert [k for k, _ in res] == [res[1][0]] * 2, res
            if res[0][0] == "err":
                assert res[0] == res[1]
                return multiple()
            pair = (res[0][1], res[1][1])
            self.open.append(pair)
            return pair

        @rule(fd=fds, offset=offsets, size=sizes, seed=st.integers(0, 255))
        def pwrite(self, fd: tuple[int, int], offset: int, size: int, seed: int) -> None:
            if fd not in self.open:
                return
            data = bytes((seed + i) % 251 for i in range(size))
            self.both(os.pwrite, (fd[0], data, offset), (fd[1], data, offset))

        @rule(fd=fds, offset=offsets, size=sizes)
        def pread(self, fd: tuple[int, int], offset: int, size: int) -> None:
            if fd in self.open:
                self.both(os.pread, (fd[0], size, offset), (fd[1], size, offset))

        @rule(fd=fds, data=st.binary(max_size=3000))
        def seek_write_read(self, fd: tuple[int, int], data: bytes) -> None:
            if fd not in self.open:
                return
            self.both(os.lseek, (fd[0], 0, os.SEEK_END), (fd[1], 0, os.SEEK_END))
            self.both(os.write, (fd[0], data), (fd[1], data))
            self.both(os.lseek, (fd[0], 0, os.SEEK_SET), (fd[1], 0, os.SEEK_SET))
            self.both(os.read, (fd[0], 1 << 20), (fd[1], 1 << 20))

        @rule(fd=fds, length=offsets)
        def ftruncate(self, fd: tuple[int, int], length: int) -> None:
            if fd in self.open:
                self.both(os.ftruncate, (fd[0], length), (fd[1], length))

        @rule(fd=fds)
        def fstat_size(self, fd: tuple[int, int]) -> None:
            if fd in self.open:
                assert os.fstat(fd[0]).st_size == os.fstat(fd[1]).st_size

        @rule(fd=consumes(fds))
        def close(self, fd: tuple[int, int]) -> None:
            if fd in self.open:
                self.open.remove(fd)
                self.both(os.close, (fd[0],), (fd[1],))

        @rule(a=st.sampled_from(NAMES), b=st.sampled_from(NAMES))
        def rename(self, a: str, b: str) -> None:
            self.both(os.rename, *[(os.path.join(r, a), os.path.join(r, b)) for r in self.roots])

        @rule(a=st.sampled_from(NAMES))
        def unlink(self, a: str) -> None:
            self.both(os.unlink, *[(os.path.join(r, a),) for r in self.roots])

        @rule(a=st.sampled_from(NAMES))
        def read_whole(self, a: str) -> None:
            def slurp(p: str) -> bytes:
                with open(p, "rb") as f:
                    return f.read()
            self.both(slurp, *[(os.path.join(r, a),) for r in self.roots])

        @invariant()
        def same_names_and_sizes(self) -> None:
            listing = []
            for r in self.roots:
                names = sorted(n for n in os.listdir(r) if not n.startswith(".fuse_hidden"))
                listing.append([(n, os.stat(os.path.join(r, n)).st_size) for n in names])
            assert listing[0] == listing[1]

        def teardown(self) -> None:
            for fd in self.open:
                os.close(fd[0])
                os.close(fd[1])
            # Closed files read back the same as the reference.
            for n in os.listdir(self.roots[1]):
                with open(os.path.join(self.roots[0], n), "rb") as f1, \
                        open(os.path.join(self.roots[1], n), "rb") as f2:
                    assert f1.read() == f2.read(), n
            shutil.rmtree(self.roots[1])

    # CSFS_MODEL_EXAMPLES raises the bound for a longer soak run by hand.
    examples = int(os.environ.get("CSFS_MODEL_EXAMPLES", "25"))
    run_state_machine_as_test(Model, settings=settings(max_examples=examples,
                                                       stateful_step_count=30, deadline=None))
