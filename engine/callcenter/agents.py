"""Agent control: check-in with a device, pauses, wrap-up and the queues an agent is joined to.

The service only commits: each call is one transaction that writes the
agent's desired state (engine.store.models.AgentState, Tier.joined) and the
documented events, then tells the engine (`changes.notify("agent", ...)`)
once committed. The engine pushes the agent to mod_callcenter through the
sync, which reads `agent_state.runtime()`; nothing here talks ESL. That is why
every endpoint works while FreeSWITCH is down: the change is committed and
applied on reconnect (DESIGN.md, When FreeSWITCH is down). What the stored
state means for mod_callcenter is `agent_state`'s; what FreeSWITCH reports
back is `agent_events`'.

Tier mode flags (engine.callcenter.queues): check-in joins the tiers with flag 2 or 4,
check-out leaves all. setQueues changes only tiers with flag 1; a tier without
it keeps its state (a locked one stays joined, listing an unjoined one is 400).
setPause, wrapup and setQueues need a checked-in agent (409 otherwise): what
they change means nothing for a logged-out agent, whom check-in resets anyway.
"""
from __future__ import annotations

from collections.abc import Iterable

import peewee

from engine.callcenter.agent_state import checked_in, end_pause, load_agent, load_user, native_wrapup_end, report_status
from engine.errors import ServiceError
from engine.events.outbox import emit
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, AgentState, Device, PauseReason, Tier, User, now

JOIN_AT_CHECKIN = (2, 3, 4)  # modes with flag 2 (auto-join) or 4 (locked)
SELF_SERVICE = (1, 3)  # modes with flag 1: setQueues may join and leave them
LOCKED = (4,)


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


# --- reads ---------------------------------------------------------------------------------------


def _agent(account_id: int, user_id: int) -> tuple[User, Account]:
    """The agent with its account, locked (see `load_user`); another account's user is a 404."""
    user = load_user(user_id)
    if user is None or user.account_id != account_id:
        raise ServiceError(404, f"User {user_id} not found")
    if not user.is_agent:
        raise ServiceError(400, f"user_id: user {user_id} is not an agent (set is_agent first)")
    if not user.active:
        raise ServiceError(400, f"user_id: user {user_id} is not active")
    return user, user.account


def _state(user: User) -> AgentState:
    sql, _ = fastq.compiled("agents.state", lambda: AgentState.select().where(AgentState.user == 0))
    row = db.obj.execute_sql(sql, (user.id,)).fetchone()
    state = fastq.make(AgentState, row) if row is not None else None
    if state is None:
        with db.atomic():  # a savepoint: a concurrent first use is a retry, not a broken transaction
            try:
                state = AgentState.create(user=user.id, account=user.account_id)
            except peewee.IntegrityError:
                state = None
        if state is None:
            state = AgentState.get(AgentState.user == user.id)
    return state


def _checked_in_agent(account_id: int, user_id: int) -> tuple[User, Account, AgentState]:
    """The agent and its state, inside the caller's transaction; 409 when it is not checked in."""
    user, account = _agent(account_id, user_id)
    state = _state(user)
    if not checked_in(state):
        raise ServiceError(409, f"User {user.id} is not checked in")
    return user, account, state


# --- check-in and check-out ------------------------------------------------------------------------


def _check_out(state: AgentState, user: User, account: Account, at: int, pending: Pending) -> None:
    """Leave every queue, release the device; inside the caller's transaction."""
    if not checked_in(state):
        return
    left = [t.queue_id for t in Tier.select(Tier.queue).where((Tier.user == user.id) & Tier.joined)
            .order_by(Tier.queue)]
    if left:
        Tier.update(joined=False).where((Tier.user == user.id) & Tier.joined).execute()
    state.device = None
    state.checked_in_at = None
    state.pause = state.pause_started = state.pause_until = None
    state.snoozes = 0
    state.wrapup_until = state.native_wrapup_suppressed_until = None
    if left:
        emit(account.id, "queue:leave", {"user_id": user.id, "queues": left}, ts=at)
    emit(account.id, "agent:checkout", {"user_id": user.id}, ts=at)
    report_status(state, user, account, at, force=True)
    state.ts = at
    state.save()
    pending.add("agent", account.id, [user.id])


