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
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient

from engine.directory import security
from engine.directory.accounts import address_is_private
from engine.events.outbox import DELIVERED, FAILED
from engine.store.models import OutboxEvent

SEND_TIMEOUT = 5.0          # seconds for connect + request + answer (issue 7)
HOST_CONNECTIONS = 32       # keep-alive connections per receiving host
MAX_RESPONSE_READ = 65536   # a longer answer is not read: its connection is closed instead
USER_AGENT = "switchdesk-webhooks/1"
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
    """POSTs over keep-alive connections, one client per receiving origin.

    The address check runs where the client resolves the name for a new
    connection, so what is checked is exactly what is connected to, on every
    connection (names can change, DESIGN.md, Webhooks).
    """

    def __init__(self, *, allow_private: bool = False, timeout: float = SEND_TIMEOUT,
                 connections: int = HOST_CONNECTIONS, max_clients: int = 256):
        self.allow_private = allow_private
        self.timeout = timeout
        self.connections = connections
        self.max_clients = max_clients
        self._clients: collections.OrderedDict[tuple[str, str, int], HTTPClient] = collections.OrderedDict()

    def _client(self, scheme: str, host: str, port: int) -> HTTPClient:
        key = (scheme, host, port)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = HTTPClient(host, port=port, ssl=scheme == "https", concurrency=self.connections,
                            connection_timeout=self.timeout, network_timeout=self.timeout,
                            headers={"User-Agent": USER_AGENT})
        if not self.allow_private:
            self._guard(client, host)
        self._clients[key] = client
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)[1].close()
        return client

    @staticmethod
    def _guard(client: HTTPClient, host: str) -> None:
        # geventhttpclient resolves in ConnectionPool._resolve for every new connection (pinned: >=2.3,<3).
        pool = client._connection_pool
        resolve = pool._resolve

        def checked_resolve():
            infos = resolve()
            for info in infos:
                address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                if address_is_private(address):
                    raise TargetRefused(
                        f"refused: {host} resolves to {address}, a loopback, link-local or private address "
                        "(allowed only with --webhook-allow-private)")
            return infos

        pool._resolve = checked_resolve

    def _drop(self, key: tuple[str, str, int]) -> None:
        client = self._clients.pop(key, None)
        if client is not None:
            client.close()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The receiver's HTTP status; raises TargetRefused, OSError, ValueError or gevent.Timeout."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        client = self._client(*key)
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            response = client.request("POST", uri, body=body, headers=headers)
            try:
                response.read(MAX_RESPONSE_READ)
            finally:
                response.release()
            return response.status_code
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            # The client may be stuck mid-request on one of its sockets: start that origin afresh (once: other
            # requests in flight on it finish on their own sockets, which close when given back).
            if self._clients.get(key) is client:
                self._drop(key)
            raise TimeoutError(f"no answer within {self.timeout:g} s") from None
        finally:
            timer.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


    def deliver(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """One POST, its answer or its error as an `Outcome`."""
        try:
            status = self.post(url, body, headers)
        except TargetRefused as exc:
            return Outcome(FAILED, str(exc))
        except ValueError as exc:
            return Outcome(FAILED, str(exc))
        except TimeoutError as exc:
            return Outcome("retry", str(exc) or f"timed out after {self.timeout:g} s")
        except OSError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc.strerror or exc}")
        except Exception as exc:  # a malformed answer is the receiver's failure, retried
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        return classify(status)
