"""Users get `listen_protected`: supervisors may not listen to, whisper to or barge into their calls.

Plain `ALTER TABLE ... ADD COLUMN ... NOT NULL DEFAULT` (see 0002 and 0008: no table rebuild on SQLite).
"""
import peewee


def up(migrator, db):
    if "listen_protected" not in {c.name for c in db.get_columns("user")}:
        kind, default = ("INTEGER", "0") if isinstance(db, peewee.SqliteDatabase) else ("BOOLEAN", "false")
        db.execute_sql(f'ALTER TABLE "user" ADD COLUMN "listen_protected" {kind} NOT NULL DEFAULT {default}')


def down(migrator, db):
    db.execute_sql('ALTER TABLE "user" DROP COLUMN "listen_protected"')  # SQLite 3.35+: no table rebuild
