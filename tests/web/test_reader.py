"""The reader page against a real vault on moto's S3 server, in Chromium.

The vault is made with the csfs CLI: owner alice (X25519) shares /projects with
bob (P-256) and dave (ML-KEM-768 + X25519), and the file /private.txt with dave
alone, all with passphrase-protected key files. Each opens it in the page as a
person would (key file, passphrase, S3 endpoint and credentials) and saves
every file; bytes are compared.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from csfs.web import make_server
from tests.faultproxy import FaultProxy
from tests.servers import DUMMY_ENV, MotoServer, make_bucket
from tests.vault.conftest import run_csfs
from tests.web.conftest import SCREENSHOTS

# 0 B, 1 B, one 64 KiB chunk, many chunks (and several 4 MiB ranged reads).
FILES = {
    "empty.bin": b"",
    "one.txt": b"x",
    "chunk.bin": os.urandom(60_000),
    "many.bin": os.urandom(9 * 2**20 + 123),
}
PREFIX = "vault"


def cors_rule(origin: str) -> dict[str, Any]:
    """The bucket CORS rule the reader needs (README: "The web reader")."""
    return {
        "AllowedOrigins": [origin],
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["Content-Range", "Content-Length", "ETag"],
        "MaxAgeSeconds": 3600,
    }


@dataclass
class Person:
    name: str
    key: Path
    passphrase: str
    env: dict[str, str]


@dataclass
class World:
    server: Any  # MotoServer, or anything with its endpoint_url and env (RGW)
    bucket: str
    people: dict[str, Person]
    s3: Any
    access_key: str = DUMMY_ENV["AWS_ACCESS_KEY_ID"]
    secret_key: str = DUMMY_ENV["AWS_SECRET_ACCESS_KEY"]


def _ok(person: Person, *args: str) -> str:
    r = run_csfs(*args, env=person.env)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def world(moto_server: MotoServer, reader_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(moto_server, reader_url, tmp_path_factory)


def fixed_p256_key(directory: Path, name: str, passphrase: str) -> None:
    """A P-256 key pair from a fixed seed, written as `csfs keygen --curve p256`
    writes one (the library's save_identity). The reader's screenshots show the
    fingerprint of the key that opened the vault: a fresh key each run changed
    them every run."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from csfs.crypto import save_identity
    from csfs.crypto.keys import Identity

    def seed(label: str) -> bytes:
        return hashlib.sha256(f"csfs web screenshots {name} {label}".encode()).digest()

    identity = Identity(
        "p256",
        (ec.derive_private_key(int.from_bytes(seed("kem"), "big") % 2**255, ec.SECP256R1()),),
        ed25519.Ed25519PrivateKey.from_private_bytes(seed("sig")))
    save_identity(identity, str(directory), name, passphrase.encode())


def build_world(moto_server: Any, reader_url: str, tmp_path_factory: pytest.TempPathFactory,
                access_key: str = DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                secret_key: str = DUMMY_ENV["AWS_SECRET_ACCESS_KEY"]) -> World:
    """The vault on `moto_server` (or any S3 server with an endpoint_url and an env for
    the CLI), with the reader's CORS rule on its bucket."""
    tmp = tmp_path_factory.mktemp("web-vault")
    bucket = make_bucket(moto_server.endpoint_url, f"csfs-web-{uuid.uuid4().hex[:12]}",
                         access_key=access_key, secret_key=secret_key)
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                      aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                      config=Config(s3={"addressing_style": "path"}))
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [cors_rule(reader_url)]})
    people = {}
    for name, kind in (("alice", ()), ("bob", ("--curve", "p256")), ("dave", ("--pq",))):
        home = tmp / name
        env = {**moto_server.env, "CSFS_PASSPHRASE": f"pw of {name}",
               "CSFS_STORE": f"s3://{bucket}/{PREFIX}",
               "CSFS_KEY": str(home / "keys" / f"{name}_private_key.pem"),
               "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
               "XDG_DATA_HOME": str(home / "data")}
        people[name] = p = Person(name, Path(env["CSFS_KEY"]), env["CSFS_PASSPHRASE"], env)
        if name == "bob":
            fixed_p256_key(home / "keys", name, p.passphrase)
        else:
            _ok(p, "keygen", "--dir", str(home / "keys"), "--name", name, *kind)
        assert b"ENCRYPTED PRIVATE KEY" in p.key.read_bytes()
    alice = people["alice"]
    _ok(alice, "init", "--name", "alice")
    _ok(alice, "mkdir", "/projects")
    for name, data in FILES.items():
        (tmp / name).write_bytes(data)
        _ok(alice, "put", str(tmp / name), f"/projects/{name}")
    (tmp / "private.txt").write_bytes(b"alice only\n")
    _ok(alice, "put", str(tmp / "private.txt"), "/private.txt")
    for member in ("bob", "dave"):
        pub = str(people[member].key).replace("_private_key.pem", "_public_key.pem")
        _ok(alice, "member", "add", pub, "--name", member)
        _ok(alice, "share", "/projects", "--with", member)
    _ok(alice, "share", "/private.txt", "--with", "dave")  # a file share (7.6)
    return World(moto_server, bucket, people, s3, access_key, secret_key)


