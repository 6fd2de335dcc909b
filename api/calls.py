"""Live calls for supervisors: list, one call, hang up, transfer, listen / whisper / barge
(engine/calls/supervision.py). Permission module `supervision`."""
from __future__ import annotations

from typing import Annotated

from flask import Blueprint, current_app
from pydantic import BeforeValidator, Field

from api.auth import Principal
from api.envelope import fail, ok
from api.spec import Id, Schema, endpoint
from engine.calls import recordings, supervision
from engine.store.models import Recording

bp = Blueprint("calls", __name__, url_prefix="/api")


def _text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


_LEG = {"type": "object", "properties": {
    "id": {"type": "string"}, "state": {"type": "string", "enum": ["ringing", "talking", "held"]},
    "start_ts": {"type": "integer"}, "answer_ts": {"type": ["integer", "null"]}}}
_CALL = {"type": "object", "description": "a live call", "properties": {
    "call_id": {"type": "string", "description": "the Unique-ID of its first leg (as in the call events)"},
    "direction": {"type": ["string", "null"], "description": "the call events' `type`"},
    "state": {"type": "string", "enum": ["ringing", "in_queue", "talking", "held"]},
    "src_num": {"type": ["string", "null"]}, "dst_num": {"type": ["string", "null"]},
    "queue_id": {"type": ["integer", "null"]}, "agent_user_id": {"type": ["integer", "null"]},
    "start_ts": {"type": "integer"}, "answer_ts": {"type": ["integer", "null"]},
    "legs": {"type": "array", "items": _LEG}}}


class ActiveQuery(Schema):
    queue_id: Id | None = None
    user_id: Id | None = Field(None, description="calls this user is on (as agent, caller or callee)")


def _list(principal: Principal, query: ActiveQuery):
    return ok(supervision.active_calls(principal.account_id, queue_id=query.queue_id, user_id=query.user_id))


@endpoint(bp, "/call/active", ["GET"], summary="The account's live calls with their legs", tag="calls",
          permission="supervision", query=ActiveQuery, response={"type": "array", "items": _CALL})
def active_calls(principal: Principal, query: ActiveQuery):
    """From the call state the engine keeps (the call events): direction, numbers, queue, agent, state
    (`ringing`, `in_queue`, `talking`, `held`: a leg put on hold, FreeSWITCH's CHANNEL_HOLD), start and
    answer times, and each leg."""
    return _list(principal, query)


@endpoint(bp, "/cc_agent/active_calls", ["GET"], summary="The account's live calls (the vendor clients' path)",
          tag="calls", permission="supervision", query=ActiveQuery, response={"type": "array", "items": _CALL})
def cc_agent_active_calls(principal: Principal, query: ActiveQuery):
    """As `GET /api/call/active`."""
    return _list(principal, query)


@endpoint(bp, "/call/<call_id>", ["GET"], summary="One live call", tag="calls", permission="supervision",
          response=_CALL)
def get_call(principal: Principal, call_id: str):
    """404 once the call has ended (its record is then in `GET /api/cdr`), or for another account's call."""
    return ok(supervision.get_call(principal.account_id, call_id))


def _engine():
    return current_app.config.get("ENGINE")


@endpoint(bp, "/call/<call_id>/hangup", ["POST"], summary="Hang up a live call", engine=True, tag="calls",
          permission="supervision", errors={503: "FreeSWITCH is not connected"})
def hangup(principal: Principal, call_id: str):
    """Every live leg of the call is hung up (NORMAL_CLEARING)."""
    return ok({"legs": supervision.hangup(_engine(), principal.account_id, call_id)})


class TransferBody(Schema):
    extension: Annotated[str, BeforeValidator(_text), Field(pattern=r"^[0-9*#]{1,32}$")] | None = None
    queue_id: Id | None = None
    number: Annotated[str, BeforeValidator(_text), Field(pattern=r"^\+?[0-9]{3,20}$")] | None = None


@endpoint(bp, "/call/<call_id>/transfer", ["POST"], summary="Transfer a live call to an extension, queue or number",
          engine=True, tag="calls", permission="supervision", body=TransferBody,
          errors={409: "FreeSWITCH refused the transfer", 503: "FreeSWITCH is not connected"})
