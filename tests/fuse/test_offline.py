"""The store is optional at close time: a mount over a store that goes away keeps
every closed file, serves what it has cached, and uploads once the store is back.

Real mounts over moto S3 behind the fault proxy (tests/faultproxy.py), which the
mount daemon reaches through AWS_ENDPOINT_URL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from tests.faultproxy import FaultProxy
from tests.fuse.helpers import Vault, read_file, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def _write(path: str, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:  # close() must return 0: the version is in the queue
        f.write(data)


def test_store_outage_loses_no_closed_file(make_vault: Callable[[str], Vault],
                                           fault_proxy: FaultProxy) -> None:
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    os.mkdir(m.p("d"))
    want = {"a": os.urandom(70_000), "b": os.urandom(5000), "d/c": os.urandom(300_000)}
    for name, data in want.items():
        _write(m.p(name), data)
    m.sync()
    for name, data in want.items():
        assert read_file(m.p(name)) == data  # cached from here on

    fault_proxy.outage()
    time.sleep(2)  # past the TTL: every cached manifest and the access state are stale
    ops = acked = 0
    t0 = time.monotonic()
    # Reads and listings are served from the cache, stale.
    assert sorted(os.listdir(m.path)) == ["a", "b", "d"]
    assert os.listdir(m.p("d")) == ["c"]
    assert read_file(m.p("d/c")) == want["d/c"]
    ops += 3
    # Overwrite, append, create (in two folders), rename of a new file: every close() is 0.
    want["a"] = os.urandom(100_000)
    _write(m.p("a"), want["a"])
    _write(m.p("b"), b"more", "ab")
    want["b"] += b"more"
    want["new"] = os.urandom(2_000_000)
    _write(m.p("new.tmp"), want["new"])
    os.rename(m.p("new.tmp"), m.p("new"))
    want["d/e"] = b"e" * 10
    _write(m.p("d/e"), want["d/e"])
    ops += 5
    acked += 4
    for name in ("a", "b", "new", "d/e"):
        assert read_file(m.p(name)) == want[name]
        ops += 1
    assert os.stat(m.p("new")).st_size == 2_000_000
    status = m.status()
    assert "store: offline since" in status, status
    assert "pending uploads: 4 files" in status, status
    offline_ops_s = time.monotonic() - t0

    fault_proxy.restore()
    t1 = time.monotonic()
    m.sync(timeout=60)
    drained_s = time.monotonic() - t1
    assert drained_s < 15, f"uploads began {drained_s:.1f} s after the store came back"
    assert "store: online" in m.status()

    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    lost = [name for name, data in want.items() if read_file(fresh.p(name)) != data]
    print(f"\noffline: {ops} operations in {offline_ops_s:.1f} s, {acked} closes acknowledged, "
          f"faults injected {fault_proxy.counts['faults']}, drained {drained_s:.1f} s after "
          f"the store came back, lost {len(lost)}")
    assert not lost
    assert sorted(os.listdir(fresh.path)) == ["a", "b", "d", "new"]


def test_close_during_outage_seals_without_the_store(make_vault: Callable[[str], Vault],
                                                     fault_proxy: FaultProxy) -> None:
    """Files opened while the store answered, written and closed after it went away
    and the TTL expired: close() needs nothing from the store (no manifest GET, no
    access-log LIST), and the bytes reach the store once it is back."""
    vault = make_vault("moto")
    vault.env["AWS_ENDPOINT_URL"] = fault_proxy.endpoint_url
    m = vault.mount(ttl=1)
    _write(m.p("old"), b"old version")
    m.sync()
    fds = {"old": os.open(m.p("old"), os.O_WRONLY | os.O_TRUNC),
           "created": os.open(m.p("created"), os.O_WRONLY | os.O_CREAT, 0o644)}
    want = {name: os.urandom(200_000) for name in fds}
    fault_proxy.outage()
    time.sleep(2)  # past the TTL
    for name, fd in fds.items():
        os.write(fd, want[name])
        os.close(fd)  # raised EIO before: the seal asked the store, and the bytes were dropped
    fault_proxy.restore()
    m.sync(timeout=60)
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    for name, data in want.items():
        assert read_file(fresh.p(name)) == data, name
