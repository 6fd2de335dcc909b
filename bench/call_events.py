"""CPU per call event: the recorded queue calls replayed straight into the call-events plugin.

The four recorded queue-call scenarios of tests/calls/test_callevents.py
(moved into a test tenant by its `rewrite`), each replay with fresh
Unique-IDs so every round is new calls, are handed to
`CallEvents.on_channel` / `on_callcenter` in order — no socket, no ESL
parser: what one event costs in the plugin (field derivation, lookups,
ActiveCall rows, the outbox write). Temp SQLite file.

Prints one JSON line: CPU µs per event and per call (a call = one
scenario's events), and how many call events went to the outbox. Set
SWITCHDESK_DIRECTORY_CACHE=0 to measure without the directory cache.
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
from engine.store.models import OutboxEvent  # noqa: E402
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


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        database = db.bind(f"sqlite:///{tmp}/bench.db")
        database.connect()
        schema.init_schema(database)
        tenant = getattr(world, "__wrapped__", world)(database)  # the test's fixture, called as a function
        database.close()
        plugin = CallEvents(engine=None)
        recordings = streams(tenant)
        batches = [[renamed(events) for events in recordings] for _ in range(rounds + 1)]

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
    calls = rounds * len(SCENARIOS)
    print(json.dumps({
        "bench": "call_events", "rounds": rounds, "calls": calls, "events": events, "outbox_call_events": emitted,
        "python": platform.python_version(),
        "cpu_us_per_event": round(cpu / events * 1e6, 1), "cpu_ms_per_call": round(cpu / calls * 1e3, 2),
        "wall_us_per_event": round(wall / events * 1e6, 1),
    }))


if __name__ == "__main__":
    main()
