"""One test per greenswitch defect, each proving our fix against the emulator."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

import gevent
import gevent.event
import pytest

from engine.esl.client import ESLClient
from engine.esl.errors import AuthError, CommandTimeout, ConnectionLost, ESLError
from tests.fakeswitch import FakeSwitch


@pytest.fixture
def fs() -> Iterator[FakeSwitch]:
    switch = FakeSwitch().start()
    yield switch
    switch.stop()


@pytest.fixture
def make_client(fs: FakeSwitch):
    clients: list[ESLClient] = []

    def make(**kwargs) -> ESLClient:
        c = ESLClient(fs.host, fs.port, "ClueCon", **kwargs)
        c.connect(5)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close(timeout=1)


def test_connect_auth_and_version(fs: FakeSwitch, make_client) -> None:
    c = make_client()
    assert c.connected
    assert c.api("version").startswith("FreeSWITCH Version 1.10.12")
    assert fs.received[0].line == "auth ClueCon"


def test_wrong_password(fs: FakeSwitch, caplog) -> None:
    c = ESLClient(fs.host, fs.port, "s3cret-wrong")
    with pytest.raises(AuthError, match="-ERR invalid"):
        c.connect(5)
    assert not c.connected
    assert "s3cret-wrong" not in caplog.text


def test_password_never_logged(fs: FakeSwitch, make_client, caplog) -> None:
    fs.password = "Very-Secret-9"
    caplog.set_level("DEBUG", logger="switchdesk.esl")
    c = ESLClient(fs.host, fs.port, "Very-Secret-9")
    c.connect(5)
    c.api("version")
    c.close()
    assert "auth ********" in caplog.text
    assert "Very-Secret-9" not in caplog.text


def test_error_replies_raise_with_text(make_client) -> None:
    c = make_client()
    with pytest.raises(ESLError) as exc:
        c.api("not_a_command")
    assert exc.value.text == "-ERR not_a_command Command not found!\n"
    with pytest.raises(ESLError, match="no reply"):
        c.api("show nothing")
    assert c.api("not_a_command", check=False).startswith("-ERR")


def test_large_command_is_sent_whole(fs: FakeSwitch, make_client) -> None:
    """greenswitch used sock.send: a long command could be cut short."""
    seen = []
    fs.commands["echo"] = lambda args: seen.append(args) or f"{len(args)}\n"
    c = make_client()
    arg = "x" * 4_000_000
    assert c.api(f"echo {arg}", timeout=20) == "4000000\n"
    assert seen == [arg]


def test_command_timeout(fs: FakeSwitch, make_client) -> None:
    """greenswitch waited forever for a reply."""
    c = make_client()
    fs.stall()
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        c.api("version", timeout=0.2)
    assert time.monotonic() - started < 1.0
    fs.unstall()
    # The late reply is consumed by the abandoned waiter: pairing still holds.
    assert c.api("hostname", timeout=5) == "vm"
    assert c.stats["late_replies"] == 1


def test_replies_pair_under_concurrency(fs: FakeSwitch, make_client) -> None:
    """greenswitch matched replies by order with no lock: crossed replies under load."""
    fs.commands["echo"] = lambda args: f"echo:{args}"
    c = make_client()

    def worker(i: int) -> list[bool]:
        return [c.api(f"echo {i}-{j}-" + "p" * (i * 97 % 3000)) == f"echo:{i}-{j}-" + "p" * (i * 97 % 3000)
                for j in range(20)]

    jobs = [gevent.spawn(worker, i) for i in range(50)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert all(all(j.value) for j in jobs)


def test_api_many_is_pipelined_and_ordered(fs: FakeSwitch, make_client) -> None:
    fs.commands["echo"] = lambda args: f"{args}\n"
    c = make_client()
    cmds = [f"echo {i}" for i in range(5000)] + ["not_a_command"]
    results = c.api_many(cmds, timeout=30)
    assert results[:5000] == [f"{i}\n" for i in range(5000)]
    assert isinstance(results[-1], ESLError)
    # Pipelined: all commands were on the wire before the last reply was read.
    assert [r.line for r in fs.received[-5001:]] == [f"api {x}" for x in cmds]


def test_disconnect_fails_pending_and_new_client_reconnects(fs: FakeSwitch, make_client) -> None:
    """greenswitch: pending api blocked forever after a disconnect."""
    c = make_client()
    fs.stall()
    pending = gevent.spawn(c.api, "version", 30)
    fs.wait_for_command("api version")
    fs.drop_all()
    with pytest.raises(ConnectionLost):
        pending.get(timeout=2)
    assert not c.connected
    with pytest.raises(ConnectionLost):
        c.api("version")
    fs.unstall()
    again = make_client()
    assert again.api("hostname") == "vm"


def test_mid_body_drop_does_not_spin(fs: FakeSwitch, make_client) -> None:
    """greenswitch's reader spun at 100 % CPU on EOF inside a body."""
    c = make_client()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.01) for _ in range(30)])
    fs.stall()
    pending = gevent.spawn(c.api, "version", 10)
    fs.wait_for_command("api version")
    cpu0 = time.process_time()
    fs.drop_mid_body(announced=4096, partial=b"+OK only part")
    with pytest.raises(ConnectionLost, match="middle of a frame"):
        pending.get(timeout=2)
    ticker.join(2)
    assert len(ticks) == 30  # other greenlets kept running
    assert c._reader is not None and c._reader.dead
    assert time.process_time() - cpu0 < 0.25  # ~0.3 s wall: no busy loop


