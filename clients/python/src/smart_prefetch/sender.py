"""The background sender: a bounded buffer of encoded events and one thread that ships them to
ingest's ``POST /v1/events`` as NDJSON batches.

The app's thread only appends a line under a lock (:meth:`Sender.enqueue`); everything that can
wait or fail happens on the sender thread:

* a batch is at most ``batch_size`` lines; the thread wakes every ``flush_interval`` seconds, or
  at once when a full batch is waiting;
* ``2xx`` means Kafka has every event of the batch (ingest answers only after the acks);
* ``503``/``429`` are retried after the answer's ``Retry-After``; an unreachable ingest and other
  failures are retried with exponential backoff (capped at ``max_backoff``). The batch being
  retried stays in flight, so nothing is lost while ingest is down;
* ``400`` names the refused lines: those are dropped (counted as ``rejected``) and the rest is
  resent, so a rule ingest has and the client lacks costs one event, never a batch;
* ``413`` splits the batch in two;
* when the buffer is full the oldest event is dropped (counted as ``dropped``, logged once).

At exit (``atexit``) :meth:`Sender.close` sends what is left, giving up after ``exit_timeout``
seconds so that a dead ingest cannot hold the process.
"""

from __future__ import annotations

import atexit
import collections
import email.utils
import itertools
import json
import logging
import os
import random
import threading
import time
import weakref
from typing import Deque, Dict, List, Mapping, Optional, Set

from ._http import Http, Unreachable

log = logging.getLogger("smart_prefetch")

_NDJSON = {"Content-Type": "application/x-ndjson"}


