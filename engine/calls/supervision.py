"""Live calls for supervisors: the account's active calls, hang up, transfer, and listen / whisper / barge.

The active calls are the `ActiveCall` rows the call events keep (one per live
leg, engine.calls.callevents), grouped by `call_id`; FreeSWITCH is asked
nothing to list them.

Listen, whisper and barge are FreeSWITCH's `eavesdrop` (mod_dptools, the
media bug of switch_ivr_eavesdrop_session) on the leg of our user (the agent):
the supervisor's phone is rung with `bgapi originate` (our Job-UUID) and,
once answered, runs `eavesdrop(<agent leg>)`. On that leg, eavesdrop's
ED_MUX_WRITE (`eavesdrop_whisper_bleg`, DTMF 2) mixes the supervisor into what
the agent hears, ED_MUX_READ (`eavesdrop_whisper_aleg`, DTMF 1) into what the
agent's partner (the caller) hears. So: listen = neither (DTMF 0), whisper =
the agent hears (2), barge = both hear (3). With `eavesdrop_enable_dtmf` the
supervisor switches modes from the phone's keypad; the API switches them by
queueing the same digit on the supervisor's leg (`uuid_recv_dtmf`), so both
ways go through eavesdrop's own state. `*` ends the eavesdrop.

Never across accounts (the call, the supervisor's device and leg are all
looked up in the caller's account) and never on a call of a user whose
`listen_protected` flag is set.
"""
from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from engine.calls.originate import NOT_CONNECTED, CallRequest, resolve_device
from engine.errors import ServiceError
from engine.esl import quoting
from engine.esl.errors import CommandTimeout, ConnectionLost, ESLError
from engine.store.models import Account, ActiveCall, Extension, Queue, User

log = logging.getLogger("switchdesk.supervision")

CALL_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")
PHONE = re.compile(r"^\+?[0-9]{3,20}$")
MAX_LEGS = 20000  # live legs read for one listing
MODES = {"listen": ("false", "false", "0"), "whisper": ("false", "true", "2"), "barge": ("true", "true", "3")}
RING_SECONDS = 30
RESULT_MARGIN = 15.0


# -- active calls ---------------------------------------------------------------------------------------


def _leg(row: ActiveCall) -> dict[str, Any]:
    data = row.data or {}
    return {
        "id": row.uuid, "state": ("held" if data.get("held") else "talking") if row.answered else "ringing",
        "start_ts": row.seen_ms // 1000, "answer_ts": data.get("answer_ts"),
        "src_device_id": data.get("src_device_id"), "dst_device_id": data.get("dst_device_id"),
        "src_user_id": data.get("src_user_id"), "dst_user_id": data.get("dst_user_id"),
        "cid_num": data.get("cid_num"), "cid_name": data.get("cid_name"),
    }


def _call(call_id: str, rows: list[ActiveCall]) -> dict[str, Any]:
    first = next((r for r in rows if r.uuid == call_id), rows[0])
    data = first.data or {}
    others = [r for r in rows if r.uuid != call_id]
    connected = [r for r in others if r.answered]
    agent = next((r.data or {} for r in connected if (r.data or {}).get("dst_user_id") is not None), None)
    if any((r.data or {}).get("held") for r in rows if r.answered) and connected:
        state = "held"
    elif connected:
        state = "talking"
    elif first.started or (first.answered and data.get("type") == "queue"):
        state = "in_queue"
    else:
        state = "ringing"
    answers = [t for t in ((r.data or {}).get("answer_ts") for r in connected) if t]
    return {
        "call_id": call_id, "direction": data.get("type"), "state": state,
        "src_num": data.get("cid_num"), "cid_name": data.get("cid_name"), "dst_num": data.get("dst_num"),
        "queue_id": data.get("queue_id"),
        "agent_user_id": (agent or {}).get("dst_user_id", data.get("dst_user_id")),
        "src_user_id": data.get("src_user_id"), "src_device_id": data.get("src_device_id"),
        "dst_device_id": data.get("dst_device_id"), "lead_id": data.get("lead_id"),
        "start_ts": min(r.seen_ms for r in rows) // 1000, "answer_ts": min(answers) if answers else None,
        "legs": [_leg(r) for r in sorted(rows, key=lambda r: r.seen_ms)],
    }


def active_calls(account_id: int, *, queue_id: int | None = None, user_id: int | None = None) -> list[dict[str, Any]]:
    """Every live call of the account, oldest first, with its legs."""
    rows = list(ActiveCall.select().where((ActiveCall.account == account_id) & ActiveCall.ended_at.is_null())
                .order_by(ActiveCall.seen_ms).limit(MAX_LEGS))
    calls: dict[str, list[ActiveCall]] = {}
    for row in rows:
        calls.setdefault(row.call_id, []).append(row)
    out = [_call(call_id, legs) for call_id, legs in calls.items()]
    if queue_id is not None:
        out = [c for c in out if c["queue_id"] == queue_id]
    if user_id is not None:
        out = [c for c in out if user_id in _users(c)]
    return out


