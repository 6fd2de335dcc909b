"""ESL event intake throughput and memory, on the recorded queue-call events.

Measures, in one run, on the events of ``queue-call-answered.{json,plain}.esl``
at their real size (2-6 KB each):

* ``client_*_eps``: events/s through ESLClient's intake (socket read, framing,
  event parse, bounded queue, dispatch to a no-op handler) with the emulator
  replaying the events over loopback;
* ``parse_*_eps``: our parser alone over the same bytes in memory;
* ``reference_*_eps``: a minimal split-and-decode parser (a lower bound on
  the work, no safety);
* ``greenswitch_plain_eps``: greenswitch 0.0.19's own reader loop
  (``receive_events``/``handle_event``) over the same bytes; it cannot parse
  json at all;
* ``burst_rss_growth_mb``: peak RSS growth while 200,000 events go through a
  client whose handler is slower than the sender (bounded queue, TCP
  backpressure).

Prints one JSON line.  Run: ``.venv/bin/python bench/esl_events.py``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import greenswitch.esl  # noqa: E402

from engine.esl.client import ESLClient  # noqa: E402
from engine.esl.protocol import FrameParser, parse_event  # noqa: E402
from tests.fakeswitch import FakeSwitch  # noqa: E402
from tests.fakeswitch.fixtures import load  # noqa: E402


def event_frames(name: str) -> list[bytes]:
    """The raw event frames of a recording, byte for byte."""
    data = load(name).received
    out = []
    parser = FrameParser()
    for frame in parser.feed(data):
        # Re-render the exact frame bytes from its parts.
        ctype = frame.content_type or ""
        if ctype.startswith("text/event-"):
            out.append(b"Content-Length: %d\nContent-Type: %s\n\n" % (len(frame.body), ctype.encode()) + frame.body)
    return out


def current_rss_mb() -> float:
    """Resident set size now (not the peak), from /proc."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_parse(stream: bytes, n_events: int, rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        parser = FrameParser()
        for frame in parser.feed(stream):
            parse_event(frame)
    return n_events * rounds / (time.perf_counter() - t0)


def reference_parse(stream: bytes, fmt: str) -> int:
    """Minimal parser: no limits, no error handling, no safety."""
    pos, n, count = 0, len(stream), 0
    while pos < n:
        end = stream.index(b"\n\n", pos)
        head = stream[pos:end]
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\n", 1)[0])
        body = stream[end + 2 : end + 2 + length]
        pos = end + 2 + length
        if fmt == "json":
            json.loads(body)
        else:
            dict(
                (k, unquote(v)) for k, _, v in (line.partition(": ") for line in body.decode().split("\n") if line)
            )
        count += 1
    return count


def bench_reference(stream: bytes, fmt: str, n_events: int, rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        assert reference_parse(stream, fmt) == n_events
    return n_events * rounds / (time.perf_counter() - t0)


def bench_greenswitch(stream: bytes, n_events: int, rounds: int) -> float:
    """greenswitch's own reader loop, fed from memory instead of a socket."""

    class _Sock:
        def close(self) -> None:
            pass

    t0 = time.perf_counter()
    for _ in range(rounds):
        proto = greenswitch.esl.ESLProtocol()
        proto.sock = _Sock()
        proto.sock_file = io.BytesIO(stream)
        proto.connected = True
        proto.receive_events()
        assert proto._esl_event_queue.qsize() == n_events
    return n_events * rounds / (time.perf_counter() - t0)


def bench_client(fs: FakeSwitch, fmt: str, frames: list[bytes], total: int) -> float:
    client = ESLClient(fs.host, fs.port, "ClueCon", events=["ALL"], event_format=fmt, queue_size=1000)
    client.connect(5)
    done = gevent.event.Event()
    repeat = max(1, total // len(frames))
    total = repeat * len(frames)
    target = client.stats["dispatched"] + total

    def noop(event) -> None:
        if client.stats["dispatched"] + 1 >= target:
            done.set()

    client.on_event("*", noop)
    fs.wait_for_subscribers(1)
    t0 = time.perf_counter()
    pusher = gevent.spawn(fs.burst, frames, repeat)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    pusher.join(5)
    got = client.stats["dispatched"]
    client.close()
    fs.wait_for_subscribers(0)
    return (got - (target - total)) / elapsed


def bench_burst_memory(fs: FakeSwitch, frames: list[bytes], total: int) -> dict:
    client = ESLClient(fs.host, fs.port, "ClueCon", events=["ALL"], event_format="json", queue_size=1000)
    client.connect(5)
    done = gevent.event.Event()
    seen = [0]
    repeat = total // len(frames)

    def slow(event) -> None:
        seen[0] += 1
        if seen[0] % 2000 == 0:
            gevent.sleep(0.001)  # a handler slower than the wire
        if seen[0] >= repeat * len(frames):
            done.set()

    client.on_event("*", slow)
    fs.wait_for_subscribers(1)
    rss0 = current_rss_mb()
    peak = [rss0]

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_mb())
            gevent.sleep(0.02)

    sampler = gevent.spawn(sample)
    t0 = time.perf_counter()
    gevent.spawn(fs.burst, frames, repeat)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    sampler.join(1)
    result = {
        "burst_events": seen[0],
        "burst_seconds": round(elapsed, 2),
        "burst_rss_growth_mb": round(peak[0] - rss0, 1),
        "burst_queue_full_waits": client.stats["queue_full_waits"],
        "burst_dropped": repeat * len(frames) - seen[0],
    }
    client.close()
    return result


def main() -> None:
    json_frames = event_frames("queue-call-answered.json.esl")
    plain_frames = event_frames("queue-call-answered.plain.esl")
    json_stream, plain_stream = b"".join(json_frames), b"".join(plain_frames)
    rounds = int(os.environ.get("BENCH_ROUNDS", "20"))
    out: dict = {
        "bench": "esl_events",
        "python": platform.python_version(),
        "events_per_round": len(json_frames),
        "avg_event_bytes_json": len(json_stream) // len(json_frames),
        "avg_event_bytes_plain": len(plain_stream) // len(plain_frames),
        "parse_json_eps": round(bench_parse(json_stream, len(json_frames), rounds)),
        "parse_plain_eps": round(bench_parse(plain_stream, len(plain_frames), rounds)),
        "reference_json_eps": round(bench_reference(json_stream, "json", len(json_frames), rounds)),
        "reference_plain_eps": round(bench_reference(plain_stream, "plain", len(plain_frames), rounds)),
        "greenswitch_plain_eps": round(bench_greenswitch(plain_stream, len(plain_frames), rounds)),
        "greenswitch_json": "unsupported (its reader parses json bodies as header lines)",
    }
    fs = FakeSwitch().start()
    try:
        total = int(os.environ.get("BENCH_EVENTS", "50000"))
        out["client_json_eps"] = round(bench_client(fs, "json", json_frames, total))
        out["client_plain_eps"] = round(bench_client(fs, "plain", plain_frames, total))
        out.update(bench_burst_memory(fs, json_frames, int(os.environ.get("BENCH_BURST", "200000"))))
    finally:
        fs.stop()
    out["target_eps"] = 10000
    print(json.dumps(out))


if __name__ == "__main__":
    main()
