"""A webhook receiver on loopback: collects what switchdesk POSTs to an account's Event Push URL.

`switchdesk serve` must run with `--webhook-allow-private` to send to it (conftest.py does so).
Nothing here imports switchdesk.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.realswitch.freeswitch import HOST


class WebhookReceiver:
    """Answers 204 to every POST and keeps `(headers, parsed body, raw body)`; `events()` gives the parsed
    bodies in order."""

    def __init__(self):
        self.received: list[tuple[dict[str, str], dict[str, Any], bytes]] = []
        self.arrived: list[float] = []  # time.time() of each request's arrival, index for index with `received`
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the sender uses

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time()
                with receiver._lock:
                    receiver.received.append((dict(self.headers), json.loads(body), body))
                    receiver.arrived.append(arrived)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def events(self, prefix: str = "") -> list[dict[str, Any]]:
        """Bodies received (`{"id", "event", "ts", "account_id", "data"}`), duplicates (same id) dropped."""
        with self._lock:
            seen, out = set(), []
            for _, body, _raw in self.received:
                if body["id"] not in seen and body["event"].startswith(prefix):
                    seen.add(body["id"])
                    out.append(body)
            return out

    def wait(self, check, what: str, timeout: float = 15, prefix: str = "") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(prefix)
            if check(events):
                return events
            if time.monotonic() > deadline:
                summary = [(e["event"], e["data"].get("id") or e["data"].get("user_id")) for e in events]
                raise AssertionError(f"webhook: {what} not received in {timeout:.0f} s; got {summary}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
