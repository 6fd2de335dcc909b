"""Time groups as stored configuration; the schedule logic itself is the pure engine.callcenter.timegroups.

Change notifications (engine.store.changes), sent after the commit: `timegroup` —
the ids created, updated or deleted, so the engine re-evaluates the tiers that
follow them (a tier exists in mod_callcenter only while its group is open).
"""
from __future__ import annotations

from typing import Any

import peewee

from engine.errors import ServiceError
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, Queue, Tier, TimeGroup


def get_timegroup(account_id: int, timegroup_id: int) -> TimeGroup:
    return TimeGroup.owned(account_id, timegroup_id)


def _check_name(account_id: int, name: str, exclude_id: int | None) -> None:
    if TimeGroup.name_taken(account_id, name, exclude_id):
        raise ServiceError(409, f"name: a time group named {name!r} exists")


def save_timegroup(account_id: int, timegroup_id: int | None, fields: dict[str, Any]) -> TimeGroup:
    """Create or change a time group; `fields` are already normalised. A new group without a
    time zone takes the account's."""
    pending = Pending()
    try:
        with db.atomic():
            if timegroup_id is None:
                group = TimeGroup(account=account_id)
                if "timezone" not in fields:
                    group.timezone = Account.select(Account.timezone).where(Account.id == account_id).scalar()
            else:
                group = get_timegroup(account_id, timegroup_id)
            if "name" in fields:
                _check_name(account_id, fields["name"], group.id)
            for name, value in fields.items():
                setattr(group, name, value)
            group.save()
            pending.add("timegroup", account_id, [group.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a time group named {fields.get('name')!r} exists") from None
    pending.send()
    return group


def _in_use(group: TimeGroup) -> ServiceError | None:
    queues = list(
        Queue.select(Queue.id, Queue.name).join(Tier).where(Tier.timegroup == group.id)
        .group_by(Queue.id, Queue.name).order_by(Queue.id)
    )
    if not queues:
        return None
    names = ", ".join(f"{q.name} ({q.id})" for q in queues)
    return ServiceError(409, f"Time group {group.id} is used by tiers of queue(s) {names}: change them first",
                        {"queue_ids": [q.id for q in queues]})


def delete_timegroup(account_id: int, timegroup_id: int) -> None:
    """Refused (409 naming the queues) while a tier follows the group: Tier.timegroup is ON DELETE RESTRICT."""
    pending = Pending()
    try:
        with db.atomic():
            group = get_timegroup(account_id, timegroup_id)
            refusal = _in_use(group)
            if refusal is not None:
                raise refusal
            group.delete_instance()
            pending.add("timegroup", account_id, [timegroup_id])
    except peewee.IntegrityError:
        # A tier took the group between the check and the delete.
        raise ServiceError(409, f"Time group {timegroup_id} is used by a tier: change it first") from None
    pending.send()
