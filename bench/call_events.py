"""CPU per call event: the recorded queue calls replayed straight into the call-events plugin.

The four recorded queue-call scenarios of tests/calls/test_callevents.py
(moved into a test tenant by its `rewrite`), each replay with fresh
Unique-IDs so every round is new calls, are handed to
`CallEvents.on_channel` / `on_callcenter` in order — no socket, no ESL
parser: what one event costs in the plugin (field derivation, lookups,
ActiveCall rows, the outbox write). Temp SQLite file.

Prints one JSON line: CPU µs per event and per call (a call = one
scenario's events), and how many call events went to the outbox, for the
plugin without issue 17's call records and recording decision (`baseline`),
with them (`records`), and with every call recorded (`recorded`); baseline
and records twice, interleaved, in the same process, the best of each
compared. Set SWITCHDESK_DIRECTORY_CACHE=0 to measure without the directory
cache.
Run: ``.venv/bin/python bench/call_events.py [rounds]``.
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.calls.callevents import CallEvents  # noqa: E402
from engine.esl.protocol import Event  # noqa: E402
from engine.store import db, schema  # noqa: E402
from engine.store.models import OutboxEvent, Queue, Recording  # noqa: E402
from tests.calls.test_callevents import MEMBER, recorded, rewrite, world  # noqa: E402

SCENARIOS = tuple(MEMBER)


def streams(tenant) -> list[list[list[tuple[str, object]]]]:
    return [rewrite(recorded(f"{name}.json.esl"), tenant, name) for name in SCENARIOS]


def renamed(events: list[list[tuple[str, object]]]) -> list[Event]:
    """The scenario with every Unique-ID replaced by a fresh one, consistently."""
    ids: dict[str, str] = {}
    uids = {value for headers in events for key, value in headers
            if key in ("Unique-ID", "Other-Leg-Unique-ID") and isinstance(value, str)}
    for uid in uids:
        ids[uid] = str(uuid.uuid4())
    out = []
    for headers in events:
        out.append(Event({key: ids.get(value, value) if isinstance(value, str) else value
                          for key, value in headers}, format="json"))
    return out


def measure(rounds: int, mode: str) -> dict[str, object]:
    """One pass on its own temp database. `mode`: `baseline` (the plugin without what issue 17 added: no
    call records, no recording decision), `records` (call records written, the recording decision taken,
    nothing recorded), `recorded` (the queue records every call: a Recording row per call too; no
    FreeSWITCH here, so no uuid_record goes out)."""
    from engine.calls import callevents, recordings, records

    saved = (callevents.records.leg_ended, callevents.recordings.call_connected)
    with tempfile.TemporaryDirectory() as tmp:
        recordings.configure(f"{tmp}/recordings", min_free=0)
        if mode == "baseline":
            callevents.records.leg_ended = lambda *a, **k: None  # type: ignore[assignment]
            callevents.recordings.call_connected = lambda *a, **k: None  # type: ignore[assignment]
        try:
            database = db.bind(f"sqlite:///{tmp}/bench.db")
            database.connect()
            schema.init_schema(database)
            tenant = getattr(world, "__wrapped__", world)(database)  # the test's fixture, called as a function
            if mode == "recorded":
                Queue.update(record=1).where(Queue.id == tenant["queue"].id).execute()
            database.close()
            plugin = CallEvents(engine=None)
            sources = streams(tenant)
            batches = [[renamed(events) for events in sources] for _ in range(rounds + 1)]

            def play(batch: list[list[Event]]) -> int:
                count = 0
                for events in batch:
                    for event in events:
                        count += 1
                        if event.name == "CUSTOM":
                            if event.subclass == "callcenter::info":
                                plugin.on_callcenter(event)
                        else:
                            plugin.on_channel(event)
                return count

            play(batches[0])  # warm: compiled SQL, caches
            cpu, wall, events = time.process_time(), time.perf_counter(), 0
            for batch in batches[1:]:
                events += play(batch)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            with database.connection_context():
                emitted = OutboxEvent.select().where(OutboxEvent.event.startswith("call:")).count()
                kept = (records.CallRecord.select().count(), Recording.select().count())
        finally:
            callevents.records.leg_ended, callevents.recordings.call_connected = saved
            recordings.configure(None)
    calls = rounds * len(SCENARIOS)
    return {"mode": mode, "calls": calls, "events": events, "outbox_call_events": emitted,
            "call_records": kept[0], "recordings": kept[1],
            "cpu_us_per_event": round(cpu / events * 1e6, 1), "cpu_ms_per_call": round(cpu / calls * 1e3, 3),
            "wall_us_per_event": round(wall / events * 1e6, 1)}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    modes = [measure(rounds, mode) for mode in ("baseline", "records", "recorded", "baseline", "records")]
    best = {m: min(r["cpu_ms_per_call"] for r in modes if r["mode"] == m) for m in ("baseline", "records")}
    recorded = next(r for r in modes if r["mode"] == "recorded")["cpu_ms_per_call"]
    print(json.dumps({
        "bench": "call_events", "rounds": rounds, "python": platform.python_version(), "runs": modes,
        "added_ms_per_call_records": round(best["records"] - best["baseline"], 3),
        "added_ms_per_call_recorded": round(recorded - best["baseline"], 3),
    }))


if __name__ == "__main__":
    main()
