"""``python -m moto.server``, with S3's atomic conditional writes.

moto checks If-Match / If-None-Match and then writes, without holding the key in
between, on the threads of its HTTP server: two writers that both name the same
ETag can both win (tests/store/test_conformance.py::test_if_match_race_has_one_winner
catches it within a few hundred rounds). S3 itself decides conditional writes
atomically, and every manifest switch of csfs relies on exactly one winner, so
here the check and the write of each object change run under one lock.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_lock = threading.Lock()


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    return wrapped


# put_object and delete_object check If-Match/If-None-Match themselves;
# _key_response_post completes multipart uploads (If-None-Match).
for _name in ("put_object", "delete_object", "_key_response_post"):
    setattr(S3Response, _name, _atomic(getattr(S3Response, _name)))

if __name__ == "__main__":
    main(sys.argv[1:])
