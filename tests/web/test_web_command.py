"""`csfs web`: serves the built reader on 127.0.0.1 and prints its URL."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CSFS = [sys.executable, "-c", "from csfs.cli.main import main; main()"]


def test_csfs_web_serves_the_reader_with_its_sri_hashes(reader_dist: Path) -> None:
    proc = subprocess.Popen([*CSFS, "web", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"csfs web reader: (http://127\.0\.0\.1:\d+/) .*\n", line)
        assert m, line
        with urllib.request.urlopen(m.group(1) + "index.html", timeout=10) as r:  # noqa: S310
            html = r.read().decode()
        # The page pins its script and style by Subresource Integrity, and the
        # served bundle matches the pin.
        pinned = dict(re.findall(r'(?:src|href)="([a-z.]+)" integrity="(sha384-[^"]+)"', html))
        assert set(pinned) == {"reader.js", "style.css"}
        for name, sri in pinned.items():
            with urllib.request.urlopen(m.group(1) + name, timeout=10) as r:  # noqa: S310
                digest = base64.b64encode(hashlib.sha384(r.read()).digest()).decode()
            assert sri == "sha384-" + digest
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(m.group(1) + "../setup.cfg", timeout=10)  # noqa: S310
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
