"""The FreeSWITCH side of `switchdesk serve`: ESL connections, mod_callcenter sync, registrations.

Two connections (DESIGN.md, ESL connections): one subscribed to events, one
for commands, because a synchronous `api` holds back its connection's events.
After every (re)connect of the command connection, after every committed
configuration change (engine.store.changes) and every few minutes, a sync brings
mod_callcenter in step with the database. Syncs are coalesced: one runs at a
time, and changes that arrive meanwhile cause exactly one more.
"""
from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool

from engine.callcenter import sync
from engine.esl.errors import ESLError
from engine.esl.supervisor import ESLSupervisor
from engine.store import changes
from engine.store.db import connection
from engine.store.models import Account, Device, now

log = logging.getLogger("switchdesk.engine")
# Change notices that nothing mod_callcenter holds depends on (they only drop kept xml_curl answers):
# media, voicemail boxes, the routing fields of a user (engine.directory.users.ROUTING_FIELDS).
NOT_IN_CALLCENTER = frozenset({"media", "voicemail", "routing"})

EVENTS = ("CUSTOM sofia::register sofia::unregister sofia::expire callcenter::info",)
RESYNC_EVERY = 300.0

# Features that follow FreeSWITCH (agent runtime, call events, ...) live in their own modules,
# listed here. Each module defines `EVENTS` (extra event names to subscribe to, e.g.
# "CHANNEL_ANSWER") and `attach(engine)`, which registers handlers on engine.events /
# engine.commands and may spawn greenlets in engine.group; attach runs once, in Engine.start.
PLUGIN_MODULES: tuple[str, ...] = (
    "engine.callcenter.agent_runtime", "engine.calls.callevents", "engine.directory.fscache",
    "engine.calls.recordings", "engine.dialer.runner", "engine.stats.plugin",
)


def _plugins() -> list[Any]:
    return [importlib.import_module(name) for name in PLUGIN_MODULES]


def subscriptions(plugins: list[Any]) -> tuple[str, ...]:
    """The base subscription plus each plugin's event names (build_event_command orders them)."""
    return (*EVENTS, *(name for module in plugins for name in getattr(module, "EVENTS", ())))