def _check_in(account_id: int, user_id: int, device_id: int, *, force: bool, move: bool,
              may_act_for_others: bool = True) -> AgentState:
    pending = Pending()
    try:
        with db.atomic():
            user, account = _agent(account_id, user_id)
            device = Device.owned(account_id, device_id)
            at = now()
            holder = AgentState.get_or_none(AgentState.device == device.id)
            if holder is not None and holder.user_id != user.id:
                if not force:
                    raise ServiceError(409, f"Device {device.id} is in use by user {holder.user_id}; "
                                            "use forceCheckOut=1")
                if not may_act_for_others:  # forcing checks another agent out
                    raise ServiceError(403, "Permission denied: agents (needed to check another agent out "
                                            f"of device {device.id})")
                other, other_account = load_agent(holder.user_id)
                _check_out(holder, other, other_account, at, pending)
            state = _state(user)
            if state.device_id == device.id:
                return state  # already checked in there: nothing changes, nothing is reported
            if checked_in(state):
                if not move:
                    raise ServiceError(409, f"User {user.id} is checked in on device {state.device_id}; "
                                            "use forceCheckOut=1")
                _check_out(state, user, account, at, pending)
            state.device = device.id
            state.checked_in_at = at
            state.pause = state.pause_started = state.pause_until = None
            state.snoozes = 0
            state.wrapup_until = state.native_wrapup_suppressed_until = None
            state.ts = at
            joining = [t.queue_id for t in Tier.select(Tier.queue).where(
                (Tier.user == user.id) & Tier.mode.in_(JOIN_AT_CHECKIN) & ~Tier.joined).order_by(Tier.queue)]
            if joining:
                Tier.update(joined=True).where(
                    (Tier.user == user.id) & Tier.mode.in_(JOIN_AT_CHECKIN) & ~Tier.joined).execute()
            emit(account.id, "agent:checkin", {"user_id": user.id, "device_id": device.id,
                                               "device_name": device.name}, ts=at)
            if joining:
                emit(account.id, "queue:join", {"user_id": user.id, "queues": joining}, ts=at)
            report_status(state, user, account, at, force=True)
            state.save()
            pending.add("agent", account.id, [user.id])
    except peewee.IntegrityError:
        # the device was taken by a concurrent check-in between our read and our write
        raise ServiceError(409, f"Device {device_id} is in use by another user; use forceCheckOut=1") from None
    pending.send()
    return state


def check_in(account_id: int, user_id: int, device_id: int, *, force: bool) -> AgentState:
    """Bind the device to the agent (the check-in code path: the agent dialled from that device).

    A device held by another agent is refused (409) unless `force`, which
    checks that agent out first. An agent checked in elsewhere moves here:
    dialling from the phone is the agent's own consent.
    """
    return _check_in(account_id, user_id, device_id, force=force, move=True)


def check_in_device(account_id: int, user_id: int, device_id: int, force: bool, *,
                    may_act_for_others: bool = True) -> AgentState:
    """checkInDevice: without `force`, a busy device or an agent checked in elsewhere is 409;
    with it, both are checked out first (vendor doc: "CheckOut user from current device + CheckOut
    target device"). Checking another agent out of the device is 403 unless `may_act_for_others`."""
    return _check_in(account_id, user_id, device_id, force=force, move=force, may_act_for_others=may_act_for_others)


def release_device(account_id: int, device_id: int, pending: Pending) -> None:
    """Check out whoever is checked in with this device; inside the caller's transaction
    (a device being deleted: its agent must not stay joined to queues with no phone)."""
    state = AgentState.get_or_none((AgentState.device == device_id) & (AgentState.account == account_id))
    if state is None:
        return
    user = load_user(state.user_id)
    if user is not None:
        _check_out(state, user, user.account, now(), pending)


def check_out(account_id: int, user_id: int) -> AgentState:
    """Release the device and leave all queues; checking out a logged-out agent changes nothing.

    Works for a user who stopped being an agent (or active) while checked in, so its device is freed."""
    pending = Pending()
    with db.atomic():
        user = load_user(user_id)
        if user is None or user.account_id != account_id:
            raise ServiceError(404, f"User {user_id} not found")
        account = user.account
        state = _state(user)
        _check_out(state, user, account, now(), pending)
    pending.send()
    return state


# --- pause ------------------------------------------------------------------------------------------


def set_pause(account_id: int, user_id: int, pause_id: int) -> AgentState:
    """Pause with a reason (its max_duration ends it by timer), or `pause_id` 0: available again.

    The id already in force extends the pause by its max_duration from now,
    at most the user's `max_snooze` times; an open-ended pause has nothing to
    extend and stays as it is.
    """
    pending = Pending()
    with db.atomic():
        user, account, state = _checked_in_agent(account_id, user_id)
        at = now()
        if pause_id == 0:
            if state.pause_id is None:
                return state
            end_pause(state, user, account, at)
        else:
            reason = PauseReason.get_or_none((PauseReason.id == pause_id) & (PauseReason.account == account_id))
            if reason is None:
                raise ServiceError(400, f"id: no pause reason with id {pause_id}")
            if reason.system:
                raise ServiceError(400, f"id: pause reason {pause_id} is the system's own {reason.name!r} "
                                        "(mod_callcenter's max-no-answer); it cannot be chosen")
            if state.pause_id == reason.id:
                if not reason.max_duration:
                    return state
                limit = user.effective("max_snooze", account)
                if state.snoozes >= limit:
                    raise ServiceError(409, f"Pause {reason.id} was already extended {state.snoozes} time(s): "
                                            f"max_snooze is {limit}")
                state.snoozes += 1
                state.pause_until = at + reason.max_duration
            else:
                state.pause = reason.id
                state.pause_started = at
                state.pause_until = at + reason.max_duration if reason.max_duration else None
                state.snoozes = 0
                report_status(state, user, account, at, force=True)
        state.ts = at
        state.save()
        pending.add("agent", account.id, [user.id])
    pending.send()
    return state


