"""Share links (format.md 7.7, issue 13 item 2) in Chromium against moto: made with
`csfs link`, opened on a phone viewport with no key and no credentials, ended
with `csfs unlink`, expired, and tampered with."""

from __future__ import annotations

import base64
import datetime
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.servers import MotoServer
from tests.vault.conftest import assert_one_line_error, run_csfs
from tests.web.conftest import SCREENSHOTS
from tests.web.test_reader import PREFIX, World, _ok, build_world

TEXT = "Meeting notes\nline two: ünïcode ✓\n"


@pytest.fixture(scope="module")
def world(moto_server: MotoServer, reader_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(moto_server, reader_url, tmp_path_factory)


def make_link(world: World, reader_url: str, path: str, data: bytes, tmp: Path,
              expires: str = "1h") -> tuple[str, str]:
    alice = world.people["alice"]
    src = tmp / "src.bin"
    src.write_bytes(data)
    _ok(alice, "put", str(src), path)
    r = run_csfs("link", path, "--expires", expires, "--reader", reader_url, env=alice.env)
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    link_id = r.stderr.split()[1]
    assert url.startswith(f"{reader_url}/link.html#") and "\n" not in url
    return url, link_id


def phone(browser: Any, **options: Any) -> Any:
    return browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                               has_touch=True, device_scale_factor=2, accept_downloads=True,
                               **options)


# The link screenshots come from fixed inputs, so that a test run rewrites them
# only when the page's look changes: the page's clock, time zone and locale are
# fixed, and the link's expiry (the fragment's field the page shows) is an hour
# after that clock; the rest is the link as `csfs link` made it.
SHOT_NOW = datetime.datetime(2026, 1, 15, 9, 0, tzinfo=datetime.UTC)


def screenshot_link(browser: Any, url: str, name: str) -> None:
    f = fragment(url)
    f["expires"] = int(SHOT_NOW.timestamp()) + 3600
    frag = base64.urlsafe_b64encode(json.dumps(f).encode()).rstrip(b"=").decode()
    context = phone(browser, timezone_id="UTC", locale="en-US")
    try:
        page = context.new_page()
        page.clock.set_fixed_time(SHOT_NOW)
        open_link(page, f"{url.split('#', 1)[0]}#{frag}")
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        assert "1/15/2026, 10:00:00 AM" in page.inner_text("body")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    finally:
        context.close()


def open_link(page: Any, url: str) -> None:
    base, frag = url.split("#", 1)
    page.goto(f"{base}?save=download#{frag}")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def fragment(url: str) -> dict[str, Any]:
    frag = url.split("#", 1)[1]
    return dict(json.loads(base64.urlsafe_b64decode(frag + "=" * (-len(frag) % 4))))


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as res:  # noqa: S310 - a presigned URL on moto
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_link_opens_on_a_phone_without_credentials(browser: Any, reader_url: str,
                                                     world: World, tmp_path: Path) -> None:
    url, _ = make_link(world, reader_url, "/notes.txt", TEXT.encode(), tmp_path)
    f = fragment(url)
    # The fragment holds the link's key, not the owner's, and no store credentials.
    assert set(f) == {"envelope", "expires", "format", "key", "name", "node", "owner",
                      "payload", "size", "vault_id", "version"}
    assert "Secret" not in url and "secret" not in url
    context = phone(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_link(page, url)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        assert page.eval_on_selector("#preview", "e => e.textContent") == TEXT
        assert page.inner_text("#name") == "notes.txt"
        # The key left the address bar once read.
        assert "#" not in page.url
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        with page.expect_download(timeout=60_000) as dl:
            page.click("#save")
        assert dl.value.suggested_filename == "notes.txt"
        assert Path(dl.value.path()).read_bytes() == TEXT.encode()
    finally:
        context.close()
    assert not errors, errors
    screenshot_link(browser, url, "link-phone.png")
    # The owner still reads the file (its new, self-contained version).
    assert run_csfs("cat", "/notes.txt", env=world.people["alice"].env).stdout == TEXT


def test_a_large_binary_link_saves_the_same_bytes(page: Any, reader_url: str, world: World,
                                                  tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 17)  # 5 MiB and a bit, several ranged reads
    url, _ = make_link(world, reader_url, "/big.bin", data, tmp_path)
    open_link(page, url)
    assert page.locator("#error").is_hidden()
    assert page.locator("#preview").is_hidden()  # too large to show: saved instead
    with page.expect_download(timeout=120_000) as dl:
        page.click("#save")
    assert Path(dl.value.path()).read_bytes() == data


def test_an_ended_link_says_so(page: Any, reader_url: str, world: World, tmp_path: Path) -> None:
    alice = world.people["alice"]
    url, link_id = make_link(world, reader_url, "/ended.txt", b"soon gone\n", tmp_path)
    f = fragment(url)
    assert status_of(f["envelope"]) == 200
    listed = _ok(alice, "links")
    assert link_id in listed and "/ended.txt" in listed
    _ok(alice, "unlink", link_id)
    assert link_id not in _ok(alice, "links")
    # The version the link named is gone from the store: its URLs name nothing,
    # whatever the holder kept; the file itself lives on in a new version.
    assert status_of(f["envelope"]) == 404 and status_of(f["payload"]) == 404
    assert run_csfs("cat", "/ended.txt", env=alice.env).stdout == "soon gone\n"
    open_link(page, url)
    assert page.inner_text("#error") == (
        "This link was ended by its owner (or its file is gone); ask for a new link.")
    assert page.locator("#preview").is_hidden()


def test_an_expired_link_says_so(page: Any, reader_url: str, world: World,
                                 tmp_path: Path) -> None:
    url, _ = make_link(world, reader_url, "/brief.txt", b"brief\n", tmp_path, expires="3s")
    f = fragment(url)
    assert status_of(f["envelope"]) == 200
    time.sleep(4.5)
    open_link(page, url)
    assert page.inner_text("#error") == "This link has expired; ask for a new link."
    # The store enforces the expiry too, not only the page.
    code = status_of(f["envelope"])
    if code == 200:
        pytest.skip("moto serves presigned URLs after their expiry; the page's own check "
                    "was tested above, the store's is tested on Ceph RGW (tests/web/test_rgw.py)")
    assert code == 403


def test_a_tampered_object_gives_the_error(page: Any, reader_url: str, world: World,
                                           tmp_path: Path) -> None:
    url, _ = make_link(world, reader_url, "/tamper.txt", b"do not change me\n" * 100, tmp_path)
    f = fragment(url)
    key = f"{PREFIX}/c/{f['node']}/{f['version']:016x}"
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    flipped = bytearray(original)
    flipped[40] ^= 1
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bytes(flipped))
    try:
        open_link(page, url)
        text = page.inner_text("#error")
        assert text.startswith("Refused: chunk 0 does not authenticate"), text
        assert page.locator("#preview").is_hidden()
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)


