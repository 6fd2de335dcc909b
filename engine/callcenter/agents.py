"""Agent control: check-in with a device, pauses, wrap-up and the queues an agent is joined to.

The service only commits: each call is one transaction that writes the
agent's desired state (engine.store.models.AgentState, Tier.joined) and the
documented events, then tells the engine (`changes.notify("agent", ...)`)
once committed. The engine pushes the agent to mod_callcenter through the
sync, which reads `runtime()` below; nothing here talks ESL. That is why every
endpoint works while FreeSWITCH is down: the change is committed and applied
on reconnect (DESIGN.md, When FreeSWITCH is down).

How the desired state reaches mod_callcenter (DESIGN.md, Pause keeps fairness):

* checked in: `status Available`, the device's contact; otherwise `Logged Out`
  and a contact that fails at once;
* a pause or a wrap-up never changes the status (setting Available resets the
  talk time and answered calls that fair strategies order by): it sets
  `ready_time` to its end, 2147483647 while open-ended;
* `On Break` is mod_callcenter's own (max-no-answer), recorded here as the
  account's reserved system pause; ending that pause is the one case where
  the status goes back to Available.

Tier mode flags (engine.callcenter.queues): check-in joins the tiers with flag 2 or 4,
check-out leaves all. setQueues changes only tiers with flag 1; a tier without
it keeps its state (a locked one stays joined, listing an unjoined one is 400).
setPause, wrapup and setQueues need a checked-in agent (409 otherwise): what
they change means nothing for a logged-out agent, whom check-in resets anyway.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import peewee

from engine.callcenter import fsconfig, pauses, sync
from engine.errors import ServiceError
from engine.events.outbox import emit
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db, is_sqlite
from engine.store.models import Account, AgentState, Device, PauseReason, Tier, User, now

# activity_id of agent:status (DESIGN.md, Event fields)
LOGGED_OUT, WAITING, ON_CALL, WRAP_UP, PAUSED = 0, 1, 2, 3, 4
ON_CALL_STATES = frozenset({"Receiving", "In a queue call"})
OPEN_ENDED = 2147483647  # ready_time of a pause without an end (mod_callcenter compares epochs)
JOIN_AT_CHECKIN = (2, 3, 4)  # modes with flag 2 (auto-join) or 4 (locked)
SELF_SERVICE = (1, 3)  # modes with flag 1: setQueues may join and leave them
LOCKED = (4,)

_CHUNK = 5000


def _chunks(ids: Iterable[int], size: int = _CHUNK) -> Iterator[list[int]]:
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


# --- reads ---------------------------------------------------------------------------------------


def _load(user_id: int) -> User | None:
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


def _agent(account_id: int, user_id: int) -> tuple[User, Account]:
    """The agent with its account, locked (see `_load`); another account's user is a 404."""
    user = _load(user_id)
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


def checked_in(state: AgentState | None) -> bool:
    return state is not None and state.device_id is not None


def _checked_in_agent(account_id: int, user_id: int) -> tuple[User, Account, AgentState]:
    """The agent and its state, inside the caller's transaction; 409 when it is not checked in."""
    user, account = _agent(account_id, user_id)
    state = _state(user)
    if not checked_in(state):
        raise ServiceError(409, f"User {user.id} is not checked in")
    return user, account, state


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


