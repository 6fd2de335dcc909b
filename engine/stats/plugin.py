"""The statistics' Engine plugin (engine/engine.py, PLUGIN_MODULES).

* callcenter::info events count queue calls (engine.stats.queues); agent activity arrives as
  agent:status (engine.stats.agents, registered with the outbox when imported);
* after each (re)connect of the event connection the live part is rebuilt from FreeSWITCH's lists
  (engine.stats.live), once;
* once a day the history older than the retention is deleted (engine.stats.history);
* at start and after each `account` change notice, the day rows of an account whose time zone changed
  are rebuilt (engine.stats.days; its long read runs off the event loop).
"""
from __future__ import annotations

import logging
from typing import Any

import gevent

from engine.calls.reconcile import reconcile_when_connected
from engine.stats import agents, days, history, live, queues
from engine.store import changes
from engine.store.db import connection

log = logging.getLogger("switchdesk.stats")

EVENTS: tuple[str, ...] = ()  # callcenter::info is in the engine's own subscription
CLEAN_UP_EVERY = 86400.0
FIRST_CLEAN_UP = 60.0  # after start, once the engine has settled


class Stats:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rebuilds = 0  # completed rebuilds (tests wait on it)
        self.last_rebuild: dict[str, int] | None = None
        self._cleaner: gevent.Greenlet | None = None

    def on_callcenter(self, event: Any) -> None:
        try:
            queues.on_callcenter(event)
        except Exception:
            log.exception("statistics: callcenter::info not counted")

    def rebuild(self) -> int:
        result = live.rebuild(self.engine.commands.require_client(), self.engine.account_ids)
        self.last_rebuild = result
        self.rebuilds += 1
        return sum(result.values())

    def _clean_loop(self) -> None:
        gevent.sleep(FIRST_CLEAN_UP)
        while True:
            try:
                with connection():
                    removed = history.clean_up()
                if removed:
                    log.info("statistics: %d interval rows past the retention deleted", removed)
            except Exception:
                log.exception("statistics clean-up failed")
            gevent.sleep(CLEAN_UP_EVERY)

    def check_zones(self) -> None:
        try:
            with connection():
                days.check_zones(self.engine.account_ids)
        except Exception:
            log.exception("statistics: rebuilding the day rows failed")

    def _on_change(self, kind: str, account_id: int, _ids: list[int]) -> None:
        if kind == "account" and self.engine.owns(account_id):
            self.engine.group.spawn(self.check_zones)

    def stop(self) -> None:
        changes.unlisten(self._on_change)
        if self._cleaner is not None:
            self._cleaner.kill()
            self._cleaner = None


def attach(engine: Any) -> Stats:
    plugin = Stats(engine)
    engine.stats = plugin
    assert agents.on_emit is not None  # importing engine.stats.agents registered its outbox listener
    engine.events.on_event("callcenter::info", plugin.on_callcenter)
    engine.events.on_connect(lambda _client: engine.group.spawn(reconcile_when_connected, engine, plugin.rebuild))
    plugin._cleaner = engine.group.spawn(plugin._clean_loop)
    changes.listen(plugin._on_change)
    engine.group.spawn(plugin.check_zones)
    engine.on_stop(plugin.stop)
    return plugin
