"""Accounts get `event_push_batch`: how many pending events one webhook request may carry (1: one, as before)."""
from peewee import IntegerField


def up(migrator, db):
    if "event_push_batch" not in {c.name for c in db.get_columns("account")}:
        migrator.migrate(migrator.add_column("account", "event_push_batch", IntegerField(default=1)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("account", "event_push_batch"))
