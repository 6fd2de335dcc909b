"""Create or upgrade the schema: what `switchdesk init` runs. Idempotent, keeps data."""
from __future__ import annotations

import logging
import os

import peewee
from playhouse.migrations import Runner

from engine.store.models import ALL_MODELS

log = logging.getLogger("switchdesk.schema")
MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")


def runner(database: peewee.Database) -> Runner:
    return Runner(database, MIGRATIONS_DIR, table_name="schema_migration")


def init_schema(database: peewee.Database) -> bool:
    """Bring the schema to the current version; True when the database was empty."""
    run = runner(database)
    fresh = not run.History.table_exists()
    with database.atomic():
        if fresh:
            database.create_tables(ALL_MODELS)
            run.fake()
        else:
            applied = run.up()
            for name in applied:
                log.info("applied migration %s", name)
            database.create_tables(ALL_MODELS, safe=True)
    return fresh
