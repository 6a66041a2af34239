"""`mount.csfs STORE MOUNTPOINT [-o opts]`: the helper mount(8) runs for type `csfs`.

With `/sbin/mount.csfs` linked to this command, an fstab line such as

    s3://bucket/vault  /home/me/vault  csfs  noauto,key=/home/me/k.pem,passphrase_file=/p  0 0

mounts with `mount /home/me/vault`. Options csfs knows are translated into
`csfs mount` flags; mount(8)'s own (noauto, user, rw, ...) are dropped; the
rest go to FUSE.
"""

from __future__ import annotations

import sys

from csfs.cli.main import main as csfs_main

FLAGS = {
    "key": "--key",
    "passphrase_file": "--passphrase-file",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "ttl": "--ttl",
    "endpoint_url": "--endpoint-url",
}
SWITCHES = {"ro": "--read-only", "read_only": "--read-only", "foreground": "-f"}
MOUNT_ONLY = {
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "rw",
    "defaults",
    "_netdev",
    "nofail",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
}


def translate(argv: list[str]) -> list[str]:
    """mount(8)-style arguments -> `csfs mount` arguments."""
    positional: list[str] = []
    options: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            options += next(it, "").split(",")
        elif arg.startswith("-o"):
            options += arg[2:].split(",")
        elif arg in ("-s", "-f", "-n", "-v"):
            continue  # sloppy, fake, no-mtab, verbose: nothing to do
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise SystemExit("usage: mount.csfs STORE MOUNTPOINT [-o options]")
    store, mountpoint = positional
    out = ["mount", "--store", store]
    for opt in filter(None, options):
        name, eq, value = opt.partition("=")
        if name in FLAGS and eq:
            out += [FLAGS[name], value]
        elif name in SWITCHES:
            out.append(SWITCHES[name])
        elif name not in MOUNT_ONLY:
            out += ["-o", opt]
    return [*out, mountpoint]


def main() -> None:
    sys.argv = ["csfs", *translate(sys.argv[1:])]
    csfs_main()
