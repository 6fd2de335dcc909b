"""The webhook POST on the wire: keep-alive connections per receiving origin, one request, its status.

Every event the outbox sends is one POST (the vendor's contract), about six per call, so what one POST
costs is paid six times per call (issue 19). geventhttpclient's `HTTPClient.request` spent ~100 µs of CPU
per POST on the loop, half of it in general machinery a webhook never uses (a header multidict for the
request and the answer, 100-continue and proxy handling, a `select()` per reuse, a gevent timer per socket
wait); the same POST written here costs ~66 µs, and ~42 µs are the system calls alone (`bench/webhooks.py`:
`post_cpu_us`, `post_cpu_us_geventhttpclient`, `post_cpu_us_raw`). What stays
geventhttpclient's is what is easy to get wrong: its connection pools (name resolution, connect, TLS with
its CA bundle and host name check, at most `connections` sockets per origin) and its llhttp parser for the
answer (status, chunked and read-until-close bodies, interim 1xx answers, keep-alive rules).

A POST is never retried here (RFC 9110, 9.2.2; geventhttpclient does not either): a failed attempt is the
outbox's to retry, with the same event id. Time is bounded by the caller (`Sender.post`'s deadline over
connect, request and answer), so sockets carry no timeout of their own.
"""
from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from geventhttpclient._parser import HTTPResponseParser
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool

USER_AGENT = "switchdesk-webhooks/1"
MAX_ANSWER_BODY = 65536  # bytes of an answer's body read at most; a longer one is cut off with its connection
MAX_ANSWER_HEAD = 65536  # bytes of status lines and headers (interim answers included): more is no answer
_READ = 65536
# What a request target may hold as it is (RFC 3986's unreserved, sub-delims, ':', '@', '/', '?' and the '%'
# of an escape already there); anything else (a space, a quote, non-ASCII) is percent-encoded.
_TARGET_SAFE = "/?:@!$&'()*+,;=-._~%"

class AnswerError(Exception):
    """The receiver closed the connection before a complete answer, or sent something that is not HTTP."""


@functools.lru_cache(maxsize=1024)
def route(url: str) -> tuple[tuple[str, str, int], bytes]:
    """`(scheme, host, port)` of `url` and the start of its request head, up to the per-request headers.

    Raises ValueError for anything that is not an absolute http(s) URL with a host. Cached: an account's
    URL is parsed once, not once per event.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    scheme, host = parts.scheme, parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_TARGET_SAFE)
    name = host.encode("idna").decode("ascii") if not host.isascii() else host
    authority = f"[{name}]" if ":" in name else name
    if port != (443 if scheme == "https" else 80):
        authority += f":{port}"
    head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n".encode("ascii")
    return (scheme, host, port), head


class _Answer(HTTPResponseParser):
    """The parts of an answer a webhook needs: its status, whether it ended and whether the connection stays.

    Headers are parsed by llhttp and dropped (nothing in them changes what a delivery means); the body is
    counted, not kept.
    """

    def __init__(self) -> None:
        super().__init__()
        self.complete = False
        self.body_bytes = 0

    # llhttp calls all of these; only the message boundaries and the body's length matter here
    def _on_message_begin(self) -> None:
        self.complete = False  # an interim 1xx answer is followed by the final one on the same connection

    def _on_status(self, status: str) -> None:
        pass

    def _on_header_field(self, name: str) -> None:
        pass

    def _on_header_value(self, value: str) -> None:
        pass

    def _on_headers_complete(self) -> bool:
        return False  # a POST's answer may have a body

    def _on_body(self, chunk: bytearray) -> None:
        self.body_bytes += len(chunk)

    def _on_message_complete(self) -> None:
        self.complete = True


class _Origin:
    """What switchdesk changes in geventhttpclient's pools: the address check and the liveness check.

    `resolve_check(infos)` runs on the addresses every new connection resolves to, before connecting: what
    is checked is exactly what is connected to (a name may change between connections).

    A pooled connection is reused only while it is quiet: no bytes and no close from the receiver. One
    non-blocking `recv(MSG_PEEK)` on the socket instead of the library's `select()` (which in gevent builds
    a watcher per call). On a TLS connection it peeks at the raw TLS records: anything there (an alert, a
    close) makes it unusable too, as with the library's check.
    """

    resolve_check: Callable[[list[Any]], None] | None = None

    def _resolve(self) -> list[Any]:
        infos = super()._resolve()  # type: ignore[misc]
        if self.resolve_check is not None:
            self.resolve_check(infos)
        return infos

    def _is_socket_alive(self, sock: Any) -> bool:
        try:
            raw = sock._sock
        except AttributeError:
            return False
        try:
            raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: quiet
        except (OSError, ValueError):
            return False
        return False  # bytes nobody asked for, or the receiver's close


class _Pool(_Origin, ConnectionPool):
    pass


class _TLSPool(_Origin, SSLConnectionPool):
    pass


def make_pool(scheme: str, host: str, port: int, *, connections: int, connect_timeout: float,
              resolve_check: Callable[[list[Any]], None] | None = None,
              ssl_context_factory: Callable[..., Any] | None = None) -> ConnectionPool:
    """A pool of at most `connections` keep-alive connections to one origin (`_Origin` for the checks)."""
    kw: dict[str, Any] = {"size": connections, "connection_timeout": connect_timeout, "network_timeout": None}
    pool: _Pool | _TLSPool
    if scheme == "https":
        pool = _TLSPool(host, port, host, port, ssl_context_factory=ssl_context_factory, **kw)
    else:
        pool = _Pool(host, port, host, port, **kw)
    pool.resolve_check = resolve_check
    return pool


def post(pool: ConnectionPool, head: bytes, headers: dict[str, str], body: bytes) -> int:
    """Send one POST on a connection of `pool` and return the answer's status.

    `head` is `route(url)[1]`. The connection goes back to the pool only after a complete answer that
    allows keep-alive, with a body of at most MAX_ANSWER_BODY bytes; otherwise, and on any error or
    interruption (the caller's deadline), it is closed. Raises OSError, AnswerError or HTTPParseError.
    """
    request = b"".join((head, b"Content-Length: %d\r\n" % len(body),
                        "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1"),
                        b"\r\n", body))
    sock = pool.get_socket()
    keep = False
    try:
        sock.sendall(request)
        answer = _Answer()
        received = 0
        while not answer.complete or answer.get_code() < 200:
            data = sock.recv(_READ)
            received += len(data)
            answer.feed(data)  # b"": the end of a read-until-close body, or an HTTPParseError mid-answer
            if not data:
                if not answer.complete or answer.get_code() < 200:
                    raise AnswerError("the receiver closed the connection before answering")
                break
            if answer.body_bytes > MAX_ANSWER_BODY:
                return answer.get_code()  # not read to the end: the connection is closed below
            if received - answer.body_bytes > MAX_ANSWER_HEAD:  # endless headers or 1xx answers: the loop's time
                raise AnswerError(f"the answer's head is longer than {MAX_ANSWER_HEAD} bytes")
        keep = bool(data) and answer.should_keep_alive() and not answer.parser_failed()
        return answer.get_code()
    finally:
        if keep:
            pool.return_socket(sock)
        else:
            pool.release_socket(sock)