def open_vault(page: Any, url: str, world: World, who: str, passphrase: str | None = None,
               endpoint: str | None = None, save: str = "download",
               secret: str | None = None) -> None:
    p = world.people[who]
    page.goto(f"{url}/index.html?save={save}")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#keyfile", str(p.key))
    page.fill("#passphrase", p.passphrase if passphrase is None else passphrase)
    page.fill("#endpoint", endpoint or world.server.endpoint_url)
    page.fill("#bucket", world.bucket)
    page.fill("#prefix", PREFIX)
    page.fill("#akid", world.access_key)
    page.fill("#secret", world.secret_key if secret is None else secret)
    page.click("#open-button")


def names(page: Any) -> list[str]:
    page.wait_for_selector("#listing li")
    page.wait_for_selector("body:not([data-busy])", state="attached")
    rows = page.locator("#listing li .name, #listing li.empty")
    return [n.strip() for n in rows.all_inner_texts()]


def enter(page: Any, name: str) -> None:
    page.click(f"#listing button[data-name='{name}']")
    page.wait_for_selector("body:not([data-busy])", state="attached")


def save(page: Any, name: str) -> bytes:
    with page.expect_download(timeout=120_000) as dl:
        page.click(f"#listing button[data-name='{name}']")
    path = dl.value.path()
    assert dl.value.suggested_filename == name
    return Path(path).read_bytes()


@pytest.mark.parametrize("who", ["alice", "bob", "dave"])
def test_each_key_kind_lists_and_saves_every_file(page: Any, reader_url: str, world: World,
                                                  who: str) -> None:
    open_vault(page, reader_url, world, who)
    if who == "alice":
        assert names(page) == ["private.txt", "projects"]
        enter(page, "projects")
    else:
        # A member sees Shared/<owner>/<share> exactly as the mount shows it.
        assert names(page) == ["Shared"]
        enter(page, "Shared")
        assert names(page) == ["alice"]
        enter(page, "alice")
        if who == "dave":
            # The file share is its pointer's one entry (7.6); bob does not see it.
            assert names(page) == ["private.txt", "projects"]
            assert save(page, "private.txt") == b"alice only\n"
        else:
            assert names(page) == ["projects"]
        enter(page, "projects")
    assert names(page) == sorted(FILES)
    for name, data in FILES.items():
        assert save(page, name) == data, name
    assert page.locator("#error").is_hidden()


def test_wrong_passphrase_is_one_sentence(page: Any, reader_url: str, world: World) -> None:
    open_vault(page, reader_url, world, "bob", passphrase="not it")  # noqa: S106 - a wrong one on purpose
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "Wrong passphrase."
    assert page.locator("#browser").is_hidden()


def test_flipped_byte_gives_the_error_and_no_download(page: Any, reader_url: str,
                                                      world: World) -> None:
    key = next(o["Key"] for o in world.s3.list_objects_v2(Bucket=world.bucket,
                                                          Prefix=f"{PREFIX}/c/")["Contents"]
               if o["Size"] > 5 * 2**20)
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01  # a chunk in the middle of many.bin
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bytes(tampered))
    try:
        downloads: list[Any] = []
        page.on("download", lambda d: downloads.append(d))
        open_vault(page, reader_url, world, "dave")
        for folder in ("Shared", "alice", "projects"):
            names(page)
            enter(page, folder)
        names(page)
        page.click("#listing button[data-name='many.bin']")
        page.wait_for_selector("#error:not([hidden])", timeout=120_000)
        text = page.inner_text("#error")
        assert text.startswith("Refused: chunk ") and "does not authenticate" in text, text
        assert text.count(".") == 1 and text.endswith("."), text  # one sentence
        page.wait_for_timeout(500)
        assert downloads == []
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)


