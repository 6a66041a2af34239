"""What a mount leaves on the local disk: no file names, even when it logs an
error (unless --log-paths asks for them); and clear words for a busy mount point."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuse.conftest import make_vault  # noqa: F401 - fixture
from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

DIR = "hidden-dir-qrs7"
FILE = "secret-name-xyz9.txt"


def files_containing(root: str, needles: list[bytes], skip: tuple[str, ...]) -> list[str]:
    hits = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
        for f in files:
            p = os.path.join(d, f)
            if any(n in f.encode() for n in needles):
                hits.append(p)
                continue
            try:
                with open(p, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if any(n in data for n in needles):
                hits.append(p)
    return hits


def tamper_and_read(vault: Vault, log_paths: bool) -> tuple[str, str]:
    m = vault.mount()
    os.mkdir(m.p(DIR))
    with open(m.p(DIR, FILE), "wb") as f:
        f.write(os.urandom(200_000))
    m.sync()
    m.umount()
    [key] = vault.list_keys("c/")
    raw = bytearray(vault.get_raw(key))
    raw[len(raw) // 2] ^= 1
    vault.put_raw(key, bytes(raw))
    cache = os.path.join(vault.root, "fresh-cache")
    fresh = vault.mount("fresh", cache_dir=cache, extra=("--log-paths",) if log_paths else ())
    with pytest.raises(OSError) as exc, open(fresh.p(DIR, FILE), "rb") as f:
        f.read()
    assert exc.value.errno == errno.EIO
    # A tampered folder manifest: listing it, and opening what is in it, fail too.
    from csfs.vault.layout import HEADER_KEY, VaultHeader

    root_id = VaultHeader.decode(vault.get_raw(HEADER_KEY)).root_id
    [manifest] = [k for k in vault.list_keys("m/") if root_id not in k]
    raw = bytearray(vault.get_raw(manifest))
    raw[-40] ^= 1
    vault.put_raw(manifest, bytes(raw))
    assert poll_eio(lambda: os.listdir(fresh.p(DIR)))
    assert poll_eio(lambda: open(fresh.p(DIR, FILE), "rb").close())
    status = fresh.status()
    fresh.umount()
    with open(os.path.join(cache, "mount.log")) as f:
        return f.read(), status


def poll_eio(fn: Callable[[], object], timeout: float = 15) -> bool:
    """True once fn fails with EIO (the mount notices the change after its TTL)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fn()
        except OSError as e:
            if e.errno == errno.EIO:
                return True
        time.sleep(0.2)
    return False


def test_eio_leaves_no_name_on_disk(make_vault: Callable[[str], Vault]) -> None:  # noqa: F811
    vault = make_vault("local")
    log, status = tamper_and_read(vault, log_paths=False)
    assert "ERROR" in log and " node " in log, log  # the error is logged, by node id
    # Nowhere under the test's root (state, cache, config, runtime, logs, the store)
    # is there a name, except in the mount points themselves (unmounted, empty).
    skip = tuple(os.path.join(vault.root, n) for n in ("mnt", "fresh"))
    assert files_containing(vault.root, [DIR.encode(), FILE.encode()], skip) == []
    # The user asking `csfs status` still learns the path: it lives in memory only.
    assert FILE in status


def test_log_paths_writes_names(make_vault: Callable[[str], Vault]) -> None:  # noqa: F811
    vault = make_vault("local")
    log, _ = tamper_and_read(vault, log_paths=True)
    assert f"/{DIR}/{FILE}" in log


def test_second_mount_on_one_folder(make_vault: Callable[[str], Vault],  # noqa: F811
                                    tmp_path: Path) -> None:
    vault = make_vault("local")
    m = vault.mount()
    r = vault.cli("mount", m.path, "--cache-dir", m.cache_dir, check=False)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"{m.path} is already a csfs mount (of file://{vault.store})" in err, err
    assert "cache folder" not in err
    # Another folder, but the same cache folder: say which mount holds it.
    other = tmp_path / "other"
    other.mkdir()
    r = vault.cli("mount", str(other), "--cache-dir", m.cache_dir, check=False)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"the csfs mount at {m.path} already uses cache folder" in err, err
    assert not os.path.ismount(other)