def transfer(principal: Principal, call_id: str, body: TransferBody):
    """Exactly one of `extension` (of the account), `queue_id`, `number` (through the account's dialplan and
    outbound gateway). The outside party moves (the caller; on an outbound call the called party); the
    agent's leg hangs up. Returns the leg that moved."""
    leg = supervision.transfer(_engine(), principal.account_id, call_id, supervision.TransferTarget(
        extension=body.extension, queue_id=body.queue_id, number=body.number))
    return ok({"uuid": leg})


class SuperviseBody(Schema):
    device_id: Id | None = Field(None, description="the supervisor's phone")
    user_id: Id | None = Field(None, description="the supervisor: its checked-in phone, else its first device")
    session: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{8,64}$")] | None = Field(
        None, description="a running session's `uuid`: switch it to this mode instead of ringing a phone")


_SESSION = {"type": "object", "properties": {
    "uuid": {"type": "string", "description": "the supervisor's leg (the session)"},
    "target": {"type": "string", "description": "the agent's leg eavesdropped on"},
    "mode": {"type": "string", "enum": list(supervision.MODES)}}}


def _supervise(principal: Principal, call_id: str, body: SuperviseBody, mode: str):
    if body.session:
        supervision.switch_mode(_engine(), principal.account_id, call_id, body.session, mode)
        return ok({"uuid": body.session, "mode": mode})
    result = supervision.supervise(_engine(), principal.account_id, call_id, mode, acting_user_id=principal.user.id,
                                   device_id=body.device_id, user_id=body.user_id)
    data = {"uuid": result.uuid, "target": result.target, "mode": mode}
    if not result.ok:
        return fail(200, result.cause or "FAILED", data)
    return ok(data)


_SUPERVISE_DOC = {"permission": "supervision", "body": SuperviseBody, "response": _SESSION, "tag": "calls",
                  "errors": {403: "the call's user is protected from being listened to (`listen_protected`)",
                             409: "the call is not connected yet", 503: "FreeSWITCH is not connected"}}


@endpoint(bp, "/call/<call_id>/listen", ["POST"], summary="Listen to a call from the supervisor's phone",
          engine=True, **_SUPERVISE_DOC)
def listen(principal: Principal, call_id: str, body: SuperviseBody):
    """Rings the supervisor's phone (`device_id`, `user_id`, else the caller's own) and once answered it
    hears both sides; nobody hears it. On the phone's keypad: 0 listen, 2 whisper, 3 barge, 1 talk to the
    caller only, * leave. Answers once the phone answered; a phone that does not answer is HTTP 200 with
    `success: false` and the hang-up cause in `msg`. With `session`, switches that session to listening."""
    return _supervise(principal, call_id, body, "listen")


@endpoint(bp, "/call/<call_id>/whisper", ["POST"], summary="Coach the agent: the agent hears the supervisor, "
          "the caller does not", engine=True, **_SUPERVISE_DOC)
def whisper(principal: Principal, call_id: str, body: SuperviseBody):
    """As listen, and the agent hears the supervisor."""
    return _supervise(principal, call_id, body, "whisper")


@endpoint(bp, "/call/<call_id>/barge", ["POST"], summary="Step into a call: agent and caller hear the supervisor",
          engine=True, **_SUPERVISE_DOC)
def barge(principal: Principal, call_id: str, body: SuperviseBody):
    """As listen, and both the agent and the caller hear the supervisor."""
    return _supervise(principal, call_id, body, "barge")


_REC = {"type": "object", "properties": {"id": {"type": "integer"}, "paused": {"type": "boolean"}}}


@endpoint(bp, "/call/<call_id>/recording/pause", ["POST"], summary="Pause the call's recording (silence is "
          "recorded meanwhile, e.g. while a card number is given)", engine=True, tag="recordings",
          permission="recordings", response=_REC,
          errors={409: "FreeSWITCH refused", 503: "FreeSWITCH is not connected"})
def pause_recording(principal: Principal, call_id: str):
    """404 when the call has no recording in progress."""
    row: Recording = recordings.set_paused(_engine(), principal.account_id, call_id, True)
    return ok({"id": row.id, "paused": True})


@endpoint(bp, "/call/<call_id>/recording/resume", ["POST"], summary="Resume the call's paused recording",
          engine=True, tag="recordings", permission="recordings", response=_REC,
          errors={409: "FreeSWITCH refused", 503: "FreeSWITCH is not connected"})
def resume_recording(principal: Principal, call_id: str):
    row: Recording = recordings.set_paused(_engine(), principal.account_id, call_id, False)
    return ok({"id": row.id, "paused": False})

