"""Smart Prefetch for Python apps: the original ``modules.smart_prefetch`` API, backed by the
services.

.. code-block:: python

    from smart_prefetch import record_query, analyze_patterns, predict_next_queries, \\
        warmup_cache, get_cache_status

    record_query("AAPL", "price", hit=True)      # microseconds; sent in the background
    get_cache_status()["hit_rate"]               # percent, as the original

Configure with ``PREFETCH_API`` / ``PREFETCH_API_TOKEN`` (and ``PREFETCH_WARMER_URL`` for
:func:`cached`), or call :func:`configure` before the first use.

# Layout

* ``contract.py`` — the query-event rules, checked at the call, and the NDJSON encoding.
* ``sender.py`` — the bounded buffer and the thread that sends batches to ``/v1/events``,
  retries, and flushes at exit.
* ``_http.py`` — keep-alive HTTP over the standard library.
* ``client.py`` — :class:`Client`: settings, the original functions, the ``cached`` decorator.

One event: ``record_query`` validates and encodes it to one NDJSON line and appends it to the
sender's buffer; the sender thread joins up to ``batch_size`` lines into one ``POST /v1/events``
and drops them once ingest answered 2xx (that is, once Kafka acknowledged them).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar

from .client import Client, PrefetchError, PrefetchUnavailable

__all__ = [
    "Client",
    "PrefetchError",
    "PrefetchUnavailable",
    "analyze_patterns",
    "cached",
    "configure",
    "flush",
    "get_cache_status",
    "get_client",
    "predict_next_queries",
    "record_query",
    "stats",
    "warmup_cache",
]

F = TypeVar("F", bound=Callable[..., Any])

_default: Optional[Client] = None
_default_lock = threading.Lock()


def configure(api: Optional[str] = None, token: Optional[str] = None, **options: Any) -> Client:
    """Replaces the default client (see :class:`Client` for the options); the previous one
    first sends what it buffered. Returns the new client."""
    global _default
    new = Client(api, token, **options)
    with _default_lock:
        old, _default = _default, new
    if old is not None:
        old.close()
    return new


def get_client() -> Client:
    """The default client, made from the environment on first use."""
    global _default
    c = _default
    if c is None:
        with _default_lock:
            if _default is None:
                _default = Client()
            c = _default
    return c


def record_query(
    ticker: str,
    module: str,
    hit: bool = False,
    *,
    client: Optional[str] = None,
    latency_ms: Optional[float] = None,
) -> None:
    """Records one query the app answered (``hit``: the app's cache had it). Raises
    ``ValueError`` for a ticker or module the contract refuses; never blocks on or raises
    because of the network."""
    c = _default or get_client()
    c.record_query(ticker, module, hit, client=client, latency_ms=latency_ms)


def analyze_patterns() -> Dict[str, Any]:
    """Usage patterns: ``result["patterns"]["top_tickers"]``, ``top_modules``, ``top_pairs``,
    ``popular_this_hour``, ``popular_this_weekday``, ``top_sequences``..."""
    return get_client().analyze_patterns()


def predict_next_queries(limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """The live predictions: items with ``ticker``, ``module``, ``confidence``."""
    return get_client().predict_next_queries(limit)


def warmup_cache() -> Dict[str, Any]:
    """Warms the current predictions now: ``result["cached"]`` entries stored."""
    return get_client().warmup_cache()


def get_cache_status() -> Dict[str, Any]:
    """Cache status; ``status["hit_rate"]`` in percent."""
    return get_client().get_cache_status()


def cached(module: str, *, decode: Optional[Callable[[Any], Any]] = None) -> Callable[[F], F]:
    """``@cached("price")`` over ``def fetch(ticker)``: answers from the warmer's read-through,
    falling back to ``fetch``, and records the hit or miss. Uses the default client at call
    time, so :func:`configure` may come after the decoration."""

    def wrap(f: F) -> F:
        import functools

        bound: List[Any] = [None, None]  # the client the wrapper was built for, and it

        @functools.wraps(f)
        def call(ticker: str, *args: Any, **kwargs: Any) -> Any:
            c = get_client()
            client, g = bound
            if client is not c:
                g = c.cached(module, decode=decode)(f)
                bound[:] = [c, g]
            return g(ticker, *args, **kwargs)

        return call  # type: ignore[return-value]

    # Check the module name at decoration time, where a typo is.
    from .contract import normalize_module

    normalize_module(module)
    return wrap


def flush(timeout: Optional[float] = None) -> bool:
    """Waits until every recorded event was sent; ``False`` if ``timeout`` (default the
    client's ``flush_timeout``, 30 s) passed first."""
    return get_client().flush(timeout)


def stats() -> Dict[str, int]:
    """The default client's sender counters (enqueued, sent, dropped, rejected, buffered)."""
    return get_client().stats()
