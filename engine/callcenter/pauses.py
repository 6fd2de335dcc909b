"""Pause reasons: the ids setPause takes, each with an optional maximum duration.

mod_callcenter puts an agent On Break by itself (max-no-answer). The engine
records that as a pause too, under one reserved reason per account created on
first need, so reports and `agent:status` events always carry a pause id.

Change notifications (engine.store.changes), sent after the commit: `pause` — the
reason ids created, updated or deleted (their `max_duration` drives timers).
"""
from __future__ import annotations

from typing import Any

import peewee

from engine.errors import ServiceError
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import AgentState, PauseReason

SYSTEM_REASON_NAME = "On Break"


def get_reason(account_id: int, reason_id: int) -> PauseReason:
    return PauseReason.owned(account_id, reason_id)


def system_reason(account_id: int) -> PauseReason:
    """The account's reserved On Break reason, created the first time anything needs it."""
    reason = PauseReason.get_or_none((PauseReason.account == account_id) & PauseReason.system)
    if reason is not None:
        return reason
    try:
        with db.atomic():
            return PauseReason.create(account=account_id, name=SYSTEM_REASON_NAME, max_duration=0, system=True)
    except peewee.IntegrityError:
        # Created at the same moment by another request: the name is unique per account.
        return PauseReason.get((PauseReason.account == account_id) & PauseReason.system)


def _refuse_system(reason: PauseReason) -> None:
    if reason.system:
        raise ServiceError(400, f"Pause reason {reason.id} is the system's own {reason.name!r}: it cannot be changed")


def _check_name(account_id: int, name: str, exclude_id: int | None) -> None:
    if name.strip().lower() == SYSTEM_REASON_NAME.lower():
        raise ServiceError(400, f"name: {SYSTEM_REASON_NAME!r} is reserved for mod_callcenter's own break")
    if PauseReason.name_taken(account_id, name, exclude_id):
        raise ServiceError(409, f"name: a pause reason named {name!r} exists")


def save_reason(account_id: int, reason_id: int | None, fields: dict[str, Any]) -> PauseReason:
    """Create (`reason_id` None) or change a reason; only the given fields change."""
    pending = Pending()
    try:
        with db.atomic():
            reason = PauseReason(account=account_id) if reason_id is None else get_reason(account_id, reason_id)
            _refuse_system(reason)
            if "name" in fields:
                _check_name(account_id, fields["name"], reason.id)
            for name, value in fields.items():
                setattr(reason, name, value)
            reason.save()
            pending.add("pause", account_id, [reason.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a pause reason named {fields.get('name')!r} exists") from None
    pending.send()
    return reason


def delete_reason(account_id: int, reason_id: int) -> None:
    """Delete a client's reason; 409 while an agent is paused with it (its pause would lose its id)."""
    pending = Pending()
    with db.atomic():
        reason = get_reason(account_id, reason_id)
        _refuse_system(reason)
        using = [s.user_id for s in AgentState.select(AgentState.user).where(AgentState.pause == reason.id)]
        if using:
            raise ServiceError(409, f"Pause reason {reason.id} is in force for user "
                                    f"{', '.join(str(u) for u in sorted(using))}", {"ids": sorted(using)})
        reason.delete_instance()
        pending.add("pause", account_id, [reason_id])
    pending.send()
