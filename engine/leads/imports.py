"""Bulk writes of leads: one short upsert for a small batch, a staged import for a large one.

How a batch reaches the table is a matter of write-lock time and of the
driver, apart from what a valid lead is (`validation`) and from the list
service (`phonelists`). Rows are written with the driver's `executemany` over
a one-row upsert statement that peewee generates for the bound database, so
the same code runs on SQLite and PostgreSQL; peewee's `insert_many` in chunks
was 8 times slower, building and converting every value in Python. A large
batch is staged hidden and published in one transaction, so clients see all
of it or none of it while the engine keeps writing.

A lead is the same lead as another of its list when their canonical numbers
(`phone_key`, engine.leads.numbers) are equal, whatever the formatting. The
event loop is never held for long (DESIGN.md "Never block the loop"): a large
batch is checked and keyed in gevent's threadpool, its chunks are written with
a turn for other greenlets between them, and on SQLite the publishing
transaction runs in a worker thread on a connection of its own, so that no
statement over the whole batch runs on the loop (a writer on the loop that
meets it waits at most that long, as it would have waited anyway).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import peewee

from engine.errors import ServiceError
from engine.leads.numbers import phone_keys
from engine.leads.phonelists import account_country, get_list, holding
from engine.leads.validation import PostedLead, check_leads, normalize_phone
from engine.store.db import db
from engine.store.models import Lead, LeadImport, PhoneList, now

LARGE_BATCH = 5000  # above this many distinct phones a batch is a staged import
CHUNK = 5000  # rows per statement / per staged-import transaction (tens of ms)
STALE_IMPORT = 3600  # seconds after which an unpublished import is presumed dead
OFF_LOOP_ROWS = 2000  # batches of more rows are checked in gevent's threadpool, off the event loop

Progress = Callable[[int, int], None]

_COLUMNS = (Lead.phone_list, Lead.phone, Lead.phone_key, Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
            Lead.ext_api_vars, Lead.import_id)
_FIELDS = _COLUMNS[3:8]  # what an update of a lead writes: name, lead_id, priority, tags, ext_api_vars

# A checked lead with its key: (phone_key, phone, name, lead_id, priority, tags, ext_api_vars JSON text)
KeyedLead = tuple[str, str, str | None, str | None, int, str | None, str]


def _statement(upsert: bool) -> str:
    """One-row INSERT (or upsert) SQL for the bound database, run with `executemany`.

    Parameters follow `_COLUMNS`. The conflict target is the partial unique
    index on visible rows, so hidden rows of an import never collide; it
    catches a lead stored in the same form under another key (the account's
    country changed since), which takes the new key.
    """
    query = Lead.insert_many([tuple(None for _ in _COLUMNS)], fields=list(_COLUMNS))
    if upsert:
        query = query.on_conflict(
            conflict_target=[Lead.phone_list, Lead.phone], conflict_where=Lead.import_id.is_null(),
            update={f: peewee.EXCLUDED[f.column_name] for f in _COLUMNS[2:8]},
        )
    sql, _params = query.sql()
    return sql


def _update_by_key_statement() -> str:
    """UPDATE of the visible leads of a list holding a number, run with `executemany`.

    Parameters: the `_FIELDS` values, then the list id and the key.
    """
    query = Lead.update({f: "" for f in _FIELDS}).where(  # peewee writes SET in the fields' (model) order
        (Lead.phone_list == 0) & (Lead.phone_key == "") & Lead.import_id.is_null())
    sql, _params = query.sql()
    return sql


def _executemany(sql: str, rows: list[tuple]) -> None:
    cursor = db.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _existing(list_id: int, leads: list[KeyedLead]) -> tuple[set[str], set[str]]:
    """(keys, phones) of the list's visible leads that hold one of these numbers, by key or in the same form."""
    keys: set[str] = set()
    phones: set[str] = set()
    for chunk in _chunks(leads, CHUNK):
        ids = holding(list_id, [lead[0] for lead in chunk], [lead[1] for lead in chunk])
        for key, phone in Lead.select(Lead.phone_key, Lead.phone).where(Lead.id.in_(ids)).tuples():
            keys.add(key)
            phones.add(phone)
    return keys, phones


