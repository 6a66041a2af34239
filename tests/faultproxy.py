"""A fault-injecting HTTP proxy on loopback, in front of a moto S3 server.

Clients (a mount in another process included) point --endpoint-url /
AWS_ENDPOINT_URL at ``proxy.endpoint_url``; the test changes the proxy's
behaviour from its own process while they run:

- ``errors(n)``: answer the next ``n`` requests with 503 SlowDown, without forwarding;
- ``resets(n)``: reset the connection of the next ``n`` requests, forwarding nothing;
- ``drops(n)``: forward the next ``n`` requests, then reset instead of replying
  (the store did the work, the client never hears of it);
- ``cuts(n, larger_than)``: of the next ``n`` answers with a body of more than
  ``larger_than`` bytes, send the headers and half the body, then reset (a
  connection that breaks mid-download);
- ``outage(seconds)``: reset every connection for that long (``None``: until ``restore()``);
- ``slow(delay)``: wait ``delay`` seconds before each answer.

Counts of requests, forwarded requests and faults are kept for the test's notes.
Only loopback: the proxy binds 127.0.0.1 and forwards to a 127.0.0.1 upstream.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        assert u.hostname in ("127.0.0.1", "localhost"), "the proxy forwards to loopback only"
        self.upstream = (u.hostname, u.port or 80)
        self.lock = threading.Lock()
        self._errors = 0
        self._resets = 0
        self._drops = 0
        self._cuts = 0
        self._cut_over = 0
        self._outage_until: float | None = None  # monotonic; inf: until restore()
        self._delay = 0.0
        self.requests = 0
        self.forwarded = 0
        self.faults = 0  # every request or connection answered with a fault
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                if proxy._take("outage"):
                    self._reset()
                    return
                super().handle_one_request()

            def _reset(self) -> None:
                # SO_LINGER 0: close sends RST, as a crashed or firewalled server would.
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.close()

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests += 1
                if proxy._take("outage") or proxy._take("reset"):
                    self._reset()
                    return
                if proxy._delay:
                    time.sleep(proxy._delay)
                if proxy._take("error"):
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOWDOWN)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    with proxy.lock:
                        proxy.forwarded += 1
                    if proxy._take("drop"):
                        self._reset()
                        return
                    self.send_response(resp.status, resp.reason)
                    head = self.command == "HEAD"  # keeps the object's Content-Length
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                            self.send_header(k, v)
                    if not head:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if not head and len(data) > proxy._cut_over and proxy._take("cut"):
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self._reset()
                        return
                    if not head:
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="faultproxy", daemon=True
        )
        self.thread.start()

    def _take(self, kind: str) -> bool:
        """Whether this request gets fault ``kind`` (counting it down)."""
        with self.lock:
            if kind == "outage":
                hit = self._outage_until is not None and time.monotonic() < self._outage_until
            else:
                left = getattr(self, f"_{kind}s")
                hit = left > 0
                if hit:
                    setattr(self, f"_{kind}s", left - 1)
            if hit:
                self.faults += 1
            return hit

    # -- control, from the test --------------------------------------------------------

    def errors(self, n: int) -> None:
        with self.lock:
            self._errors = n

    def resets(self, n: int) -> None:
        with self.lock:
            self._resets = n

    def drops(self, n: int) -> None:
        with self.lock:
            self._drops = n

    def cuts(self, n: int, larger_than: int = 0) -> None:
        with self.lock:
            self._cuts = n
            self._cut_over = larger_than

    def outage(self, seconds: float | None = None) -> None:
        with self.lock:
            self._outage_until = time.monotonic() + (
                float("inf") if seconds is None else seconds
            )

    def slow(self, delay: float) -> None:
        with self.lock:
            self._delay = delay

    def restore(self) -> None:
        """Back to a healthy store: no pending faults, no outage, no delay."""
        with self.lock:
            self._errors = self._resets = self._drops = self._cuts = 0
            self._outage_until = None
            self._delay = 0.0

    @property
    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "forwarded": self.forwarded, "faults": self.faults}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
