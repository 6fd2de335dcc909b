"""Per-user allowed IP ranges (CIDR) for API keys.

Plain `ALTER TABLE ... ADD COLUMN ... NOT NULL DEFAULT` (see 0008): the migrator's way rebuilt `user` on SQLite,
and dropping it deleted the rows referring to it ON DELETE CASCADE (API keys, sessions...), until
engine.store.schema turned foreign keys off around migrations.
"""


def up(migrator, db):
    if "api_ip_ranges" not in {c.name for c in db.get_columns("user")}:
        db.execute_sql("""ALTER TABLE "user" ADD COLUMN "api_ip_ranges" TEXT NOT NULL DEFAULT '[]'""")


def down(migrator, db):
    db.execute_sql('ALTER TABLE "user" DROP COLUMN "api_ip_ranges"')  # SQLite 3.35+: no table rebuild
