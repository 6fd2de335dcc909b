"""Leads get `phone_key`, the canonical number (engine.leads.numbers) that lookups and uniqueness compare.

The column is added, filled for every existing lead with its account's
country as the default region, in chunks of `CHUNK` rows (memory stays
bounded on millions of leads), then indexed. No lead is dropped: two leads of
one list that turn out to be one number (`2125550100` and `+12125550100`)
both stay and lookups find both; the migration logs how many numbers do.
"""
import logging

from peewee import CharField

from engine.leads.numbers import phone_keys

CHUNK = 5000
log = logging.getLogger("switchdesk.schema")


def up(migrator, db):
    if "phone_key" not in {c.name for c in db.get_columns("lead")}:
        migrator.migrate(migrator.add_column("lead", "phone_key", CharField(max_length=24, null=True)))
    p = db.param
    select = ('SELECT l."id", l."phone", a."country" FROM "lead" AS l '  # noqa: S608 (constants only)
              'JOIN "phone_list" AS pl ON pl."id" = l."phone_list_id" JOIN "account" AS a ON a."id" = pl."account_id" '
              f'WHERE l."phone_key" IS NULL AND l."id" > {p} ORDER BY l."id" LIMIT {CHUNK}')
    update = f'UPDATE "lead" SET "phone_key" = {p} WHERE "id" = {p}'  # noqa: S608 (constants)
    last = 0
    while True:
        rows = db.execute_sql(select, (last,)).fetchall()
        if not rows:
            break
        by_country: dict[str, list[tuple[int, str]]] = {}
        for lead_id, phone, country in rows:
            by_country.setdefault(country or "US", []).append((lead_id, phone))
        pairs = []
        for country, leads in by_country.items():
            keys = phone_keys([phone for _, phone in leads], country)
            pairs.extend((key, lead_id) for key, (lead_id, _) in zip(keys, leads, strict=True))
        cursor = db.cursor()
        try:
            cursor.executemany(update, pairs)
        finally:
            cursor.close()
        last = rows[-1][0]
    db.execute_sql('CREATE INDEX IF NOT EXISTS "lead_list_key" ON "lead" ("phone_list_id", "phone_key") '
                   'WHERE ("import_id" IS NULL)')
    shared = db.execute_sql('SELECT COUNT(*) FROM (SELECT "phone_list_id", "phone_key" FROM "lead" '
                            'WHERE "import_id" IS NULL GROUP BY "phone_list_id", "phone_key" '
                            'HAVING COUNT(*) > 1) AS clash').fetchone()[0]
    if shared:
        log.warning("%d number(s) are held by more than one lead of the same phone list (written differently, "
                    "e.g. 2125550100 and +12125550100): all those leads are kept and lookups find each; "
                    "new writes update them rather than add another", shared)


def down(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "lead_list_key"')
    migrator.migrate(migrator.drop_column("lead", "phone_key"))