class Engine:
    def __init__(self, host: str, port: int, password: str, *, resync_every: float = RESYNC_EVERY,
                 group: gevent.pool.Group | None = None, account_ids: list[int] | None = None):
        self.group = group or gevent.pool.Group()
        self.plugins = _plugins()
        self.events = ESLSupervisor(host, port, password, events=subscriptions(self.plugins), event_format="json",
                                    name="events", group=self.group)
        self.commands = ESLSupervisor(host, port, password, events=(), name="commands", group=self.group)
        self.resync_every = resync_every
        # the accounts this box drives (DESIGN.md, Scale-out); None: all of them
        self.account_ids = account_ids
        self.syncer = sync.Syncer(self._api_many, account_ids, bgapi_many=self._bgapi_many)
        self._agents_wanted: set[int] = set()
        # A full sync asked for while one runs must not be lost: the running sync ends by setting the
        # tier cache it read, which used to be the only mark of "full sync wanted".
        self._full_wanted = True
        self.last_sync: sync.SyncResult | None = None
        self.last_sync_at: float | None = None
        self._wanted = gevent.event.Event()
        self._synced = gevent.event.Event()
        self._loop: gevent.Greenlet | None = None
        self._stoppers: list[Callable[[], None]] = []
        self.remote_changes: Any = None  # engine.store.pgnotify on PostgreSQL: other boxes' changes
        self.commands.on_connect(self._on_commands_connect)
        for subclass in ("sofia::register", "sofia::unregister", "sofia::expire"):
            self.events.on_event(subclass, self._registration)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Engine:
        changes.listen(self._on_change)
        for module in self.plugins:
            module.attach(self)
        self.events.start()
        self.commands.start()
        self._loop = self.group.spawn(self._sync_loop)
        return self

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` first when the engine stops (plugins stop their greenlets)."""
        self._stoppers.append(callback)

    def stop(self) -> None:
        for callback in reversed(self._stoppers):
            try:
                callback()
            except Exception:
                log.exception("stopping %r failed", callback)
        changes.unlisten(self._on_change)
        if self._loop is not None:
            self._loop.kill()
        self.events.stop()
        self.commands.stop()
        # Nothing a plugin spawned may outlive the engine: a greenlet still waiting for a connection
        # (the dialer's reconciliation waits up to 10 s) would otherwise wake against a stopped engine.
        self.group.kill(block=True, timeout=2)

    # -- sync ------------------------------------------------------------------------------------

    def _on_commands_connect(self, _client: Any) -> None:
        self.syncer.tiers = None  # a new connection may be a restarted switch: read everything again
        self.request_sync()

    def owns(self, account_id: int) -> bool:
        return self.account_ids is None or account_id in self.account_ids

    def _on_change(self, kind: str, account_id: int, ids: list[int]) -> None:
        if not self.owns(account_id) or kind in NOT_IN_CALLCENTER:
            return
        if kind in ("agent", "tier"):  # ids are user ids: push only those agents
            self._agents_wanted.update(ids)
            self._synced.clear()
            self._wanted.set()
        else:
            self.request_sync()

    def request_sync(self) -> None:
        """Ask for a full sync (coalesced with any already asked for)."""
        self.syncer.tiers = None
        self._full_wanted = True
        self._synced.clear()
        self._wanted.set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def _api_many(self, commands: list[str]) -> list[str]:
        client = self.commands.require_client()
        return [r.text if isinstance(r, ESLError) else r for r in client.api_many(commands, timeout=120)]

    def _bgapi_many(self, commands: list[str]) -> list[str]:
        """Background jobs, all started before any is awaited: FreeSWITCH runs each in a thread."""
        client = self.commands.require_client()
        jobs = [client.bgapi_async(command, timeout=10) for command in commands]
        return [job.get_result(timeout=180, check=False) for job in jobs]

    def sync_now(self) -> sync.SyncResult:
        """A full sync: read everything mod_callcenter has and send the difference."""
        self._agents_wanted.clear()
        with connection():
            result = self.syncer.run()
        self.last_sync, self.last_sync_at = result, time.time()
        return result

    def sync_agents_now(self, user_ids: set[int]) -> sync.SyncResult:
        with connection():
            result = self.syncer.run_agents(user_ids)
        if result.full:
            self.last_sync, self.last_sync_at = result, time.time()
        return result

    def _sync_loop(self) -> None:
        while True:
            self._wanted.wait(self.resync_every)
            full = not self._wanted.is_set() or self._full_wanted or self.syncer.tiers is None
            self._wanted.clear()
            if self.commands.client is None:
                continue  # the on_connect callback asks again
            try:
                if full:
                    self._full_wanted = False  # set again by a request that comes while this one runs
                    self.sync_now()
                else:
                    agents, self._agents_wanted = self._agents_wanted, set()
                    if agents:
                        self.sync_agents_now(agents)
                if not self._wanted.is_set():
                    self._synced.set()
            except ESLError as exc:
                log.warning("sync interrupted: %s", exc)  # a reconnect asks for a full sync again
                self.syncer.tiers = None
                self._full_wanted = True
            except Exception:
                log.exception("sync failed; retrying in a few seconds")
                gevent.sleep(3)
                self.request_sync()

    # -- events ----------------------------------------------------------------------------------

    def _registration(self, event: Any) -> None:
        """sofia::register / unregister / expire: the device's registration status."""
        username = event.get("username") or event.get("from-user")
        realm = (event.get("realm") or event.get("from-host") or "").lower()
        if not username or not realm:
            return
        registered = event.subclass == "sofia::register"
        values: dict[str, Any] = {"registered": registered, "reg_ts": now()}
        if registered:
            expires = event.get("expires")
            values.update(
                reg_contact=(event.get("contact") or "")[:500],
                reg_user_agent=(event.get("user-agent") or "")[:300],
                reg_network_ip=(event.get("network-ip") or "")[:64],
                reg_expires=now() + int(expires) if expires and str(expires).isdigit() else None,
            )
        else:
            values.update(reg_contact=None, reg_expires=None)
        with connection():
            account = Account.get_or_none(Account.domain == realm)
            if account is not None:
                Device.update(**values).where(
                    (Device.account == account.id) & (Device.sip_username == username)
                ).execute()

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        events, commands = self.events.status(), self.commands.status()
        return {
            "freeswitch": {
                "connected": events.connected and commands.connected,
                "since": commands.since,
                "version": commands.version or events.version,
                "last_error": commands.last_error or events.last_error,
                "event_lag": events.event_lag,
                "reconnects": commands.reconnects,
            },
            "sync": {
                "at": self.last_sync_at,
                "commands": self.last_sync.commands if self.last_sync else None,
                "errors": len(self.last_sync.errors) if self.last_sync else None,
                "seconds": round(self.last_sync.seconds, 4) if self.last_sync else None,
            },
            # PostgreSQL only: null on SQLite, where there is one box and nothing to hear
            "other_boxes": self.remote_changes.status() if self.remote_changes is not None else None,
        }
