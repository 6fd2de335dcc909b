"""The engine side of agent control: what mod_callcenter says about agents, and the agent timers.

* callcenter::info `agent-status-change`, `agent-state-change` and
  `bridge-agent-end` keep AgentState's fs_status, fs_state and
  last_bridge_end current and report activity changes as agent:status
  (ringing or talking, mod_callcenter's own wrap-up after a queue call); On
  Break set by mod_callcenter (max-no-answer) becomes the reserved system
  pause (engine.callcenter.agent_events). Handlers run on the ESL dispatcher: short database
  writes only.
* One timer greenlet ends what is due — pauses past their max_duration,
  wrap-ups, mod_callcenter's wrap-up window, a suppressed window — through
  engine.callcenter.agent_state (committed, reported, then synced), and asks for a sync at
  each time-group edge of a joined tier (timegroups.next_change, so daylight
  saving is the schedule's business). Every deadline is read back from the
  database, so after a restart the timers resume with the time that is left.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import gevent
import gevent.event

from engine.callcenter import agent_events, agent_state, agents, sync, timegroups
from engine.store import changes
from engine.store.db import connection
from engine.store.models import Tier, TimeGroup

log = logging.getLogger("switchdesk.agents")

EVENTS: tuple[str, ...] = ()  # callcenter::info is in the engine's own subscription
MAX_SLEEP = 60.0  # re-read the deadlines at least this often
COALESCE = 0.1  # deadlines are whole seconds: looking again a moment after a change costs nothing
_EPSILON = 0.01  # deadlines are whole seconds: wake just after, not just before

clock = time.time  # tests shift it (together with sync's clock) to reach a time-group edge quickly

_ACTIONS = frozenset({"agent-status-change", "agent-state-change", "bridge-agent-end"})


def next_timegroup_edge(at: dt.datetime, account_ids: list[int] | None = None) -> float | None:
    """The next instant a time group of a tier opens or closes (epoch seconds), or None.

    Tiers joined or not: a few needless syncs at edges of groups nobody is
    joined through cost less than re-reading this on every join and leave."""
    used = Tier.select(Tier.timegroup).where(Tier.timegroup.is_null(False))
    query = TimeGroup.select().where(TimeGroup.id.in_(used))
    if account_ids is not None:
        query = query.where(TimeGroup.account.in_(list(account_ids)))
    edges = []
    for group in query:
        change = timegroups.next_change(
            {"timezone": group.timezone, "ranges": group.ranges, "exceptions": group.exceptions}, at)
        if change is not None:
            edges.append(change.timestamp())
    return min(edges) if edges else None


class AgentRuntime:
    def __init__(self, engine: Any):
        self.engine = engine
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._edge: float | None = None
        self._edges_stale = True

    def start(self) -> None:
        changes.listen(self._on_change)
        self.engine.events.on_event("callcenter::info", self._on_event)
        self.engine.commands.on_connect(lambda client: self.engine.group.spawn(self._reconcile, client))
        self._greenlet = self.engine.group.spawn(self._run)

    def stop(self) -> None:
        changes.unlisten(self._on_change)
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def wake(self) -> None:
        self._wake.set()

    # -- changes and events ----------------------------------------------------------------------

    def _on_change(self, kind: str, account_id: int, ids: list[int]) -> None:
        if not self.engine.owns(account_id):
            return
        if kind in ("tier", "timegroup", "queue"):
            self._edges_stale = True
        if kind == "tier":
            # membership added while checked in: locked tiers are joined whenever checked in
            self.engine.group.spawn(self._join_locked, account_id, list(ids))
        self._wake.set()

    def _join_locked(self, account_id: int, user_ids: list[int]) -> None:
        try:
            with connection():
                agents.join_locked(account_id, user_ids)
        except Exception:
            log.exception("joining locked tiers of %s failed", user_ids)

    def _on_event(self, event: Any) -> None:
        action = event.get_str("CC-Action")
        if action not in _ACTIONS:
            return
        name = event.get_str("CC-Agent")
        if not name:
            return
        bridge_end = None
        if action == "bridge-agent-end":
            value = event.get_str("CC-Bridge-Terminated-Time") or ""
            bridge_end = int(value) if value.isdigit() else int(clock())
        try:
            with connection():
                agent_events.observe(name, status=event.get_str("CC-Agent-Status") if action == "agent-status-change"
                               else None,
                               state=event.get_str("CC-Agent-State") if action == "agent-state-change" else None,
                               bridge_end=bridge_end)
        except Exception:
            log.exception("callcenter::info %s for %s not recorded", action, name)
        self._wake.set()

    def _reconcile(self, client: Any) -> None:
        """What happened to the agents while we could not hear (engine or FreeSWITCH restarted)."""
        try:
            text = client.api("callcenter_config agent list", timeout=30, check=False)
        except Exception as exc:
            log.warning("agent list after connect failed: %s", exc)
            return
        try:
            with connection():
                differed = agent_events.reconcile(sync.parse_table(text))
            if differed:
                log.info("reconciled %d agents with mod_callcenter", differed)
        except Exception:
            log.exception("reconciling agents failed")
        self._wake.set()

    # -- timers ----------------------------------------------------------------------------------

    def _tick(self) -> float | None:
        """Settle what is due; returns when to look again (epoch seconds), None: nothing scheduled."""
        t = clock()
        with connection():
            deadline = agent_state.due(int(t), self.engine.account_ids)
            if self._edge is not None and t >= self._edge:
                self.engine.request_sync()  # a time group opened or closed: its tiers come or go
                self._edges_stale = True
            if self._edges_stale:
                self._edges_stale = False
                self._edge = next_timegroup_edge(dt.datetime.fromtimestamp(t, dt.UTC), self.engine.account_ids)
        pending = [x for x in (deadline, self._edge) if x is not None]
        return min(pending) if pending else None

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wake_at = self._tick()
            except Exception:
                log.exception("agent timers failed")
                gevent.sleep(1)
                continue
            timeout = MAX_SLEEP if wake_at is None else min(MAX_SLEEP, max(0.0, wake_at - clock()) + _EPSILON)
            if self._wake.wait(timeout) and timeout > COALESCE:
                gevent.sleep(COALESCE)  # woken by a change: let a burst of them settle into one look


def attach(engine: Any) -> AgentRuntime:
    runtime = AgentRuntime(engine)
    runtime.start()
    engine.agent_runtime = runtime
    engine.on_stop(runtime.stop)
    return runtime
