"""The registry of `switchdesk serve` processes sharing one database (engine.boxes)."""
from __future__ import annotations

import peewee

from engine.store.models.base import BaseModel


class Box(BaseModel):
    """One box: its name (the `host` its recordings and media rows carry), the URL the other boxes
    reach its API at (null: not advertised, nothing can be fetched from it), and its heartbeat."""

    hostname = peewee.CharField(max_length=253, primary_key=True)
    url = peewee.CharField(max_length=500, null=True)
    started_at = peewee.IntegerField()
    heartbeat_at = peewee.IntegerField()
    key_check = peewee.CharField(max_length=32, default="")  # tells whether two boxes share the secret key