def test_an_envelope_signed_by_a_member_is_refused(page: Any, reader_url: str, world: World,
                                                    tmp_path: Path) -> None:
    """A link holder trusts the owner alone (7.7): bob's valid signature does not do."""
    from csfs.crypto.keys import load_identity

    url, _ = make_link(world, reader_url, "/signed.txt", b"owner's\n", tmp_path)
    f = fragment(url)
    bob = world.people["bob"]
    signer = load_identity(str(bob.key), bob.passphrase.encode()).signing_key
    key = f"{PREFIX}/k/{f['node']}/{f['version']:016x}"
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    body = original[:-96] + signer.public_key().public_bytes_raw()
    world.s3.put_object(Bucket=world.bucket, Key=key,
                        Body=body + signer.sign(b"csfs v1 envelope\0" + body))
    try:
        open_link(page, url)
        assert page.inner_text("#error").startswith(
            "Refused: the envelope is signed by someone who may not write here")
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)


def test_cli_refuses_more_than_7_days_and_a_folder_without_folder(world: World,
                                                                   reader_url: str) -> None:
    alice = world.people["alice"]
    r = run_csfs("link", "/projects/one.txt", "--expires", "8d", env=alice.env)
    assert_one_line_error(r)
    assert "at most 7 days" in r.stderr
    r = run_csfs("link", "/projects", env=alice.env)
    assert "is a folder" in r.stderr and "--folder" in r.stderr and r.returncode == 2
    bob = world.people["bob"]
    r = run_csfs("link", "/Shared/alice/projects/one.txt", env=bob.env)
    assert_one_line_error(r)


def test_the_reader_opens_a_vault_whose_log_has_links(page: Any, reader_url: str, world: World,
                                                      tmp_path: Path) -> None:
    """link-add and link-remove entries (7.2, 7.3) are read by the vault reader too."""
    from tests.web.test_reader import names, open_vault

    alice = world.people["alice"]
    _, link_id = make_link(world, reader_url, "/logged.txt", b"in the log\n", tmp_path)
    make_link(world, reader_url, "/logged2.txt", b"still linked\n", tmp_path)
    _ok(alice, "unlink", link_id)
    for who in ("alice", "bob"):
        open_vault(page, reader_url, world, who)
        listed = names(page)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        assert ("logged.txt" in listed) == (who == "alice"), listed


# -- folder links (7.8) -----------------------------------------------------------------

FOLDER = {
    "readme.txt": "Read me first\nünïcode ✓\n".encode(),
    "empty.txt": b"",
    "sub/data.bin": bytes(range(256)) * 1200 + b"tail",
    "sub/deeper/x.txt": b"deep down\n",
}


