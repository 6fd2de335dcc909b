"""Boxes: the `switchdesk serve` processes that share one database, and fetching a file from another one.

DESIGN.md: recordings and media are files on the box that made them; their rows carry that box's name
(`host`). A download asked of another box is proxied: that box fetches the bytes from the holder over
HTTP and streams them on. This room owns

* this box's identity: its name (`serve --hostname`, default the machine's host name) and the URL the
  other boxes reach its API at (`serve --advertise-url`; derived from `--listen` unless that is
  loopback, else none: then nothing can be fetched from this box);
* the registry (table `box`): each box writes its row at start and refreshes `heartbeat_at` every
  HEARTBEAT_EVERY s from a greenlet of its own (never on the call path); a row older than STALE_AFTER
  counts as down;
* box-to-box authentication: an HMAC-SHA256 over (method, path, expiry) with a key derived from the
  installation's secret key (engine.directory.security: the key that encrypts webhook secrets, which
  every box of one database must share already), a short expiry, compared in constant time;
* `fetch`: the holder's answer as status, headers and a streamed body (never read whole), or a
  ServiceError 502/503 that says why not.

May use: `engine.store`, `engine.directory.security` (the derived key).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient

from engine.directory import security
from engine.errors import ServiceError
from engine.store.db import connection, db
from engine.store.models import Box, now

log = logging.getLogger("switchdesk.boxes")

HEARTBEAT_EVERY = 30.0  # seconds between two refreshes of this box's row
STALE_AFTER = 90  # seconds without a heartbeat after which a box counts as down
SIGNATURE_TTL = 30  # seconds a box-to-box signature is valid
MAX_AHEAD = 90  # a signature expiring later than this is refused (clocks may differ by SIGNATURE_TTL at most)
CONNECT_TIMEOUT = 5.0
HEADERS_TIMEOUT = 15.0  # the holder's status line and headers
READ_TIMEOUT = 30.0  # each read of the body
CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024  # an error answer of the holder is relayed whole up to this size
EXPIRES_HEADER = "X-Switchdesk-Expires"
SIGNATURE_HEADER = "X-Switchdesk-Signature"
BOX_HEADER = "X-Switchdesk-Box"
_PURPOSE = "box-to-box v1"
RELAYED = (200, 206, 404, 416)  # the holder's answers passed on as they are


@dataclass
class _Settings:
    name: str = field(default_factory=lambda: socket.gethostname()[:253])
    url: str | None = None


settings = _Settings()


def name() -> str:
    """This box's name: the `host` of the recordings and media it holds."""
    return settings.name


def advertised_url() -> str | None:
    return settings.url


def configure(box_name: str | None = None, url: str | None = None) -> None:
    """This box's name (None: the machine's host name) and its advertised URL (None: not advertised)."""
    settings.name = check_name(box_name) if box_name else socket.gethostname()[:253]
    settings.url = check_url(url) if url else None


def check_name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 253 or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"a box name is 1 to 253 printable characters without spaces, not {value!r}")
    return value


def check_url(value: str) -> str:
    """The advertised URL, normalized: http(s)://host[:port][/prefix], without a trailing slash."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"the advertised URL may not carry a query, a fragment or credentials: {value!r}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def default_url(listen_host: str, port: int) -> str | None:
    """The URL derived from `--listen`: None when it is loopback (the other boxes cannot reach it)."""
    host = listen_host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # every address: the name others resolve this machine by
        host = socket.getfqdn()
        if not host or host.startswith("localhost"):
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return None
        return f"http://{host}:{port}"
    if address.is_loopback or address.is_unspecified:
        return None
    return f"http://[{host}]:{port}" if address.version == 6 else f"http://{host}:{port}"


# -- the registry ---------------------------------------------------------------------------------------


def key_check() -> str:
    """A fingerprint of the secret key (an HMAC of a constant: it reveals nothing of the key), "" without
    one: boxes whose fingerprints differ cannot authenticate each other, nor read each other's webhook
    secrets."""
    key = security.derived_key("key check")
    return hmac.new(key, b"switchdesk", "sha256").hexdigest()[:32] if key else ""


def register(box_name: str | None = None, url: str | None = None) -> None:
    """Write this box's row (at start): its URL, started_at, a fresh heartbeat and its key's fingerprint.
    Without `box_name`, this process's configured name and URL. Warns about another live process under
    the same name, and about live boxes whose secret key differs from this one's."""
    if box_name is None:
        box_name, url = settings.name, settings.url
    stamp, check = now(), key_check()
    with connection():
        previous = Box.get_or_none(Box.hostname == box_name)
        if previous is not None and previous.url != url and stamp - previous.heartbeat_at < STALE_AFTER:
            log.warning("box %s: another process registered under this name %d s ago (at %s); two boxes with one "
                        "name cannot tell their files apart: give each its own --hostname",
                        box_name, stamp - previous.heartbeat_at, previous.url or "no URL")
        for other in Box.select().where((Box.hostname != box_name) & (Box.heartbeat_at >= stamp - STALE_AFTER)
                                        & (Box.key_check != check)):
            log.warning("box %s has another secret key than this box (%s): downloads between them are refused "
                        "and webhook secrets set on one do not decrypt on the other; give every box of the "
                        "database the same %s", other.hostname, box_name, security.SECRET_KEY_ENV)
        Box.insert(hostname=box_name, url=url, started_at=stamp, heartbeat_at=stamp, key_check=check).on_conflict(
            conflict_target=[Box.hostname],
            update={Box.url: url, Box.started_at: stamp, Box.heartbeat_at: stamp, Box.key_check: check}).execute()
    log.info("box %s registered (%s)", box_name, url or "no advertised URL: other boxes cannot fetch its files")


