"""A writer's hostile manifest through the mount: EIO for that folder, the rest served."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from csfs.crypto import Context, load_identity
from csfs.crypto.envelope import KIND_DIRECTORY
from csfs.crypto.sealed import seal_object
from csfs.store import open_store
from csfs.vault import Vault as LibVault
from csfs.vault.layout import manifest_key
from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def test_deeply_nested_manifest_is_eio_and_the_mount_stays_up(
        make_vault: Callable[[str], Vault]) -> None:
    vault = make_vault("local")
    m = vault.mount()
    os.mkdir(m.p("d"))
    with open(m.p("ok.txt"), "wb") as f:
        f.write(b"fine\n")
    m.sync()
    m.umount()
    # A writer signs /d with arrays nested 200,000 deep (json: RecursionError).
    me = load_identity(vault.env["CSFS_KEY"], b"pw")
    lib = LibVault.open(open_store(vault.store), me, state_dir=os.path.join(vault.root, "lib"))
    d, _ = lib.load_dir(lib.lookup("/d").id)
    body = b'{"format":"csfs-dir-1","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    ctx = Context(KIND_DIRECTORY, lib.vault_id, bytes.fromhex(d.dir_id), d.version + 1)
    lib.store.put(manifest_key(d.dir_id), seal_object(body, d.recipients(), me, ctx))

    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with pytest.raises(OSError) as exc:
        os.listdir(fresh.p("d"))
    assert exc.value.errno == errno.EIO
    assert os.path.ismount(fresh.path)
    with open(fresh.p("ok.txt"), "rb") as f:
        assert f.read() == b"fine\n"
    r = fresh.cli("ls", "/d", check=False)
    assert r.returncode == 3 and b"Traceback" not in r.stderr, r.stderr
