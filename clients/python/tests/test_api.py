"""The original module's read functions and the ``@cached`` read-through, against the real
ingest, analyzer and warmer."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import TOKEN, eventually, free_port, http_get, post_events, read_topic

import smart_prefetch
from smart_prefetch import Client, PrefetchError, PrefetchUnavailable


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def seed_history(stack) -> None:
    """A dashboard polling AAPL/price every minute for the last hour (every other one a hit),
    then, once the analyzer folded it, one later query that moves its event-time clock on."""
    end = datetime.now(timezone.utc)
    history = [{"ticker": "AAPL", "module": "price", "client": "dash-aapl", "hit": i % 2 == 0,
                "ts": iso(end - timedelta(seconds=60 * (60 - i)))} for i in range(60)]
    post_events(stack.ingest.url, history)

    def folded() -> bool:
        _, text = http_get(f"{stack.analyzer.url}/metrics")
        for line in text.decode().splitlines():
            if line.startswith('smart_prefetch_analyzer_events_total{admission="on_time"} '):
                return float(line.split()[-1]) >= 60
        return False

    eventually("the analyzer folding the history", folded)
    post_events(stack.ingest.url, [{"ticker": "SPY", "module": "quote", "hit": True,
                                    "ts": iso(end + timedelta(seconds=5))}])


@pytest.fixture(scope="module")
def seeded(stack):
    seed_history(stack)
    smart_prefetch.configure(stack.ingest.url, TOKEN, warmer=stack.warmer.url)
    return stack


def test_predict_next_queries_gives_ticker_module_confidence(seeded):
    preds = eventually("AAPL/price predicted", lambda: [
        p for p in smart_prefetch.predict_next_queries() if (p["ticker"], p["module"]) ==
        ("AAPL", "price")])
    p = preds[0]
    assert isinstance(p["confidence"], float) and 0.5 <= p["confidence"] <= 1.0, p
    assert len(smart_prefetch.predict_next_queries(limit=1)) == 1


def test_analyze_patterns_gives_the_original_shape(seeded):
    r = eventually("a patterns snapshot with AAPL on top", lambda: (
        lambda r: r["status"] == "ok" and r["patterns"]["top_tickers"][0]["name"] == "AAPL"
        and r)(smart_prefetch.analyze_patterns()))
    pats = r["patterns"]
    for field in ("top_modules", "top_pairs", "popular_this_hour", "popular_this_weekday",
                  "top_sequences"):
        assert isinstance(pats[field], list), field
    assert pats["top_tickers"][0]["count"] >= 60
    assert {"ticker": "AAPL", "module": "price", "count": 60} in pats["top_pairs"]


def test_get_cache_status_gives_the_hit_rate_in_percent(seeded):
    s = eventually("status counting the seeded queries", lambda: (
        lambda s: s["total_queries"] >= 61 and s)(smart_prefetch.get_cache_status()))
    assert s["cache_hits"] >= 31
    assert s["hit_rate"] == pytest.approx(100.0 * s["cache_hits"] / s["total_queries"])
    assert 1.0 < s["hit_rate"] <= 100.0
    assert s["hit_ratio"] == pytest.approx(s["hit_rate"] / 100.0)
    for field in ("enabled", "cache_misses", "cached_items", "cache_size_mb", "config",
                  "learning_stage", "hints"):
        assert field in s, field


def test_warmup_cache_gives_cached_and_needs_the_token(seeded):
    eventually("a prediction to warm", lambda: smart_prefetch.predict_next_queries())
    r = smart_prefetch.warmup_cache()
    assert r["status"] == "ok" and isinstance(r["cached"], int), r
    assert all({"ticker", "module", "confidence"} <= set(i) for i in r["items"]), r
    with pytest.raises(PrefetchError) as e:
        Client(seeded.ingest.url).warmup_cache()
    assert e.value.status == 401


def test_an_unreachable_api_raises_prefetch_unavailable():
    with pytest.raises(PrefetchUnavailable):
        Client(f"http://127.0.0.1:{free_port()}").get_cache_status()


def events_of(stack, client_id: str, sentinel: str, expected: int):
    """The client's events on the topic (sorted), once its sentinel (recorded last) and
    ``expected`` others are there."""
    def mine(ev):
        return [e for e in ev if e.get("client") == client_id and e["ticker"] != sentinel]

    got = read_topic(stack.events_topic, lambda ev: len(mine(ev)) >= expected and any(
        e.get("client") == client_id and e["ticker"] == sentinel for e in ev))
    return sorted((e["ticker"], e["module"], e["hit"]) for e in mine(got))


def test_cached_answers_from_the_warmer_and_it_records_miss_then_hit(stack):
    me = f"cached-{uuid.uuid4().hex[:8]}"
    c = Client(stack.ingest.url, TOKEN, warmer=stack.warmer.url, client_id=me)
    calls = []

    @c.cached("price")
    def fetch(ticker):
        calls.append(ticker)
        return {"from": "app"}

    assert fetch("nvda") == {"ticker": "NVDA", "module": "price", "value": 42}
    assert fetch("NVDA") == {"ticker": "NVDA", "module": "price", "value": 42}
    assert calls == [], "the warmer answered both"
    assert stack.upstream.hits.get("/price/NVDA") == 1, "the second came from the cache"
    # The upstream has no NOPE: the app's function decides, and the warmer's miss is the only
    # event recorded.
    assert fetch("NOPE") == {"from": "app"} and calls == ["NOPE"]
    c.record_query("SENTINEL", "price")
    c.flush(30)
    assert events_of(stack, me, "SENTINEL", 3) == sorted([
        ("NVDA", "price", False), ("NVDA", "price", True), ("NOPE", "price", False)])
    with pytest.raises(ValueError):
        fetch("BAD;")
    c.close()


def test_cached_falls_back_to_the_function_and_records_a_miss_when_the_warmer_is_down(stack):
    me = f"fallback-{uuid.uuid4().hex[:8]}"
    c = Client(stack.ingest.url, warmer=f"http://127.0.0.1:{free_port()}", client_id=me)

    @c.cached("news", decode=lambda body: ("decoded", body))
    def fetch(ticker):
        return f"app:{ticker}"

    assert fetch("amd") == "app:amd"
    assert fetch("AMD") == "app:AMD"
    c.record_query("SENTINEL", "news")
    c.flush(30)
    assert events_of(stack, me, "SENTINEL", 2) == [("AMD", "news", False)] * 2
    c.close()


def test_cached_module_level_uses_the_configured_client(seeded):
    @smart_prefetch.cached("fundamentals", decode=lambda b: b["value"])
    def fetch(ticker):
        raise AssertionError("the warmer answers")

    assert fetch("IBM") == 42
    with pytest.raises(ValueError):
        smart_prefetch.cached("bad module")
