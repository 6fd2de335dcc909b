"""The legs the call-events plugin has seen, kept in memory as their `ActiveCall` rows were last written.

Every channel event of a leg used to read the leg's row (and the rows of the call's first leg and of the
other leg) before deciding anything: two or three SELECTs per event, a third of the plugin's cost on the
real switch. The rows are written by this process only (the call-events plugin, through `callevents`, and
`reconcile`, which tells this module), so the copy kept here is the row. It is written through: the
database is updated first, in the event's transaction, and the copy after; a leg not here (a restart, a
leg evicted from the bounded store) is read from its row as before.

What may be stale is never trusted to *emit*: the flags (`rang`, `answered`, `started`) and `ended` only
ever go from false to true in the database, so a true here is true there and lets us skip the conditional
UPDATE that would change nothing; a false still runs the conditional UPDATE, which decides. A failed
event (any exception while its transaction was open) forgets its leg, and a rolled-back batch forgets
every leg, so a copy never gets ahead of a row that was not committed.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from engine.store.db import db

# Legs kept (live and recently ended): about 100 bytes plus the fields' dict each. Far more than the
# channels one FreeSWITCH carries; the oldest seen are dropped first and read from their rows if seen again.
MAX_LEGS = 20_000


class Leg:
    """One leg's row as last written: the fields, the emitted-once flags, whether it has ended."""

    __slots__ = ("account_id", "answered", "call_id", "data", "ended", "fresh", "rang", "seen_ms", "started", "uuid")

    def __init__(self, uuid: str, account_id: int, call_id: str, seen_ms: int, data: dict[str, Any], *,
                 rang: bool = False, answered: bool = False, started: bool = False, ended: bool = False) -> None:
        self.uuid, self.account_id, self.call_id, self.seen_ms, self.data = uuid, account_id, call_id, seen_ms, data
        self.rang, self.answered, self.started, self.ended = rang, answered, started, ended
        # flags the row's INSERT set for the event that created it, not yet claimed by its `_once`
        self.fresh: set[str] = set()


_legs: OrderedDict[str, Leg] = OrderedDict()
_bound: list[Any] = [None]  # the database the copies are of: another one (tests, tools) starts afresh


def get(uid: str) -> Leg | None:
    if _bound[0] is not db.obj:
        _legs.clear()
        _bound[0] = db.obj
    return _legs.get(uid)


def put(leg: Leg) -> Leg:
    if _bound[0] is not db.obj:
        _legs.clear()
        _bound[0] = db.obj
    _legs[leg.uuid] = leg
    if len(_legs) > MAX_LEGS:
        _legs.popitem(last=False)
    return leg


def forget(uid: str) -> None:
    _legs.pop(uid, None)


def forget_all() -> None:
    """After a rollback of several events' writes: nothing kept may be ahead of the database."""
    _legs.clear()


def ended(uid: str) -> None:
    """`reconcile` ended the leg's row."""
    leg = _legs.get(uid)
    if leg is not None:
        leg.ended = True


def forget_ended() -> None:
    """The ended rows were purged: a purged leg is read from the database (where it is gone) if seen again."""
    for uid in [uid for uid, leg in _legs.items() if leg.ended]:
        del _legs[uid]
