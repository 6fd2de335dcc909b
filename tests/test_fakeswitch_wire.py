"""The emulator reproduces the recorded FreeSWITCH framings byte for byte.

A raw gevent socket plays the client, so these checks do not depend on the
ESL client under test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import unquote

import gevent.socket
import pytest

from engine.esl.protocol import FrameParser, parse_event
from tests.fakeswitch import FakeSwitch, render_json, render_plain
from tests.fakeswitch.fixtures import esl_files, load

pytestmark = pytest.mark.skipif(not esl_files(), reason="FreeSWITCH fixtures not found")


@pytest.fixture
def fs() -> Iterator[FakeSwitch]:
    switch = FakeSwitch().start()
    yield switch
    switch.stop()


class Raw:
    def __init__(self, fs: FakeSwitch) -> None:
        self.sock = gevent.socket.create_connection(fs.address, timeout=5)
        self.buf = b""

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self) -> bytes:
        while True:
            data = self.sock.recv(65536)
            if not data:
                out, self.buf = self.buf, b""
                return out
            self.buf += data

    def exchange(self, send: bytes, expected_len: int) -> bytes:
        self.sock.sendall(send)
        return self.read_exact(expected_len)


def authed(fs: FakeSwitch) -> Raw:
    raw = Raw(fs)
    assert raw.read_exact(28) == b"Content-Type: auth/request\n\n"
    assert raw.exchange(b"auth ClueCon\n\n", 54) == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    return raw


def test_greeting_and_auth_fail(fs: FakeSwitch) -> None:
    t = load("auth-fail.esl")
    raw = Raw(fs)
    assert raw.read_exact(len(t.greeting())) == t.greeting()
    ((sent, expected),) = t.exchanges()
    raw.sock.sendall(sent)
    assert raw.read_to_eof() == expected  # reply, goodbye notice, then close


def test_command_before_auth(fs: FakeSwitch) -> None:
    t = load("command-before-auth.esl")
    raw = Raw(fs)
    assert raw.read_exact(28) == t.greeting()
    ((sent, expected),) = t.exchanges()
    assert raw.exchange(sent, len(expected)) == expected


def test_auth_and_subscribe_replies(fs: FakeSwitch) -> None:
    t = load("auth-and-subscribe.esl")
    raw = Raw(fs)
    assert raw.read_exact(28) == t.greeting()
    checked = 0
    for sent, expected in t.exchanges():
        if b"text/event-" in expected:
            # The recording caught HEARTBEAT events here; compare only the reply.
            expected = expected[: expected.index(b"\n\n") + 2]
        if sent == b"exit\n\n":
            raw.sock.sendall(sent)
            assert raw.read_to_eof() == expected
        else:
            assert raw.exchange(sent, len(expected)) == expected, sent
        checked += 1
    assert checked == 15


@pytest.mark.parametrize(
    "command",
    [
        b"api version\n\n",
        b"api hostname\n\n",
        b"api sofia status\n\n",
        b"api sofia status profile nosuch\n\n",
        b"api show channels\n\n",
        b"api show channels as json\n\n",
        b"api show calls as json\n\n",
        b"api uuid_kill 00000000-0000-0000-0000-000000000000\n\n",
        b"api uuid_exists 00000000-0000-0000-0000-000000000000\n\n",
        b"api not_a_command\n\n",
        b"api module_exists mod_callcenter\n\n",
    ],
)
def test_api_replies_match_recording(fs: FakeSwitch, command: bytes) -> None:
    expected = dict(load("api-basic.esl").exchanges())[command]
    raw = authed(fs)
    assert raw.exchange(command, len(expected)) == expected


def test_api_status_framing(fs: FakeSwitch) -> None:
    expected = dict(load("api-basic.esl").exchanges())[b"api status\n\n"]
    raw = authed(fs)
    raw.sock.sendall(b"api status\n\n")
    head = raw.read_exact(len(b"Content-Type: api/response\nContent-Length: "))
    assert head == expected[: len(head)]
    (frame,) = _read_frames(raw, 1, prefix=head)
    lines_ours = frame.text.split("\n")
    lines_rec = FrameParser().feed(expected)[0].text.split("\n")
    assert len(lines_ours) == len(lines_rec)
    for ours, rec in zip(lines_ours, lines_rec, strict=True):
        assert re.sub(r"\d+", "N", ours) == re.sub(r"\d+", "N", rec)


def _read_frames(raw: Raw, count: int, prefix: bytes = b""):
    parser = FrameParser()
    frames = parser.feed(prefix + raw.buf)
    raw.buf = b""
    while len(frames) < count:
        data = raw.sock.recv(65536)
        assert data, "EOF"
        frames += parser.feed(data)
    return frames


def test_bgapi_reply_and_background_job(fs: FakeSwitch) -> None:
    exchanges = load("api-basic.esl").exchanges()
    recorded = dict(exchanges)[b"bgapi status\n\n"]
    rec_frames = FrameParser().feed(recorded)
    job = "57a7c1ea-f737-449f-aa94-797cc54df550"
    raw = authed(fs)
    sub = dict(exchanges)[b"event plain BACKGROUND_JOB\n\n"]
    assert raw.exchange(b"event plain BACKGROUND_JOB\n\n", len(sub)) == sub
    reply_len = recorded.index(b"\n\n") + 2
    assert raw.exchange(b"bgapi status\nJob-UUID: %s\n\n" % job.encode(), reply_len) == recorded[:reply_len]
    (event_frame,) = _read_frames(raw, 1)
    ours, rec = parse_event(event_frame), parse_event(rec_frames[1])
    assert list(ours.headers)[:1] == ["Event-Name"]
    assert [k for k in ours.headers if not k.startswith("Event-") and "FreeSWITCH" not in k] == [
        "Core-UUID",
        "Job-UUID",
        "Job-Command",
        "Content-Length",
    ]
    assert list(ours.headers) == list(rec.headers)
    assert ours["Job-UUID"] == job and ours.body.startswith("UP 0 years")
    assert int(ours["Content-Length"]) == len(ours.body.encode())


def test_shutdown_disconnect_notice(fs: FakeSwitch) -> None:
    t = load("shutdown-disconnect.control.esl")
    raw = authed(fs)
    sent, expected = t.exchanges()[-1]
    raw.sock.sendall(sent)
    assert raw.read_to_eof() == expected


def _recorded_pairs(frame) -> tuple[list[tuple[str, object]], str | None]:
    """Header pairs straight from the recording (duplicates kept), without our parser."""
    if frame.content_type == "text/event-json":
        pairs = json.loads(frame.body, object_pairs_hook=lambda p: p)
        body = None
        if pairs and pairs[-1][0] == "_body":
            body = pairs[-1][1]
            pairs = pairs[:-2]  # Content-Length, _body
        return pairs, body
    head, sep, rest = frame.body.partition(b"\n\n")
    pairs = []
    for line in head.decode().split("\n"):
        k, _, v = line.partition(": ")
        v = unquote(v)
        pairs.append((k, v[7:].split("|:") if v.startswith("ARRAY::") else v))
    body = None
    if pairs and pairs[-1][0] == "Content-Length":
        pairs.pop()
        body = rest.decode()
    return pairs, body


EVENT_FILES = [n for n in esl_files() if n.endswith((".plain.esl", ".json.esl"))] + ["originate-ok.esl"]


@pytest.mark.parametrize("name", EVENT_FILES)
def test_event_rendering_round_trips_the_recordings(name: str) -> None:
    """Recorded headers -> emulator rendering gives back the recorded bytes exactly."""
    frames = FrameParser().feed(load(name).received)
    fs = FakeSwitch()
    checked = 0
    for f in frames:
        if f.content_type not in ("text/event-plain", "text/event-json"):
            continue
        fmt = f.content_type.rsplit("-", 1)[1]
        pairs, body = _recorded_pairs(f)
        rendered = fs.render(fmt, pairs, body)
        original = b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (len(f.body), fmt.encode()) + f.body
        assert rendered == original, (name, pairs[0])
        checked += 1
    assert checked > 0
    assert render_plain({"a": "x"}) == b"a: x\n\n" and render_json({"a": ["1", "2"]}) == b'{"a":["1","2"]}'


def test_subscription_filters_by_name_and_subclass(fs: FakeSwitch) -> None:
    raw = authed(fs)
    raw.exchange(b"event json CHANNEL_ANSWER CUSTOM callcenter::info\n\n", 73)
    fs.wait_for_subscribers(1)
    assert fs.push_event(fs.make_event("CHANNEL_HANGUP")) == 0
    assert fs.push_event(fs.make_event("CUSTOM", {"x": "1"}, subclass="sofia::register")) == 0
    assert fs.push_event(fs.make_event("CUSTOM", {"CC-Action": "agent-offering"}, subclass="callcenter::info")) == 1
    (frame,) = _read_frames(raw, 1)
    assert parse_event(frame)["CC-Action"] == "agent-offering"
