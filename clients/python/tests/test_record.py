"""record_query against the real ingest and Kafka: what is recorded lands on the topic exactly,
a dead ingest never blocks or raises in the caller, and exit flushes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import pytest
from conftest import free_port, read_topic, run_python

from smart_prefetch import Client


def cid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def mine(client_id: str):
    return lambda events: [e for e in events if e.get("client") == client_id]


def ts_ms(e: dict) -> float:
    return datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() * 1000


def test_recorded_events_land_on_the_topic_exactly(stack):
    me = cid("exact")
    c = Client(stack.ingest.url, client_id=me)
    before = time.time() * 1000
    calls = [
        (" brk.b ", "Price", True, None),
        ("^gspc", "chart", False, 12.5),
        ("EURUSD=X", "news", False, 0),
    ] + [(f"T{i}", "price", i % 3 == 0, float(i)) for i in range(40)]
    for ticker, module, hit, lat in calls:
        c.record_query(ticker, module, hit, latency_ms=lat)
    c.record_query("MSFT", "price", True, client="someone-else-" + me)
    assert c.flush(30), c.stats()
    after = time.time() * 1000

    got = read_topic(stack.events_topic, lambda ev: len(mine(me)(ev)) >= len(calls))
    events = mine(me)(got)
    want = [(t.strip().upper(), m.strip().lower(), h, l) for t, m, h, l in calls]
    assert sorted((e["ticker"], e["module"], e["hit"], e.get("latency_ms")) for e in events) \
        == sorted((t, m, h, None if l is None else float(l)) for t, m, h, l in want)
    assert all(e["_key"] == e["ticker"].encode() for e in events), "keyed by ticker"
    assert all(before - 1 <= ts_ms(e) <= after + 1 for e in events), "stamped at the call"
    assert c.stats()["sent"] == len(calls) + 1 and c.stats()["dropped"] == 0
    read_topic(stack.events_topic,
               lambda ev: any(e.get("client") == "someone-else-" + me for e in ev))
    c.close()


@pytest.mark.parametrize("ticker,module,kw,err", [
    ("AAPL;", "price", {}, ValueError),
    (".", "price", {}, ValueError),
    ("ſpy", "price", {}, ValueError),
    ("A" * 21, "price", {}, ValueError),
    ("AAPL", "pri ce", {}, ValueError),
    ("AAPL", "..", {}, ValueError),
    ("AAPL", "price", {"hit": "yes"}, TypeError),
    ("AAPL", "price", {"latency_ms": -1}, ValueError),
    ("AAPL", "price", {"latency_ms": 4e6}, ValueError),
    ("AAPL", "price", {"client": "a\nb"}, ValueError),
    ("AAPL", "price", {"client": ""}, ValueError),
])
def test_bad_input_raises_at_the_call_and_records_nothing(ticker, module, kw, err):
    c = Client("http://127.0.0.1:9")
    with pytest.raises(err):
        c.record_query(ticker, module, **kw)
    assert c.stats()["enqueued"] == 0


def test_a_line_ingest_refuses_costs_that_line_only(stack):
    me = cid("refused")
    c = Client(stack.ingest.url, client_id=me)
    c.record_query("GOOD1", "price")
    # A line the client's own checks would have refused, as from a client older than a rule.
    c.sender.enqueue(b'{"ticker":"BAD;","module":"price","client":"%s"}' % me.encode())
    c.record_query("GOOD2", "price")
    assert c.flush(30), c.stats()
    assert c.stats()["rejected"] == 1 and c.stats()["sent"] == 2
    got = read_topic(stack.events_topic, lambda ev: len(mine(me)(ev)) >= 2)
    assert sorted(e["ticker"] for e in mine(me)(got)) == ["GOOD1", "GOOD2"]


def test_a_killed_ingest_never_blocks_and_buffered_events_arrive_after_restart(stack):
    me = cid("outage")
    ingest = stack.new_ingest(free_port()).start()
    c = Client(ingest.url, client_id=me, flush_interval=0.1, max_backoff=0.5)
    c.record_query("UP0", "price")
    assert c.flush(30)
    ingest.kill()
    worst = 0.0
    for i in range(300):
        t0 = time.perf_counter()
        c.record_query(f"DOWN{i}", "price", i % 2 == 0)
        worst = max(worst, time.perf_counter() - t0)
    # Never waiting on the network: a connect or request timeout would be seconds. (The
    # per-call cost is measured by bench/bench_record.py, not asserted here.)
    assert worst < 0.05, f"a call took {worst * 1e3:.2f} ms while ingest was down"
    time.sleep(1.0)
    s = c.stats()
    assert s["failed_requests"] >= 1 and s["buffered"] == 300 and s["sent"] == 1, s
    assert not c.flush(0.2), "nothing can be sent while ingest is down"
    ingest.start()
    assert c.flush(60), c.stats()
    got = read_topic(stack.events_topic, lambda ev: len(mine(me)(ev)) >= 301)
    assert sorted(e["ticker"] for e in mine(me)(got)) == sorted(
        ["UP0"] + [f"DOWN{i}" for i in range(300)])
    c.close()
    ingest.stop()


def test_a_full_buffer_drops_the_oldest_and_counts_them():
    c = Client("http://127.0.0.1:9", buffer_size=10, max_backoff=60)
    for i in range(25):
        c.record_query(f"X{i}", "price")
    s = c.stats()
    buffered = [json.loads(line)["ticker"] for line in c.sender._buf]
    in_flight = len(c.sender._inflight)
    assert buffered == [f"X{i}" for i in range(15, 25)], buffered
    assert s["dropped"] == 15 - in_flight and s["enqueued"] == 25, s
    c.close(0.1)


def test_exit_flushes_what_is_buffered(stack):
    me = cid("exit")
    code = f"""
import smart_prefetch
smart_prefetch.configure({stack.ingest.url!r}, client_id={me!r}, flush_interval=3600)
for i in range(30):
    smart_prefetch.record_query(f"EXIT{{i}}", "news", i % 2 == 0)
assert smart_prefetch.stats()["sent"] == 0
"""
    t0 = time.monotonic()
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 20
    got = read_topic(stack.events_topic, lambda ev: len(mine(me)(ev)) >= 30)
    assert sorted(e["ticker"] for e in mine(me)(got)) == sorted(f"EXIT{i}" for i in range(30))


def test_exit_with_ingest_down_gives_up_after_exit_timeout():
    code = """
import smart_prefetch
smart_prefetch.configure("http://127.0.0.1:9", exit_timeout=1.0)
smart_prefetch.record_query("AAPL", "price")
"""
    t0 = time.monotonic()
    r = run_python(code)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 8, f"exit took {took:.1f} s"
    assert "1 query event(s) not sent before exit" in r.stderr, r.stderr