def test_screenshots_desktop_and_phone(browser: Any, reader_url: str, world: World) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, viewport, mobile in (("desktop", {"width": 1280, "height": 800}, False),
                                    ("phone", {"width": 390, "height": 844}, True)):
        context = browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile,
                                      device_scale_factor=2 if mobile else 1)
        page = context.new_page()
        try:
            page.goto(f"{reader_url}/index.html")
            page.wait_for_selector("body[data-ready='1']")
            page.screenshot(path=str(SCREENSHOTS / f"reader-open-{label}.png"), full_page=True)
            open_vault(page, reader_url, world, "bob")
            for folder in ("Shared", "alice", "projects"):
                names(page)
                enter(page, folder)
            names(page)
            # Touch targets: every row is at least 44 CSS pixels high (phone too).
            heights = page.eval_on_selector_all(
                "#listing button", "bs => bs.map(b => b.getBoundingClientRect().height)")
            assert heights and min(heights) >= 44
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"]  # no sideways scrolling
            page.screenshot(path=str(SCREENSHOTS / f"reader-files-{label}.png"), full_page=True)
        finally:
            context.close()


def test_without_a_cors_rule_the_page_says_so(page: Any, reader_url: str, world: World,
                                             tmp_path: Path) -> None:
    # moto answers every origin (its server enables CORS globally), so the
    # "store" here is a plain HTTP server on another port, which sends no CORS
    # headers, as a bucket without the rule does not.
    server = make_server(tmp_path, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        open_vault(page, reader_url, world, "alice",
                   endpoint=f"http://127.0.0.1:{server.server_address[1]}")
        page.wait_for_selector("#error:not([hidden])")
        text = page.inner_text("#error")
        assert "CORS rule does not allow" in text and reader_url in text, text
    finally:
        server.shutdown()
        server.server_close()


def test_a_key_that_is_no_reader_sees_nothing(page: Any, reader_url: str, world: World,
                                              tmp_path: Path) -> None:
    eve = Person("eve", tmp_path / "keys" / "eve_private_key.pem", "pw of eve",
                 {**world.people["alice"].env, "CSFS_PASSPHRASE": "pw of eve"})
    _ok(eve, "keygen", "--dir", str(tmp_path / "keys"), "--name", "eve")
    world.people["eve"] = eve
    try:
        open_vault(page, reader_url, world, "eve")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error") == "This key is not a reader of this folder."
        assert page.locator("#listing li").count() == 0
    finally:
        del world.people["eve"]


def test_a_replayed_manifest_is_refused(page: Any, reader_url: str, world: World,
                                        tmp_path: Path) -> None:
    """5.3: the page remembers each folder's manifest version (localStorage) and
    refuses an older one put back by the store."""
    alice = world.people["alice"]
    open_vault(page, reader_url, world, "alice")
    names(page)
    enter(page, "projects")
    assert "late.txt" not in names(page)
    keys = [o["Key"] for o in world.s3.list_objects_v2(Bucket=world.bucket,
                                                       Prefix=f"{PREFIX}/m/")["Contents"]]
    before = {k: world.s3.get_object(Bucket=world.bucket, Key=k)["Body"].read() for k in keys}
    (tmp_path / "late.txt").write_bytes(b"later\n")
    _ok(alice, "put", str(tmp_path / "late.txt"), "/projects/late.txt")
    after = {k: world.s3.get_object(Bucket=world.bucket, Key=k)["Body"].read() for k in keys}
    try:
        page.click("#crumbs button >> text=projects")
        assert "late.txt" in names(page)
        for k, old in before.items():  # the store rolls every folder back
            world.s3.put_object(Bucket=world.bucket, Key=k, Body=old)
        page.click("#crumbs button >> text=projects")
        page.wait_for_selector("#error:not([hidden])")
        assert "rolled back" in page.inner_text("#error")
    finally:
        for k, new in after.items():
            world.s3.put_object(Bucket=world.bucket, Key=k, Body=new)
        _ok(alice, "rm", "/projects/late.txt")


def _folder(page: Any, who: str) -> None:
    names(page)
    for folder in ("projects",) if who == "alice" else ("Shared", "alice", "projects"):
        enter(page, folder)
        names(page)


def test_the_blob_fallback_saves_the_same_bytes(page: Any, reader_url: str,
                                                world: World) -> None:
    open_vault(page, reader_url, world, "alice", save="blob")
    _folder(page, "alice")
    for name in ("empty.bin", "many.bin"):
        assert save(page, name) == FILES[name]


# Records, during a save, the Range of every payload request and the largest
# ArrayBuffer the page's script allocates (the page's own read buffers).
_WATCH_READS = """
(() => {
  const seen = { ranges: [], largest: 0, on: false };
  window.__reads = seen;
  const fetch0 = window.fetch;
  window.fetch = (url, init) => {
    const range = init?.headers?.Range;
    if (seen.on && range && /\\/c\\//.test(String(url))) seen.ranges.push(range);
    return fetch0(url, init);
  };
  window.ArrayBuffer = new Proxy(ArrayBuffer, {
    construct(target, args, newTarget) {
      if (seen.on) seen.largest = Math.max(seen.largest, Number(args[0]) || 0);
      return Reflect.construct(target, args, newTarget);
    },
  });
})();
"""


def test_a_save_streams_in_bounded_ranged_reads(page: Any, reader_url: str,
                                                world: World) -> None:
    """Page memory while saving stays bounded whatever the file's size: the
    browser reads each response ahead of the page (up to its whole body), so a
    payload is fetched in ranges of at most 8 MiB, each streamed through one
    window-sized buffer (16 chunks, about 1 MiB), never read whole."""
    page.add_init_script(_WATCH_READS)
    open_vault(page, reader_url, world, "alice")
    _folder(page, "alice")
    page.evaluate("window.__reads.on = true")
    assert save(page, "many.bin") == FILES["many.bin"]
    seen = page.evaluate("window.__reads")
    spans = []
    for r in seen["ranges"]:
        first, last = r.removeprefix("bytes=").split("-")
        spans.append(int(last) - int(first) + 1)
    # many.bin is 9 MiB: two reads of its chunks (after the header's 32 bytes).
    assert len([n for n in spans if n > 32]) == 2, seen["ranges"]
    assert max(spans) <= 8 * 2**20, seen["ranges"]
    assert 0 < seen["largest"] <= 2 * 2**20, seen["largest"]


def test_a_connection_that_breaks_mid_file_says_so(page: Any, reader_url: str, world: World,
                                                  fault_proxy: FaultProxy) -> None:
    """A ranged read cut half-way (tests/faultproxy.py resets the connection):
    one sentence naming the store, and no download."""
    downloads: list[Any] = []
    page.on("download", lambda d: downloads.append(d))
    open_vault(page, reader_url, world, "alice", endpoint=fault_proxy.endpoint_url)
    _folder(page, "alice")
    fault_proxy.cuts(1, larger_than=2**20)
    page.click("#listing button[data-name='many.bin']")
    page.wait_for_selector("#error:not([hidden])", timeout=120_000)
    assert page.inner_text("#error") == (
        "The connection to the store broke while reading the file; try again.")
    assert fault_proxy.counts["faults"] == 1
    page.wait_for_timeout(500)
    assert downloads == []


def test_a_swapped_envelope_is_refused(page: Any, reader_url: str, world: World) -> None:
    """The envelope of another file (valid, signed by the owner) put in place of
    one.txt's: its context names the other file (3.2)."""
    objects = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{PREFIX}/k/")["Contents"]
    by_size = {}
    for o in objects:
        payload = o["Key"].replace(f"{PREFIX}/k/", f"{PREFIX}/c/", 1)
        size = world.s3.head_object(Bucket=world.bucket, Key=payload)["ContentLength"]
        by_size[size] = o["Key"]
    one, other = by_size[32 + 1 + 16], by_size[max(by_size)]
    original = world.s3.get_object(Bucket=world.bucket, Key=one)["Body"].read()
    swapped = world.s3.get_object(Bucket=world.bucket, Key=other)["Body"].read()
    world.s3.put_object(Bucket=world.bucket, Key=one, Body=swapped)
    try:
        downloads: list[Any] = []
        page.on("download", lambda d: downloads.append(d))
        open_vault(page, reader_url, world, "bob")
        _folder(page, "bob")
        page.click("#listing button[data-name='one.txt']")
        page.wait_for_selector("#error:not([hidden])")
        text = page.inner_text("#error")
        assert text.startswith("Refused: the envelope belongs to another file or version"), text
        page.wait_for_timeout(500)
        assert downloads == []
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=one, Body=original)


