"""The query-event contract (``docs/query-event.schema.json``), checked at the call.

The rules mirror ingest's (``contract/src/contract.rs``) exactly, and must never be looser:
ingest takes a batch all or nothing, so one event it would refuse costs the whole batch a
round trip (the sender then drops the refused lines and resends the rest). A bad ticker is a
programming error and raises :class:`ValueError` where the typo is.

Events are encoded to their NDJSON line here, at the call, because that line is what the
sender ships: the background thread then only joins bytes, so it holds the GIL for as little
time as possible and the app's threads are not kept waiting behind it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Dict, Optional

#: Longest ticker, in characters (after trimming).
TICKER_MAX_LEN = 20
#: Longest module, in characters (after trimming).
MODULE_MAX_LEN = 64
#: Longest client id, in characters.
CLIENT_MAX_LEN = 128
#: Largest accepted ``latency_ms``: one hour (a larger value is a unit mistake).
MAX_LATENCY_MS = 3_600_000.0

# Rust's `str::trim` removes Unicode White_Space, which is not Python's `str.isspace` set
# (Python also strips U+001C..U+001F); trimming with Rust's set keeps the two sides equal.
_WHITE_SPACE = (
    "\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# ASCII only, checked before any case mapping: `ſpy`.upper() would otherwise become `SPY`.
_TICKER = re.compile(r"[A-Za-z0-9.^=-]+\Z")
_MODULE = re.compile(r"[A-Za-z0-9_-]+\Z")
_ALNUM = re.compile(r"[A-Za-z0-9]")
# Control characters (Unicode Cc, as Rust's `char::is_control`) and lone surrogates, which
# cannot be encoded as UTF-8 and so never reach ingest intact.
_BAD_CLIENT = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\udfff]")


def _check_len(field: str, s: str, limit: int) -> None:
    if not s:
        raise ValueError(f"{field}: must not be empty")
    if len(s) > limit:
        raise ValueError(f"{field}: is {len(s)} characters long; the limit is {limit}")


def normalize_ticker(raw: str) -> str:
    """Trimmed, checked and upper-cased ticker (``" brk.b "`` -> ``"BRK.B"``).

    Raises :class:`ValueError` naming the problem, as ingest would.
    """
    if not isinstance(raw, str):
        raise TypeError(f"ticker: expected a string, got {type(raw).__name__}")
    t = raw.strip(_WHITE_SPACE)
    if _TICKER.match(t) is None:
        _check_len("ticker", t, TICKER_MAX_LEN)
        bad = next(c for c in t if _TICKER.match(c) is None)
        raise ValueError(f"ticker: character {bad!r} is not allowed (use A-Z 0-9 . - ^ =)")
    _check_len("ticker", t, TICKER_MAX_LEN)
    if _ALNUM.search(t) is None:
        raise ValueError("ticker: must contain a letter or a digit")
    return t.upper()


def normalize_module(raw: str) -> str:
    """Trimmed, checked and lower-cased module (``"Price"`` -> ``"price"``)."""
    if not isinstance(raw, str):
        raise TypeError(f"module: expected a string, got {type(raw).__name__}")
    m = raw.strip(_WHITE_SPACE)
    if _MODULE.match(m) is None:
        _check_len("module", m, MODULE_MAX_LEN)
        bad = next(c for c in m if _MODULE.match(c) is None)
        raise ValueError(f"module: character {bad!r} is not allowed (use a-z 0-9 _ -)")
    _check_len("module", m, MODULE_MAX_LEN)
    if _ALNUM.search(m) is None:
        raise ValueError("module: must contain a letter or a digit")
    return m.lower()


def check_client(raw: str) -> str:
    """A client id is kept exactly as given: 1-128 characters, no control characters."""
    if not isinstance(raw, str):
        raise TypeError(f"client: expected a string, got {type(raw).__name__}")
    _check_len("client", raw, CLIENT_MAX_LEN)
    if _BAD_CLIENT.search(raw) is not None:
        raise ValueError("client: control characters (and lone surrogates) are not allowed")
    return raw


def check_latency(raw: float) -> float:
    """A latency in milliseconds: a finite number in [0, 3,600,000]."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise TypeError(f"latency_ms: expected a number, got {type(raw).__name__}")
    x = float(raw)
    if not (math.isfinite(x) and 0.0 <= x <= MAX_LATENCY_MS):
        raise ValueError(f"latency_ms: {raw!r} is not a number of milliseconds in [0, 3600000]")
    return x


def check_hit(raw: object) -> bool:
    """``hit`` must be a boolean (``0``/``1`` are taken too); a string is a mistake."""
    if raw is True or raw is False:
        return raw
    if isinstance(raw, (str, bytes)) or raw is None:
        raise TypeError(f"hit: expected a boolean, got {type(raw).__name__}")
    return bool(raw)


def encode(
    ticker: str,
    module: str,
    hit: bool,
    ts_ms: int,
    client: Optional[str] = None,
    latency_ms: Optional[float] = None,
) -> bytes:
    """The NDJSON line (without newline) of an already validated event.

    Ticker and module hold only ``[A-Za-z0-9.^=_-]`` after validation, so they need no JSON
    escaping; the client id does.
    """
    line = (
        f'{{"ticker":"{ticker}","module":"{module}","hit":{"true" if hit else "false"}'
        f',"ts":{ts_ms}'
    )
    if client is not None:
        line += ',"client":' + json.dumps(client, ensure_ascii=False)
    if latency_ms is not None:
        line += f',"latency_ms":{latency_ms!r}'
    return (line + "}").encode("utf-8")


# Apps record the same few thousand tickers and modules over and over: remembering each raw
# spelling's normal form makes the check one dict lookup (it is pure, so caching is safe).
_CACHE_LIMIT = 10_000
_tickers: Dict[str, str] = {}
_modules: Dict[str, str] = {}


def ticker(raw: str) -> str:
    """:func:`normalize_ticker`, remembered."""
    t = _tickers.get(raw)
    if t is None:
        t = normalize_ticker(raw)
        if len(_tickers) >= _CACHE_LIMIT:
            _tickers.clear()
        _tickers[raw] = t
    return t


def module(raw: str) -> str:
    """:func:`normalize_module`, remembered."""
    m = _modules.get(raw)
    if m is None:
        m = normalize_module(raw)
        if len(_modules) >= _CACHE_LIMIT:
            _modules.clear()
        _modules[raw] = m
    return m
