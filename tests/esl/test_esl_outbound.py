"""Outbound-socket server against the emulator playing FreeSWITCH's side."""

from __future__ import annotations

from collections.abc import Iterator

import gevent.event
import gevent.socket
import pytest

from engine.esl.outbound import OutboundBindError, OutboundServer, OutboundSession
from tests.fakeswitch import FakeSwitch


@pytest.fixture
def fs() -> Iterator[FakeSwitch]:
    switch = FakeSwitch().start()
    yield switch
    switch.stop()


def serve(handler) -> OutboundServer:
    server = OutboundServer(handler, "127.0.0.1", 0)
    server.start()
    return server


def checkin_handler(result: dict):
    def handler(s: OutboundSession) -> None:
        result["dest"] = s.destination_number
        result["uuid"] = s.uuid
        s.myevents()
        s.linger()
        result["answer"] = s.answer(timeout=5).get_str("Application-Response")
        result["play"] = s.playback("tone_stream://%(400,200,440);loops=2", timeout=5)
        result["var"] = s.api(f"uuid_getvar {s.uuid} destination_number")
        s.hangup()
        result["hung_up"] = s.wait_hangup(5)

    return handler


def test_checkin_flow_matches_recording_commands(fs: FakeSwitch) -> None:
    result: dict = {}
    server = serve(checkin_handler(result))
    try:
        call = fs.connect_outbound("127.0.0.1", server.port)
        assert call.wait_closed(5)
    finally:
        server.stop()
    assert result == {
        "dest": "***1234",
        "uuid": call.uuid,
        "answer": "_none_",
        "play": "FILE PLAYED",
        "var": "***1234",
        "hung_up": True,
    }
    sent = [c.raw for c in call.received]
    # Same framings as outbound-socket-checkin.esl (Event-UUID is ours).
    assert sent[:4] == [
        b"connect\n\n",
        b"myevents\n\n",
        b"linger\n\n",
        b"sendmsg\ncall-command: execute\nexecute-app-name: answer\nEvent-UUID: "
        + call.received[3].headers["Event-UUID"].encode()
        + b"\n\n",
    ]
    assert sent[4].startswith(
        b"sendmsg\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: tone_stream://%(400,200,440);loops=2\n"
    )
    assert sent[-2] == b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    assert sent[-1] == b"exit\n\n"  # bare linger: FreeSWITCH waits for our exit
    assert call.events_sent[-1] == "CHANNEL_HANGUP_COMPLETE"


def test_caller_hangup_during_playback(fs: FakeSwitch) -> None:
    result = {}
    started = gevent.event.Event()

    def handler(s: OutboundSession) -> None:
        s.myevents()
        s.linger(5)
        s.answer(timeout=5)
        started.set()
        result["play"] = s.playback("tone_stream://%(1000,0,440)", timeout=5)
        result["cause"] = s.wait_hangup(2) and s.hangup_cause

    server = serve(handler)
    try:
        call = fs.connect_outbound("127.0.0.1", server.port, playback_seconds=30)
        assert started.wait(5)
        fs.wait_for_command(lambda c: c.headers.get("execute-app-name") == "playback")
        call.hangup_by_caller("NORMAL_CLEARING")
        assert call.wait_closed(5)
    finally:
        server.stop()
    assert result == {"play": "PLAYBACK ERROR", "cause": "NORMAL_CLEARING"}


def test_sync_mode_without_linger(fs: FakeSwitch) -> None:
    result = {}

    def handler(s: OutboundSession) -> None:
        result["mode"] = s.socket_mode
        s.myevents()
        result["answer"] = s.answer(timeout=5).name
        result["kill"] = s.api(f"uuid_kill {s.uuid}")
        result["hung_up"] = s.wait_hangup(5)

    server = serve(handler)
    try:
        call = fs.connect_outbound("127.0.0.1", server.port, mode="static")
        assert call.wait_closed(5)
    finally:
        server.stop()
    assert result == {"mode": "static", "answer": "CHANNEL_EXECUTE_COMPLETE", "kill": "+OK\n", "hung_up": True}
    assert "CHANNEL_HANGUP_COMPLETE" not in call.events_sent


def test_event_lock_header_is_sent(fs: FakeSwitch) -> None:
    def handler(s: OutboundSession) -> None:
        s.myevents()
        s.execute("answer", event_lock=True, timeout=5)
        s.hangup()

    server = serve(handler)
    try:
        call = fs.connect_outbound("127.0.0.1", server.port)
        assert call.wait_closed(5)
    finally:
        server.stop()
    answer = next(c for c in call.received if c.headers.get("execute-app-name") == "answer")
    assert answer.headers["event-lock"] == "true"


def test_handler_exception_is_contained(fs: FakeSwitch, caplog) -> None:
    def handler(s: OutboundSession) -> None:
        raise RuntimeError("boom")

    server = serve(handler)
    try:
        call = fs.connect_outbound("127.0.0.1", server.port)
        assert call.wait_closed(5)
        assert [c.line for c in call.received] == ["connect", "exit"]
        assert "boom" in caplog.text
    finally:
        server.stop()


def test_bind_error_raises_instead_of_exiting() -> None:
    busy = gevent.socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        server = OutboundServer(lambda s: None, "127.0.0.1", busy.getsockname()[1])
        with pytest.raises(OutboundBindError, match="cannot listen"):
            server.start()
    finally:
        busy.close()