def _turn() -> None:
    """A turn of the event loop for other greenlets: sockets and timers too. `gevent.sleep(0)` only runs
    the greenlets already scheduled (the loop runs up to 50 such callbacks before it polls), so chunks
    separated by it held the loop as long as no pause at all."""
    gevent.sleep(0.0005)


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in gevent's threadpool: the event loop serves others meanwhile (the GIL's switch
    interval hands it the interpreter every few ms). Exceptions are raised here."""
    return gevent.get_hub().threadpool.apply(fn, args)


def _last_wins(rows: list[Any], batch: dict[str, Any], keys: list[str]) -> list[str]:
    """The batch's phones ordered so that, per key, the phone of the last row posted comes last."""
    last: dict[str, int] = {}
    for index, row in enumerate(rows):
        phone = normalize_phone(row.phone if type(row) is PostedLead else row.get("phone"))
        if phone is not None:
            last[phone] = index
    return sorted(batch, key=last.__getitem__)


def keyed_batch(rows: list[Any], country: str | None) -> list[KeyedLead]:
    """The checked batch (`check_leads`: a 400 on any bad row) keyed by canonical number.

    Within the batch the last of duplicate numbers wins, in whatever form
    each was written, and a number keeps the place of its first row.
    """
    batch = check_leads(rows)
    keys = phone_keys(list(batch), country)
    if len(set(keys)) == len(keys):
        return [(key, *lead) for key, lead in zip(keys, batch.values(), strict=True)]
    by_phone = dict(zip(batch, keys, strict=True))
    place: dict[str, int] = {}
    for key in keys:
        place.setdefault(key, len(place))
    out: dict[str, KeyedLead] = {}
    for phone in _last_wins(rows, batch, keys):
        out[by_phone[phone]] = (by_phone[phone], *batch[phone])
    return sorted(out.values(), key=lambda lead: place[lead[0]])


def add_leads(account_id: int | None, list_id: int, rows: list[Any],
              progress: Progress | None = None) -> dict[str, int]:
    """Add or update (by canonical number) a batch of leads: all of it or, on any bad row, none of it."""
    plist = get_list(account_id, list_id)
    country = account_country(plist.account_id)
    leads = off_loop(keyed_batch, rows, country) if len(rows) > OFF_LOOP_ROWS else keyed_batch(rows, country)
    if len(leads) > LARGE_BATCH:
        added, updated = _staged_import(list_id, leads, progress)
    else:
        added, updated = _upsert(account_id, list_id, leads)
        if progress:
            progress(len(leads), len(leads))
    list_rows = PhoneList.select(PhoneList.list_rows).where(PhoneList.id == list_id).scalar() or 0
    return {"added": added, "updated": updated, "duplicates": len(rows) - len(leads), "list_rows": list_rows}


def _upsert(account_id: int | None, list_id: int, leads: list[KeyedLead]) -> tuple[int, int]:
    """A small batch: one plain transaction. Leads whose number the list holds are updated by key
    (every lead of the list holding it), the others inserted."""
    with db.atomic():
        get_list(account_id, list_id)  # still there, now that we hold the write
        keys, phones = _existing(list_id, leads)
        known = [lead for lead in leads if lead[0] in keys]
        new = [(list_id, lead[1], lead[0], *lead[2:], None) for lead in leads if lead[0] not in keys]
        if known:
            _executemany(_update_by_key_statement(), [(*lead[2:], list_id, lead[0]) for lead in known])
        sql = _statement(upsert=True)
        for chunk in _chunks(new, CHUNK):
            _executemany(sql, chunk)
        twins = sum(1 for lead in new if lead[1] in phones)  # same form, another key: updated by the upsert
        added = len(new) - twins
        if added:
            PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
    return added, len(known) + twins


def _staged_import(list_id: int, leads: list[KeyedLead], progress: Progress | None) -> tuple[int, int]:
    """A large batch, written so that no single transaction holds the write lock for long.

    The rows are inserted in chunks of `CHUNK`, each its own short transaction,
    with `import_id` set: hidden from every read and outside the unique index
    of visible rows. Between chunks the lock is released (and under gevent the
    loop gets a turn), so the engine's own writes wait at most one chunk. The
    import becomes visible in one final transaction that applies the staged
    rows whose number the list holds as updates (keeping those leads' places),
    drops them, and un-hides the rest: set-based statements over indexed
    columns, with no Python work inside. Clients therefore see the whole batch
    or none of it. If anything fails the hidden rows are deleted; if the
    process dies they are purged by a later import (`STALE_IMPORT`).
    """
    _purge_stale_imports(list_id)
    with db.atomic():
        import_id = LeadImport.create(phone_list=list_id).id
    sql = _statement(upsert=False)
    try:
        done = 0
        for chunk in _chunks(leads, CHUNK):
            rows = [(list_id, lead[1], lead[0], *lead[2:], import_id) for lead in chunk]
            with db.atomic():
                _executemany(sql, rows)
            done += len(chunk)
            if progress:
                progress(done, len(leads))
            _turn()  # for other greenlets between chunks
        updated, added = _publish(list_id, import_id)
    except BaseException:
        _discard_import(import_id)
        raise
    return added, updated