def beat(box_name: str | None = None, url: str | None = None) -> None:
    """Refresh this box's heartbeat (its row is written again if someone deleted it)."""
    with connection():
        if Box.update(heartbeat_at=now()).where(Box.hostname == (box_name or settings.name)).execute() == 0:
            register(box_name, url)


class Heartbeat:
    """The greenlet that keeps this box's row fresh."""

    def __init__(self, every: float = HEARTBEAT_EVERY, box_name: str | None = None, url: str | None = None) -> None:
        self.every = every
        self.box_name, self.url = box_name, url
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> Heartbeat:
        register(self.box_name, self.url)
        self._greenlet = gevent.spawn(self._run)
        return self

    def _run(self) -> None:
        while True:
            gevent.sleep(self.every)
            try:
                beat(self.box_name, self.url)
            except Exception as exc:  # the database is away: the next beat tries again
                log.warning("box heartbeat failed: %s", exc)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None


def holder(box_name: str, what: str) -> Box:
    """The registered box `box_name`, fresh and advertised; 503 naming what is wrong otherwise."""
    row = Box.get_or_none(Box.hostname == box_name)
    if row is None:
        raise ServiceError(503, f"{what} is on box {box_name}, which is not registered: no switchdesk serve runs "
                                "there on this database", {"host": box_name})
    if not row.url:
        raise ServiceError(503, f"{what} is on box {box_name}, which advertises no URL (serve --advertise-url): "
                                "it cannot be fetched from here", {"host": box_name})
    age = now() - row.heartbeat_at
    if age > STALE_AFTER:
        raise ServiceError(503, f"{what} is on box {box_name}, which has not reported for {age} s: it is down or "
                                "cannot reach the database", {"host": box_name})
    return row


# -- signatures -----------------------------------------------------------------------------------------


def _mac(key: bytes, method: str, path: str, expires: str) -> str:
    return hmac.new(key, f"{method.upper()}\n{path}\n{expires}".encode(), "sha256").hexdigest()


def sign(method: str, path: str, *, ttl: int = SIGNATURE_TTL, at: float | None = None) -> dict[str, str]:
    """The headers that authenticate a request of this box to another; 503 without a secret key."""
    key = security.derived_key(_PURPOSE)
    if key is None:
        raise ServiceError(503, "this box has no secret key to sign a request to another box with "
                                f"({security.SECRET_KEY_ENV} or {security.SECRET_KEY_FILE_ENV})")
    expires = str(int(at if at is not None else time.time()) + ttl)
    return {EXPIRES_HEADER: expires, SIGNATURE_HEADER: _mac(key, method, path, expires), BOX_HEADER: settings.name}


def verify(method: str, path: str, expires: str | None, signature: str | None) -> str | None:
    """Why the signature of a request from another box is refused, or None when it is good."""
    key = security.derived_key(_PURPOSE)
    if key is None:
        return "this box has no secret key"
    if not expires or not signature:
        return "missing"
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12 or len(signature) > 128:
        return "malformed"
    good = hmac.compare_digest(_mac(key, method, path, expires).encode(), signature.encode("utf-8", "replace"))
    stamp = int(time.time())
    if not good:
        return "does not match"
    if int(expires) < stamp:
        return "expired"
    if int(expires) > stamp + MAX_AHEAD:
        return "expires too far ahead"
    return None