def make_folder_link(world: World, reader_url: str, tmp: Path, top: str) -> tuple[str, str]:
    alice = world.people["alice"]
    for rel, data in FOLDER.items():
        src = tmp / "src.bin"
        src.write_bytes(data)
        parent = f"{top}/{rel}".rsplit("/", 1)[0]
        _ok(alice, "mkdir", "-p", parent)
        _ok(alice, "put", str(src), f"{top}/{rel}")
    r = run_csfs("link", "--folder", top, "--expires", "1h", "--reader", reader_url,
                 env=alice.env)
    assert r.returncode == 0, r.stderr
    assert "(4 files)" in r.stderr, r.stderr
    return r.stdout.strip(), r.stderr.split()[1]


def rows(page: Any) -> list[str]:
    page.wait_for_selector("#listing li")
    return [n.strip() for n in page.locator("#listing li .name, #listing li.empty")
            .all_inner_texts()]


def save_shown(page: Any) -> bytes:
    page.wait_for_selector("#save:not([disabled])", timeout=60_000)
    with page.expect_download(timeout=60_000) as dl:
        page.click("#save")
    return Path(dl.value.path()).read_bytes()


def test_a_folder_link_opens_on_a_phone_lists_and_saves(browser: Any, reader_url: str,
                                                         world: World, tmp_path: Path) -> None:
    url, _ = make_folder_link(world, reader_url, tmp_path, "/handout")
    f = fragment(url)
    assert set(f) == {"expires", "format", "key", "link", "listing", "name", "owner",
                      "vault_id"}
    context = phone(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_link(page, url)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        assert "#" not in page.url
        assert page.inner_text("#title") == "Shared folder"
        assert rows(page) == ["sub", "empty.txt", "readme.txt"]
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.click("#listing button[data-name='readme.txt']")
        page.wait_for_selector("#preview:not([hidden])", timeout=60_000)
        assert page.eval_on_selector("#preview", "e => e.textContent") == \
            FOLDER["readme.txt"].decode()
        assert save_shown(page) == FOLDER["readme.txt"]
        page.click("#crumbs button:text-is('handout')")
        page.click("#listing button[data-name='empty.txt']")
        assert save_shown(page) == b""
        page.click("#crumbs button:text-is('handout')")
        page.click("#listing button[data-name='sub']")
        assert rows(page) == ["deeper", "data.bin"]
        page.click("#listing button[data-name='data.bin']")
        assert save_shown(page) == FOLDER["sub/data.bin"]
        page.click("#crumbs button:text-is('sub')")
        page.click("#listing button[data-name='deeper']")
        page.click("#listing button[data-name='x.txt']")
        assert save_shown(page) == FOLDER["sub/deeper/x.txt"]
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
    finally:
        context.close()
    assert not errors, errors
    screenshot_link(browser, url, "link-folder-phone.png")


def test_a_folder_link_shows_a_refresh(page: Any, reader_url: str, world: World,
                                       tmp_path: Path) -> None:
    alice = world.people["alice"]
    url, _ = make_folder_link(world, reader_url, tmp_path, "/growing")
    src = tmp_path / "later.txt"
    src.write_bytes(b"added later\n")
    _ok(alice, "put", str(src), "/growing/later.txt")
    open_link(page, url)
    assert "later.txt" not in rows(page)  # a snapshot until the owner refreshes
    out = run_csfs("links", "--refresh", env=alice.env)
    assert out.returncode == 0 and "1 new versions in" in out.stderr, out.stderr
    page.goto("about:blank")  # the same URL again would only change the fragment
    open_link(page, url)
    page.click("#listing button[data-name='later.txt']")
    assert save_shown(page) == b"added later\n"


def test_an_ended_folder_link_says_so(page: Any, reader_url: str, world: World,
                                      tmp_path: Path) -> None:
    alice = world.people["alice"]
    url, link_id = make_folder_link(world, reader_url, tmp_path, "/withdrawn")
    r = run_csfs("unlink", link_id, env=alice.env)
    assert r.returncode == 0 and "its listing deleted" in r.stderr, r.stderr
    open_link(page, url)
    assert page.inner_text("#error") == (
        "This link was ended by its owner (or its folder is gone); ask for a new link.")
    assert page.locator("#listing li").count() == 0
    assert run_csfs("cat", "/withdrawn/readme.txt", env=alice.env).stdout.encode() == \
        FOLDER["readme.txt"]


def test_a_tampered_folder_listing_is_refused(page: Any, reader_url: str, world: World,
                                              tmp_path: Path) -> None:
    url, _ = make_folder_link(world, reader_url, tmp_path, "/tampered")
    key = f"{PREFIX}/l/{fragment(url)['link']}"
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    flipped = bytearray(original)
    flipped[-20] ^= 1
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bytes(flipped))
    try:
        open_link(page, url)
        text = page.inner_text("#error")
        assert text.startswith("Refused: chunk 0 does not authenticate"), text
        assert page.locator("#listing li").count() == 0
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)
