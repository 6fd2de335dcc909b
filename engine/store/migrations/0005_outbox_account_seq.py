"""Pushed events get `account_seq`, the account's own gap-free number (engine.events.delivery), and the
webhook lease `last_seq`, the last number given out. Events already stored keep no number; numbering
starts at 1 with the next event sent."""
from peewee import BigIntegerField


def up(migrator, db):
    if "account_seq" not in {c.name for c in db.get_columns("outbox_event")}:
        migrator.migrate(migrator.add_column("outbox_event", "account_seq", BigIntegerField(null=True)))
    if "last_seq" not in {c.name for c in db.get_columns("webhook_lease")}:
        migrator.migrate(migrator.add_column("webhook_lease", "last_seq", BigIntegerField(default=0)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("outbox_event", "account_seq"),
                     migrator.drop_column("webhook_lease", "last_seq"))