def _publish_statements(list_id: int, import_id: int) -> list[peewee.Query]:
    """The publishing transaction, in order; the third statement's row count is `updated`, the fourth's `added`.

    Staged rows update the visible leads holding their number (by key; or in
    the same form under another key, which then takes the new key), are
    dropped where such a lead exists, and the rest become visible.
    """
    staged, visible = Lead.alias("s"), Lead.alias("v")
    fields = {f: getattr(staged, f.name) for f in (Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
                                                   Lead.ext_api_vars)}
    mine = (staged.import_id == import_id) & (staged.phone_list == Lead.phone_list) & Lead.import_id.is_null()
    by_key = Lead.update(fields).from_(staged).where(mine & (staged.phone_key == Lead.phone_key))
    by_form = (Lead.update({**fields, Lead.phone_key: staged.phone_key}).from_(staged)
               .where(mine & (staged.phone == Lead.phone) & (staged.phone_key != Lead.phone_key)))
    # two EXISTS, one seek each: one with an OR inside would scan the list for every staged row
    same_key, same_form = (visible.select(peewee.SQL("1")).where(
        (visible.phone_list == Lead.phone_list) & visible.import_id.is_null() & match)
        for match in (visible.phone_key == Lead.phone_key, visible.phone == Lead.phone))
    drop = Lead.delete().where((Lead.import_id == import_id)
                               & (peewee.fn.EXISTS(same_key) | peewee.fn.EXISTS(same_form)))
    show = Lead.update(import_id=None).where(Lead.import_id == import_id)
    return [by_key, by_form, drop, show]


def _publish(list_id: int, import_id: int) -> tuple[int, int]:
    """Make the import visible in one transaction: (updated, added)."""
    if _sqlite_file() is not None:
        return off_loop(_publish_sqlite, list_id, import_id)
    with db.atomic():
        if not PhoneList.select().where(PhoneList.id == list_id).exists():
            raise ServiceError(404, f"Phone list {list_id} not found")
        counts = [query.execute() for query in _publish_statements(list_id, import_id)]
        updated, added = counts[2], counts[3]
        if added:
            PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
        LeadImport.delete().where(LeadImport.id == import_id).execute()
    return updated, added


def _sqlite_file() -> str | None:
    database = db.obj
    if isinstance(database, peewee.SqliteDatabase) and database.database not in ("", ":memory:") \
            and not database.database.startswith("file::memory:"):
        return database.database
    return None


def _publish_sqlite(list_id: int, import_id: int) -> tuple[int, int]:
    """`_publish` for SQLite, in a worker thread on a connection of its own (see the module's docstring).

    SQLite runs a statement without the GIL, so the loop keeps serving while
    it runs; the whole transaction (BEGIN IMMEDIATE to COMMIT) stays in this
    thread, so it never waits on the loop, which may meanwhile wait on it.
    """
    statements = [query.sql() for query in _publish_statements(list_id, import_id)]
    conn = peewee.SqliteDatabase._connect(db.obj)  # not the pool's: this thread's own, closed below
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute('SELECT 1 FROM "phone_list" WHERE "id" = ?', (list_id,)).fetchone() is None:
                raise ServiceError(404, f"Phone list {list_id} not found")
            counts = [conn.execute(sql, params).rowcount for sql, params in statements]
            updated, added = counts[2], counts[3]
            for sql, params in (
                    PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).sql(),
                    LeadImport.delete().where(LeadImport.id == import_id).sql()):
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return updated, added


def _discard_import(import_id: int) -> None:
    while True:
        with db.atomic():
            batch = Lead.select(Lead.id).where(Lead.import_id == import_id).limit(CHUNK)
            if not Lead.delete().where(Lead.id.in_(batch)).execute():
                LeadImport.delete().where(LeadImport.id == import_id).execute()
                return
        _turn()


def _purge_stale_imports(list_id: int) -> None:
    stale = LeadImport.select(LeadImport.id).where(
        (LeadImport.phone_list == list_id) & (LeadImport.started < now() - STALE_IMPORT))
    for (import_id,) in stale.tuples():
        _discard_import(import_id)
