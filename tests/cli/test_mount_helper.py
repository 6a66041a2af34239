"""mount.csfs: mount(8)'s helper for fstab lines of type `csfs`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from csfs.cli.mount_helper import translate


def test_translate_options() -> None:
    args = translate(["s3://b/v", "/mnt/x", "-o", "noauto,user,key=/k.pem,passphrase_file=/p,"
                      "cache_size=4G,ttl=2,ro,allow_other"])
    assert args == ["mount", "--store", "s3://b/v", "--key", "/k.pem", "--passphrase-file", "/p",
                    "--cache-size", "4G", "--ttl", "2", "--read-only", "-o", "allow_other", "/mnt/x"]


def test_translate_needs_two_paths() -> None:
    with pytest.raises(SystemExit, match="usage"):
        translate(["/mnt/x"])


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse")
                    or shutil.which("fusermount3") is None,
                    reason="mounting through mount(8) needs root, /dev/fuse and fuse3")
def test_mount_through_mount_8(tmp_path: str) -> None:
    """`mount -t csfs STORE DIR -o key=...` runs /sbin/mount.csfs, as an fstab line would."""
    helper = "/sbin/mount.csfs"
    ours = os.path.join(os.path.dirname(sys.executable), "mount.csfs")
    if os.path.lexists(helper) and os.path.realpath(helper) != os.path.realpath(ours):
        pytest.skip(f"{helper} exists and belongs to another installation")
    created = not os.path.lexists(helper)
    if created:
        os.symlink(ours, helper)
    env = {**os.environ, "XDG_STATE_HOME": f"{tmp_path}/state", "XDG_CACHE_HOME": f"{tmp_path}/cache",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("CSFS_PASSPHRASE", None)
    csfs = [sys.executable, "-c", "from csfs.cli.main import main; main()"]
    mnt = os.path.join(tmp_path, "mnt")
    os.mkdir(mnt)
    try:
        subprocess.run([*csfs, "keygen", "--dir", f"{tmp_path}/k", "--no-passphrase"], env=env,
                       check=True, capture_output=True)
        key = f"{tmp_path}/k/recipient_private_key.pem"
        store = f"{tmp_path}/store"
        subprocess.run([*csfs, "init", "--store", store, "--key", key], env=env, check=True,
                       capture_output=True)
        r = subprocess.run(["mount", "-t", "csfs", store, mnt, "-o", f"noauto,key={key}"],
                           env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(mnt, "hello.txt"), "w") as f:
            f.write("via fstab")
        subprocess.run([*csfs, "umount", mnt], env=env, check=True)
        out = subprocess.run([*csfs, "cat", "/hello.txt", "--store", store, "--key", key],
                             env=env, check=True, capture_output=True, text=True).stdout
        assert out == "via fstab"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        if created:
            os.unlink(helper)
