"""Hot-path reads with their SQL compiled once.

peewee builds the SQL text of every query anew, which for our wide tables
costs more than running the query (about 0.7 ms for a 37-column select on a
2-core machine). The few queries on every request's path (authentication, a
record by id) keep their SQL text per database and model and only bind new
parameters.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import peewee

from engine.db import db

M = TypeVar("M", bound=peewee.Model)
_cache: dict[tuple, tuple[str, list]] = {}


def compiled(key: str, build: Callable[[], peewee.Query]) -> tuple[str, list]:
    """The SQL text of `build()` for the bound database, built once. Parameters are placeholders."""
    cache_key = (key, id(db.obj))
    hit = _cache.get(cache_key)
    if hit is None:
        query = build()
        sql, params = query.sql()
        hit = _cache[cache_key] = (sql, params)
    return hit


def _converters(model: type[peewee.Model]) -> list[tuple[str, Callable[[Any], Any] | None]]:
    out = []
    for field in model._meta.sorted_fields:
        converter = field.python_value  # booleans, JSON, ... exactly as a peewee select converts them
        out.append((field.name if not isinstance(field, peewee.ForeignKeyField) else field.name + "_id", converter))
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
    instance = model(**values)
    instance._dirty.clear()
    return instance


def width(model: type[peewee.Model]) -> int:
    return len(model._meta.sorted_fields)


def get_scoped(model: type[M], account_id: int, row_id: int) -> M | None:
    """`model` row `row_id` of account `account_id`, or None."""
    sql, _ = compiled(f"get_scoped:{model.__name__}",
                      lambda: model.select().where((model.id == 0) & (model.account == 0)))
    row = db.obj.execute_sql(sql, (row_id, account_id)).fetchone()
    return make(model, row) if row is not None else None
