"""A small HTTP/1.1 client over ``http.client`` with one keep-alive connection per thread and
base URL, so the read-through and the sender do not pay a TCP handshake per request."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple


class Unreachable(Exception):
    """The service could not be reached, or the connection broke before an answer."""


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """A header's value (name case-insensitive)."""
        return self.headers.get(name.lower())


def _split(base: str) -> Tuple[str, str, int, str]:
    u = urllib.parse.urlsplit(base)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{base!r} is not an http:// or https:// URL")
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, u.hostname, port, u.path.rstrip("/")


class Http:
    """Requests to one base URL (``http://host:port[/prefix]``) with a timeout."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base
        self.scheme, self.host, self.port, self.prefix = _split(base)
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = (
                http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            )
            c = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def close(self) -> None:
        """Closes this thread's connection."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Answer:
        """Sends one request; raises :class:`Unreachable` when no answer came.

        A kept-alive connection the server closed meanwhile fails before anything was answered,
        so that one case is retried once on a new connection.
        """
        for attempt in (0, 1):
            fresh = getattr(self._local, "conn", None) is None
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=body, headers=dict(headers or {}))
                resp = conn.getresponse()
                data = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return Answer(resp.status, hdrs, data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if fresh or attempt == 1:
                    raise Unreachable(f"{self.base}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise Unreachable(f"{self.base}: {e}") from e
        raise AssertionError("unreachable")

    def forget(self) -> None:
        """Drops every thread's connection without closing it (after a fork, the parent owns
        the sockets)."""
        self._local = threading.local()
