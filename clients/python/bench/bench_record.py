"""What ``record_query`` costs the calling thread, side by side with the raw limit and the old
design (one synchronous HTTP request per query).

    python clients/python/bench/bench_record.py --api http://127.0.0.1:8080

Scenarios, each timed call by call with ``perf_counter_ns``:

* ``deque.append (raw limit)`` — appending a ready line to a deque, the least a queueing call
  can cost;
* ``record_query, ingest up`` — the client against the ingest at ``--api``, its sender thread
  shipping batches meanwhile;
* ``record_query, ingest down`` — the client against a closed port: its sender retries and the
  buffer fills and drops the oldest;
* ``POST action=record per query (old design)`` — what the README's ``requests.post`` snippet
  did, with a keep-alive connection (``--old-calls`` of them).

The app is modelled as calling in bursts of ``--burst`` queries with a short pause between
them (an app does other work between queries, during which the sender thread runs).
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import sys
import time
from typing import Callable, List

import smart_prefetch.contract as contract
from smart_prefetch import Client
from smart_prefetch._http import Http

TICKERS = [f"T{i}" for i in range(200)]
MODULES = ["price", "chart", "news", "fundamentals"]


def timed(call: Callable[[int], None], n: int, burst: int, pause: float) -> List[int]:
    out = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call(i)
        out[i] = clock() - t0
        if i % burst == burst - 1:
            time.sleep(pause)
    return out


def row(name: str, ns: List[int]) -> str:
    s = sorted(ns)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))] / 1000  # noqa: E731
    mean = sum(s) / len(s) / 1000
    return (f"| {name} | {len(s):,} | {mean:.2f} | {q(0.5):.2f} | {q(0.99):.2f} | "
            f"{q(0.999):.2f} | {s[-1] / 1000:.0f} |")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="a running ingest")
    ap.add_argument("--calls", type=int, default=200_000, help="record_query calls per scenario")
    ap.add_argument("--old-calls", type=int, default=2_000, help="synchronous POSTs (old design)")
    ap.add_argument("--burst", type=int, default=100, help="calls between pauses")
    ap.add_argument("--pause", type=float, default=0.001, help="seconds between bursts")
    a = ap.parse_args()

    key = lambda i: (TICKERS[i % len(TICKERS)], MODULES[i % len(MODULES)])  # noqa: E731
    rows = []

    q: collections.deque = collections.deque()
    line = contract.encode("AAPL", "price", False, 1_700_000_000_000)
    rows.append(row("deque.append (raw limit)", timed(lambda i: q.append(line), a.calls, a.burst,
                                                      a.pause)))

    up = Client(a.api)
    rec = up.record_query
    rows.append(row("record_query, ingest up", timed(lambda i: rec(*key(i), i % 2 == 0),
                                                     a.calls, a.burst, a.pause)))
    flushed = up.flush(60)
    sent = up.stats()
    up.close(5)

    down = Client(f"http://127.0.0.1:{closed_port()}", buffer_size=50_000)
    rec = down.record_query
    rows.append(row("record_query, ingest down", timed(lambda i: rec(*key(i), i % 2 == 0),
                                                       a.calls, a.burst, a.pause)))
    lost = down.stats()
    down.close(0.1)

    http = Http(a.api, 5.0)
    hdrs = {"Content-Type": "application/json"}

    def post(i: int) -> None:
        t, m = key(i)
        body = json.dumps({"ticker": t, "module": m, "hit": i % 2 == 0}).encode()
        ans = http.request("POST", "/api/v1/smart-prefetch?action=record", body, hdrs)
        assert ans.status == 200, ans.body

    rows.append(row("POST action=record per query (old design)",
                    timed(post, a.old_calls, a.burst, a.pause)))

    print(f"python {sys.version.split()[0]}, {a.calls:,} calls per scenario, bursts of "
          f"{a.burst} with {a.pause * 1000:g} ms pauses\n")
    print("| scenario | calls | mean µs | p50 µs | p99 µs | p99.9 µs | max µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\ningest up: flushed={flushed}, {sent}\ningest down: {lost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
