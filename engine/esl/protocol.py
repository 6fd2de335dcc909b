"""The FreeSWITCH event-socket wire format, as a pure parser over bytes.

No I/O here: the reader greenlet feeds whatever ``recv()`` returned and gets
complete frames back.  Keeping it pure lets the same code serve the inbound
client, the outbound-socket server and the tests that replay the recorded
transcripts in ``shared/fixtures/freeswitch``.

Framing (from the recordings): a frame is a block of ``Name: value`` lines
ended by an empty line; if the block has ``Content-Length: N`` exactly N
*bytes* of body follow.  Header values are percent-encoded by FreeSWITCH, and
they are decoded here only after the block has been split into lines, so an
encoded ``%0A`` inside a value can never forge a header.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import msgspec

__all__ = [
    "Event",
    "Frame",
    "FrameParser",
    "HeaderValue",
    "ProtocolError",
    "check_command_line",
    "decode_header_block",
    "parse_event",
    "parse_json_event",
    "parse_plain_event",
]

HeaderValue = str | list[str]

#: Content types seen on the wire (see the fixtures README).
AUTH_REQUEST = "auth/request"
COMMAND_REPLY = "command/reply"
API_RESPONSE = "api/response"
EVENT_PLAIN = "text/event-plain"
EVENT_JSON = "text/event-json"
EVENT_XML = "text/event-xml"
DISCONNECT_NOTICE = "text/disconnect-notice"
RUDE_REJECTION = "text/rude-rejection"
LOG_DATA = "log/data"

_ARRAY_PREFIX = "ARRAY::"


class ProtocolError(Exception):
    """The byte stream cannot be framed any more; the connection must be dropped.

    Raised for a bad ``Content-Length`` or an oversized header block: after
    either, no later byte can be trusted to start a frame.
    """


def _text(data: bytes) -> str:
    # Invalid UTF-8 from a phone's display name must never kill a reader.
    return data.decode("utf-8", "replace")


def _unquote(value: str) -> str:
    # unquote() returns early when there is no '%', which keeps this cheap.
    return unquote(value, "utf-8", "replace") if "%" in value else value


def decode_header_block(block: bytes, *, decode: bool = True) -> dict[str, str]:
    """Split a header block into lines first, then percent-decode each value.

    The order matters for safety: a channel variable holding ``%0A`` decodes
    to a newline *inside* one value instead of starting a new header.  Later
    duplicates win, as in FreeSWITCH's own client library.  Lines without a
    colon are ignored rather than fatal.
    """
    headers: dict[str, str] = {}
    for line in _text(block).split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(" "):
            value = value[1:]
        headers[name.strip()] = _unquote(value.rstrip("\r")) if decode else value.rstrip("\r")
    return headers


@dataclass(slots=True)
class Frame:
    """One ESL message: its decoded outer headers and its raw body bytes."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        """None when FreeSWITCH (or anything else) sent no Content-Type."""
        return self.headers.get("Content-Type")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")

    @property
    def text(self) -> str:
        """The body as text; undecodable bytes become U+FFFD."""
        return _text(self.body)

    def __repr__(self) -> str:  # short: bodies can be megabytes
        return f"Frame({self.content_type!r}, headers={len(self.headers)}, body={len(self.body)}B)"


class FrameParser:
    """Incremental reader state machine: HEADERS until a blank line, then BODY.

    ``feed()`` accepts any slicing of the stream (a frame split over many
    ``recv()`` calls, or many frames in one) and returns the frames that are
    complete.  Bytes are counted as bytes, never as characters.
    """

    HEADERS = "headers"
    BODY = "body"

    def __init__(self, *, max_header_bytes: int = 1 << 20, max_body_bytes: int = 256 << 20) -> None:
        self._buf = bytearray()
        self._state = self.HEADERS
        self._scan_from = 0
        self._pending: dict[str, str] | None = None
        self._need = 0
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    @property
    def state(self) -> str:
        return self._state

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (non-zero at EOF means a cut frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if data:
            self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[Frame]:
        buf = self._buf
        while True:
            if self._state == self.HEADERS:
                # Tolerate stray newlines between frames.
                while buf[:1] == b"\n":
                    del buf[:1]
                    self._scan_from = 0
                if not buf:
                    return
                end = buf.find(b"\n\n", max(self._scan_from - 1, 0))
                if end < 0:
                    if len(buf) > self.max_header_bytes:
                        raise ProtocolError(f"header block over {self.max_header_bytes} bytes")
                    self._scan_from = len(buf)
                    return
                headers = decode_header_block(bytes(buf[:end]))
                del buf[: end + 2]
                self._scan_from = 0
                length = headers.get("Content-Length")
                if length is None:
                    yield Frame(headers)
                    continue
                try:
                    need = int(length)
                except ValueError:
                    raise ProtocolError(f"bad Content-Length {length!r}") from None
                if need < 0 or need > self.max_body_bytes:
                    raise ProtocolError(f"Content-Length {need} out of range")
                if need == 0:
                    yield Frame(headers)
                    continue
                self._pending, self._need, self._state = headers, need, self.BODY
            if len(buf) < self._need:
                return
            body = bytes(buf[: self._need])
            del buf[: self._need]
            headers = self._pending or {}
            self._pending, self._need, self._state = None, 0, self.HEADERS
            yield Frame(headers, body)


class Event(Mapping[str, HeaderValue]):
    """A FreeSWITCH event: ordered headers (str, or list for array variables) and a body.

    Mapping access is over the event's own headers, so ``event["CC-Action"]``
    and ``event.get("variable_DP_MATCH")`` read like FreeSWITCH's docs.
    """

    __slots__ = ("body", "format", "headers")

    def __init__(self, headers: dict[str, HeaderValue], body: str | None = None, format: str = "plain") -> None:
        self.headers = headers
        self.body = body
        self.format = format

    @property
    def name(self) -> str:
        value = self.headers.get("Event-Name", "")
        return value if isinstance(value, str) else ",".join(value)

    @property
    def subclass(self) -> str | None:
        value = self.headers.get("Event-Subclass")
        if value is None or isinstance(value, str):
            return value
        return ",".join(value)

    @property
    def key(self) -> str:
        """The name handlers are registered under: the subclass for CUSTOM events."""
        if self.name == "CUSTOM":
            return self.subclass or "CUSTOM"
        return self.name

    @property
    def timestamp(self) -> float | None:
        """``Event-Date-Timestamp`` (microseconds on the wire) as epoch seconds."""
        raw = self.headers.get("Event-Date-Timestamp")
        try:
            return int(raw) / 1e6 if isinstance(raw, str) else None
        except ValueError:
            return None

    def get_str(self, key: str, default: str | None = None) -> str | None:
        """A header as one string; array values are joined with ``|`` like FreeSWITCH's ``${var}``."""
        value = self.headers.get(key)
        if value is None:
            return default
        return value if isinstance(value, str) else "|".join(value)

    def __getitem__(self, key: str) -> HeaderValue:
        return self.headers[key]

    def get(self, key: str, default: HeaderValue | None = None) -> HeaderValue | None:  # type: ignore[override]
        """Mapping.get without its Python-level __getitem__ and KeyError: handlers ask ~30 headers per event."""
        return self.headers.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    def __contains__(self, key: object) -> bool:
        return key in self.headers

    def __repr__(self) -> str:
        return f"Event({self.key!r}, headers={len(self.headers)}, body={None if self.body is None else len(self.body)})"


