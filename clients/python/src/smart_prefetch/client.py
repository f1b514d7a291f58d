"""One connection to the services: ingest (the front door, ``PREFETCH_API``) and the warmer's
read-through (``PREFETCH_WARMER_URL``).

:class:`Client` holds the configuration, the background :class:`~.sender.Sender` and the
original module's functions as methods; ``smart_prefetch`` exposes a default instance through
module-level functions.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

from . import contract
from ._http import Answer, Http, Unreachable
from .sender import Sender

log = logging.getLogger("smart_prefetch")

_ticker = contract.ticker
_module = contract.module
_time_ns = time.time_ns

F = TypeVar("F", bound=Callable[..., Any])

#: Ingest's original-API path.
API_PATH = "/api/v1/smart-prefetch"
#: Lists of the patterns answer, empty while no analyzer has published a snapshot.
PATTERN_LISTS = (
    "top_tickers",
    "top_modules",
    "top_pairs",
    "popular_this_hour",
    "popular_this_weekday",
    "top_sequences",
)


class PrefetchError(Exception):
    """A service refused or failed a request (not raised by :func:`record_query`)."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None) -> None:
        super().__init__(message)
        #: The HTTP status, when there was an answer.
        self.status = status
        #: The decoded JSON error body, when there was one.
        self.body = body


class PrefetchUnavailable(PrefetchError):
    """The service could not be reached."""


