"""Agent state: what an agent's stored state means (activity, wrap-up windows, ready_time) and
how it is put to mod_callcenter, shared by the agent commands and the engine's follow-up of FreeSWITCH.

How a stored state maps to an agent:status activity and to mod_callcenter's
fields changes with mod_callcenter's semantics, apart from what a command may
do (`agents`) or how FreeSWITCH's reports are read (`agent_events`).

How the desired state reaches mod_callcenter (DESIGN.md, Pause keeps fairness):

* checked in: `status Available`, the device's contact; otherwise `Logged Out`
  and a contact that fails at once;
* a pause or a wrap-up never changes the status (setting Available resets the
  talk time and answered calls that fair strategies order by): it sets
  `ready_time` to its end, 2147483647 while open-ended;
* `On Break` is mod_callcenter's own (max-no-answer), recorded here as the
  account's reserved system pause; ending that pause is the one case where
  the status goes back to Available.

`runtime()` is the sync's provider of these values (sync.RUNTIME_PROVIDERS);
`due()` ends what the clock has ended (the timers in agent_runtime call it).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import peewee

from engine.callcenter import fsconfig, sync
from engine.events.outbox import emit
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db, is_sqlite
from engine.store.models import Account, AgentState, Device, PauseReason, User, now

# activity_id of agent:status (DESIGN.md, Event fields)
LOGGED_OUT, WAITING, ON_CALL, WRAP_UP, PAUSED = 0, 1, 2, 3, 4
ON_CALL_STATES = frozenset({"Receiving", "In a queue call"})
OPEN_ENDED = 2147483647  # ready_time of a pause without an end (mod_callcenter compares epochs)

CHUNK = 5000


def chunks(ids: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    """`ids` in lists of at most `size` (one IN (...) per list)."""
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- reads ---------------------------------------------------------------------------------------


def load_user(user_id: int) -> User | None:
    """The user with its account (`user.account`) in one query compiled once (every agent call runs it),
    locked for the transaction where the database can (PostgreSQL): one agent's changes serialise."""
    lock = not is_sqlite()

    def build() -> peewee.Query:
        query = User.select(User, Account).join(Account, on=(User.account == Account.id)).where(User.id == 0)
        return query.for_update(of=User) if lock else query

    sql, _ = fastq.compiled("agents.user:lock" if lock else "agents.user", build)
    row = db.obj.execute_sql(sql, (user_id,)).fetchone()
    if row is None:
        return None
    user = fastq.make(User, row)
    user.account = fastq.make(Account, row, fastq.width(User))
    return user

def load_agent(user_id: int) -> tuple[User, Account]:
    """Any user with its account (engine paths: timers, FreeSWITCH events), locked like `load_user`."""
    user = load_user(user_id)
    if user is None:
        raise User.DoesNotExist(f"user {user_id}")
    return user, user.account


def checked_in(state: AgentState | None) -> bool:
    """Whether the agent has a device (a state row without one is checked out)."""
    return state is not None and state.device_id is not None


def native_wrapup_end(state: AgentState, wrap_up_time: int) -> int | None:
    """When mod_callcenter's own wrap-up after the last queue call ends (it skips the agent while
    `last_bridge_end >= now - wrap_up_time`); None when there is none or it is suppressed."""
    if not state.last_bridge_end or wrap_up_time <= 0:
        return None
    end = state.last_bridge_end + wrap_up_time + 1
    if state.native_wrapup_suppressed_until and state.native_wrapup_suppressed_until >= end - 1:
        return None
    return end


def activity_of(state: AgentState, wrap_up_time: int, at: int) -> int:
    """agent:status activity_id: logged out, on a call, paused, in wrap-up, else waiting (in that order)."""
    if not checked_in(state):
        return LOGGED_OUT
    if state.fs_state in ON_CALL_STATES:
        return ON_CALL
    if state.pause_id is not None:
        return PAUSED
    if state.wrapup_until and state.wrapup_until > at:
        return WRAP_UP
    native = native_wrapup_end(state, wrap_up_time)
    if native is not None and native > at:
        return WRAP_UP
    return WAITING


def report_status(state: AgentState, user: User, account: Account, at: int, *, force: bool = False,
            extra: dict[str, Any] | None = None) -> None:
    """Emit agent:status when the activity changed (or `force`: the pause id changed); inside the transaction."""
    activity = activity_of(state, user.effective("wrap_up_time", account), at)
    if activity == state.activity and not force:
        return
    state.activity = activity
    data = {"user_id": user.id, "activity_id": activity, "pause_id": state.pause_id or 0,
            "in_calls": 1 if checked_in(state) else 0}
    if extra:
        data.update(extra)
    emit(account.id, "agent:status", data, ts=at)


def end_pause(state: AgentState, user: User, account: Account, at: int, extra: dict | None = None) -> None:
    """Clear the pause and report it; inside the caller's transaction."""
    state.pause = state.pause_started = state.pause_until = None
    state.snoozes = 0
    report_status(state, user, account, at, force=True, extra=extra)



# --- what the clock ends -----------------------------------------------------------------------------