# --- wrap-up ------------------------------------------------------------------------------------------


def wrapup(account_id: int, user_id: int, seconds: int | None) -> AgentState:
    """Wrap-up for `seconds` from now (None: the user's wrap_up_time); 0 ends wrap-up now, also
    mod_callcenter's own window after the last queue call (wrap_up_time 0 is sent until it has passed)."""
    pending = Pending()
    with db.atomic():
        user, account, state = _checked_in_agent(account_id, user_id)
        at = now()
        native_time = user.effective("wrap_up_time", account)
        length = native_time if seconds is None else seconds
        if length > 0:
            state.wrapup_until = at + length
        else:
            state.wrapup_until = None
            native = native_wrapup_end(state, native_time)
            state.native_wrapup_suppressed_until = native if native is not None and native > at else None
        state.ts = at
        report_status(state, user, account, at)
        state.save()
        pending.add("agent", account.id, [user.id])
    pending.send()
    return state


# --- queues ---------------------------------------------------------------------------------------


def set_queues(account_id: int, user_id: int, queue_ids: list[int]) -> list[Tier]:
    """Make `queue_ids` the set of queues the agent is joined to, as far as tier modes allow.

    Only tiers with flag 1 are joined or left. A locked (4) tier is joined
    whether listed or not. An auto-join-only (2) tier keeps its state: listing
    it when it is not joined is 400, setQueues cannot join it.
    Queues the agent is not a member of are 400, naming them. Returns the
    agent's tiers afterwards.
    """
    pending = Pending()
    wanted = set(queue_ids)
    with db.atomic():
        user, account, _ = _checked_in_agent(account_id, user_id)
        tiers = {t.queue_id: t for t in Tier.select().where(Tier.user == user.id)}
        strangers = wanted - tiers.keys()
        if strangers:
            raise ServiceError(400, f"queue_ids: user {user.id} is not a member of queue {_ids(strangers)}",
                               {"ids": sorted(strangers)})
        fixed = {q for q in wanted if tiers[q].mode not in SELF_SERVICE + LOCKED and not tiers[q].joined}
        if fixed:
            raise ServiceError(400, f"queue_ids: queue {_ids(fixed)} cannot be joined with setQueues "
                                    "(tier mode without flag 1)", {"ids": sorted(fixed)})
        at = now()
        # locked tiers belong joined while checked in (one added since check-in is joined here too)
        join = sorted(q for q, t in tiers.items() if not t.joined and (q in wanted or t.mode in LOCKED))
        leave = sorted(q for q, t in tiers.items() if t.joined and t.mode in SELF_SERVICE and q not in wanted)
        if join:
            Tier.update(joined=True).where((Tier.user == user.id) & Tier.queue.in_(join)).execute()
            emit(account.id, "queue:join", {"user_id": user.id, "queues": join}, ts=at)
        if leave:
            Tier.update(joined=False).where((Tier.user == user.id) & Tier.queue.in_(leave)).execute()
            emit(account.id, "queue:leave", {"user_id": user.id, "queues": leave}, ts=at)
        if join or leave:
            pending.add("agent", account.id, [user.id])
    pending.send()
    return list(Tier.select().where(Tier.user == user.id).order_by(Tier.queue))


def join_locked(account_id: int, user_ids: list[int]) -> None:
    """Locked tiers (mode 4) are joined whenever the agent is checked in, also those added while it is."""
    pending = Pending()
    with db.atomic():
        online = [s.user_id for s in AgentState.select(AgentState.user).where(
            AgentState.user.in_(list(user_ids)) & AgentState.device.is_null(False)
            & (AgentState.account == account_id))]
        if not online:
            return
        rows = list(Tier.select(Tier.queue, Tier.user).where(
            Tier.user.in_(online) & Tier.mode.in_(LOCKED) & ~Tier.joined).order_by(Tier.user, Tier.queue))
        if not rows:
            return
        at = now()
        by_user: dict[int, list[int]] = {}
        for tier in rows:
            by_user.setdefault(tier.user_id, []).append(tier.queue_id)
        Tier.update(joined=True).where(
            Tier.user.in_(list(by_user)) & Tier.mode.in_(LOCKED) & ~Tier.joined).execute()
        for user_id, queues in by_user.items():
            emit(account_id, "queue:join", {"user_id": user_id, "queues": queues}, ts=at)
        pending.add("agent", account_id, list(by_user))
    pending.send()
