"""The peewee base model every table derives from."""
from __future__ import annotations

import time
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.store.db import db


def now() -> int:
    """Epoch seconds: the unit of every timestamp in the vendor API."""
    return int(time.time())


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class AccountScoped(BaseModel):
    """A row that belongs to one account; queries must always filter by it."""

    label = "Row"  # how errors name the kind of row: "Device 7 not found"

    @classmethod
    def of(cls, account_id: int) -> peewee.ModelSelect:
        return cls.select().where(cls.account == account_id)

    @classmethod
    def owned(cls, account_id: int, row_id: int) -> Any:
        """The account's row `row_id`; another account's id is a 404 like an unknown one (never a 403)."""
        row = cls.get_or_none((cls._meta.primary_key == row_id) & (cls.account == account_id))
        if row is None:
            raise ServiceError(404, f"{cls.label} {row_id} not found")
        return row

    @classmethod
    def name_taken(cls, account_id: int, name: str, exclude_id: int | None = None) -> bool:
        """Whether another row of the account already has this name (names are unique per account)."""
        query = cls.select(cls._meta.primary_key).where((cls.account == account_id) & (cls.name == name))
        if exclude_id is not None:
            query = query.where(cls._meta.primary_key != exclude_id)
        return query.exists()