def test_an_envelope_signed_by_a_reader_who_may_not_write_is_refused(
        page: Any, reader_url: str, world: World) -> None:
    """bob may read /projects but not write it: one.txt's envelope re-signed with
    his key is valid Ed25519 but not from a writer the access log allows (5.3, 7.3)."""
    from csfs.crypto.keys import load_identity

    bob = world.people["bob"]
    signer = load_identity(str(bob.key), bob.passphrase.encode()).signing_key
    objects = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{PREFIX}/c/")["Contents"]
    payload = next(o["Key"] for o in objects if o["Size"] == 32 + 1 + 16)  # one.txt
    key = payload.replace(f"{PREFIX}/c/", f"{PREFIX}/k/", 1)
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    body = original[:-96] + signer.public_key().public_bytes_raw()
    forged = body + signer.sign(b"csfs v1 envelope\0" + body)
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=forged)
    try:
        downloads: list[Any] = []
        page.on("download", lambda d: downloads.append(d))
        open_vault(page, reader_url, world, "dave")
        _folder(page, "dave")
        page.click("#listing button[data-name='one.txt']")
        page.wait_for_selector("#error:not([hidden])")
        text = page.inner_text("#error")
        assert text.startswith("Refused: the envelope is signed by someone who may not write"), text
        page.wait_for_timeout(500)
        assert downloads == []
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)