def retry_after(value: Optional[str], default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return default


class Sender:
    """Buffers encoded event lines and sends them from one daemon thread."""

    def __init__(
        self,
        http: Http,
        headers: Mapping[str, str],
        *,
        capacity: int,
        batch_size: int,
        flush_interval: float,
        max_backoff: float,
        exit_timeout: float,
        flush_timeout: float = 30.0,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be at least 1")
        if not flush_timeout >= 0:
            raise ValueError("flush_timeout must be a number of seconds, at least 0")
        self._http = http
        self._headers = {**headers, **_NDJSON}
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_backoff = max_backoff
        self._exit_timeout = exit_timeout
        self._flush_timeout = flush_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._backoff_n = 0
        # Bounded: a full deque drops its oldest line inside `append`, atomically, so the app's
        # threads append without a lock (the measured cost is in BENCHMARKS.md).
        self._buf: Deque[bytes] = collections.deque(maxlen=capacity)
        self._enqueued = itertools.count()
        self._inflight: List[bytes] = []
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._deadline = float("inf")
        # Written by the sender thread only.
        self.counts: Dict[str, int] = dict.fromkeys(
            ("sent", "rejected", "failed_requests", "taken"), 0
        )
        self._warned_drop = False
        self._down_since: Optional[float] = None
        self._warned: Set[str] = set()
        _live.add(self)

    # -- the app's side -------------------------------------------------------------------

    def enqueue(self, line: bytes) -> None:
        """Appends one encoded event; never blocks on I/O, never raises."""
        buf = self._buf
        buf.append(line)
        next(self._enqueued)
        if self._thread is None:
            self._start()
        if len(buf) == self._batch_size:
            self._wake.set()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event enqueued so far was sent (or dropped); ``False`` on timeout
        (default ``flush_timeout``: never for ever, since ingest may be down for hours)."""
        timeout = self._flush_timeout if timeout is None else timeout
        if self._thread is None:
            return not self._buf
        self._wake.set()
        with self._changed:
            return self._changed.wait_for(lambda: not self._buf and not self._inflight, timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is buffered (for at most ``timeout`` s, default ``exit_timeout``), then stops."""
        timeout = self._exit_timeout if timeout is None else timeout
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + timeout
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout + 1.0)
        with self._lock:
            left = len(self._buf) + len(self._inflight)
        if left:
            log.warning("smart_prefetch: %d query event(s) not sent before exit (ingest at %s)",
                        left, self._http.base)

    def stats(self) -> Dict[str, int]:
        """Counters: enqueued, sent, dropped (buffer full), rejected (by ingest), buffered."""
        with self._lock:
            c = dict(self.counts)
            buffered = len(self._buf)
            inflight = len(self._inflight)
        enqueued = _count_value(self._enqueued)
        taken = c.pop("taken")
        return {**c, "enqueued": enqueued, "dropped": max(0, enqueued - taken - buffered),
                "buffered": buffered + inflight}

    # -- the sender thread ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closing:
                return
            t = threading.Thread(target=self._run, name="smart-prefetch-sender", daemon=True)
            self._thread = t
        t.start()

    def _take(self) -> List[bytes]:
        with self._lock:
            if not self._inflight:
                n = min(self._batch_size, len(self._buf))
                self._inflight = [self._buf.popleft() for _ in range(n)]
                self.counts["taken"] += n
            return self._inflight

    def _done(self, kept: List[bytes]) -> None:
        with self._changed:
            self._inflight = kept
            self._changed.notify_all()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if self._closing:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return
                if backoff:
                    time.sleep(min(backoff, remaining))
            elif backoff:
                # A Retry-After is honoured: only close() cuts the wait short.
                self._stop.wait(backoff)
            else:
                self._wake.wait(self._interval)
                self._wake.clear()
            self._warn_drops()
            backoff = 0.0
            while not backoff and time.monotonic() < self._deadline:
                batch = self._take()
                if not batch:
                    break
                backoff = self._send(batch)
            if self._closing and not backoff and not (self._buf or self._inflight):
                return

    def _warn_drops(self) -> None:
        if not self._warned_drop and self.stats()["dropped"]:
            self._warned_drop = True
            log.warning(
                "smart_prefetch: buffer full (%d events), dropping the oldest; is ingest at %s "
                "down? (counted in stats()['dropped'])",
                self._capacity,
                self._http.base,
            )

    def _send(self, batch: List[bytes]) -> float:
        """Sends one batch; returns 0 when it is settled, else the seconds to wait."""
        try:
            ans = self._http.request("POST", "/v1/events", b"\n".join(batch) + b"\n", self._headers)
        except Unreachable as e:
            return self._failed(f"unreachable ({e})", None)
        if 200 <= ans.status < 300:
            if self._down_since is not None:
                log.info("smart_prefetch: ingest answers again after %.1f s",
                         time.monotonic() - self._down_since)
                self._down_since = None
            self._settled(batch, sent=len(batch))
            return 0.0
        if ans.status in (429, 503):
            wait = retry_after(ans.header("retry-after"), 1.0)
            return self._failed(f"busy ({ans.status})", wait)
        if ans.status == 400:
            refused = _refused_lines(ans.body, len(batch))
            if not refused:
                refused = set(range(len(batch)))
            self._warn_once("rejected", "smart_prefetch: ingest refused %d event(s): %s",
                            len(refused), ans.body[:500].decode("utf-8", "replace"))
            kept = [line for i, line in enumerate(batch) if i not in refused]
            with self._lock:
                self.counts["rejected"] += len(refused)
            self._done(kept)
            return 0.0
        if ans.status == 413 and len(batch) > 1:
            half = len(batch) // 2
            with self._lock:
                self._buf.extendleft(reversed(batch[half:]))
                self.counts["taken"] -= len(batch) - half
            self._done(batch[:half])
            return 0.0
        if ans.status == 413:
            self._warn_once("too_large", "smart_prefetch: one event is larger than ingest takes")
            with self._lock:
                self.counts["rejected"] += 1
            self._done([])
            return 0.0
        return self._failed(f"answered {ans.status}: {ans.body[:200]!r}", None)

    def _settled(self, batch: List[bytes], sent: int) -> None:
        with self._lock:
            self.counts["sent"] += sent
        self._backoff_n = 0
        self._done([])

    def _failed(self, why: str, wait: Optional[float]) -> float:
        with self._lock:
            self.counts["failed_requests"] += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("smart_prefetch: ingest at %s %s; events stay buffered and are retried",
                        self._http.base, why)
        if wait is None:
            n = self._backoff_n
            self._backoff_n = min(n + 1, 30)
            wait = min(self._max_backoff, 0.05 * (2 ** n)) * (0.5 + random.random() / 2)
        return max(wait, 0.001)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _reset_after_fork(self) -> None:
        # The child has no sender thread, and the parent sends what was buffered before the fork.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._buf.clear()
        self._enqueued = itertools.count()
        self.counts = dict.fromkeys(self.counts, 0)
        self._inflight = []
        self._thread = None
        self._http.forget()


def _count_value(c: "itertools.count[int]") -> int:
    # The value of an itertools.count without advancing it; its repr is `count(N)`. (`next` on
    # a count is atomic under the GIL, which a `+= 1` on an attribute is not.)
    return int(repr(c)[6:-1])


def _refused_lines(body: bytes, n: int) -> Set[int]:
    """0-based indexes of the lines a 400 ``invalid_events`` answer names."""
    try:
        problems = json.loads(body).get("problems") or []
    except (ValueError, AttributeError):
        return set()
    out: Set[int] = set()
    for p in problems:
        line = p.get("line") if isinstance(p, dict) else None
        if isinstance(line, int) and 1 <= line <= n:
            out.add(line - 1)
    return out


_live: "weakref.WeakSet[Sender]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for s in list(_live):
        s.close()


if hasattr(os, "register_at_fork"):

    def _after_fork_in_child() -> None:
        for s in list(_live):
            s._reset_after_fork()

    os.register_at_fork(after_in_child=_after_fork_in_child)