def test_forged_header_attempt(fs: FakeSwitch, make_client) -> None:
    """greenswitch URL-decoded the whole block before splitting lines."""
    c = make_client(events=["CHANNEL_ANSWER"], event_format="plain")
    got = gevent.event.AsyncResult()
    c.on_event("CHANNEL_ANSWER", got.set)
    c.on_event("CHANNEL_HANGUP", lambda e: got.set_exception(AssertionError("forged")))
    evil = "Bob\nEvent-Name: CHANNEL_HANGUP\nContent-Length: 3"
    fs.push_event(fs.make_event("CHANNEL_ANSWER", {"variable_sip_from_display": evil, "Unique-ID": "u-1"}))
    event = got.get(timeout=2)
    assert event.name == "CHANNEL_ANSWER"
    assert event["variable_sip_from_display"] == evil
    assert event["Unique-ID"] == "u-1" and event.body is None


def test_background_job_body_and_correlation(fs: FakeSwitch, make_client) -> None:
    """No bgapi helper in greenswitch; its parser put the job body in Content-Length."""
    release = gevent.event.Event()
    fs.commands["slow"] = lambda args: release.wait(5) and f"+OK slow {args}\n"
    fs.commands["fast"] = lambda args: f"+OK fast {args}\n"
    fs.commands["fail"] = lambda args: "-ERR USER_NOT_REGISTERED\n"
    c = make_client()
    slow = gevent.spawn(c.bgapi, "slow 1", 5)
    fast = gevent.spawn(c.bgapi, "fast 2", 5)
    assert fast.get(timeout=5) == "+OK fast 2\n"  # finished first, got its own result
    release.set()
    assert slow.get(timeout=5) == "+OK slow 1\n"
    with pytest.raises(ESLError, match="USER_NOT_REGISTERED"):
        c.bgapi("fail", 5)
    sent = [r for r in fs.received if r.line.startswith("bgapi")]
    assert all(len(r.headers["Job-UUID"]) == 36 for r in sent)
    assert len({r.headers["Job-UUID"] for r in sent}) == 3


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_events_json_and_plain(fs: FakeSwitch, make_client, fmt: str) -> None:
    """greenswitch's reader died on `event json`."""
    c = make_client(events=["CHANNEL_ANSWER", "CUSTOM callcenter::info"], event_format=fmt)
    assert fs.wait_for_command("event ").line == f"event {fmt} CHANNEL_ANSWER BACKGROUND_JOB CUSTOM callcenter::info"
    got: list = []
    done = gevent.event.Event()
    c.on_event("callcenter::info", lambda e: (got.append(e), len(got) == 2 and done.set()))
    fs.push_event(fs.make_event("CUSTOM", {"CC-Action": "agent-status-change", "CC-Agent-Status": "On Break"},
                                subclass="callcenter::info"))
    fs.push_event(fs.make_event("CUSTOM", {"variable_DP_MATCH": ["6001", "6001"]}, subclass="callcenter::info"),
                  body="body text\n")
    assert done.wait(2)
    assert got[0]["CC-Agent-Status"] == "On Break" and got[0].format == fmt
    assert got[1]["variable_DP_MATCH"] == ["6001", "6001"] and got[1].body == "body text\n"


