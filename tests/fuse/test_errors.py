"""Mount-time mistakes end in one clear line and leave nothing mounted."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def test_bad_fuse_option(make_vault: Callable[[str], Vault]) -> None:
    vault = make_vault("local")
    mnt = os.path.join(vault.root, "badmnt")
    os.mkdir(mnt)
    r = vault.cli("mount", mnt, "--cache-dir", os.path.join(vault.root, "c-bad"),
                  "-o", "no_such_fuse_option", check=False)
    assert r.returncode != 0
    err = r.stderr.decode().strip().splitlines()
    assert err[0].startswith("csfs: error: FUSE refused to mount"), err
    assert "Traceback" not in r.stderr.decode()
    assert not os.path.ismount(mnt)


def test_mount_point_must_exist(make_vault: Callable[[str], Vault]) -> None:
    vault = make_vault("local")
    r = vault.cli("mount", os.path.join(vault.root, "missing"), check=False)
    assert r.returncode == 2
    assert r.stderr.decode().startswith("csfs: error: mount point")


def test_second_mount_of_one_cache_is_refused(make_vault: Callable[[str], Vault]) -> None:
    vault = make_vault("local")
    first = vault.mount("m1", cache_dir=os.path.join(vault.root, "shared-cache"))
    other = os.path.join(vault.root, "m2")
    os.mkdir(other)
    r = vault.cli("mount", other, "--cache-dir", first.cache_dir, check=False)
    assert r.returncode == 2
    assert f"the csfs mount at {first.path} already uses cache folder" in r.stderr.decode()
    assert not os.path.ismount(other)
