"""Call records and recordings from the recorded queue calls replayed through the emulator (the engine's side:
written on the call path, the recording decision, RECORD_START/STOP, finishing after a reconnect)."""
from __future__ import annotations

import logging
import wave
from pathlib import Path

import gevent
import pytest

from engine.calls import recordings, records, supervision
from engine.store.db import db
from engine.store.models import CallRecord, CallRecordLeg, Queue, Recording, User
from tests.calls.test_callevents import MEMBER, _start_of, replay, settle, start_engine, world  # noqa: F401
from tests.support import wait_until


@pytest.fixture
def folder(tmp_path: Path):
    recordings.configure(tmp_path / "rec", min_free=0)
    yield tmp_path / "rec"
    recordings.configure(None, min_free=recordings.DEFAULT_MIN_FREE)


@pytest.fixture
def engine(switch, world, folder):  # noqa: F811 - the recordings folder first
    commands: list[str] = []
    switch.commands["uuid_record"] = lambda args: commands.append(args) or "+OK Success\n"
    eng = start_engine(switch)
    eng.record_commands = commands
    yield eng
    eng.stop()


def test_a_queue_call_gets_one_record_with_its_legs(switch, engine, world):  # noqa: F811
    member, (agent,) = MEMBER["queue-call-answered"]
    replay(switch, "queue-call-answered", world)
    settle(7)
    with db.connection_context():
        (record,) = CallRecord.select()
        legs = {leg.uuid: leg.data for leg in CallRecordLeg.select()}
        listed, after = records.page(world["account"].id, records.RecordFilter(queue_id=world["queue"].id), limit=10)
    assert record.call_id == member and record.account_id == world["account"].id
    assert (record.type, record.src_num, record.dst_num) == ("queue", "1000", "7000")
    assert record.queue_id == world["queue"].id
    assert record.dst_user_id == world["users"]["alice"].id and record.hangup_cause == "NORMAL_CLEARING"
    assert record.billms == 6040 and record.end_ts == 1795856833 and record.start_ts <= record.end_ts
    assert set(legs) == {member, agent} and legs[agent]["billms"] == 5000
    assert [r["call_id"] for r in listed] == [member] and len(listed[0]["legs"]) == 2 and after is None
    # not recorded: the queue's `record` is 0 and nobody's flags ask for it
    assert engine.record_commands == []
    # the same events again write nothing twice
    replay(switch, "queue-call-answered", world)
    gevent.sleep(0.5)
    with db.connection_context():
        assert CallRecord.select().count() == 1 and CallRecordLeg.select().count() == 2


def test_a_recorded_queue_call_is_recorded_into_our_folder(switch, engine, world, folder, caplog):  # noqa: F811
    member, _ = MEMBER["queue-call-answered"]
    with db.connection_context():
        Queue.update(record=1).where(Queue.id == world["queue"].id).execute()
    replay(switch, "queue-call-answered", world)
    settle(7)
    wait_until(lambda: engine.record_commands)
    (command,) = engine.record_commands
    with db.connection_context():
        (row,) = Recording.select()
    assert command == f"{member} start {folder / row.path}"
    assert row.path.startswith(f"{world['account'].id}/") and row.path.endswith(".wav") and ".." not in row.path
    assert (row.call_id, row.queue_id, row.user_id) == (member, world["queue"].id, world["users"]["alice"].id)
    # FreeSWITCH writes the file, then says RECORD_STOP: only then is it complete, with size and duration
    path = folder / row.path
    assert path.parent.is_dir() and path.parent.stat().st_mode & 0o7777 == 0o2770  # made by us, shareable
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x10\x00" * 8000 * 3)
    assert row.state in ("starting", "recording")
    switch.push_event({"Event-Name": "RECORD_START", "Unique-ID": member, "Record-File-Path": str(path)})
    switch.push_event({"Event-Name": "RECORD_STOP", "Unique-ID": member, "Record-File-Path": str(path)})
    wait_until(lambda: engine.recordings.finished == 1)
    with db.connection_context():
        row = Recording.get_by_id(row.id)
    assert (row.state, row.size, row.duration_ms) == ("complete", path.stat().st_size, 3000)
    # a Record-File-Path outside the folder is not ours
    switch.push_event({"Event-Name": "RECORD_STOP", "Unique-ID": member, "Record-File-Path": "/etc/passwd"})
    gevent.sleep(0.3)
    assert engine.recordings.finished == 1


