"""get_cache_status() against the ground truth: every query event on the topic.

The warmers count the app's reported hits and misses from the query-events topic; the status
must end up counting exactly those, and ``hit_rate`` (percent) must be their ratio — not only a
ratio consistent with the same answer's own counters.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Tuple

import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import BOOTSTRAP, TOKEN, eventually

from smart_prefetch import Client


def topic_counts(topic: str) -> Tuple[int, int]:
    """(events, hits) over every partition of ``topic``, read from the beginning."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"truth-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        seen = dict.fromkeys(parts, 0)
        n = hits = 0
        deadline = time.monotonic() + 30
        while any(seen[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() or m.offset() >= ends[m.partition()]:
                continue
            seen[m.partition()] += 1
            n += 1
            hits += bool(json.loads(m.value())["hit"])
        assert seen == ends, f"read {seen} of {ends}"
        return n, hits
    finally:
        c.close()


def test_the_status_counts_every_query_on_the_topic_and_hit_rate_is_their_percent(stack):
    me = Client(stack.ingest.url, TOKEN, client_id=f"truth-{uuid.uuid4().hex[:8]}")
    for i in range(20):
        me.record_query("TRUTH", "price", hit=i % 4 == 0)
    assert me.flush(30)

    def settled():
        n, hits = topic_counts(stack.events_topic)
        s = me.get_cache_status()
        return (n, hits, s) if (s["total_queries"], s["cache_hits"]) == (n, hits) else None

    n, hits, s = eventually("the status counting every event on the topic", settled)
    assert n >= 20 and 0 < hits < n
    assert s["cache_misses"] == n - hits
    assert s["hit_rate"] == pytest.approx(100.0 * hits / n, abs=0.01)
