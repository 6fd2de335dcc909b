"""How long the history (15-minute and day rows) is kept: a year by default, cleaned up once a day."""
from __future__ import annotations

import os

from engine.store.db import db
from engine.store.models import (
    AgentDay,
    AgentInterval,
    AgentPauseDay,
    AgentPauseInterval,
    QueueDay,
    QueueInterval,
    now,
)

DAY = 86400
DEFAULT_RETENTION_DAYS = 366
BATCH = 5000  # rows per DELETE, so a first clean-up of a large history does not hold one long transaction


def retention_days() -> int:
    """`SWITCHDESK_STATS_RETENTION_DAYS` (at least 1), else a year."""
    try:
        days = int(os.environ.get("SWITCHDESK_STATS_RETENTION_DAYS", "") or DEFAULT_RETENTION_DAYS)
    except ValueError:
        days = DEFAULT_RETENTION_DAYS
    return max(1, days)


def clean_up(days: int | None = None, at: int | None = None) -> int:
    """Delete the 15-minute and day rows older than `days`; returns how many went."""
    cutoff = (at or now()) - (days or retention_days()) * DAY
    removed = 0
    for model, field, limit in ((QueueInterval, "start", cutoff), (AgentInterval, "start", cutoff),
                                (AgentPauseInterval, "start", cutoff), (QueueDay, "day", cutoff // DAY - 1),
                                (AgentDay, "day", cutoff // DAY - 1), (AgentPauseDay, "day", cutoff // DAY - 1)):
        while True:
            with db.atomic():
                ids = [r.id for r in model.select(model.id).where(getattr(model, field) < limit).limit(BATCH)]
                if ids:
                    model.delete().where(model.id.in_(ids)).execute()
            removed += len(ids)
            if len(ids) < BATCH:
                break
    return removed