def test_invalid_utf8_and_missing_content_type(fs: FakeSwitch, make_client) -> None:
    """Both killed greenswitch's reader."""
    c = make_client(events=["CUSTOM callcenter::info"])
    got = gevent.event.AsyncResult()
    c.on_event("callcenter::info", got.set)
    fs.wait_for_subscribers(1)
    bad = b'{"Event-Name":"CUSTOM","Event-Subclass":"callcenter::info","CC-Member-CID-Name":"\xff\xfeX"}'
    fs.push_raw(b"X-Unknown: 1\nContent-Length: 4\n\nabcd")  # no Content-Type
    fs.push_raw(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(bad) + bad)
    event = got.get(timeout=2)
    assert event["CC-Member-CID-Name"] == "\ufffd\ufffdX"
    assert c.stats["unknown_frames"] == 1
    assert c.api("hostname") == "vm"  # reader alive, still in step


def test_slow_handler_does_not_hold_the_reader(fs: FakeSwitch, make_client) -> None:
    c = make_client(events=["HEARTBEAT"])
    gate = gevent.event.Event()
    c.on_event("HEARTBEAT", lambda e: gate.wait(5), spawn=True)
    fs.emit_heartbeat()
    fs.emit_heartbeat()
    assert c.api("hostname", timeout=2) == "vm"
    gate.set()


def test_bounded_queue_under_a_burst(fs: FakeSwitch, make_client) -> None:
    """greenswitch's queue was unbounded: a burst behind a slow handler ate memory."""
    count = 200_000
    c = make_client(events=["CUSTOM callcenter::info"], queue_size=500)
    fs.wait_for_subscribers(1)
    gate = gevent.event.Event()
    seen = [0]
    done = gevent.event.Event()

    def handler(event) -> None:
        if not gate.is_set():
            gate.wait()
        seen[0] += 1
        if seen[0] == count:
            done.set()

    c.on_event("callcenter::info", handler)
    frame = fs.render("json", fs.make_event("CUSTOM", {"CC-Action": "members-count", "CC-Count": "1",
                                                       "CC-Queue": "support@default"}, subclass="callcenter::info"))
    pusher = gevent.spawn(fs.burst, [frame], count)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    deadline = time.monotonic() + 5
    while c.stats["queue_full_waits"] == 0 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert c.stats["queue_full_waits"] >= 1
    assert c.queue_size <= 500  # blocked reader = TCP backpressure, not growth
    gevent.sleep(0.1)
    assert c.queue_size <= 500 and not pusher.dead  # the emulator is held back too
    gate.set()
    assert done.wait(40), seen[0]
    pusher.join(5)
    assert seen[0] == count and c.stats["events"] == count  # nothing dropped
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < 60, f"peak RSS grew {grown_mb:.0f} MiB"


def test_close_fails_waiters_and_is_idempotent(fs: FakeSwitch, make_client) -> None:
    c = make_client()
    c.close()
    c.close()
    assert not c.connected and c.lost_reason == "closed"
    with pytest.raises(ConnectionLost):
        c.api("version")


def test_command_injection_refused(make_client) -> None:
    c = make_client()
    with pytest.raises(ValueError):
        c.api("version\n\napi fsctl shutdown")
