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
    # SQLite: the migrator changes a column by rebuilding its table (copy, DROP TABLE, rename); with foreign
    # keys enforced, dropping `user` or `account` deletes every row that refers to it ON DELETE CASCADE (API
    # keys, devices, tiers...). SQLite's own procedure: enforcement off around the change (outside any
    # transaction, where the pragma takes effect), then foreign_key_check before the commit.
    sqlite = isinstance(database, peewee.SqliteDatabase) and not fresh
    if sqlite:
        database.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        with database.atomic():
            if fresh:
                database.create_tables(ALL_MODELS)
                run.fake()
            else:
                applied = run.up()
                for name in applied:
                    log.info("applied migration %s", name)
                database.create_tables(ALL_MODELS, safe=True)
                if sqlite:
                    broken = database.execute_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the upgrade would leave {len(broken)} row(s) referring to rows that "
                                           f"do not exist (first: {broken[0]}); nothing was changed")
    finally:
        if sqlite:
            database.execute_sql("PRAGMA foreign_keys = ON")
    return fresh