def _users(call: dict[str, Any]) -> set[int]:
    users = {call["agent_user_id"], call["src_user_id"]}
    for leg in call["legs"]:
        users.update((leg["src_user_id"], leg["dst_user_id"]))
    return {u for u in users if isinstance(u, int)}


def _live_legs(account_id: int, call_id: str) -> list[ActiveCall]:
    if not CALL_ID.match(call_id or ""):
        raise ServiceError(404, f"Call {call_id} not found")
    rows = list(ActiveCall.select().where((ActiveCall.account == account_id) & (ActiveCall.call_id == call_id)
                                          & ActiveCall.ended_at.is_null()).order_by(ActiveCall.seen_ms))
    if not rows:
        raise ServiceError(404, f"Call {call_id} not found")
    return rows


def get_call(account_id: int, call_id: str) -> dict[str, Any]:
    return _call(call_id, _live_legs(account_id, call_id))


# -- commands -------------------------------------------------------------------------------------------


def _client(engine: Any) -> Any:
    if engine is None:
        raise ServiceError(503, NOT_CONNECTED)
    try:
        return engine.commands.require_client()
    except ConnectionLost:
        raise ServiceError(503, NOT_CONNECTED) from None


def _api(engine: Any, command: str) -> str:
    client = _client(engine)
    try:
        return client.api(command, timeout=10, check=False)
    except (ConnectionLost, CommandTimeout):
        raise ServiceError(503, NOT_CONNECTED) from None


def hangup(engine: Any, account_id: int, call_id: str) -> int:
    """Hang up every live leg of the call; how many FreeSWITCH accepted."""
    rows = _live_legs(account_id, call_id)
    done = 0
    for row in rows:
        if _api(engine, f"uuid_kill {quoting.check_name(row.uuid)} NORMAL_CLEARING").startswith("+OK"):
            done += 1
    if not done:
        raise ServiceError(404, f"Call {call_id} not found (FreeSWITCH no longer has it)")
    return done


@dataclass(frozen=True)
class TransferTarget:
    extension: str | None = None
    queue_id: int | None = None
    number: str | None = None


def transfer(engine: Any, account_id: int, call_id: str, target: TransferTarget) -> str:
    """Send the call's outside party (the caller; on an outbound call, the called party) to an extension of
    the account, one of its queues or a number (through the account's dialplan); returns the moved leg."""
    rows = _live_legs(account_id, call_id)
    account = Account.get_by_id(account_id)
    domain = quoting.check_name(account.domain)
    first = next((r for r in rows if r.uuid == call_id), rows[0])
    leg = first
    if (first.data or {}).get("type") == "outbound":
        leg = next((r for r in rows if r.uuid != call_id and r.answered), None) or first
    if sum(x is not None for x in (target.extension, target.queue_id, target.number)) != 1:
        raise ServiceError(400, "give exactly one of extension, queue_id, number")
    if target.queue_id is not None:
        if not Queue.select().where((Queue.account == account_id) & (Queue.id == target.queue_id)).exists():
            raise ServiceError(404, f"Queue {target.queue_id} not found")
        queue = f"{target.queue_id}@{domain}"
        command = (f"uuid_transfer {leg.uuid} 'set:switchdesk_queue_id={target.queue_id},"
                   f"set:hangup_after_bridge=true,answer,callcenter:{queue},hangup' inline")
    elif target.extension is not None:
        if not Extension.select().where((Extension.account == account_id)
                                        & (Extension.number == target.extension)).exists():
            raise ServiceError(404, f"Extension {target.extension} not found")
        command = f"uuid_transfer {leg.uuid} {quoting.check_name(target.extension)} XML {domain}"
    else:
        if not PHONE.match(target.number or ""):
            raise ServiceError(400, "number: digits with an optional leading +")
        command = f"uuid_transfer {leg.uuid} {target.number} XML {domain}"
    reply = _api(engine, command)
    if not reply.startswith("+OK"):
        raise ServiceError(409, f"FreeSWITCH refused the transfer: {reply.strip()[:200]}")
    return leg.uuid


# -- listen, whisper, barge ---------------------------------------------------------------------------------


def _target_leg(rows: list[ActiveCall], call_id: str) -> ActiveCall:
    """Our user's leg: an answered further leg to one of our users (the agent), else the first leg when our
    user placed the call, else any answered leg."""
    answered = [r for r in rows if r.answered]
    for row in answered:
        if row.uuid != call_id and (row.data or {}).get("dst_user_id") is not None:
            return row
    for row in answered:
        if row.uuid == call_id and (row.data or {}).get("src_device_id") is not None:
            return row
    if answered:
        return answered[-1]
    raise ServiceError(409, f"Call {call_id} is not connected yet")