def _plain_value(value: str) -> HeaderValue:
    # FreeSWITCH serialises multi-valued variables as ARRAY::a|:b; json sends a list.
    if value.startswith(_ARRAY_PREFIX):
        return value[len(_ARRAY_PREFIX):].split("|:")
    return value


def parse_plain_event(data: bytes) -> Event:
    """Parse a ``text/event-plain`` body: encoded header lines, optional inner body.

    When the event itself has a body (BACKGROUND_JOB), its header lines end
    with ``Content-Length: M``, an empty line and M bytes; that body is kept
    as ``Event.body`` and never folded into a header value.
    """
    end = data.find(b"\n\n")
    block = data if end < 0 else data[:end]
    headers: dict[str, HeaderValue] = {}
    for line in _text(block).split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            name, sep, value = line.partition(":")
            if not sep:
                continue
        headers[name] = _plain_value(unquote(value, "utf-8", "replace")) if "%" in value else value
    body: str | None = None
    length = headers.get("Content-Length")
    if end >= 0 and isinstance(length, str):
        try:
            n = int(length)
        except ValueError:
            n = len(data) - end - 2
        body = _text(data[end + 2 : end + 2 + max(n, 0)])
    return Event(headers, body, "plain")


_decode_json = msgspec.json.Decoder().decode
# What FreeSWITCH sends: every value a string, or a list of strings for an array variable. Checked in C while
# decoding, so the usual event needs no pass over its ~150 headers in Python; anything else is refused here
# and takes the general path below, which turns odd scalars into text.
_decode_json_typed = msgspec.json.Decoder(dict[str, str | list[str]]).decode


