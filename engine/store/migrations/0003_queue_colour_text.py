"""Queue colours are free text (the vendor document's type is string), up to 64 characters."""
from peewee import CharField, PostgresqlDatabase


def up(migrator, db):
    # SQLite does not enforce a VARCHAR length: only PostgreSQL needs the wider type.
    if isinstance(db, PostgresqlDatabase):
        for column in ("background_color", "font_color"):
            migrator.migrate(migrator.alter_column_type("queue", column, CharField(max_length=64, null=True)))


def down(migrator, db):
    pass  # a narrower type would refuse the colours already stored
