"""The peewee base model every table derives from."""
from __future__ import annotations

import time

import peewee

from engine.db import db


def now() -> int:
    """Epoch seconds: the unit of every timestamp in the vendor API."""
    return int(time.time())


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class AccountScoped(BaseModel):
    """A row that belongs to one account; queries must always filter by it."""

    @classmethod
    def of(cls, account_id: int) -> peewee.ModelSelect:
        return cls.select().where(cls.account == account_id)
