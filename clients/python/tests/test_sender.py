"""The sender's answer handling that the real ingest cannot be made to show on demand: a 503
with ``Retry-After`` is retried no sooner than asked, and a 413 splits the batch. The server here
answers exactly what ingest's HTTP API answers in those cases (``ingest/src/http.rs``)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Tuple

from smart_prefetch import Client
from smart_prefetch.sender import retry_after


class Scripted:
    """Answers each ``POST /v1/events`` with the next scripted status (then 200), recording
    when and how many lines came."""

    def __init__(self, script: List[Tuple[int, dict]]) -> None:
        self.script = list(script)
        self.seen: List[Tuple[float, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines = [x for x in body.split(b"\n") if x]
                outer.seen.append((time.monotonic(), len(lines)))
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                out = b'{"accepted":%d}' % len(lines) if status == 200 else b'{"error":"x"}'
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_503_is_retried_after_retry_after():
    srv = Scripted([(503, {"Retry-After": "1"})])
    c = Client(srv.url, flush_interval=0.05)
    c.record_query("AAPL", "price")
    assert c.flush(10), c.stats()
    (t1, n1), (t2, n2) = srv.seen
    assert (n1, n2) == (1, 1)
    assert t2 - t1 >= 0.95, f"retried after {t2 - t1:.2f} s, asked 1 s"
    assert c.stats()["sent"] == 1 and c.stats()["failed_requests"] == 1
    srv.server.shutdown()


def test_413_splits_the_batch():
    srv = Scripted([(413, {})])
    c = Client(srv.url, flush_interval=0.3)
    for i in range(10):
        c.record_query(f"T{i}", "price")
    assert c.flush(10), c.stats()
    assert [n for _, n in srv.seen] == [10, 5, 5]
    assert c.stats()["sent"] == 10
    srv.server.shutdown()


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("5", 1.0) == 5.0
    assert retry_after(None, 1.0) == 1.0
    assert retry_after("soon", 2.0) == 2.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 0.0


def test_flush_without_a_timeout_gives_up_while_ingest_is_down():
    # Nothing listens on the port: every send fails, so the buffer never empties.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = Client(f"http://127.0.0.1:{port}", flush_interval=0.05, flush_timeout=0.5)
    c.record_query("AAPL", "price")
    t0 = time.monotonic()
    assert not c.flush(), "nothing could be sent, yet flush() reported success"
    waited = time.monotonic() - t0
    assert 0.45 <= waited < 5, f"flush() waited {waited:.2f} s with flush_timeout=0.5"
    assert c.stats()["sent"] == 0
    c.close(0)
