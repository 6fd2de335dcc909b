"""Users get `listen_protected`: supervisors may not listen to, whisper to or barge into their calls."""
from peewee import BooleanField


def up(migrator, db):
    if "listen_protected" not in {c.name for c in db.get_columns("user")}:
        migrator.migrate(migrator.add_column("user", "listen_protected", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("user", "listen_protected"))