def parse_json_event(data: bytes) -> Event:
    """Parse a ``text/event-json`` body; any value may be a string or a list.

    Non-string scalars (never seen from FreeSWITCH, but cheap to survive) are
    turned into strings so handlers only ever meet ``str | list[str]``.
    """
    try:
        headers: dict[str, HeaderValue] = _decode_json_typed(data)
    except msgspec.DecodeError:  # also msgspec.ValidationError: a number, null, object, ...
        pass
    else:
        body = headers.pop("_body", None)
        if body is None or isinstance(body, str):
            return Event(headers, body, "json")
    return _parse_json_event_any(data)  # a list as the body: the general path decides what it becomes


def _parse_json_event_any(data: bytes) -> Event:
    """The general path: any JSON object, invalid UTF-8 replaced."""
    try:
        obj = _decode_json(data)  # twice as fast as json.loads on FreeSWITCH's 2-6 KB events
    except msgspec.DecodeError:
        try:  # invalid UTF-8 (a phone's display name) is replaced, as everywhere else, not refused
            obj = json.loads(_text(data))
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"invalid event json: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("event json is not an object")
    body = obj.pop("_body", None)
    headers: dict[str, HeaderValue] = {}
    for key, value in obj.items():
        if isinstance(value, str):
            headers[key] = value
        elif isinstance(value, list):
            headers[key] = [v if isinstance(v, str) else json.dumps(v) for v in value]
        else:
            headers[key] = json.dumps(value)
    return Event(headers, body if isinstance(body, str) or body is None else str(body), "json")


def parse_event(frame: Frame) -> Event | None:
    """The event carried by a frame, or None if the frame is not an event.

    ``text/event-xml`` is not parsed (switchdesk never subscribes with it).
    """
    ctype = frame.content_type
    if ctype == EVENT_JSON:
        return parse_json_event(frame.body)
    if ctype == EVENT_PLAIN:
        return parse_plain_event(frame.body)
    return None


def channel_data(frame: Frame) -> Event:
    """The outbound-socket ``connect`` reply: channel headers in a command/reply frame."""
    headers: dict[str, HeaderValue] = {k: _plain_value(v) for k, v in frame.headers.items()}
    return Event(headers, None, "plain")


def check_command_line(command: str) -> None:
    """Refuse a command (or header) that is not a single line.

    A newline would end this command and start another: injection.
    """
    if "\n" in command or "\r" in command:
        raise ValueError("ESL command must be a single line")


@dataclass(slots=True)
class Command:
    """A command as a client writes it (used by the emulator and by tests)."""

    line: str
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        out = [self.line]
        out.extend(f"{k}: {v}" for k, v in self.headers.items())
        return ("\n".join(out) + "\n\n").encode("utf-8")