def due(at: int, account_ids: list[int] | None = None) -> int | None:
    """End what is due at `at` (pauses past max_duration, wrap-ups, native wrap-up windows, suppressed
    native windows) and return the next deadline, or None. Each agent in its own transaction; only
    the accounts this box drives (None: all)."""
    query = AgentState.select(AgentState.user, AgentState.account).where(
        AgentState.pause_until.is_null(False) | AgentState.wrapup_until.is_null(False)
        | AgentState.native_wrapup_suppressed_until.is_null(False) | (AgentState.activity == WRAP_UP))
    if account_ids is not None:
        query = query.where(AgentState.account.in_(list(account_ids)))
    candidates = list(query)
    deadlines: list[int] = []
    for candidate in candidates:
        deadline = _settle(candidate.account_id, candidate.user_id, at)
        if deadline is not None:
            deadlines.append(deadline)
    return min(deadlines) if deadlines else None


def _settle(account_id: int, user_id: int, at: int) -> int | None:
    pending = Pending()
    with db.atomic():
        user, account = load_agent(user_id)
        state = AgentState.get_or_none(AgentState.user == user.id)
        if state is None:
            return None
        changed = False
        before = state.activity
        if state.pause_until is not None and state.pause_until <= at:
            end_pause(state, user, account, at)
            changed = True
        if state.wrapup_until is not None and state.wrapup_until <= at:
            state.wrapup_until = None
            changed = True
        if state.native_wrapup_suppressed_until is not None and state.native_wrapup_suppressed_until <= at:
            state.native_wrapup_suppressed_until = None  # restores wrap_up_time in mod_callcenter
            changed = True
        report_status(state, user, account, at)
        if changed or state.activity != before:
            state.save()
        if changed:
            pending.add("agent", account.id, [user.id])
        native = native_wrapup_end(state, user.effective("wrap_up_time", account))
        upcoming = [d for d in (state.pause_until, state.wrapup_until, state.native_wrapup_suppressed_until,
                                native if state.activity == WRAP_UP else None) if d is not None and d > at]
    pending.send()
    return min(upcoming) if upcoming else None


# --- the sync contract ------------------------------------------------------------------------------


def runtime(user_ids: list[int], at: int | None = None) -> dict[int, dict[str, str]]:
    """sync.RUNTIME_PROVIDERS: contact, status, ready_time (and wrap_up_time "0" while a wrapup with
    seconds=0 suppresses mod_callcenter's own window) for each agent with a stored state."""
    at = now() if at is None else at
    out: dict[int, dict[str, str]] = {}
    for chunk in chunks(user_ids):
        # only the columns needed, as tuples: this runs on every agent sync
        rows = (AgentState.select(AgentState.user, AgentState.device, Device.sip_username, Device.timeout,
                                  Account.domain, AgentState.pause, PauseReason.system, AgentState.pause_until,
                                  AgentState.wrapup_until, AgentState.native_wrapup_suppressed_until)
                .join(Account, on=(AgentState.account == Account.id))
                .switch(AgentState).join(Device, peewee.JOIN.LEFT_OUTER, on=(AgentState.device == Device.id))
                .switch(AgentState).join(PauseReason, peewee.JOIN.LEFT_OUTER, on=(AgentState.pause == PauseReason.id))
                .where(AgentState.user.in_(chunk)).tuples())
        for row in rows:
            out[row[0]] = _runtime_values(*row[1:], at=at)
    return out


def _runtime_values(device_id: int | None, sip_username: str | None, ring_timeout: int | None, domain: str,
                    pause_id: int | None,
                    system: Any, pause_until: int | None, wrapup_until: int | None, suppressed_until: int | None,
                    *, at: int) -> dict[str, str]:
    if device_id is None:
        return {"contact": sync.IDLE_CONTACT, "status": "Logged Out", "ready_time": "0"}
    system_pause = pause_id is not None and bool(system)
    ends = []
    if pause_id is not None and not system_pause:
        ends.append(pause_until if pause_until is not None else OPEN_ENDED)
    if wrapup_until is not None:
        ends.append(wrapup_until)
    ready = max(ends) if ends else 0
    values = {
        "contact": fsconfig.agent_contact(sip_username or "", domain, ring_timeout),
        "status": "On Break" if system_pause else "Available",
        "ready_time": str(ready) if ready > at else "0",
    }
    if suppressed_until is not None and suppressed_until > at:
        values["wrap_up_time"] = "0"
    return values


def user_fields(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Real-time user fields in one query: online, device_id, pause_id, status/state, activity_id."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunks(user_ids):
        for values in fastq.select("agents.user_fields", lambda some: AgentState.select().where(
                AgentState.user.in_(some)), chunk):
            row = fastq.make(AgentState, values)
            online = checked_in(row)
            out[row.user_id] = {
                "online": 1 if online else 0,
                "device_id": row.device_id,
                "pause_id": row.pause_id or 0,
                "status": row.fs_status,
                "state": row.fs_state,
                "activity_id": row.activity,
            }
    for user_id in user_ids:
        out.setdefault(user_id, {"online": 0, "device_id": None, "pause_id": 0, "status": None, "state": None,
                                 "activity_id": LOGGED_OUT})
    return out


def _register() -> None:
    if runtime not in sync.RUNTIME_PROVIDERS:
        sync.RUNTIME_PROVIDERS.append(runtime)


_register()