def test_a_revoked_member_sees_nothing(page: Any, reader_url: str, world: World) -> None:
    alice = world.people["alice"]
    _ok(alice, "unshare", "/projects", "--with", "bob")
    try:
        open_vault(page, reader_url, world, "bob")
        assert names(page) == ["Shared"]
        enter(page, "Shared")
        enter(page, "alice")
        assert page.locator("#listing li.empty").count() == 1
        assert names(page) == ["This folder is empty."]
    finally:
        _ok(alice, "share", "/projects", "--with", "bob")


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                    reason="needs /dev/fuse and fusermount3 (Debian fuse3) for a real mount")
def test_a_file_rewritten_through_a_mount_is_a_delta_and_reads_whole(
        page: Any, reader_url: str, world: World, tmp_path: Path) -> None:
    """2.6: a pwrite + fsync through a FUSE mount stores a delta version that
    draws the unchanged chunks from the first version; the page reads it whole,
    and a flipped byte in the source (an inherited chunk) is refused."""
    alice = world.people["alice"]
    env = {**alice.env, "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    def payloads() -> dict[str, int]:
        listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{PREFIX}/c/")["Contents"]
        return {o["Key"]: o["Size"] for o in listed}

    before = payloads()
    data = bytearray(random.Random(7).randbytes(3 * 2**20 + 5))  # noqa: S311 (test data, seeded)
    r = run_csfs("mount", str(mnt), "--cache-dir", str(tmp_path / "mcache"), env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        with open(mnt / "delta.bin", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(mnt / "delta.bin", os.O_WRONLY)
        try:
            os.pwrite(fd, b"#", 2**20 + 3)
            os.fsync(fd)
        finally:
            os.close(fd)
        data[2**20 + 3] = ord("#")
        assert run_csfs("sync", str(mnt), "--timeout", "60", env=env, timeout=90).returncode == 0
    finally:
        r = run_csfs("umount", str(mnt), "--timeout", "60", env=env, timeout=120)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        assert r.returncode == 0, r.stderr
    new = {k: size for k, size in payloads().items() if k not in before}
    heads = {k: world.s3.get_object(Bucket=world.bucket, Key=k, Range="bytes=0-7")["Body"].read()
             for k in new}
    deltas = [k for k, h in heads.items() if h == b"csfs-pl3"]
    whole = [k for k, size in new.items() if size > 2**20]
    # One full version (the source) and a small delta; no second full copy.
    assert len(deltas) >= 1 and len(whole) == 1, (heads, new)
    assert all(new[k] < 2**20 for k in deltas)
    try:
        open_vault(page, reader_url, world, "alice")
        assert "delta.bin" in names(page)
        assert save(page, "delta.bin") == data
        # Flip a byte of chunk 40 of the source, a chunk the delta inherits.
        original = world.s3.get_object(Bucket=world.bucket, Key=whole[0])["Body"].read()
        flipped = bytearray(original)
        flipped[32 + 40 * (2**16 + 16) + 100] ^= 1
        world.s3.put_object(Bucket=world.bucket, Key=whole[0], Body=bytes(flipped))
        try:
            downloads: list[Any] = []
            page.on("download", lambda d: downloads.append(d))
            page.click("#listing button[data-name='delta.bin']")
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            assert page.inner_text("#error").startswith("Refused: chunk 40 does not authenticate")
            page.wait_for_timeout(500)
            assert downloads == []
        finally:
            world.s3.put_object(Bucket=world.bucket, Key=whole[0], Body=original)
    finally:
        _ok(alice, "rm", "/delta.bin")
