"""One webhook request: the wire body, its signature, the receiver's address check, and what the answer means.

What goes over the wire (body, headers, HMAC signature), which addresses may
be connected to, and how an HTTP answer or a network error maps to
delivered / failed / retry change with the receivers' contract, apart from
the scheduling of deliveries (`engine.events.delivery`).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import ipaddress
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from geventhttpclient.connectionpool import ConnectionPool

from engine.directory import security
from engine.directory.accounts import address_is_private
from engine.events import transport
from engine.events.outbox import DELIVERED, FAILED
from engine.store.models import OutboxEvent

SEND_TIMEOUT = 5.0          # seconds for connect + request + answer (issue 7)
HOST_CONNECTIONS = 32       # keep-alive connections per receiving host
MAX_PER_REQUEST = 500       # events in one batched request at most (the account's `event_push_batch`: 1..500)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Switchdesk-Signature` value: the timestamp is signed so a captured request cannot be replayed later."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def wire_body(event: OutboxEvent) -> bytes:
    """The POST body; built from stored fields only, so every attempt sends the same bytes.

    `account_seq` is the account's gap-free number of the event (given before its first attempt): with
    several requests in flight the receiver restores the account's order by it.
    """
    return json.dumps(
        {"id": event.id, "event": event.event, "ts": event.ts, "account_id": event.account_id,
         "account_seq": event.account_seq, "data": event.data},
        separators=(",", ":"), ensure_ascii=False,
    ).encode()


def batch_body(account_id: int, events: list[OutboxEvent]) -> bytes:
    """The POST body of a batched request (the account's `event_push_batch` above 1).

    `{"account_id": .., "events": [...]}`, each element exactly the body a one-event request carries
    (`wire_body`), in `account_seq` order. A batch's makeup may differ between attempts (a retried batch
    takes along events that became ready meanwhile), so receivers drop duplicates by each event's `id`.
    """
    return b'{"account_id":%d,"events":[%s]}' % (account_id, b",".join(wire_body(event) for event in events))


def batch_headers(events: list[OutboxEvent], body: bytes, secret: str | None) -> dict[str, str]:
    """The headers of a batched request: the signature over the whole body, how many events it carries and
    the first and last `account_seq` in it (not consecutive: other events of the account may be in other
    requests in flight)."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Switchdesk-Timestamp": timestamp,
               "X-Switchdesk-Event-Count": str(len(events)),
               "X-Switchdesk-Account-Seq-First": str(events[0].account_seq),
               "X-Switchdesk-Account-Seq-Last": str(events[-1].account_seq)}
    if secret:
        headers["X-Switchdesk-Signature"] = signature(secret, timestamp, body)
    return headers


def signed_headers(event_id: str, body: bytes, secret: str | None, account_seq: int | None = None) -> dict[str, str]:
    """The request headers of one attempt, signed with `secret` when the account has one."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Switchdesk-Event-Id": event_id,
               "X-Switchdesk-Timestamp": timestamp}
    if account_seq is not None:
        headers["X-Switchdesk-Account-Seq"] = str(account_seq)
    if secret:
        headers["X-Switchdesk-Signature"] = signature(secret, timestamp, body)
    return headers


class TargetRefused(Exception):
    """The receiver's address is loopback, link-local or private and that is not allowed."""


def _guard(host: str, infos: list[Any]) -> None:
    """Refuse a new connection to `host` when any address it resolved to is loopback, link-local or private."""
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address_is_private(address):
            raise TargetRefused(
                f"refused: {host} resolves to {address}, a loopback, link-local or private address "
                "(allowed only with --webhook-allow-private)")


@dataclass
class Outcome:
    """What one attempt came to: `delivered`, `failed` (give up now) or `retry`."""

    kind: str
    error: str | None = None


def classify(status: int) -> Outcome:
    """2xx delivered; a 4xx other than 408/429 is the receiver refusing the event for good; anything else retries."""
    if 200 <= status < 300:
        return Outcome(DELIVERED)
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome(FAILED, f"HTTP {status}")
    return Outcome("retry", f"HTTP {status}")



