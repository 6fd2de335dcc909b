"""Accounts get `event_push_batch`: how many pending events one webhook request may carry (1: one, as before).

Plain `ALTER TABLE ... ADD COLUMN ... NOT NULL DEFAULT 1` on both databases: the migrator's way for a NOT NULL
column on SQLite rebuilds the table (copy, DROP TABLE, rename), and with foreign keys on, dropping `account`
would cascade to every row of the account's users, devices, queues ... The database-side default also keeps
rows inserted by plain SQL valid, as the model declares it.
"""


def up(migrator, db):
    if "event_push_batch" not in {c.name for c in db.get_columns("account")}:
        db.execute_sql('ALTER TABLE "account" ADD COLUMN "event_push_batch" INTEGER NOT NULL DEFAULT 1')


def down(migrator, db):
    db.execute_sql('ALTER TABLE "account" DROP COLUMN "event_push_batch"')  # SQLite 3.35+: no table rebuild
