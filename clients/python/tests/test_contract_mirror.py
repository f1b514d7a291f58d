"""The client's contract checks agree with ingest's, input by input.

``record_query`` refuses at the call what ingest would refuse (``contract.py`` mirrors
``contract/src/contract.rs``). A mirror drifts silently when either side changes, so each input
here goes to both: the client's verdict (refused, or the normalised ticker and module) must equal
ingest's answer to the same event on ``?action=record`` (``400``, or ``200`` with the canonical
ticker and module it recorded).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

import pytest

from smart_prefetch import contract

CASES = [
    {"ticker": "", "module": "price"},
    {"ticker": ".", "module": "price"},
    {"ticker": "..", "module": "price"},
    {"ticker": "\u017fpy", "module": "price"},  # ſpy: SPY only after Unicode case mapping
    {"ticker": "\u0131bm", "module": "price"},  # ıbm
    {"ticker": "AAPL;", "module": "price"},
    {"ticker": "BR K", "module": "price"},
    {"ticker": "\x1cAAPL", "module": "price"},  # Python's strip() would drop U+001C; Rust's trim does not
    {"ticker": "A" * 21, "module": "price"},
    {"ticker": "A" * 20, "module": "m" * 64},
    {"ticker": "AAPL", "module": "m" * 65},
    {"ticker": "AAPL", "module": "\u212a"},  # Kelvin sign: k only after Unicode case mapping
    {"ticker": "AAPL", "module": "ma\u00df"},
    {"ticker": "AAPL", "module": "_-"},
    {"ticker": "AAPL", "module": "pri ce"},
    {"ticker": " brk.b ", "module": " Price "},
    {"ticker": "\u00a0^gspc\u3000", "module": "\u2003news\u2003"},  # Unicode White_Space is trimmed
    {"ticker": "eurusd=x", "module": "x_1-2"},
    {"ticker": "AAPL", "module": "price", "client": ""},
    {"ticker": "AAPL", "module": "price", "client": "a\nb"},
    {"ticker": "AAPL", "module": "price", "client": "a\x85b"},  # C1 control
    {"ticker": "AAPL", "module": "price", "client": "x" * 128},
    {"ticker": "AAPL", "module": "price", "client": "x" * 129},
    {"ticker": "AAPL", "module": "price", "client": "caf\u00e9 \u2603"},
    {"ticker": "AAPL", "module": "price", "latency_ms": -1},
    {"ticker": "AAPL", "module": "price", "latency_ms": 0},
    {"ticker": "AAPL", "module": "price", "latency_ms": 3600000},
    {"ticker": "AAPL", "module": "price", "latency_ms": 3600000.5},
]


def client_verdict(ev: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """What record_query makes of the event: None when it raises, else (ticker, module)."""
    try:
        t = contract.normalize_ticker(ev["ticker"])
        m = contract.normalize_module(ev["module"])
        if "client" in ev:
            contract.check_client(ev["client"])
        if "latency_ms" in ev:
            contract.check_latency(ev["latency_ms"])
    except (ValueError, TypeError):
        return None
    return t, m


def ingest_verdict(base: str, ev: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    req = urllib.request.Request(
        base + "/api/v1/smart-prefetch?action=record", data=json.dumps(ev).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            ack = json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == 400, f"ingest answered {e.code} to {ev!r}: {e.read()[:300]!r}"
        return None
    assert ack["status"] == "recorded"
    return ack["ticker"], ack["module"]


@pytest.mark.parametrize("event", CASES, ids=[repr(c)[:48] for c in CASES])
def test_the_client_refuses_and_normalises_exactly_what_ingest_does(stack, event):
    assert client_verdict(event) == ingest_verdict(stack.ingest.url, event)


def test_the_cases_cover_both_verdicts():
    verdicts = [client_verdict(c) is None for c in CASES]
    assert any(verdicts) and not all(verdicts)
