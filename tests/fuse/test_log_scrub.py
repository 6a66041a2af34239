"""The mount log's error lines lose every path and quoted name they carry."""

from __future__ import annotations

from csfs.fuse.ops import _without_paths


def test_paths_and_quoted_names_are_replaced() -> None:
    msg = "bad entry 'secret.txt' under /dir/secret.txt (in /dir); 'dir' moved to /other/x"
    out = _without_paths(msg, ("/dir/secret.txt", "/other/x", 4096))
    for leaked in ("secret", "dir", "other"):
        assert leaked not in out, out
    assert out == "bad entry <name> under <path> (in <path>); <name> moved to <path>"
