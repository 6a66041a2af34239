"""Every test vector (docs/format.md 6, 6.1) through the reader's decoder, in Chromium."""

from __future__ import annotations

import json
from typing import Any

from tests.web.conftest import VECTORS

FILE_VECTORS = sorted(p.name for p in VECTORS.glob("*.vec"))
LOG_VECTORS = sorted(p.name for p in (VECTORS / "log").glob("*.json"))


def _expected(name: str) -> dict[str, str]:
    head = (VECTORS / name).read_bytes().split(b"\n\n", 1)[0].decode("ascii")
    return dict(line.split(": ", 1) for line in head.splitlines())


def test_every_vector_in_the_browser(page: Any, reader_url: str) -> None:
    page.goto(f"{reader_url}/harness.html")
    page.wait_for_selector("body[data-ready='1']")
    results = page.evaluate(
        "([f, l]) => window.csfsRunVectors('/vectors', f, l)", [FILE_VECTORS, LOG_VECTORS]
    )
    assert len(results) == len(FILE_VECTORS) + len(LOG_VECTORS) > 100
    wrong = {}
    for name in FILE_VECTORS:
        r, fields = results[f"file/{name}"], _expected(name)
        ok = r["got"] == fields["expect"]
        if ok and r["got"] == "success":
            ok = r["sha256"] == fields["plaintext-sha256"]
        if not ok:
            wrong[name] = r
    for name in LOG_VECTORS:
        r = results[f"log/{name}"]
        case = json.loads((VECTORS / "log" / name).read_text())
        ok = r["got"] == case["expect"]
        if ok and r["got"] == "success":
            ok = r["result"] == case["result"]
        if not ok:
            wrong[name] = r
    assert not wrong, wrong
    # Every class of outcome is covered, so a decoder that always fails cannot pass.
    outcomes = {r["got"] for r in results.values()}
    assert outcomes == {"success", "format", "authentication", "no match"}
    assert page.locator("#results tr.bad").count() == 0
    # Delta versions (2.6) are read, and their breaches refused, not skipped.
    delta = {r["got"] for k, r in results.items() if k.startswith("file/delta_")}
    assert delta == {"success", "format", "authentication"}
