"""Hot-path reads with their SQL compiled once.

peewee builds the SQL text of every query anew, which for our wide tables
costs more than running the query (about 0.7 ms for a 37-column select on a
2-core machine). The few queries on every request's path (authentication, a
record by id, the batch loaders of a record's read-only fields) keep their SQL
text per database, query and shape, and only bind new parameters.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import peewee

from engine.store.db import db

M = TypeVar("M", bound=peewee.Model)
_cache: dict[tuple, tuple[str, list]] = {}

# Longest `IN (...)` list `select` pads to; callers chunk their ids to at most this many (engine.directory.extensions).
MAX_IN = 5000


def compiled(key: str, build: Callable[[], peewee.Query]) -> tuple[str, list]:
    """The SQL text of `build()` for the bound database, built once. Parameters are placeholders."""
    cache_key = (key, _dialect())
    hit = _cache.get(cache_key)
    if hit is None:
        query = build()
        sql, params = query.sql()
        hit = _cache[cache_key] = (sql, params)
    return hit


# Stand-ins for the arguments while a query is built once: no id or value of ours is near them.
_SLOT_INT = -(2 ** 62)
_SLOT_STR = "\x00fastq-slot-"


def _padded(values: list) -> list:
    """`values` lengthened to the next power of two (at most MAX_IN) by repeating the last one.

    `IN (...)` ignores repeats, and a few list lengths mean a few SQL texts to keep
    however the lists vary.
    """
    n = len(values)
    if not n:
        raise ValueError("fastq.select: an empty list has no IN (...) to bind; skip the query")
    size = 1 << (n - 1).bit_length()
    if size > MAX_IN:
        size = max(n, MAX_IN)
    return values + [values[-1]] * (size - n) if size > n else values


def _slot(number: int, like: Any) -> Any:
    if isinstance(like, str):
        return f"{_SLOT_STR}{number}"
    if isinstance(like, int) and not isinstance(like, bool):
        return _SLOT_INT + number
    raise TypeError(f"fastq.select binds ints and strs only, not {type(like).__name__}")


def _template(key: str, build: Callable[..., peewee.Query], args: tuple) -> tuple[str, list]:
    """The SQL text for this shape of `args`, and per parameter either (True, argument slot) or (False, constant)."""
    slots: dict[Any, int] = {}
    stand_ins: list[Any] = []
    for arg in args:
        if isinstance(arg, list):
            items = []
            for value in arg:
                slot = _slot(len(slots), value)
                slots[slot] = len(slots)
                items.append(slot)
            stand_ins.append(items)
        else:
            slot = _slot(len(slots), arg)
            slots[slot] = len(slots)
            stand_ins.append(slot)
    sql, params = build(*stand_ins).sql()
    template = [(True, slots[p]) if _hashable(p) and p in slots else (False, p) for p in params]
    if {n for is_slot, n in template if is_slot} != set(range(len(slots))):
        raise ValueError(f"fastq.select {key!r}: every argument must be bound as given")
    return sql, template


def _hashable(value: Any) -> bool:
    return isinstance(value, int | str)


def select(key: str, build: Callable[..., peewee.Query], *args: Any) -> list[tuple]:
    """The rows of `build(*args)`; its SQL is built once per database and shape of `args`.

    `args` are ints, strs or non-empty lists of ints (for `IN`), and `build` must bind each
    as it is given (no `.contains()`, no arithmetic). Lists are padded (see `_padded`).
    """
    sql, params = _bind(key, build, args)
    cursor = db.obj.execute_sql(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def execute(key: str, build: Callable[..., peewee.Query], *args: Any) -> int:
    """How many rows the INSERT, UPDATE or DELETE `build(*args)` changed; compiled as `select` is.

    A value the field would convert (JSON, ...) is given converted, as a str, and bound in
    `build` with `peewee.Value(arg, converter=False)`.
    """
    sql, params = _bind(key, build, args)
    cursor = db.obj.execute_sql(sql, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _bind(key: str, build: Callable[..., peewee.Query], args: tuple) -> tuple[str, list]:
    shape: list[Any] = [key, _dialect()]
    flat: list[Any] = []
    for arg in args:
        if isinstance(arg, list):
            arg = _padded(arg)
            shape.append(len(arg))
            flat.extend(arg)
        else:
            shape.append(type(arg))
            flat.append(arg)
    cache_key = tuple(shape)
    hit = _cache.get(cache_key)
    if hit is None:
        hit = _cache[cache_key] = _template(key, build, tuple(_padded(a) if isinstance(a, list) else a for a in args))
    sql, template = hit
    return sql, [flat[n] if is_slot else n for is_slot, n in template]


# Columns the database drivers already return as the Python type peewee would coerce them to.
_NATIVE = (peewee.AutoField, peewee.BigAutoField, peewee.IntegerField, peewee.BigIntegerField,
           peewee.SmallIntegerField, peewee.CharField, peewee.TextField)


def _converters(model: type[peewee.Model]) -> list[tuple[str, Callable[[Any], Any] | None]]:
    out = []
    for field in model._meta.sorted_fields:
        target = field.rel_field if isinstance(field, peewee.ForeignKeyField) else field
        # booleans (SQLite's 0/1), JSON, ... exactly as a peewee select converts them; exact types only,
        # so a subclass (JSONField is a TextField) keeps its conversion
        converter = None if type(target) in _NATIVE else field.python_value
        out.append((field.name, converter))  # a foreign key's id is stored under the field's own name
    return out


_conv_cache: dict[type, list] = {}


def make(model: type[M], row: tuple, offset: int = 0) -> M:
    """A model instance from a row whose columns are `model._meta.sorted_fields`, from `offset`."""
    conv = _conv_cache.get(model)
    if conv is None:
        conv = _conv_cache[model] = _converters(model)
    values = {}
    for i, (name, converter) in enumerate(conv):
        value = row[offset + i]
        values[name] = converter(value) if converter is not None and value is not None else value
    # What peewee's own cursor does (`model(__no_default__=1, **row)`) without a setattr per column.
    instance = model.__new__(model)
    instance.__data__ = values
    instance._dirty = set()
    instance.__rel__ = {}
    return instance


def width(model: type[peewee.Model]) -> int:
    return len(model._meta.sorted_fields)


def get_scoped(model: type[M], account_id: int, row_id: int) -> M | None:
    """`model` row `row_id` of account `account_id`, or None."""
    sql, _ = compiled(f"get_scoped:{model.__name__}",
                      lambda: model.select().where((model.id == 0) & (model.account == 0)))
    row = db.obj.execute_sql(sql, (row_id, account_id)).fetchone()
    return make(model, row) if row is not None else None


def _dialect() -> tuple[type, str]:
    """What the compiled SQL text depends on: the database class and its parameter style
    (not the object's address, which a new database could reuse)."""
    return type(db.obj), db.obj.param


_encode = msgspec.json.Encoder().encode


def json_text(value: Any) -> str:
    """What `JSONField.db_value` stores (compact, non-ASCII kept), encoded in C: 3-5x faster than json.dumps.

    For values of strs, ints, bools, None, lists and dicts, whose text is then the same byte for byte (the call
    events' fields, which are all parsed from text as ints or kept as text). Not for floats: msgspec writes
    some of them otherwise (NaN as null). Anything msgspec refuses goes to json.dumps.
    """
    try:
        return _encode(value).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
