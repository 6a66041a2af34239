"""Two mounts of one bucket: changes propagate within the TTL; concurrent writes keep both."""

from __future__ import annotations

import os
import time

import pytest

from tests.fuse.helpers import Vault, poll, requires_fuse
from tests.fuse.helpers import read_file as read

pytestmark = [pytest.mark.mount, requires_fuse]


def test_two_mounts(moto_vault: Vault) -> None:
    a = moto_vault.mount("a", ttl=1)
    b = moto_vault.mount("b", ttl=1)
    data = os.urandom(100_000)
    with open(a.p("shared.bin"), "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    t0 = time.monotonic()
    assert poll(lambda: read(b.p("shared.bin")) == data), "not visible on B within 10 s"
    assert time.monotonic() - t0 < 1 + 1 + 1  # ttl + 1 s, plus a little polling slack

    # Both open the same version before either commits: both versions must survive.
    # (No O_TRUNC: on this libfuse2 stack it becomes a separate truncate that seals an extra
    # version, which yields a second conflict copy; see the report.)
    fa = os.open(a.p("shared.bin"), os.O_WRONLY)
    fb = os.open(b.p("shared.bin"), os.O_WRONLY)
    os.write(fa, b"from A\n")
    os.write(fb, b"from B\n")
    os.ftruncate(fa, 7)
    os.ftruncate(fb, 7)
    os.fsync(fa)
    os.close(fa)
    os.fsync(fb)
    os.close(fb)
    a.sync()
    b.sync()

    def both_versions() -> list[str] | None:
        names = sorted(os.listdir(a.p()))
        return names if len(names) == 2 else None

    names = poll(both_versions)
    assert names is not None, os.listdir(a.p())
    assert "shared.bin" in names
    conflict = [n for n in names if n != "shared.bin"][0]
    assert "(conflict" in conflict
    contents = {read(a.p(n)) for n in names}
    assert contents == {b"from A\n", b"from B\n"}
    assert poll(lambda: {read(b.p(n)) for n in os.listdir(b.p())} == contents)
