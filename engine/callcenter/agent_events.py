"""What FreeSWITCH tells us about agents: mod_callcenter's callcenter::info events, the agent list read
after a reconnect, and the On Break it sets on its own (max-no-answer).

Following mod_callcenter's reports changes with mod_callcenter and its events,
apart from the agent commands (`agents`); the state they record is interpreted
by `agent_state`. The engine plugin (`agent_runtime`) calls in here.
"""
from __future__ import annotations

from engine.callcenter import fsconfig, pauses, sync
from engine.callcenter.agent_state import (
    ON_CALL_STATES,
    checked_in,
    chunks,
    load_agent,
    report_status,
)
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, AgentState, User, now


def observe(agent_name: str, *, status: str | None = None, state: str | None = None,
            bridge_end: int | None = None, reconstructed: bool = False) -> None:
    """A callcenter::info about one of our agents: keep fs_status/fs_state/last_bridge_end and report
    activity changes (ringing or talking, mod_callcenter's wrap-up); On Break becomes the system pause."""
    parsed = fsconfig.parse_name(agent_name)
    if parsed is None:
        return
    user_id, domain = parsed
    # one cheap read first: most events (a sync's status changes of agents never checked in) stop here
    known = (AgentState.select(AgentState, User, Account).join(User, on=(AgentState.user == User.id))
             .join(Account, on=(User.account == Account.id))
             .where((AgentState.user == user_id) & (Account.domain == domain)).first())
    if known is None:
        return
    user = known.user
    account = user.account
    if status == "On Break":
        record_system_break(account.id, user.id, reconstructed=reconstructed)
    pending = Pending()
    with db.atomic():
        row = AgentState.get_or_none(AgentState.user == user.id)
        if row is None:
            return  # never checked in: nothing to follow (the row is made at check-in)
        at = now()
        if status is not None:
            row.fs_status = status[:40]
        if state is not None:
            if row.fs_state == "In a queue call" and state not in ON_CALL_STATES and bridge_end is None \
                    and (row.last_bridge_end or 0) < at - 1:
                row.last_bridge_end = at  # bridge-agent-end was missed: the call ended now
            row.fs_state = state[:40]
        if bridge_end is not None:
            row.last_bridge_end = bridge_end
            if row.native_wrapup_suppressed_until is not None:
                # a new queue call brings a new wrap-up window: restore wrap_up_time in mod_callcenter
                row.native_wrapup_suppressed_until = None
                pending.add("agent", account.id, [user.id])
        report_status(row, user, account, at, extra={"reconstructed": True} if reconstructed else None)
        row.save()
    pending.send()


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def reconcile(rows: list[dict[str, str]]) -> int:
    """After a (re)connect: FreeSWITCH's `agent list` as it is now. What changed while the engine could
    not hear (a call that ended, an On Break) is recorded and reported with `"reconstructed": true`
    (DESIGN.md, Events across outages); rings and answers in between are not recovered. Returns how
    many agents differed."""
    ours: dict[int, dict[str, str]] = {}
    for row in rows:
        parsed = fsconfig.parse_name(row.get("name", ""))
        if parsed is not None:
            ours[parsed[0]] = row
    known: dict[int, AgentState] = {}
    for chunk in chunks(ours):
        for state in AgentState.select(AgentState.user, AgentState.fs_status, AgentState.fs_state,
                                       AgentState.last_bridge_end).where(AgentState.user.in_(chunk)):
            known[state.user_id] = state
    differed = 0
    for user_id, row in ours.items():
        status, state_name = row.get("status") or None, row.get("state") or None
        bridge_end = _int(row.get("last_bridge_end")) or None
        stored = known.get(user_id)
        if stored is None:
            if status in (None, "Logged Out"):
                continue  # never checked in, and nothing to tell
        elif (stored.fs_status, stored.fs_state) == (status, state_name) \
                and bridge_end in (None, stored.last_bridge_end):
            continue
        differed += 1
        new_end = bridge_end if bridge_end and (stored is None or bridge_end != stored.last_bridge_end) else None
        observe(row["name"], status=status, state=state_name, bridge_end=new_end, reconstructed=True)
    return differed


def record_system_break(account_id: int, user_id: int, *, reconstructed: bool = False) -> bool:
    """mod_callcenter put the agent On Break (max-no-answer): record the account's reserved pause.

    Replaces a client's pause (mod_callcenter's break wins: its status is On
    Break whatever we asked). Returns whether anything changed; an agent that
    is not checked in, or already in the system pause, is left alone.
    """
    reason = pauses.system_reason(account_id)  # its own short transaction, before ours
    pending = Pending()
    with db.atomic():
        user, account = load_agent(user_id)
        if user.account_id != account_id:
            return False
        state = AgentState.get_or_none(AgentState.user == user.id)
        if not checked_in(state) or state.pause_id == reason.id:
            return False
        at = now()
        state.pause = reason.id
        state.pause_started = at
        state.pause_until = None
        state.snoozes = 0
        state.ts = at
        report_status(state, user, account, at, force=True, extra={"reconstructed": True} if reconstructed else None)
        state.save()
        pending.add("agent", account.id, [user.id])
    pending.send()
    return True


def on_break_seen(user_ids: list[int]) -> None:
    """sync.ON_BREAK_HANDLERS: FreeSWITCH shows On Break for agents we think are available, i.e.
    max-no-answer happened while the engine could not hear its events.

    An agent whose last heard status is already On Break is skipped: we heard
    that break, and the agent ended its system pause since (the sync is about
    to set it Available), which must not be undone."""
    heard = {s.user_id for s in AgentState.select(AgentState.user).where(
        AgentState.user.in_(list(user_ids)) & (AgentState.fs_status == "On Break"))}
    for user in User.select(User.id, User.account).where(User.id.in_(list(user_ids))):
        if user.id not in heard:
            record_system_break(user.account_id, user.id, reconstructed=True)



def _register() -> None:
    handlers = getattr(sync, "ON_BREAK_HANDLERS", None)
    if handlers is not None and on_break_seen not in handlers:
        handlers.append(on_break_seen)


_register()
