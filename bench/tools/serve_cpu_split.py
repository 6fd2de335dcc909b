"""`switchdesk serve` with its CPU split by greenlet: where a call storm's CPU per call goes.

Not a bench on its own (hence under bench/tools, out of `make bench`'s bench/*.py): a stand-in for the
`switchdesk` command that `bench/call_storm.py` starts (through the test harness's SWITCHDESK_TEST_COMMAND),
e.g.

    printf '#!/bin/sh\\nexec %s %s "$@"\\n' "$PWD/.venv/bin/python" "$PWD/bench/tools/serve_cpu_split.py" > /tmp/sd.sh
    chmod +x /tmp/sd.sh
    SWITCHDESK_TEST_COMMAND=/tmp/sd.sh SD_SPLIT_OUT=/tmp/split.json \\
        .venv/bin/python bench/call_storm.py --rates 15 --seconds 25 --probe-every 0

Every greenlet switch charges the main thread's CPU time (time.thread_time) since the last switch to the
greenlet switched away from, labelled by what it runs (`EventDispatcher._dispatch_loop`: the handlers of
FreeSWITCH's events; `ESLConnection._read_loop`: reading and parsing them; `Deliverer.*`: webhooks;
`wsgi`: HTTP requests; `Hub.run`: the event loop itself). Every 500 dispatched events it writes
SD_SPLIT_OUT: the CPU seconds per label, the events dispatched by name, the batches (engine.esl.dispatch)
and the collector's time by generation. The tracing costs about a microsecond per switch, alike for every
tree measured.

SD_SPLIT_TREE=/path/to/an/exported/tree runs that tree's `engine` and `api` instead of this one (the
editable install's finder is removed first), so an older commit runs in the same harness:
`git archive <commit> engine api | tar -x -C /tmp/old`.
"""
from __future__ import annotations

import collections
import gc
import json
import os
import sys
import time

tree = os.environ.get("SD_SPLIT_TREE")
if tree:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, tree)

import greenlet  # noqa: E402

from engine.esl import dispatch  # noqa: E402

OUT = os.environ.get("SD_SPLIT_OUT", "serve_cpu_split.json")
cpu: collections.Counter[str] = collections.Counter()
count: collections.Counter[str] = collections.Counter()
_last = [time.thread_time()]


def _label(g: object) -> str:
    run = getattr(g, "_run", None) or getattr(g, "run", None)
    if run is None:
        return type(g).__name__
    name = getattr(getattr(run, "__func__", run), "__qualname__", type(run).__name__)
    return "wsgi" if name.endswith("_handle_and_close_when_done") else name


def _trace(event: str, args: tuple) -> None:
    if event in ("switch", "throw"):
        now = time.thread_time()
        cpu["g:" + _label(args[0])] += now - _last[0]
        _last[0] = now


def _write() -> None:
    with open(OUT, "w") as f:
        json.dump({"cpu": cpu, "count": count, "process_cpu": time.process_time()}, f)


_dispatch = dispatch.EventDispatcher._dispatch


def _counted(self: dispatch.EventDispatcher, event: object) -> None:
    _dispatch(self, event)
    count["dispatched"] += 1
    count["ev:" + str(getattr(event, "key", "?"))] += 1
    if count["dispatched"] % 500 == 0:
        _write()


dispatch.EventDispatcher._dispatch = _counted  # type: ignore[method-assign]
if hasattr(dispatch.EventDispatcher, "_dispatch_batch"):
    _batch = dispatch.EventDispatcher._dispatch_batch

    def _counted_batch(self: dispatch.EventDispatcher, events: list) -> None:
        _batch(self, events)
        count["batches"] += 1
        count["batched"] += len(events)

    dispatch.EventDispatcher._dispatch_batch = _counted_batch  # type: ignore[method-assign]

_gc_start = [0.0]


def _gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_start[0] = time.thread_time()
    else:
        cpu[f"gc{info['generation']}"] += time.thread_time() - _gc_start[0]


gc.callbacks.append(_gc)
greenlet.settrace(_trace)

if __name__ == "__main__":
    from engine.cli import main

    sys.argv[0] = "switchdesk"
    sys.exit(main())