def _protected(account_id: int, rows: list[ActiveCall]) -> list[int]:
    users: set[int] = set()
    for row in rows:
        data = row.data or {}
        users.update(u for u in (data.get("src_user_id"), data.get("dst_user_id")) if isinstance(u, int))
    if not users:
        return []
    return [u for (u,) in User.select(User.id).where((User.account == account_id) & User.id.in_(list(users))
                                                      & (User.listen_protected == True)).tuples()]  # noqa: E712


@dataclass(frozen=True)
class SupervisionResult:
    ok: bool
    uuid: str
    target: str
    mode: str
    cause: str | None = None


def supervise(engine: Any, account_id: int, call_id: str, mode: str, *, acting_user_id: int,
              device_id: int | None = None, user_id: int | None = None) -> SupervisionResult:
    """Ring the supervisor's phone and, once answered, eavesdrop on the agent's leg in `mode`.

    Waits for the answer like click-to-call: a failed ring is a result (`ok` false, FreeSWITCH's cause).
    """
    if mode not in MODES:
        raise ServiceError(400, f"mode: one of {', '.join(MODES)}")
    rows = _live_legs(account_id, call_id)
    protected = _protected(account_id, rows)
    if protected:
        raise ServiceError(403, "Permission denied: the call's user is protected from being listened to")
    target = _target_leg(rows, call_id)
    account = Account.get_by_id(account_id)
    device = resolve_device(account_id, CallRequest(destination="0", device_id=device_id, user_id=user_id),
                            acting_user_id)
    on_call = {(r.data or {}).get(k) for r in rows for k in ("src_device_id", "dst_device_id")}
    if device.id in on_call:
        raise ServiceError(400, "the supervisor's device is on that call")
    whisper_aleg, whisper_bleg, _digit = MODES[mode]
    leg = str(uuid.uuid4())
    domain = quoting.check_name(account.domain)
    variables = quoting.channel_vars({
        "origination_uuid": leg,
        "switchdesk_account_id": account_id,
        "switchdesk_call_type": "internal",
        "switchdesk_supervised_call": call_id,
        "switchdesk_dst_num": mode,
        "origination_caller_id_number": mode,
        "origination_caller_id_name": mode,
        "originate_timeout": device.timeout or RING_SECONDS,
        "eavesdrop_enable_dtmf": "true",
        "eavesdrop_whisper_aleg": whisper_aleg,
        "eavesdrop_whisper_bleg": whisper_bleg,
    })
    contact = quoting.check_name(f"user/{device.sip_username}@{domain}")
    command = f"originate {variables}{contact} &eavesdrop({quoting.check_name(target.uuid)})"
    client = _client(engine)
    try:
        job = client.bgapi_async(command, timeout=10)
    except ConnectionLost:
        raise ServiceError(503, NOT_CONNECTED) from None
    except CommandTimeout:
        return SupervisionResult(False, leg, target.uuid, mode, "NO_RESULT")
    except ESLError as exc:
        return SupervisionResult(False, leg, target.uuid, mode, exc.text.strip())
    try:
        body = job.get_result(float(device.timeout or RING_SECONDS) + RESULT_MARGIN, check=False)
    except (ConnectionLost, CommandTimeout):
        return SupervisionResult(False, leg, target.uuid, mode, "NO_RESULT")
    if body.startswith("+OK"):
        log.info("supervision: %s on call %s (leg %s) by leg %s", mode, call_id, target.uuid, leg)
        return SupervisionResult(True, leg, target.uuid, mode)
    text = body.strip()
    return SupervisionResult(False, leg, target.uuid, mode, text[5:].strip() if text.startswith("-ERR ") else text)


def switch_mode(engine: Any, account_id: int, call_id: str, supervisor_leg: str, mode: str) -> None:
    """Switch a running session to `mode`: eavesdrop's own DTMF command, queued on the supervisor's leg."""
    if mode not in MODES:
        raise ServiceError(400, f"mode: one of {', '.join(MODES)}")
    if not CALL_ID.match(supervisor_leg or ""):
        raise ServiceError(404, f"Supervision session {supervisor_leg} not found")
    _live_legs(account_id, call_id)
    mine = ActiveCall.select().where((ActiveCall.uuid == supervisor_leg) & (ActiveCall.account == account_id)
                                     & ActiveCall.ended_at.is_null()).exists()
    supervised = _api(engine, f"uuid_getvar {supervisor_leg} switchdesk_supervised_call").strip()
    if not mine or supervised != call_id:
        raise ServiceError(404, f"Supervision session {supervisor_leg} not found")
    if _protected(account_id, _live_legs(account_id, call_id)):
        raise ServiceError(403, "Permission denied: the call's user is protected from being listened to")
    reply = _api(engine, f"uuid_recv_dtmf {supervisor_leg} {MODES[mode][2]}")
    if not reply.startswith("+OK"):
        raise ServiceError(409, f"FreeSWITCH refused: {reply.strip()[:200]}")
