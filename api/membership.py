"""Queue membership rows as clients write them: `[id, mode, position, level, timegroup_id]`.

Shared by the queue side (`users`, the id is a user id), the user side
(`queues` / `queue_perms`, the id is a queue id) and the user record, so the
three read rows the same way. Missing trailing items take their defaults; a
bare id is a row of its own.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from api.spec import MAX_INT, Id, Schema, split_list
from engine.callcenter.queues import DEFAULT_MODE, TIER_MAX, Membership

MODE_DOC = (
    "Tier mode, a set of flags: 1 = the agent may join and leave the queue with setQueues; "
    "2 = joined automatically at check-in; 4 = locked: joined whenever checked in, setQueues cannot remove it. "
    "Valid values: 1, 2, 3 (= 1 + 2, the default) and 4."
)
_ITEMS = ("mode", "position", "level", "timegroup_id")
MAX_ROWS = 100000


def _no_timegroup(value: Any) -> Any:
    return None if value in (0, "0", "") else value


Mode = Annotated[int, Field(ge=1, le=4, description=MODE_DOC)]
TierRank = Annotated[int, Field(ge=0, le=TIER_MAX)]


class _Row(Schema):
    mode: Mode = DEFAULT_MODE
    position: TierRank = Field(1, description="mod_callcenter tier position (order within a level), 0..1000")
    level: TierRank = Field(1, description="mod_callcenter tier level (lower levels are offered first), 0..1000")
    timegroup_id: Annotated[Id | None, BeforeValidator(_no_timegroup)] = Field(
        None, description="a time group of the account that limits the membership to its schedule; null: always")

    id_field: ClassVar[str] = "id"
    # The 7-item rows a queue record shows (`[user_id, mode, position, level, name, timegroup_id, joined]`)
    # are read back too, so a GET record can be PUT as it is; name and joined are read-only.
    read_back: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _from_array(cls, value: Any) -> Any:
        id_field = cls.id_field
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text)
            except ValueError:
                return {id_field: text}
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return {id_field: value}
        if isinstance(value, list | tuple):
            if cls.read_back and len(value) == 7:
                return dict(zip((id_field, "mode", "position", "level", "timegroup_id"),
                                (*value[:4], value[5]), strict=True))
            if not 1 <= len(value) <= 5:
                also = " (or the 7 items of a queue record's row)" if cls.read_back else ""
                raise ValueError(f"a row is [{id_field}, mode, position, level, timegroup_id]: 1 to 5 items{also}")
            return dict(zip((id_field, *_ITEMS), value, strict=False))
        return value

    def membership(self) -> Membership:
        return Membership(getattr(self, self.id_field), self.mode, self.position, self.level, self.timegroup_id)


class MemberRow(_Row):
    """A queue's agent: `[user_id, mode, position, level, timegroup_id]`."""

    user_id: Id
    id_field: ClassVar[str] = "user_id"
    read_back: ClassVar[bool] = True


class QueueRow(_Row):
    """An agent's queue: `[queue_id, mode, position, level, timegroup_id]`."""

    queue_id: Id
    id_field: ClassVar[str] = "queue_id"


def _rows(value: Any) -> Any:
    """JSON array, JSON text in a form field, or comma-separated ids (each a row with defaults)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except (ValueError, RecursionError):
                raise ValueError("not a JSON array of rows") from None
        return split_list(text)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def _row_schema(first: str, read_back: bool = False) -> dict[str, Any]:
    id_item = {"type": "integer", "minimum": 1, "maximum": MAX_INT, "title": first}
    rank = {"type": "integer", "minimum": 0, "maximum": TIER_MAX}
    mode = {"type": "integer", "enum": [1, 2, 3, 4], "title": "mode"}
    timegroup = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INT, "title": "timegroup_id"}
    rows: list[dict[str, Any]] = [
        {"type": "integer", "minimum": 1, "maximum": MAX_INT},
        {"type": "array", "minItems": 1, "maxItems": 5, "prefixItems": [
            id_item, mode, {**rank, "title": "position"}, {**rank, "title": "level"}, timegroup]},
    ]
    also = ""
    if read_back:
        also = (" The 7-item rows of a queue record, [user_id, mode, position, level, name, timegroup_id, joined], "
                "are accepted too (name and joined are ignored).")
        rows.append({"type": "array", "minItems": 7, "maxItems": 7, "prefixItems": [
            id_item, mode, {**rank, "title": "position"}, {**rank, "title": "level"},
            {"type": ["string", "null"], "title": "name"}, timegroup, {"type": "boolean", "title": "joined"}]})
    return {
        "type": "array",
        "description": f"rows [{first}, mode, position, level, timegroup_id]; missing trailing items take "
                       f"their defaults (mode 3, position 1, level 1, timegroup_id null); a bare {first} is a "
                       f"row of its own. A JSON array, JSON text in a form field, or comma-separated ids.{also} "
                       + MODE_DOC,
        "maxItems": MAX_ROWS,
        "items": {"oneOf": rows},
    }


MemberRows = Annotated[list[MemberRow], BeforeValidator(_rows), Field(max_length=MAX_ROWS),
                       WithJsonSchema(_row_schema("user_id", read_back=True))]
QueueRows = Annotated[list[QueueRow], BeforeValidator(_rows), Field(max_length=MAX_ROWS),
                      WithJsonSchema(_row_schema("queue_id"))]


def memberships(rows: list[_Row] | None) -> list[Membership]:
    return [row.membership() for row in rows or []]
