"""The real stack for the client's tests: the ingest, analyzer and warmer binaries on the Kafka
broker at ``KAFKA_BOOTSTRAP`` (default ``127.0.0.1:9092``), with topics unique to this test
session, and a local upstream data API for the warmer.

Binaries come from ``PREFETCH_BIN_DIR``, else ``$CARGO_TARGET_DIR/debug``, else the repo's
``target/debug`` (``cargo build -p ingest -p analyzer -p warmer``). A missing binary or broker
fails the session: these tests are never skipped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[3]
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
TOKEN = "py-s3cret"


def bin_dir() -> Path:
    if os.environ.get("PREFETCH_BIN_DIR"):
        return Path(os.environ["PREFETCH_BIN_DIR"])
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "debug" if target else REPO / "target" / "debug"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what: str, probe: Callable[[], object], timeout: float = 60.0) -> object:
    """Polls ``probe`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as e:  # noqa: BLE001 - a probe may fail until the service is up
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def http_get(url: str, token: Optional[str] = None) -> "tuple[int, bytes]":
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_events(base: str, events: List[dict]) -> None:
    body = "\n".join(json.dumps(e) for e in events).encode()
    req = urllib.request.Request(
        f"{base}/v1/events", body, {"Content-Type": "application/x-ndjson"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.read()


class Service:
    """One binary, its port and its log file."""

    def __init__(self, name: str, args: List[str], port: int, logdir: Path) -> None:
        self.name, self.args, self.port = name, args, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = logdir / f"{name}-{port}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Service":
        exe = bin_dir() / self.name
        if not exe.is_file():
            pytest.fail(f"{exe} not found: build it (cargo build -p {self.name}) or set PREFETCH_BIN_DIR")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFETCH_", "INGEST_", "WARMER_", "ANALYZER_", "KAFKA_"))}
        env["PREFETCH_LOG_LEVEL"] = "info"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(exe), *self.args], stdout=out, stderr=out, env=env)
        eventually(f"{self.name} ready", self._ready, timeout=90)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
        return http_get(f"{self.url}/readyz")[0] == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Upstream:
    """The warmer's data API: ``GET /{module}/{ticker}`` answers ``{"ticker", "module",
    "value": 42}``; ticker ``NOPE`` answers 404. Counts requests per path."""

    def __init__(self) -> None:
        hits: Dict[str, int] = {}
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits[self.path] = hits.get(self.path, 0) + 1
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[1] == "NOPE":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"ticker": parts[1], "module": parts[0], "value": 42}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Stack:
    """Ingest, analyzer and warmer on unique topics."""

    def __init__(self, logdir: Path) -> None:
        self.prefix = f"pyclient-{uuid.uuid4().hex[:10]}"
        self.events_topic = f"{self.prefix}.query-events"
        self.logdir = logdir
        self.topics = [
            "--query-events-topic", self.events_topic,
            "--predictions-topic", f"{self.prefix}.predictions",
            "--config-topic", f"{self.prefix}.config",
            "--stats-topic", f"{self.prefix}.stats",
            "--dlq-topic", f"{self.prefix}.dlq",
            "--brokers", BOOTSTRAP, "--topic-partitions", "3",
        ]
        self.upstream = Upstream()
        self.cache_dir = Path(tempfile.mkdtemp(prefix="pyclient-cache-"))
        wport = free_port()
        self.warmer = Service("warmer", [
            "--listen", f"127.0.0.1:{wport}", "--group", f"{self.prefix}-warmer",
            "--cache", str(self.cache_dir),
            "--upstream-url", f"http://127.0.0.1:{self.upstream.port}/{{module}}/{{ticker}}",
            "--spread", "0s", "--holdback", "0", "--rate-limit", "0",
            "--api-token", TOKEN, *self.topics,
        ], wport, logdir)
        aport = free_port()
        self.analyzer = Service("analyzer", [
            "--listen", f"127.0.0.1:{aport}", "--group-id", f"{self.prefix}-analyzer",
            "--tick-interval", "500ms", "--stats-interval", "1s", "--hour-weights", "",
            *self.topics,
        ], aport, logdir)
        self.ingest = self.new_ingest(free_port())

    def new_ingest(self, port: int) -> Service:
        """An ingest on ``port`` (not started) sharing the stack's topics and warmer."""
        return Service("ingest", [
            "--listen", f"127.0.0.1:{port}", "--warmer-url", self.warmer.url,
            "--api-token", TOKEN, *self.topics,
        ], port, self.logdir)

    def start(self) -> "Stack":
        # Ingest first: it creates the topics the others consume.
        self.ingest.start()
        self.warmer.start()
        self.analyzer.start()
        return self

    def stop(self) -> None:
        for s in (self.ingest, self.analyzer, self.warmer):
            s.stop()
        self.upstream.server.shutdown()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    s = Stack(tmp_path_factory.mktemp("logs"))
    try:
        yield s.start()
    finally:
        s.stop()


def read_topic(topic: str, done: Callable[[List[dict]], bool], timeout: float = 60.0,
               keys: Optional[List[bytes]] = None) -> List[dict]:
    """Every event on ``topic`` from the beginning, polled until ``done(events)``; each event
    dict gets ``_key`` (the message key)."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"pyclient-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = c.list_topics(topic, timeout=10)
        parts = meta.topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        seen: List[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                e = json.loads(m.value())
                e["_key"] = m.key()
                seen.append(e)
            if done(seen):
                # Read on until the topic is quiet, so what came after is seen too (an event
                # that should not be there fails the caller's exact comparison).
                quiet = time.monotonic() + 1.0
                while time.monotonic() < quiet:
                    m = c.poll(0.2)
                    if m is not None and m.error() is None:
                        e = json.loads(m.value())
                        e["_key"] = m.key()
                        seen.append(e)
                        quiet = time.monotonic() + 1.0
                return seen
        raise AssertionError(f"topic {topic}: condition not met in {timeout}s; read {len(seen)}: "
                             f"{seen[-5:]}")
    finally:
        c.close()


def run_python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (this one, with the package installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFETCH_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