def test_a_recording_whose_stop_was_missed_is_finished_after_a_reconnect(switch, engine, world, folder):  # noqa: F811
    member, _ = MEMBER["queue-call-answered"]
    with db.connection_context():
        Queue.update(record=1).where(Queue.id == world["queue"].id).execute()
    replay(switch, "queue-call-answered", world)
    settle(7)
    wait_until(lambda: engine.record_commands)
    with db.connection_context():
        row = Recording.get()
    (folder / row.path).parent.mkdir(parents=True, exist_ok=True)
    (folder / row.path).write_bytes(b"RIFF" + b"\x00" * 100)  # a header FreeSWITCH never finished: no duration
    assert engine.recordings.reconcile() == 1  # the emulator lists no channel: the leg is gone
    with db.connection_context():
        row = Recording.get_by_id(row.id)
    assert row.state == "complete" and row.size == 104 and row.duration_ms is None


def _data(world, **fields):  # noqa: F811
    base = {"call_id": "c" * 36, "type": "queue", "queue_id": world["queue"].id, "src_device_id": None,
            "src_user_id": None, "dst_user_id": world["users"]["alice"].id}
    base.update(fields)
    return base


def _flags(user: User, **flags) -> None:
    User.update(device_overrides=flags).where(User.id == user.id).execute()


def test_the_recording_precedence(world, database):  # noqa: F811
    account = world["account"].id
    alice, carol = world["users"]["alice"], world["users"]["carol"]
    queue = world["queue"]
    assert recordings.wanted(account, _data(world)) is False
    Queue.update(record=1).where(Queue.id == queue.id).execute()
    assert recordings.wanted(account, _data(world)) is True  # the queue records every call
    Queue.update(record=0).where(Queue.id == queue.id).execute()
    _flags(alice, user_record=1)
    assert recordings.wanted(account, _data(world, type="internal")) is True  # all of alice's calls
    _flags(alice, rec_inb_ext=1)
    assert recordings.wanted(account, _data(world)) is True  # from outside into a queue alice answers
    assert recordings.wanted(account, _data(world, src_device_id=5)) is False  # from inside: internal
    _flags(alice, rec_inb_int=1)
    assert recordings.wanted(account, _data(world, src_device_id=5)) is True
    assert recordings.wanted(account, _data(world, type="outbound", src_user_id=alice.id,
                                            dst_user_id=None)) is False
    _flags(alice, rec_out_ext=1)
    assert recordings.wanted(account, _data(world, type="outbound", src_user_id=alice.id, dst_user_id=None)) is True
    _flags(alice)
    _flags(carol, rec_out_int=1)
    assert recordings.wanted(account, _data(world, type="internal", src_user_id=carol.id, src_device_id=5)) is True
    # another account's queue or user never counts
    assert recordings.wanted(account + 1000, _data(world, type="internal", src_user_id=carol.id)) is False


def test_no_recording_when_the_disk_is_nearly_full(world, database, folder, caplog):  # noqa: F811
    recordings.configure(folder, min_free=2**62)
    Queue.update(record=1).where(Queue.id == world["queue"].id).execute()
    before = recordings.settings.refused
    with caplog.at_level(logging.WARNING, logger="switchdesk.recordings"):
        recordings.call_connected(None, world["account"].id, _data(world), 1795856833)
        recordings.call_connected(None, world["account"].id, _data(world), 1795856833)
    assert Recording.select().count() == 0
    assert recordings.settings.refused == before + 2
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # one warning a minute
    assert "new recordings are refused" in caplog.records[0].message


def test_the_folder_must_be_usable_on_a_command_line(tmp_path):
    with pytest.raises(ValueError):
        recordings.configure(tmp_path / "two words")
    assert recordings.settings.root is None or " " not in str(recordings.settings.root)


def test_live_calls_follow_the_call_and_its_hold(switch, engine, world):  # noqa: F811
    member, (agent,) = MEMBER["queue-call-answered"]
    for headers in _start_of("queue-call-answered", world, "bridge-agent-start"):
        switch.push_event(headers)
    settle(5)
    account = world["account"].id

    def live() -> list[dict]:
        with db.connection_context():
            return supervision.active_calls(account)
    wait_until(lambda: live() and live()[0]["state"] == "talking")
    (call,) = live()
    assert call["call_id"] == member and [leg["id"] for leg in call["legs"]] == [member, agent]
    assert call["agent_user_id"] == world["users"]["alice"].id and call["queue_id"] == world["queue"].id
    assert call["answer_ts"] == 1795856828 and call["direction"] == "queue" and call["src_num"] == "1000"
    base = dict(_start_of("queue-call-answered", world, "CHANNEL_ANSWER")[-1])
    for name, state in (("CHANNEL_HOLD", "held"), ("CHANNEL_UNHOLD", "talking")):
        switch.push_event(list({**base, "Event-Name": name}.items()))
        wait_until(lambda state=state: live()[0]["state"] == state)
    assert len(call_events := settle(5)) == 5 and call_events  # hold emits no call event
