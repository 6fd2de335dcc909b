"""The parser against every recorded FreeSWITCH transcript (the ground truth)."""

from __future__ import annotations

import random

import pytest

from engine.esl.protocol import (
    Event,
    FrameParser,
    ProtocolError,
    channel_data,
    decode_header_block,
    parse_event,
    parse_json_event,
    parse_plain_event,
)
from engine.esl.protocol import _parse_json_event_any as parse_json_event_any
from tests.fakeswitch.fixtures import esl_files, load

FILES = esl_files()
pytestmark = pytest.mark.skipif(not FILES, reason="FreeSWITCH fixtures not found")
PAIRS = [
    "abandon-no-agent",
    "abandon-while-ringing",
    "agent-no-answer",
    "queue-call-answered",
    "register",
    "custom-event-from-dialplan",
]


def frames_of(name: str):
    parser = FrameParser()
    frames = parser.feed(load(name).received)
    assert parser.buffered == 0, "a recording ended inside a frame"
    return frames


@pytest.mark.parametrize("name", FILES)
def test_every_fixture_frames_exactly(name: str) -> None:
    data = load(name).received
    frames = FrameParser().feed(data)
    assert frames
    # Re-assemble: each frame's bytes are its header block + exactly Content-Length bytes.
    total = 0
    for f in frames:
        if "Content-Length" in f.headers:
            assert len(f.body) == int(f.headers["Content-Length"])
        else:
            assert f.body == b""
        total += len(f.body)
        assert f.content_type is not None
    assert total <= len(data)
    # Any slicing of the stream gives the same frames (recv() boundaries are arbitrary).
    rng = random.Random(name)
    parser = FrameParser()
    chunked = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 64, 1000, 5000])
        chunked += parser.feed(data[pos : pos + step])
        pos += step
    assert [(f.headers, f.body) for f in chunked] == [(f.headers, f.body) for f in frames]


@pytest.mark.parametrize("name", [n for n in FILES if "plain" in n or "json" in n or n.startswith("originate")])
def test_events_parse_with_names(name: str) -> None:
    events = [parse_event(f) for f in frames_of(name)]
    events = [e for e in events if e is not None]
    assert events
    for e in events:
        assert e.name, e.headers
        assert e.timestamp is not None and e.timestamp > 1.7e9
        if e.name == "CUSTOM":
            assert e.subclass and e.key == e.subclass


