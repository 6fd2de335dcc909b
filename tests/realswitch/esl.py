"""A tiny event-socket client for assertions: `auth`, then `api` commands with Content-Length framing.

Deliberately independent of engine.esl: the probe must judge the engine, not share its bugs.
"""
from __future__ import annotations

import json
import socket
import time


class EslError(Exception):
    pass


class EslProbe:
    def __init__(self, host: str, port: int, password: str, timeout: float = 10.0):
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    # --- framing ----------------------------------------------------------------------------
    def _read_until(self, marker: bytes) -> bytes:
        assert self.sock is not None
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EslError("event socket closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exact(self, size: int) -> bytes:
        assert self.sock is not None
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EslError("event socket closed")
            self.buffer += chunk
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def read_message(self) -> tuple[dict[str, str], bytes]:
        head = self._read_until(b"\n\n").decode()
        headers = {}
        for line in head.splitlines():
            name, _, value = line.partition(": ")
            headers[name] = value
        body = self._read_exact(int(headers["Content-Length"])) if "Content-Length" in headers else b""
        return headers, body

    def _reply(self, wanted: str) -> tuple[dict[str, str], bytes]:
        while True:  # skip anything else (a disconnect notice is an error)
            headers, body = self.read_message()
            kind = headers.get("Content-Type", "")
            if kind == wanted:
                return headers, body
            if kind == "text/disconnect-notice":
                raise EslError("event socket disconnected: " + body.decode(errors="replace"))

    # --- commands ---------------------------------------------------------------------------
    def connect(self) -> EslProbe:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._reply("auth/request")
        self.sock.sendall(f"auth {self.password}\n\n".encode())
        headers, _ = self._reply("command/reply")
        if not headers.get("Reply-Text", "").startswith("+OK"):
            self.close()
            raise EslError(f"event socket auth refused: {headers.get('Reply-Text')}")
        return self

    def api(self, command: str, timeout: float | None = None) -> str:
        if "\n" in command:
            raise ValueError("an ESL command is one line")
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.settimeout(timeout or self.timeout)
        self.sock.sendall(f"api {command}\n\n".encode())
        _, body = self._reply("api/response")
        return body.decode(errors="replace")

    def api_many(self, commands: list[str], timeout: float | None = None) -> list[str]:
        """Pipelined: every command sent at once, then the replies in order (FreeSWITCH keeps them in order)."""
        if any("\n" in command for command in commands):
            raise ValueError("an ESL command is one line")
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.settimeout(timeout or self.timeout)
        self.sock.sendall("".join(f"api {command}\n\n" for command in commands).encode())
        return [self._reply("api/response")[1].decode(errors="replace") for _ in commands]

    def json(self, command: str) -> dict:
        """`show ... as json`: {"row_count": n, "rows": [...]}; FreeSWITCH leaves out `rows` when empty."""
        reply = self.api(command).strip()
        data = json.loads(reply) if reply.startswith("{") else {}
        data.setdefault("rows", [])
        return data

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buffer = b""

    def __enter__(self) -> EslProbe:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for_esl(host: str, port: int, password: str, timeout: float, alive=lambda: True) -> float:
    """Seconds until the event socket accepts our password; raises TimeoutError or EslError."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        if not alive():
            raise EslError(f"FreeSWITCH exited before its event socket answered ({last})")
        try:
            with EslProbe(host, port, password, timeout=2) as probe:
                # mod_event_socket answers as soon as it is loaded; wait for the modules after it too
                if "UP" in probe.api("status"):
                    return time.monotonic() - start
        except (OSError, EslError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"event socket on {host}:{port} did not answer in {timeout:.0f} s ({last})")


def parse_table(text: str) -> list[dict[str, str]]:
    """mod_callcenter's `|`-separated lists (`callcenter_config agent list` ...), without the +OK line."""
    lines = [line for line in text.strip().splitlines() if line and line != "+OK"]
    if not lines:
        return []
    names = lines[0].split("|")
    return [dict(zip(names, line.split("|"), strict=False)) for line in lines[1:]]