# -- fetching from another box --------------------------------------------------------------------------


@dataclass
class Upstream:
    """The holder's answer: its status, the headers worth relaying, and its body as chunks."""

    status: int
    headers: dict[str, str]
    body: Iterator[bytes]


def fetch(box_name: str, path: str, what: str, range_header: str | None = None) -> Upstream:
    """GET `path` (an internal endpoint) from box `box_name`, signed; the answer streamed, never read whole.

    Answers the holder gives about the file (200, 206, 404, 416) are relayed; anything else, or no
    answer, is a ServiceError: 503 when the holder is unknown, not advertised, stale or unreachable, 502
    when it answers wrongly (a refused signature: the boxes' secret keys differ).
    """
    row = holder(box_name, what)
    headers = sign("GET", path)
    if row.key_check and row.key_check != key_check():
        raise ServiceError(502, f"{what} is on box {box_name}, whose secret key differs from this box's: every box "
                                f"of one database needs the same {security.SECRET_KEY_ENV}", {"host": box_name})
    base = urlsplit(row.url)
    headers.update({"Connection": "close", "User-Agent": "switchdesk-box"})
    if range_header:
        headers["Range"] = range_header[:200]
    if not db.is_closed() and not db.in_transaction():
        db.close()  # no pooled connection held while waiting on another box
    client = HTTPClient(base.hostname, port=base.port, ssl=base.scheme == "https", concurrency=1,
                        connection_timeout=CONNECT_TIMEOUT, network_timeout=READ_TIMEOUT)
    timer = gevent.Timeout(HEADERS_TIMEOUT)
    timer.start()
    try:
        response = client.request("GET", base.path + path, headers=headers)
    except gevent.Timeout as exc:
        client.close()
        if exc is not timer:
            raise
        raise ServiceError(503, f"{what} is on box {box_name}, which did not answer within {HEADERS_TIMEOUT:g} s",
                           {"host": box_name}) from None
    except OSError as exc:
        client.close()
        raise ServiceError(503, f"{what} is on box {box_name}, which cannot be reached at {row.url}: "
                                f"{exc.strerror or type(exc).__name__}", {"host": box_name}) from None
    except Exception as exc:  # a broken answer (not HTTP)
        client.close()
        raise ServiceError(502, f"{what} is on box {box_name}, whose answer is broken: {type(exc).__name__}",
                           {"host": box_name}) from None
    finally:
        timer.close()
    status = response.status_code
    if status not in RELAYED:
        _discard(response, client)
        if status in (401, 403):
            raise ServiceError(502, f"box {box_name} refused this box's signature: every box of one database needs "
                                    f"the same secret key ({security.SECRET_KEY_ENV}) and clocks within "
                                    f"{SIGNATURE_TTL} s of each other", {"host": box_name})
        raise ServiceError(502, f"{what} is on box {box_name}, which answered HTTP {status}", {"host": box_name})
    relayed = {k: v for k in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges")
               if (v := _header(response, k)) is not None}
    if status in (200, 206) and not (relayed.get("Content-Length") or "").isdigit():
        _discard(response, client)
        raise ServiceError(502, f"box {box_name} answered without a Content-Length", {"host": box_name})
    if status in (404, 416):  # a small JSON envelope: read whole (bounded) and relay
        body = _small(response)
        client.close()
        relayed["Content-Length"] = str(len(body))
        return Upstream(status, relayed, iter([body]))
    return Upstream(status, relayed, _stream(response, client, int(relayed["Content-Length"]), box_name))


def _header(response: Any, name: str) -> str | None:
    value = response.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value


def _small(response: Any) -> bytes:
    try:
        return response.read(SMALL_BODY)
    except Exception:
        return b'{"success":false,"msg":"Not found"}'
    finally:
        response.release()


def _discard(response: Any, client: HTTPClient) -> None:
    try:
        response.release()
    finally:
        client.close()


def _stream(response: Any, client: HTTPClient, length: int, box_name: str) -> Iterator[bytes]:
    """The body, CHUNK at a time, exactly `length` bytes; a holder that stops short breaks the download
    (the client sees it cut, not complete)."""
    left = length
    try:
        while left > 0:
            chunk = response.read(min(CHUNK, left))
            if not chunk:
                raise ConnectionError(f"box {box_name} ended its answer {left} bytes short")
            left -= len(chunk)
            yield chunk
    finally:
        response.release()
        client.close()
