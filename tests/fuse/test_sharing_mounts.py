"""Three users, three mounts of one moto bucket: what sharing looks like through FUSE."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from tests.fuse.helpers import Vault, poll, requires_fuse
from tests.fuse.helpers import read_file as read

pytestmark = [pytest.mark.mount, requires_fuse]


def test_three_users_through_mounts(moto_vault: Vault) -> None:
    alice = moto_vault
    bob = alice.user("bob", "--pq")
    carol = alice.user("carol", "--curve", "p256")
    a = alice.mount("a", ttl=1)
    os.makedirs(a.p("team", "docs"))
    os.makedirs(a.p("private"))
    payload = os.urandom(3 << 20)
    with open(a.p("team", "docs", "big.bin"), "wb") as f:
        f.write(payload)
    with open(a.p("private", "diary.txt"), "wb") as f:
        f.write(b"alice only")
    with open(a.p("private", "note.txt"), "wb") as f:
        f.write(b"one file for carol")
    a.sync()
    alice.cli("member", "add", bob.public_key, "--name", "bob")
    alice.cli("member", "add", carol.public_key, "--name", "carol")
    alice.cli("share", "/team", "--with", "bob", "--write")
    alice.cli("share", "/team/docs", "--with", "carol")
    alice.cli("share", "/private/note.txt", "--with", "carol")  # one file, not its folder

    b = bob.mount("b", ttl=1)
    c = carol.mount("c", ttl=1)
    assert os.listdir(b.path) == ["Shared"]
    assert os.listdir(b.p("Shared", "alice")) == ["team"]
    assert read(b.p("Shared", "alice", "team", "docs", "big.bin")) == payload
    # Only her shares, by their own names.
    assert sorted(os.listdir(c.p("Shared", "alice"))) == ["docs", "note.txt"]
    assert read(c.p("Shared", "alice", "docs", "big.bin")) == payload
    assert read(c.p("Shared", "alice", "note.txt")) == b"one file for carol"
    with open(a.p("private", "note.txt"), "ab") as f:
        f.write(b", updated")
    a.sync()
    assert poll(lambda: read(c.p("Shared", "alice", "note.txt"))
                      == b"one file for carol, updated", timeout=15)

    # Bob writes into the share; the owner and Carol see it.
    with open(b.p("Shared", "alice", "team", "docs", "from-bob.txt"), "wb") as f:
        f.write(b"hello from bob")
    b.sync()
    assert poll(lambda: read(a.p("team", "docs", "from-bob.txt")) == b"hello from bob",
                timeout=15)
    assert poll(lambda: read(c.p("Shared", "alice", "docs", "from-bob.txt"))
                      == b"hello from bob", timeout=15)

    # Carol's share is read-only: no write bits, and writes fail with EACCES.
    st = os.stat(c.p("Shared", "alice", "docs", "big.bin"))
    assert st.st_mode & 0o222 == 0
    for attempt in (lambda: open(c.p("Shared", "alice", "docs", "new.txt"), "wb"),
                    lambda: os.mkdir(c.p("Shared", "alice", "docs", "d")),
                    lambda: os.unlink(c.p("Shared", "alice", "docs", "big.bin")),
                    lambda: os.mkdir(c.p("Shared", "alice", "mine"))):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno in (errno.EACCES, errno.EROFS, errno.EPERM), exc.value

    # mv out of the share crosses a boundary: EXDEV, so mv copies (wrapped to the new
    # place's readers) and deletes.
    subprocess.run(["mv", a.p("team", "docs", "from-bob.txt"), a.p("private", "moved.txt")],
                   check=True, capture_output=True)
    assert read(a.p("private", "moved.txt")) == b"hello from bob"
    assert poll(lambda: not os.path.exists(b.p("Shared", "alice", "team", "docs",
                                                     "from-bob.txt")), timeout=15)

    # Revoke Bob: his mount loses the share, and what Alice writes next is not his.
    alice.cli("unshare", "/team", "--with", "bob")
    assert poll(lambda: os.listdir(b.p("Shared", "alice")) == [], timeout=20)
    with open(a.p("team", "docs", "after.txt"), "wb") as f:
        f.write(b"not for bob")
    a.sync()
    assert poll(lambda: read(c.p("Shared", "alice", "docs", "after.txt")) == b"not for bob",
                timeout=15)


def test_forged_write_gives_eio_and_mount_survives(moto_vault: Vault) -> None:
    alice = moto_vault
    carol = alice.user("carol")
    a = alice.mount("a", ttl=1)
    os.makedirs(a.p("team"))
    with open(a.p("team", "f.txt"), "wb") as f:
        f.write(b"genuine")
    with open(a.p("other.txt"), "wb") as f:
        f.write(b"unaffected")
    a.sync()
    alice.cli("member", "add", carol.public_key, "--name", "carol")
    alice.cli("share", "/team", "--with", "carol")  # read-only
    # Carol, holding bucket credentials, signs a manifest herself and uploads it.
    import sys
    forge = (
        "import os, sys\n"
        "from csfs.crypto import load_identity\n"
        "from csfs.store import open_store\n"
        "from csfs.vault import Vault\n"
        "from csfs.vault.layout import manifest_key\n"
        "ident = load_identity(os.environ['CSFS_KEY'], b'pw')\n"
        "env = os.environ\n"
        "store = open_store(env['CSFS_STORE'], endpoint_url=env.get('AWS_ENDPOINT_URL'))\n"
        "from csfs.crypto import load_recipient\n"
        "owner = load_recipient(env['CSFS_TRUST_OWNER']).verify_key_bytes\n"
        "v = Vault.open(store, ident, trusted_owners={owner})\n"
        "e = v.lookup('/Shared/alice/team')\n"
        "m, _ = v.load_dir(e.id)\n"
        "m = m.copy(); m.version += 1; del m.entries['f.txt']\n"
        "store.put(manifest_key(e.id), m.seal(v.vault_id, ident))\n"
    )
    from tests.fuse.helpers import run
    run([sys.executable, "-c", forge], carol.env)
    time.sleep(1.5)  # past the mount's TTL
    with pytest.raises(OSError) as exc:
        os.listdir(a.p("team"))
    assert exc.value.errno == errno.EIO
    assert "not an authorised writer" in a.status()
    assert read(a.p("other.txt")) == b"unaffected"  # the mount is still there and answering
    r = alice.cli("fsck", check=False)
    assert r.returncode != 0 and b"not an authorised writer" in r.stdout + r.stderr