@dataclass
class Target:
    """Where an account's events go, the secret they are signed with and how many go in one request.

    `per_request` is the account's `event_push_batch`: 1 sends the vendor's one-event body, above 1 the
    batched body (`batch_body`), even when only one event is ready.
    """

    url: str | None
    secret: str | None
    secret_problem: str | None = None
    per_request: int = 1


@functools.lru_cache(maxsize=1024)
def _decrypt(secret_enc: str) -> str:
    """Decrypting costs more than reading the row: done once per stored secret (a new secret is a new key)."""
    return security.decrypt_secret(secret_enc)


def read_target(url: str | None, secret_enc: str | None, per_request: int | None = 1) -> Target:
    """The account's URL, secret and events per request as stored when the batch was read: a change applies
    from the next batch."""
    per_request = min(MAX_PER_REQUEST, max(1, int(per_request or 1)))  # the API's bounds, whatever was stored
    if not secret_enc:
        return Target(url or None, None, per_request=per_request)
    try:
        return Target(url or None, _decrypt(secret_enc), per_request=per_request)
    except Exception as exc:  # a missing or changed SWITCHDESK_SECRET_KEY; never send unsigned
        return Target(url or None, None, f"cannot decrypt the webhook secret ({type(exc).__name__}); "
                                         f"check {security.SECRET_KEY_ENV}", per_request)


# --- HTTP ----------------------------------------------------------------------------------------


class Sender:
    """POSTs over keep-alive connections, one pool per receiving origin (`engine.events.transport`).

    The address check runs where the pool resolves the name for a new
    connection, so what is checked is exactly what is connected to, on every
    connection (names can change, DESIGN.md, Webhooks).
    """

    def __init__(self, *, allow_private: bool = False, timeout: float = SEND_TIMEOUT,
                 connections: int = HOST_CONNECTIONS, max_clients: int = 256,
                 ssl_context_factory: Callable[..., Any] | None = None):
        self.allow_private = allow_private
        self.timeout = timeout
        self.connections = connections
        self.max_clients = max_clients
        self.ssl_context_factory = ssl_context_factory  # tests: a context that trusts their own CA
        self._pools: collections.OrderedDict[tuple[str, str, int], ConnectionPool] = collections.OrderedDict()

    def _pool(self, key: tuple[str, str, int]) -> ConnectionPool:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        scheme, host, port = key
        pool = transport.make_pool(scheme, host, port, connections=self.connections, connect_timeout=self.timeout,
                                   resolve_check=None if self.allow_private else functools.partial(_guard, host),
                                   ssl_context_factory=self.ssl_context_factory)
        self._pools[key] = pool
        while len(self._pools) > self.max_clients:
            self._pools.popitem(last=False)[1].close()
        return pool

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The receiver's HTTP status; raises TargetRefused, OSError, ValueError, TimeoutError or an answer's
        parse error."""
        key, head = transport.route(url)
        pool = self._pool(key)
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            return transport.post(pool, head, headers, body)  # interrupted, it closes the socket it used
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise TimeoutError(f"no answer within {self.timeout:g} s") from None
        finally:
            timer.close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def deliver(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """One POST, its answer or its error as an `Outcome`."""
        try:
            status = self.post(url, body, headers)
        except TargetRefused as exc:
            return Outcome(FAILED, str(exc))
        except ssl.SSLError as exc:  # a ValueError too; a certificate gets renewed: retried, not failed for good
            return Outcome("retry", f"TLS: {exc}")
        except ValueError as exc:
            return Outcome(FAILED, str(exc))
        except TimeoutError as exc:
            return Outcome("retry", str(exc) or f"timed out after {self.timeout:g} s")
        except OSError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc.strerror or exc}")
        except Exception as exc:  # a malformed answer is the receiver's failure, retried
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        return classify(status)
