"""Click-to-call: ring the agent's phone, and once it is answered, dial the destination from it.

One ``bgapi originate`` with our own Job-UUID on the engine's command
connection (DESIGN.md, ESL connections): the A leg is the agent's device
(``user/<sip user>@<domain>``, so FreeSWITCH asks our directory), and when the
agent answers the leg runs ``transfer`` to the destination in the account's
dialplan context, where internal extensions route locally and other numbers go
to the account's outbound gateway. The BACKGROUND_JOB comes when the agent
answered (``+OK <uuid>``) or the leg failed (``-ERR <CAUSE>``).

Client strings (the destination, caller ids, lead id, tags) travel only as
channel variables through engine.esl.quoting; the command line carries ids,
the SIP user name and the domain, all validated when they were stored. The
transfer reads the destination from ``${switchdesk_dst_num}``, which FreeSWITCH
expands when the application runs. Channel variables for the call events
(engine/calls/callevents.py): ``switchdesk_account_id``, ``switchdesk_call_type``,
``switchdesk_src_device_id``, ``switchdesk_src_user_id``, ``switchdesk_dst_num``,
``switchdesk_lead_id``, ``switchdesk_tags``.
"""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import ServiceError
from engine.esl import quoting
from engine.esl.client import ESLClient
from engine.esl.errors import CommandTimeout, ConnectionLost, ESLError
from engine.store.models import Account, AgentState, Device, Extension, User

log = logging.getLogger("switchdesk.calls")

NOT_CONNECTED = "FreeSWITCH is not connected"
# digits with an optional leading +, or a feature code / extension with * and #
DESTINATION = re.compile(r"^\+?[0-9*#]{1,32}$")
RESULT_MARGIN = 15.0  # seconds past the ring timeout before we stop waiting for the job
ACK_TIMEOUT = 10.0  # seconds for bgapi's "+OK Job-UUID"


class CommandConnection(Protocol):
    """What originate needs of the engine: the supervised command connection."""

    def require_client(self) -> ESLClient: ...


@dataclass(frozen=True)
class CallRequest:
    """Everything the caller asked for; strings are the client's, unvalidated beyond the API schema."""

    destination: str
    device_id: int | None = None
    user_id: int | None = None
    extension: str | None = None
    cid: str | None = None
    cnam: str | None = None
    display_cid: str | None = None
    display_cnam: str | None = None
    lead_id: str | None = None
    tags: Sequence[str] = ()
    sip_auto_answer: bool = False
    # more switchdesk_* call-event variables (the dialer's campaign_id, dialer_id, call_script, lead_name)
    variables: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OriginateResult:
    """``uuid`` of the agent's leg when it answered, else FreeSWITCH's hang-up ``cause``."""

    ok: bool
    uuid: str
    cause: str | None = None
    command: str = ""


# -- whose phone rings ----------------------------------------------------------------------------


def _user_device(account_id: int, user_id: int) -> Device:
    """The device the agent is checked in with, else the user's first device (ring order)."""
    user = User.get_or_none((User.id == user_id) & (User.account == account_id))
    if user is None:
        raise ServiceError(404, f"User {user_id} not found")
    state = AgentState.get_or_none(AgentState.user == user_id)
    if state is not None and state.device_id is not None:
        device = Device.get_or_none((Device.id == state.device_id) & (Device.account == account_id))
        if device is not None:
            return device
    device = (Device.of(account_id).where(Device.user == user_id).order_by(Device.ring, Device.id).first())
    if device is None:
        raise ServiceError(400, f"user {user_id} has no device")
    return device


def resolve_device(account_id: int, request: CallRequest, acting_user_id: int) -> Device:
    """The agent's device: device_id, else user_id, else extension, else the caller's own."""
    if request.device_id is not None:
        return Device.owned(account_id, request.device_id)
    if request.user_id is not None:
        return _user_device(account_id, request.user_id)
    if request.extension is not None:
        ext = Extension.get_or_none((Extension.account == account_id) & (Extension.number == request.extension))
        if ext is None:
            raise ServiceError(404, f"Extension {request.extension} not found")
        if ext.target_type == "device":
            device = Device.get_or_none((Device.id == ext.target_id) & (Device.account == account_id))
            if device is None:
                raise ServiceError(400, f"extension: {request.extension} routes to no device")
            return device
        if ext.target_type == "user":
            return _user_device(account_id, ext.target_id)
        raise ServiceError(400, f"extension: {request.extension} routes to a {ext.target_type}, not a device or user")
    return _user_device(account_id, acting_user_id)


def callers_phone(device: Device, acting_user_id: int) -> bool:
    """Whether the phone is the caller's alone: assigned to it or checked in with by it, and neither
    assigned to nor checked in with by another user (ringing that phone acts on that user)."""
    holder = AgentState.select(AgentState.user).where(AgentState.device == device.id).scalar()
    return {device.user_id, holder} - {None} == {acting_user_id}


# -- the command ----------------------------------------------------------------------------------