class Client:
    """Settings and connections for the services.

    Every argument falls back to an environment variable, then to a default:

    * ``api`` (``PREFETCH_API``, ``http://127.0.0.1:8080``): ingest's base URL;
    * ``token`` (``PREFETCH_API_TOKEN``): ingest's ``--api-token``, sent as a bearer token
      (needed by :meth:`warmup_cache` when ingest has one);
    * ``warmer`` (``PREFETCH_WARMER_URL``, ``http://127.0.0.1:8082``): the warmer, for
      :meth:`cached`;
    * ``read_token`` (``PREFETCH_READ_TOKEN``, else ``token``): the warmer's ``--read-token``;
    * ``client_id`` (``PREFETCH_CLIENT_ID``): the ``client`` of events that name none;
    * ``timeout``: seconds per HTTP request (5);
    * ``buffer_size``: events kept while ingest is unreachable, oldest dropped first (100,000);
    * ``batch_size``: events per request (2,000); ``flush_interval``: seconds between sends (0.5);
    * ``max_backoff``: longest wait between retries of an unreachable ingest (5 s);
    * ``exit_timeout``: how long the exit flush may take (5 s);
    * ``flush_timeout``: how long :meth:`flush` waits when given no timeout (30 s), so a call
      made while ingest is down returns ``False`` instead of blocking the app for ever;
    * ``warmer_retry``: seconds :meth:`cached` skips an unreachable warmer (2 s).
    """

    def __init__(
        self,
        api: Optional[str] = None,
        token: Optional[str] = None,
        *,
        warmer: Optional[str] = None,
        read_token: Optional[str] = None,
        client_id: Optional[str] = None,
        timeout: float = 5.0,
        buffer_size: int = 100_000,
        batch_size: int = 2000,
        flush_interval: float = 0.5,
        max_backoff: float = 5.0,
        exit_timeout: float = 5.0,
        flush_timeout: float = 30.0,
        warmer_retry: float = 2.0,
    ) -> None:
        env = os.environ.get
        self.api = (api or env("PREFETCH_API") or "http://127.0.0.1:8080").rstrip("/")
        self.token = token or env("PREFETCH_API_TOKEN") or None
        self.warmer = (warmer or env("PREFETCH_WARMER_URL") or "http://127.0.0.1:8082").rstrip("/")
        read = read_token or env("PREFETCH_READ_TOKEN") or self.token
        cid = client_id or env("PREFETCH_CLIENT_ID") or None
        self.client_id = contract.check_client(cid) if cid is not None else None
        self._ingest = Http(self.api, timeout)
        self._warmer = Http(self.warmer, timeout)
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._api_headers = {"Accept": "application/json", **auth}
        self._read_headers: Dict[str, str] = {"Accept": "application/json"}
        if read:
            self._read_headers["Authorization"] = f"Bearer {read}"
        if self.client_id is not None:
            self._read_headers["X-Client-Id"] = self.client_id
        self._warmer_retry = warmer_retry
        self._warmer_skip_until = 0.0
        self._warned: Set[str] = set()
        self.sender: Sender = Sender(
            self._ingest,
            auth,
            capacity=buffer_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_backoff=max_backoff,
            exit_timeout=exit_timeout,
            flush_timeout=flush_timeout,
        )
        self._enqueue = self.sender.enqueue

    # -- recording --------------------------------------------------------------------------

    def record_query(
        self,
        ticker: str,
        module: str,
        hit: bool = False,
        *,
        client: Optional[str] = None,
        latency_ms: Optional[float] = None,
    ) -> None:
        """Records one query the app answered: validated here (``ValueError``/``TypeError`` on
        bad input), stamped with the current time, and sent in the background. Never blocks on
        the network and never raises because ingest is down.

        ``hit`` must say whether the app's own cache answered (``True``) or the data had to be
        fetched (``False``): the analyzer learns demand from misses and hits alike, and the
        warmer's hit rate is computed from it.
        """
        t = _ticker(ticker)
        m = _module(module)
        if hit is not True and hit is not False:
            hit = contract.check_hit(hit)
        c = self.client_id if client is None else contract.check_client(client)
        lat = None if latency_ms is None else contract.check_latency(latency_ms)
        self._enqueue(contract.encode(t, m, hit, _time_ns() // 1_000_000, c, lat))

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every recorded event was sent; ``False`` if ``timeout`` (default
        ``flush_timeout``, 30 s) passed first."""
        return self.sender.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is buffered (at most ``timeout`` s) and stops the sender thread."""
        self.sender.close(timeout)

    def stats(self) -> Dict[str, int]:
        """The sender's counters: enqueued, sent, dropped, rejected, failed_requests, buffered."""
        return self.sender.stats()

    # -- the original module's read functions -----------------------------------------------

    def _api(self, method: str, query: str, body: Optional[bytes] = None) -> Answer:
        headers = dict(self._api_headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            return self._ingest.request(method, f"{API_PATH}?{query}", body, headers)
        except Unreachable as e:
            raise PrefetchUnavailable(f"ingest at {self.api} could not be reached: {e}") from e

    def _json(self, method: str, query: str, ok_statuses: Tuple[int, ...] = ()) -> Any:
        ans = self._api(method, query)
        try:
            doc = json.loads(ans.body) if ans.body else None
        except ValueError:
            doc = None
        if 200 <= ans.status < 300 or ans.status in ok_statuses:
            if doc is None:
                raise PrefetchError(f"ingest answered {ans.status} without JSON", ans.status)
            return doc
        msg = doc.get("message") if isinstance(doc, dict) else None
        raise PrefetchError(
            f"ingest answered {ans.status} to action {query.split('&')[0]}: "
            f"{msg or ans.body[:300].decode('utf-8', 'replace')}",
            ans.status,
            doc,
        )

    def analyze_patterns(self) -> Dict[str, Any]:
        """Usage patterns: ``{"status", "patterns": {"top_tickers": [{"name", "count"}],
        "top_modules", "top_pairs", "popular_this_hour", "popular_this_weekday",
        "top_sequences", ...}}``. While no analyzer has published a snapshot yet, ``status`` is
        ``"no_data"`` and the lists are empty."""
        doc = self._json("GET", "action=stats", ok_statuses=(503,))
        if isinstance(doc, dict) and doc.get("error") == "no_stats":
            empty: Dict[str, Any] = {k: [] for k in PATTERN_LISTS}
            return {"status": "no_data", "message": doc.get("message", ""), "patterns": empty}
        if isinstance(doc, dict) and "error" in doc:
            raise PrefetchError(f"ingest answered 503: {doc.get('message')}", 503, doc)
        return {"status": "ok", "patterns": doc}

    def predict_next_queries(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The live predictions, most confident first: ``[{"ticker", "module", "confidence",
        ...}]`` (``limit`` defaults to the live config's ``top_n``)."""
        q = "action=predictions" + (f"&limit={int(limit)}" if limit is not None else "")
        return list(self._json("GET", q)["predictions"])

    def warmup_cache(self) -> Dict[str, Any]:
        """Warms the current predictions now: ``{"status", "cached", "items"}``. Needs the API
        token when ingest has one."""
        doc: Dict[str, Any] = self._json("POST", "action=warmup")
        return doc

    def get_cache_status(self) -> Dict[str, Any]:
        """The cache status, ``hit_rate`` in percent as the original gave it (``hit_ratio`` is
        the same as a fraction): ``enabled``, ``total_queries``, ``cache_hits``,
        ``cache_misses``, ``cached_items``, ``cache_size_mb``, ``config``,
        ``learning_stage``, ``live_predictions``, ``hints``, ..."""
        doc: Dict[str, Any] = self._json("GET", "action=status")
        ratio = float(doc.get("hit_rate") or 0.0)
        doc["hit_ratio"] = ratio
        doc["hit_rate"] = ratio * 100.0
        return doc

    # -- the read-through -------------------------------------------------------------------

    def cached(
        self, module: str, *, decode: Optional[Callable[[Any], Any]] = None
    ) -> Callable[[F], F]:
        """Decorates ``f(ticker, ...)``, the app's own fetch, with the warmer's read-through.

        A call asks ``GET /v1/cache/{module}/{ticker}`` and returns its JSON body (through
        ``decode`` when given); the warmer records that query (hit or miss). When the warmer
        has no answer to give — unreachable, refusing, 404, 5xx — ``f`` is called instead, and
        the query is recorded as a miss unless the warmer already recorded it.
        """
        m = contract.normalize_module(module)

        def wrap(f: F) -> F:
            @functools.wraps(f)
            def call(ticker: str, *args: Any, **kwargs: Any) -> Any:
                t = contract.normalize_ticker(ticker)
                found, value, recorded = self._read_through(m, t)
                if found:
                    return decode(value) if decode is not None else value
                started = time.perf_counter()
                result = f(ticker, *args, **kwargs)
                if not recorded:
                    ms = min((time.perf_counter() - started) * 1000.0, contract.MAX_LATENCY_MS)
                    self.record_query(t, m, False, latency_ms=ms)
                return result

            return call  # type: ignore[return-value]

        return wrap

    def _read_through(self, module: str, ticker: str) -> "tuple[bool, Any, bool]":
        """``(found, body, recorded)``: whether the warmer answered a body, the body, and
        whether the warmer published the query event itself."""
        if time.monotonic() < self._warmer_skip_until:
            return False, None, False
        path = f"/v1/cache/{module}/{urllib.parse.quote(ticker, safe='')}"
        try:
            ans = self._warmer.request("GET", path, None, self._read_headers)
        except Unreachable as e:
            self._warmer_skip_until = time.monotonic() + self._warmer_retry
            self._warn_once("unreachable", "smart_prefetch: warmer unreachable (%s); calling the "
                            "fetch function directly", e)
            return False, None, False
        if ans.status == 200:
            try:
                return True, json.loads(ans.body), True
            except ValueError:
                return False, None, True
        # 404 (the upstream has no such key) and 502/503 (the upstream failed or asked for a
        # pause) are published by the warmer as misses; a refusal (401, 400) is not.
        recorded = ans.status in (404, 502, 503)
        if not recorded:
            self._warn_once(f"status{ans.status}", "smart_prefetch: warmer answered %d to %s: %s",
                            ans.status, path, ans.body[:300].decode("utf-8", "replace"))
        return False, None, recorded

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)
