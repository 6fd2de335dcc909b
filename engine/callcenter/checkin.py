"""Check-in codes: the agent dials ``***NNNNNN`` from a phone to check in with that phone.

``GET /api/cc_agent/checkIn`` issues a one-time code for a user; the account's
dialplan (api/freeswitch.py) hands ``***<code>`` to the engine's outbound-socket
server (``socket 127.0.0.1:8040 async full``), and :func:`handle_call` redeems
it for the device that dialled, answers, confirms with a tone and hangs up.

The device is known only from what FreeSWITCH's directory set on the
authenticated call (``switchdesk_device_id``, ``user_context`` = the account's
domain), never from the From header, so a code works only from a phone of the
account it was issued in.

Codes are stored as dialled. A keyed digest would need a secret shared by every
API and engine process (SWITCHDESK_SECRET_KEY is optional), and an unkeyed one
over six digits is reversed in a million tries; what keeps a code safe is that
it lives five minutes, works once, works only from a registered phone of the
same account, and guessing is capped at five wrong codes per phone per fifteen
minutes.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import peewee

from engine.errors import ServiceError
from engine.store.db import connection, db
from engine.store.models import Account, CheckinCode, CheckinFailure, Device, User, now

if TYPE_CHECKING:
    from engine.esl.outbound import OutboundSession

log = logging.getLogger("switchdesk.checkin")

PREFIX = "***"
CODE_DIGITS = 6
CODE_TTL = 300  # seconds a code stays valid
MAX_FAILURES = 5  # wrong codes per device ...
FAILURE_WINDOW = 900  # ... per this many seconds, then every attempt fails unchecked
_ISSUE_ATTEMPTS = 30

CONFIRM_TONE = "tone_stream://%(200,0,800)"
ERROR_TONE = "tone_stream://%(150,100,380);loops=3"
_DIALLED = re.compile(r"^\*\*\*(\d{6,12})$")


# -- issuing ---------------------------------------------------------------------------------------


def _new_code(digits: int) -> str:
    return f"{secrets.randbelow(10 ** digits):0{digits}d}"


def issue_code(account_id: int, user_id: int, *, force_checkout: bool = False) -> str:
    """A fresh code for the user (``***NNNNNN``), unique among the account's live codes.

    A new code replaces the user's earlier unused ones: the last code shown is
    the one to dial, and fewer live codes leave less to guess. Codes that have
    expired are purged here, which keeps the (account, code) index free for
    reuse. On a collision with a live code another is drawn, one digit longer
    after every few tries, so a busy account still gets a code.
    """
    user = User.get_or_none((User.id == user_id) & (User.account == account_id))
    if user is None:
        raise ServiceError(404, f"User {user_id} not found")
    if not user.is_agent:
        raise ServiceError(400, f"user_id: user {user_id} is not an agent (set is_agent first)")
    if not user.active:
        raise ServiceError(400, f"user_id: user {user_id} is not active")
    t = now()
    with db.atomic():
        CheckinCode.delete().where(
            (CheckinCode.account == account_id)
            & ((CheckinCode.expires < t) | ((CheckinCode.user == user_id) & CheckinCode.used_at.is_null()))
        ).execute()
        for attempt in range(_ISSUE_ATTEMPTS):
            code = _new_code(CODE_DIGITS + attempt // 5)
            try:
                with db.atomic():  # a savepoint: a collision undoes only this insert
                    CheckinCode.create(account=account_id, user=user_id, code=code,
                                       force_checkout=force_checkout, expires=t + CODE_TTL, ts=t)
            except peewee.IntegrityError:
                continue
            return PREFIX + code
    raise ServiceError(503, "No check-in code available, try again")


# -- redeeming -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redemption:
    """What a dialled code did: ``ok`` with the agent, or why not (``reason`` is for the log)."""

    ok: bool
    reason: str
    user_id: int | None = None


def _locked(failure: CheckinFailure | None, t: int) -> bool:
    return failure is not None and t - failure.first_failure < FAILURE_WINDOW and failure.failures >= MAX_FAILURES


def _record_failure(account_id: int, device_id: int, failure: CheckinFailure | None, t: int) -> None:
    if failure is None:
        try:
            with db.atomic():
                CheckinFailure.create(device=device_id, account=account_id, failures=1, first_failure=t)
            return
        except peewee.IntegrityError:  # another call from the same phone got there first
            failure = CheckinFailure.get_by_id(device_id)
    if t - failure.first_failure >= FAILURE_WINDOW:
        CheckinFailure.update(failures=1, first_failure=t).where(CheckinFailure.device == device_id).execute()
    else:
        CheckinFailure.update(failures=CheckinFailure.failures + 1).where(
            CheckinFailure.device == device_id).execute()


def device_of_call(device_id: str | None, domain: str | None) -> Device | None:
    """The device FreeSWITCH's directory authenticated, if it really is in that domain's account."""
    if not device_id or not device_id.isdigit() or not domain:
        return None
    return (Device.select().join(Account, on=(Device.account == Account.id))
            .where((Device.id == int(device_id)) & (Account.domain == domain.lower())).first())


def redeem(device: Device, code: str) -> Redemption:
    """Check the code's user in with ``device``; a wrong, used or expired code changes nothing but the count.

    The code is spent in one transaction (a conditional update, so two calls
    cannot both spend it), then engine.callcenter.agents.check_in runs in its own: it
    tells the engine once it has committed, which it cannot do inside ours.
    When the check-in is refused (the device is busy and the code does not
    force) the code is given back, so the agent can dial it again once the
    other agent has checked out. A correct code does not clear the count of
    wrong ones: the window runs out on its own.
    """
    from engine.callcenter import agents  # the agent state service

    t = now()
    account_id = device.account_id
    with db.atomic():
        failure = CheckinFailure.get_or_none(CheckinFailure.device == device.id)
        if _locked(failure, t):
            return Redemption(False, "locked out: too many wrong codes")
        match = _DIALLED.match(code or "")
        row = None
        if match:
            row = CheckinCode.get_or_none(
                (CheckinCode.account == account_id) & (CheckinCode.code == match.group(1))
                & CheckinCode.used_at.is_null() & (CheckinCode.expires >= t))
        if row is None:
            _record_failure(account_id, device.id, failure, t)
            return Redemption(False, "wrong, used or expired code")
        spent = CheckinCode.update(used_at=t).where(
            (CheckinCode.id == row.id) & CheckinCode.used_at.is_null()).execute()
        if spent != 1:  # spent by a simultaneous call
            return Redemption(False, "code already used")
    try:
        agents.check_in(account_id, row.user_id, device.id, force=row.force_checkout)
    except ServiceError:
        CheckinCode.update(used_at=None).where((CheckinCode.id == row.id) & (CheckinCode.used_at == t)).execute()
        raise
    return Redemption(True, "checked in", row.user_id)


def redeem_for_call(device_id: str | None, domain: str | None, code: str | None) -> Redemption:
    """Redeem a code dialled on a call, identified by the directory's channel variables."""
    device = device_of_call(device_id, domain)
    if device is None:
        return Redemption(False, "not a device of a switchdesk account")
    try:
        return redeem(device, code or "")
    except ServiceError as exc:
        return Redemption(False, exc.msg)


# -- the outbound-socket call ----------------------------------------------------------------------


def handle_call(session: OutboundSession) -> None:
    """The outbound-socket handler: answer, redeem, play the confirmation or error tone, hang up.

    The database work happens between answer and playback with no ESL wait
    inside it; ``linger`` keeps the socket until the hang-up events arrived,
    as recorded in outbound-socket-checkin.esl.
    """
    session.myevents()
    session.linger()
    session.answer(timeout=10)
    with connection():
        result = redeem_for_call(
            session.get("variable_switchdesk_device_id"),
            session.get("variable_user_context"),
            session.destination_number,
        )
    log.info("check-in call %s from device %s: %s", session.uuid,
             session.get("variable_switchdesk_device_id"), result.reason)
    if not session.hung_up:
        session.playback(CONFIRM_TONE if result.ok else ERROR_TONE, timeout=15)
    if not session.hung_up:
        session.hangup()
    session.wait_hangup(5)


def make_server(host: str = "127.0.0.1", port: int = 8040, **kwargs: object):
    """The outbound-socket server for check-in calls (started by ``switchdesk serve``)."""
    from engine.esl.outbound import OutboundServer

    return OutboundServer(handle_call, host, port, **kwargs)