def channel_variables(account: Account, device: Device, request: CallRequest, call_uuid: str) -> dict[str, Any]:
    """The originate's ``{...}`` variables: ours for the call events, caller ids, auto answer."""
    variables: dict[str, Any] = {
        "origination_uuid": call_uuid,
        "switchdesk_account_id": account.id,
        "switchdesk_call_type": "outbound",
        "switchdesk_src_device_id": device.id,
        "switchdesk_dst_num": request.destination,
    }
    if device.user_id is not None:
        variables["switchdesk_src_user_id"] = device.user_id
    if request.lead_id:
        variables["switchdesk_lead_id"] = request.lead_id
    if request.tags:
        variables["switchdesk_tags"] = ",".join(request.tags)
    for name, value in request.variables:
        if name.startswith("switchdesk_") and name not in variables:
            variables[name] = value
    # What the agent's phone shows: who is being called, unless the client says otherwise.
    variables["origination_caller_id_number"] = request.display_cid or request.destination
    variables["origination_caller_id_name"] = request.display_cnam or request.display_cid or request.destination
    # What the destination sees: the client's caller id, else the device's own.
    cid = request.cid or device.cid_num
    cnam = request.cnam or device.cid_name
    if cid:
        variables["effective_caller_id_number"] = cid
    if cnam:
        variables["effective_caller_id_name"] = cnam
    variables["originate_timeout"] = device.timeout or 30
    if request.sip_auto_answer:
        variables["sip_auto_answer"] = "true"
        variables["sip_h_Call-Info"] = f"<sip:{account.domain}>;answer-after=0"
    return variables


def originate_command(account: Account, device: Device, request: CallRequest, call_uuid: str) -> str:
    """``originate {vars}user/<sip user>@<domain> &transfer('${switchdesk_dst_num} XML <domain>')``.

    The application's arguments are single-quoted: originate splits its arguments on spaces outside
    quotes, and unquoted, transfer would get the number alone and look it up in context `default`.
    """
    if not DESTINATION.match(request.destination or ""):
        raise ServiceError(400, "destination: not a dialable number")
    domain = quoting.check_name(account.domain)
    try:
        variables = quoting.channel_vars(channel_variables(account, device, request, call_uuid))
    except ValueError as exc:
        raise ServiceError(400, str(exc)) from None
    contact = quoting.check_name(f"user/{device.sip_username}@{domain}")
    return f"originate {variables}{contact} &transfer('${{switchdesk_dst_num}} XML {domain}')"


def _cause(body: str) -> str:
    """``-ERR NO_ANSWER\\n`` -> ``NO_ANSWER``; anything else stripped whole."""
    text = body.strip()
    return text[5:].strip() if text.startswith("-ERR ") else text


def originate(
    account_id: int,
    request: CallRequest,
    *,
    acting_user_id: int,
    commands: CommandConnection | None,
    may_act_for_others: bool = True,
    call_uuid: str | None = None,
) -> OriginateResult:
    """Place the click-to-call and wait until the agent answered or the leg failed.

    Raises ServiceError: 404/400 for ids and numbers, 403 when the phone is
    another user's and ``may_act_for_others`` is false, 503 when FreeSWITCH is
    not connected. Once the command is out, every outcome is a result (never a
    5xx): the call may be ringing, and a retry would place it twice. No
    database transaction is open while FreeSWITCH works: it fetches the
    directory from us before it rings.
    """
    account = Account.get_by_id(account_id)
    device = resolve_device(account_id, request, acting_user_id)
    if not may_act_for_others and not callers_phone(device, acting_user_id):
        raise ServiceError(403, "Permission denied: agents")
    call_uuid = call_uuid or str(uuid.uuid4())
    command = originate_command(account, device, request, call_uuid)
    if commands is None:
        raise ServiceError(503, NOT_CONNECTED)
    try:
        client = commands.require_client()
        job = client.bgapi_async(command, timeout=ACK_TIMEOUT)
    except ConnectionLost:  # gone before or while sending: mod_event_socket started no job
        raise ServiceError(503, NOT_CONNECTED) from None
    except CommandTimeout:  # connected but no "+OK Job-UUID": the job may have started
        log.warning("originate %s: bgapi not acknowledged in time", call_uuid)
        return OriginateResult(False, call_uuid, "NO_RESULT", command)
    except ESLError as exc:  # bgapi itself refused: nothing was started
        return OriginateResult(False, call_uuid, _cause(exc.text), command)
    try:
        body = job.get_result(float(device.timeout or 30) + RESULT_MARGIN, check=False)
    except ConnectionLost:
        log.warning("originate %s: connection lost before the result", call_uuid)
        return OriginateResult(False, call_uuid, "CONNECTION_LOST", command)
    except CommandTimeout:
        log.warning("originate %s: no result in time", call_uuid)
        return OriginateResult(False, call_uuid, "NO_RESULT", command)
    if body.startswith("+OK"):
        return OriginateResult(True, body[3:].strip() or call_uuid, None, command)
    return OriginateResult(False, call_uuid, _cause(body), command)