def _report(state: AgentState, user: User, account: Account, at: int, *, force: bool = False,
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
    _report(state, user, account, at, force=True)
    state.ts = at
    state.save()
    pending.add("agent", account.id, [user.id])


def _check_in(account_id: int, user_id: int, device_id: int, *, force: bool, move: bool) -> AgentState:
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
                other, other_account = _agent_unchecked(holder.user_id)
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
            _report(state, user, account, at, force=True)
            state.save()
            pending.add("agent", account.id, [user.id])
    except peewee.IntegrityError:
        # the device was taken by a concurrent check-in between our read and our write
        raise ServiceError(409, f"Device {device_id} is in use by another user; use forceCheckOut=1") from None
    pending.send()
    return state


def _agent_unchecked(user_id: int) -> tuple[User, Account]:
    """Any user with its account (engine paths: timers, FreeSWITCH events), locked like `_agent`."""
    user = _load(user_id)
    if user is None:
        raise User.DoesNotExist(f"user {user_id}")
    return user, user.account


def check_in(account_id: int, user_id: int, device_id: int, *, force: bool) -> AgentState:
    """Bind the device to the agent (the check-in code path: the agent dialled from that device).

    A device held by another agent is refused (409) unless `force`, which
    checks that agent out first. An agent checked in elsewhere moves here:
    dialling from the phone is the agent's own consent.
    """
    return _check_in(account_id, user_id, device_id, force=force, move=True)


def check_in_device(account_id: int, user_id: int, device_id: int, force: bool) -> AgentState:
    """checkInDevice: without `force`, a busy device or an agent checked in elsewhere is 409;
    with it, both are checked out first (vendor doc: "CheckOut user from current device + CheckOut
    target device")."""
    return _check_in(account_id, user_id, device_id, force=force, move=force)


def release_device(account_id: int, device_id: int, pending: Pending) -> None:
    """Check out whoever is checked in with this device; inside the caller's transaction
    (a device being deleted: its agent must not stay joined to queues with no phone)."""
    state = AgentState.get_or_none((AgentState.device == device_id) & (AgentState.account == account_id))
    if state is None:
        return
    user = _load(state.user_id)
    if user is not None:
        _check_out(state, user, user.account, now(), pending)


def check_out(account_id: int, user_id: int) -> AgentState:
    """Release the device and leave all queues; checking out a logged-out agent changes nothing.

    Works for a user who stopped being an agent (or active) while checked in, so its device is freed."""
    pending = Pending()
    with db.atomic():
        user = _load(user_id)
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
            _end_pause(state, user, account, at)
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
                _report(state, user, account, at, force=True)
        state.ts = at
        state.save()
        pending.add("agent", account.id, [user.id])
    pending.send()
    return state


def _end_pause(state: AgentState, user: User, account: Account, at: int, extra: dict | None = None) -> None:
    state.pause = state.pause_started = state.pause_until = None
    state.snoozes = 0
    _report(state, user, account, at, force=True, extra=extra)


def record_system_break(account_id: int, user_id: int, *, reconstructed: bool = False) -> bool:
    """mod_callcenter put the agent On Break (max-no-answer): record the account's reserved pause.

    Replaces a client's pause (mod_callcenter's break wins: its status is On
    Break whatever we asked). Returns whether anything changed; an agent that
    is not checked in, or already in the system pause, is left alone.
    """
    reason = pauses.system_reason(account_id)  # its own short transaction, before ours
    pending = Pending()
    with db.atomic():
        user, account = _agent_unchecked(user_id)
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
        _report(state, user, account, at, force=True, extra={"reconstructed": True} if reconstructed else None)
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
        _report(state, user, account, at)
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


# --- what FreeSWITCH tells us ------------------------------------------------------------------------


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
        _report(row, user, account, at, extra={"reconstructed": True} if reconstructed else None)
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
    for chunk in _chunks(ours):
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
        user, account = _agent_unchecked(user_id)
        state = AgentState.get_or_none(AgentState.user == user.id)
        if state is None:
            return None
        changed = False
        before = state.activity
        if state.pause_until is not None and state.pause_until <= at:
            _end_pause(state, user, account, at)
            changed = True
        if state.wrapup_until is not None and state.wrapup_until <= at:
            state.wrapup_until = None
            changed = True
        if state.native_wrapup_suppressed_until is not None and state.native_wrapup_suppressed_until <= at:
            state.native_wrapup_suppressed_until = None  # restores wrap_up_time in mod_callcenter
            changed = True
        _report(state, user, account, at)
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
    for chunk in _chunks(user_ids):
        # only the columns needed, as tuples: this runs on every agent sync
        rows = (AgentState.select(AgentState.user, AgentState.device, Device.sip_username, Account.domain,
                                  AgentState.pause, PauseReason.system, AgentState.pause_until,
                                  AgentState.wrapup_until, AgentState.native_wrapup_suppressed_until)
                .join(Account, on=(AgentState.account == Account.id))
                .switch(AgentState).join(Device, peewee.JOIN.LEFT_OUTER, on=(AgentState.device == Device.id))
                .switch(AgentState).join(PauseReason, peewee.JOIN.LEFT_OUTER, on=(AgentState.pause == PauseReason.id))
                .where(AgentState.user.in_(chunk)).tuples())
        for row in rows:
            out[row[0]] = _runtime_values(*row[1:], at=at)
    return out


def _runtime_values(device_id: int | None, sip_username: str | None, domain: str, pause_id: int | None,
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
        "contact": fsconfig.device_contact(Device(sip_username=sip_username), Account(domain=domain)),
        "status": "On Break" if system_pause else "Available",
        "ready_time": str(ready) if ready > at else "0",
    }
    if suppressed_until is not None and suppressed_until > at:
        values["wrap_up_time"] = "0"
    return values


def user_fields(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Real-time user fields in one query: online, device_id, pause_id, status/state, activity_id."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(user_ids):
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
    handlers = getattr(sync, "ON_BREAK_HANDLERS", None)
    if handlers is not None and on_break_seen not in handlers:
        handlers.append(on_break_seen)


_register()