def test_background_job_body_is_the_body_not_a_header() -> None:
    jobs = [e for e in map(parse_event, frames_of("api-basic.esl")) if e is not None and e.name == "BACKGROUND_JOB"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["Job-UUID"] == "57a7c1ea-f737-449f-aa94-797cc54df550"
    assert job["Job-Command"] == "status"
    assert job["Content-Length"] == "370"
    assert job.body is not None and job.body.startswith("UP 0 years")
    assert len(job.body.encode()) == 370 and job.body.endswith("240K/8192K\n")
    assert all("UP 0 years" not in str(v) for v in job.headers.values())


def test_originate_background_jobs() -> None:
    bodies = [
        e.body
        for e in map(parse_event, frames_of("originate-fail.esl"))
        if e is not None and e.name == "BACKGROUND_JOB"
    ]
    assert "-ERR USER_NOT_REGISTERED\n" in bodies
    assert "-ERR SUBSCRIBER_ABSENT\n" in bodies
    assert "-ERR NO_ANSWER\n" in bodies


@pytest.mark.parametrize("scenario", PAIRS)
def test_json_and_plain_give_the_same_headers(scenario: str) -> None:
    def events(fmt: str) -> dict[str, Event]:
        out = {}
        for f in frames_of(f"{scenario}.{fmt}.esl"):
            e = parse_event(f)
            if e is not None:
                out[e["Event-Sequence"]] = e
        return out

    plain, js = events("plain"), events("json")
    common = plain.keys() & js.keys()
    assert len(common) >= 0.9 * max(len(plain), len(js)) and common
    for seq in common:
        assert plain[seq].headers == js[seq].headers, seq
        assert list(plain[seq].headers) == list(js[seq].headers)
        assert plain[seq].body == js[seq].body


@pytest.mark.parametrize("scenario", PAIRS)
def test_typed_json_decoding_matches_the_general_path(scenario: str) -> None:
    """The C-checked fast path gives exactly what the general decoder gives, header order included."""
    frames = [f for f in frames_of(f"{scenario}.json.esl") if f.content_type == "text/event-json"]
    assert frames
    for f in frames:
        fast, general = parse_json_event(f.body), parse_json_event_any(f.body)
        assert list(fast.headers.items()) == list(general.headers.items())
        assert (fast.body, fast.format) == (general.body, general.format)


@pytest.mark.parametrize("raw", [
    b'{"Event-Name":"API","n":5,"f":1.5,"t":true,"z":null}',
    b'{"Event-Name":"API","l":["a",2,{"k":"v"}]}',
    b'{"Event-Name":"API","o":{"k":"v"},"_body":"text"}',
    b'{"Event-Name":"API","_body":["a","b"]}',
    b'{"Event-Name":"API","_body":7}',
    b'{"Event-Name":"API","x":"\\u00e9","x":"dup"}',
])
def test_odd_json_values_take_the_general_path(raw: bytes) -> None:
    fast, general = parse_json_event(raw), parse_json_event_any(raw)
    assert list(fast.headers.items()) == list(general.headers.items())
    assert fast.body == general.body
    assert all(isinstance(v, str) or all(isinstance(i, str) for i in v) for v in fast.headers.values())


def test_array_variable_is_a_list_in_both_formats() -> None:
    for fmt in ("plain", "json"):
        (event,) = [e for e in map(parse_event, frames_of(f"custom-event-from-dialplan.{fmt}.esl")) if e]
        assert event["variable_DP_MATCH"] == ["6001", "6001"]
        assert event.get_str("variable_DP_MATCH") == "6001|6001"
        assert event.subclass == "switchdesk::checkin" and event["code"] == "6001"


def test_percent_decoding_of_plain_values() -> None:
    events = [e for e in map(parse_event, frames_of("queue-call-answered.plain.esl")) if e]
    info = [e for e in events if e.subclass == "callcenter::info"]
    assert {"agent-offering", "bridge-agent-start", "member-queue-end"} <= {e["CC-Action"] for e in info}
    assert events[0]["FreeSWITCH-IPv6"] == "fd00::2"


def test_encoded_newline_cannot_forge_a_header() -> None:
    body = b"Event-Name: CHANNEL_ANSWER\nvariable_x: a%0AEvent-Name: FORGED%0A%0AContent-Length: 5\nUnique-ID: u1\n\n"
    event = parse_plain_event(body)
    assert event.name == "CHANNEL_ANSWER"
    assert event["variable_x"] == "a\nEvent-Name: FORGED\n\nContent-Length: 5"
    assert event["Unique-ID"] == "u1"
    assert event.body is None
    head = decode_header_block(b"Content-Type: command/reply\nReply-Text: %2BOK%0AContent-Type: x")
    assert head == {"Content-Type": "command/reply", "Reply-Text": "+OK\nContent-Type: x"}


def test_invalid_utf8_never_raises() -> None:
    bad = b"Event-Name: CUSTOM\nEvent-Subclass: callcenter::info\nCC-Member-CID-Name: \xff\xfeBob%FF\n\n"
    frame = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(bad) + bad
    (f,) = FrameParser().feed(frame)
    event = parse_event(f)
    assert event is not None and "\ufffd" in event["CC-Member-CID-Name"]
    jbad = b'{"Event-Name":"API","x":"\xff"}'
    (f,) = FrameParser().feed(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(jbad) + jbad)
    assert parse_event(f)["x"] == "\ufffd"
    (f,) = FrameParser().feed(b"Content-Type: api/response\nContent-Length: 2\n\n\xc3\x28")
    assert f.text == "\ufffd("


def test_missing_content_type_is_an_unknown_frame() -> None:
    frames = FrameParser().feed(b"Foo: bar\nContent-Length: 3\n\nabcContent-Type: command/reply\nReply-Text: +OK\n\n")
    assert frames[0].content_type is None and frames[0].body == b"abc"
    assert parse_event(frames[0]) is None
    assert frames[1].reply_text == "+OK"


@pytest.mark.parametrize("bad", [b"Content-Length: x\n\n", b"Content-Length: -1\n\n"])
def test_bad_content_length_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameParser().feed(bad)


def test_header_block_size_is_bounded() -> None:
    parser = FrameParser(max_header_bytes=1000)
    with pytest.raises(ProtocolError):
        parser.feed(b"X: " + b"a" * 2000)


def test_outbound_channel_data_reply() -> None:
    frames = frames_of("outbound-socket-checkin.esl")
    data = channel_data(frames[0])
    assert frames[0].content_type == "command/reply"
    assert data["Reply-Text"] == "+OK\n"
    assert data["Socket-Mode"] == "async" and data["Control"] == "full"
    assert data["Caller-Destination-Number"] == "***1234"
    assert data["variable_DP_MATCH"] == ["***1234", "1234"]
    notices = [f for f in frames if f.content_type == "text/disconnect-notice"]
    assert notices[0].headers["Content-Disposition"] == "linger"
    assert notices[0].headers["Linger-Time"] == "-1"
    assert notices[-1].headers["Content-Disposition"] == "disconnect" and len(notices[-1].body) == 67


def test_shutdown_notice() -> None:
    last = frames_of("shutdown-disconnect.esl")[-1]
    assert last.content_type == "text/disconnect-notice"
    assert last.text == "The system is being shut down.\n"
