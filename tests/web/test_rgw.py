"""The reader and share links on Ceph RGW (scripts/ceph-rgw), in Chromium.

Unlike moto, RGW enforces a bucket's CORS rule and the expiry of presigned URLs,
and it answers a refused signature (an expired URL included) without CORS
headers, so the page sees only a failed fetch. Marked rgw: stage 3 of
scripts/test runs these with the gateway's CSFS_RGW_* variables.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.web.test_links import fragment, make_link, open_link, status_of
from tests.web.test_reader import FILES, PREFIX, World, _folder, _ok, build_world, open_vault, save

pytestmark = pytest.mark.rgw

RGW_SKIP = ("Ceph RGW not running: start it with scripts/ceph-rgw start and export "
            "what scripts/ceph-rgw env prints (the RGW stage of scripts/test does)")


@dataclass
class Rgw:
    endpoint_url: str
    access_key: str
    secret_key: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def rgw() -> Rgw:
    endpoint = os.environ.get("CSFS_RGW_ENDPOINT")
    access_key = os.environ.get("CSFS_RGW_ACCESS_KEY")
    secret_key = os.environ.get("CSFS_RGW_SECRET_KEY")
    if not (endpoint and access_key and secret_key):
        pytest.skip(RGW_SKIP)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "CSFS_S3_PATH_STYLE": "1"}
    env.pop("AWS_SESSION_TOKEN", None)
    return Rgw(endpoint, access_key, secret_key, env)


@pytest.fixture(scope="module")
def world(rgw: Rgw, reader_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(rgw, reader_url, tmp_path_factory, rgw.access_key, rgw.secret_key)
    yield w
    # RGW keeps data on disk between runs: leave nothing behind.
    with contextlib.suppress(Exception):
        for page in w.s3.get_paginator("list_objects_v2").paginate(Bucket=w.bucket):
            for o in page.get("Contents", []):
                w.s3.delete_object(Bucket=w.bucket, Key=o["Key"])
        w.s3.delete_bucket(Bucket=w.bucket)


def test_with_the_documented_cors_rule_the_reader_saves_every_file(
        page: Any, reader_url: str, world: World) -> None:
    open_vault(page, reader_url, world, "alice")
    _folder(page, "alice")
    for name, data in FILES.items():
        assert save(page, name) == data, name
    assert page.locator("#error").is_hidden()


def test_without_the_cors_rule_the_page_says_so(page: Any, reader_url: str,
                                                world: World) -> None:
    rule = world.s3.get_bucket_cors(Bucket=world.bucket)["CORSRules"]
    world.s3.delete_bucket_cors(Bucket=world.bucket)
    try:
        # The store still serves the vault, only without the headers that let
        # this page's origin read the answer.
        url = world.s3.generate_presigned_url(
            "get_object", Params={"Bucket": world.bucket, "Key": f"{PREFIX}/csfs-vault"})
        req = urllib.request.Request(url, headers={"Origin": reader_url})  # noqa: S310
        with urllib.request.urlopen(req) as res:  # noqa: S310 - a presigned URL on RGW
            assert res.status == 200 and "Access-Control-Allow-Origin" not in res.headers
        open_vault(page, reader_url, world, "alice")
        page.wait_for_selector("#error:not([hidden])", timeout=60_000)
        assert page.inner_text("#error") == (
            f"Cannot reach {world.server.endpoint_url}: the server is down or the bucket's "
            f"CORS rule does not allow {reader_url}.")
        assert page.locator("#browser").is_hidden()
    finally:
        world.s3.put_bucket_cors(Bucket=world.bucket, CORSConfiguration={"CORSRules": rule})


def test_refused_credentials_are_told_from_a_missing_cors_rule(page: Any, reader_url: str,
                                                                world: World) -> None:
    """RGW refuses a wrong signature without CORS headers, as if the rule were
    missing; the page tells the two apart and names the credentials."""
    open_vault(page, reader_url, world, "alice", secret="not the secret")  # noqa: S106
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    assert page.inner_text("#error") == (
        f"The store at {world.server.endpoint_url} refused this page's signed request: "
        "check the access key, the secret and the session token.")


# The device's clock an hour slow: the page's own expiry check passes, so only
# the store can tell that the link has expired.
SLOW_CLOCK = "(() => { const now = Date.now; Date.now = () => now() - 3600 * 1000; })();"


def test_an_expired_link_is_refused_by_the_store_and_the_page_says_so(
        browser: Any, reader_url: str, world: World, tmp_path: Path) -> None:
    url, _ = make_link(world, reader_url, "/brief.txt", b"brief\n", tmp_path, expires="3s")
    f = fragment(url)
    assert status_of(f["envelope"]) == 200
    time.sleep(4.5)
    # RGW enforces the presigned URLs' expiry (moto does not), and its refusal
    # carries no CORS headers (its 404 does): the page sees a failed fetch.
    assert status_of(f["envelope"]) == 403 and status_of(f["payload"]) == 403
    req = urllib.request.Request(f["envelope"], headers={"Origin": reader_url})  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req)  # noqa: S310 - a presigned URL on RGW
    assert "Access-Control-Allow-Origin" not in refused.value.headers
    for clock in ("", SLOW_CLOCK):
        context = browser.new_context()
        page = context.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda r, failed=failed: failed.append(r.url))
        try:
            if clock:
                page.add_init_script(clock)
            open_link(page, url)
            assert page.inner_text("#error") == "This link has expired; ask for a new link."
            assert page.locator("#preview").is_hidden()
            # With the slow clock the page asked the store, which refused it.
            assert (f["envelope"] in failed) == bool(clock), failed
        finally:
            context.close()


def test_an_ended_link_says_so_on_rgw(page: Any, reader_url: str, world: World,
                                      tmp_path: Path) -> None:
    """RGW answers a deleted object's 404 with CORS headers: the page reads it."""
    url, link_id = make_link(world, reader_url, "/ended.txt", b"soon gone\n", tmp_path)
    _ok(world.people["alice"], "unlink", link_id)
    assert status_of(fragment(url)["envelope"]) == 404
    open_link(page, url)
    assert page.inner_text("#error") == (
        "This link was ended by its owner (or its file is gone); ask for a new link.")
