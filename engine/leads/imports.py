"""Bulk writes of leads: one short upsert for a small batch, a staged import for a large one.

How a batch reaches the table is a matter of write-lock time and of the
driver, apart from what a valid lead is (`validation`) and from the list
service (`phonelists`). Rows are written with the driver's `executemany` over
a one-row upsert statement that peewee generates for the bound database, so
the same code runs on SQLite and PostgreSQL; peewee's `insert_many` in chunks
was 8 times slower, building and converting every value in Python. A large
batch is staged hidden and published in one short transaction, so clients see
all of it or none of it while the engine keeps writing.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.leads.phonelists import get_list
from engine.leads.validation import LeadRow, check_leads
from engine.store.db import db
from engine.store.models import Lead, LeadImport, PhoneList, now

LARGE_BATCH = 5000  # above this many distinct phones a batch is a staged import
CHUNK = 5000  # rows per statement / per staged-import transaction (tens of ms)
STALE_IMPORT = 3600  # seconds after which an unpublished import is presumed dead

Progress = Callable[[int, int], None]

_COLUMNS = (Lead.phone_list, Lead.phone, Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
            Lead.ext_api_vars, Lead.import_id)


def _statement(upsert: bool) -> str:
    """One-row INSERT (or upsert) SQL for the bound database, run with `executemany`.

    Parameters follow `_COLUMNS`. The conflict target is the partial unique
    index on visible rows, so hidden rows of an import never collide.
    """
    query = Lead.insert_many([tuple(None for _ in _COLUMNS)], fields=list(_COLUMNS))
    if upsert:
        query = query.on_conflict(
            conflict_target=[Lead.phone_list, Lead.phone], conflict_where=Lead.import_id.is_null(),
            update={f: peewee.EXCLUDED[f.column_name] for f in _COLUMNS[2:7]},
        )
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


def _existing_phones(list_id: int, phones: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(phones, CHUNK):
        query = Lead.select(Lead.phone).where(
            (Lead.phone_list == list_id) & Lead.import_id.is_null() & Lead.phone.in_(chunk)
        )
        found.update(phone for (phone,) in query.tuples())
    return found


def add_leads(account_id: int | None, list_id: int, rows: list[Any],
              progress: Progress | None = None) -> dict[str, int]:
    """Add or update (by phone) a batch of leads: all of it or, on any bad row, none of it."""
    get_list(account_id, list_id)
    batch = check_leads(rows)
    if len(batch) > LARGE_BATCH:
        added, updated = _staged_import(list_id, list(batch.values()), progress)
    else:
        leads = [(list_id, *lead, None) for lead in batch.values()]
        added, updated = _upsert(account_id, list_id, leads)
        if progress:
            progress(len(leads), len(leads))
    list_rows = PhoneList.select(PhoneList.list_rows).where(PhoneList.id == list_id).scalar() or 0
    return {"added": added, "updated": updated, "duplicates": len(rows) - len(batch), "list_rows": list_rows}


def _upsert(account_id: int | None, list_id: int, leads: list[tuple]) -> tuple[int, int]:
    """A small batch: one plain transaction."""
    sql = _statement(upsert=True)
    with db.atomic():
        get_list(account_id, list_id)  # still there, now that we hold the write
        existing = _existing_phones(list_id, [lead[1] for lead in leads])
        for chunk in _chunks(leads, CHUNK):
            _executemany(sql, chunk)
        added = len(leads) - len(existing)
        if added:
            PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
    return added, len(existing)


def _staged_import(list_id: int, leads: list[LeadRow], progress: Progress | None) -> tuple[int, int]:
    """A large batch, written so that no single transaction holds the write lock for long.

    The rows are inserted in chunks of `CHUNK`, each its own short transaction,
    with `import_id` set: hidden from every read and outside the unique index
    of visible rows. Between chunks the lock is released (and under gevent the
    loop gets a turn), so the engine's own writes wait at most one chunk. The
    import becomes visible in one final transaction that applies the staged
    rows whose phone already exists as updates (keeping those leads' places),
    drops them, and un-hides the rest: set-based statements over indexed
    columns, with no Python work inside. Clients therefore see the whole batch
    or none of it. If anything fails the hidden rows are deleted; if the
    process dies they are purged by a later import (`STALE_IMPORT`).
    """
    _purge_stale_imports(list_id)
    with db.atomic():
        import_id = LeadImport.create(phone_list=list_id).id
    staged = [(list_id, *lead, import_id) for lead in leads]
    sql = _statement(upsert=False)
    try:
        done = 0
        for chunk in _chunks(staged, CHUNK):
            with db.atomic():
                _executemany(sql, chunk)
            done += len(chunk)
            if progress:
                progress(done, len(staged))
            time.sleep(0)  # a turn for other greenlets between chunks
        with db.atomic():
            if not PhoneList.select().where(PhoneList.id == list_id).exists():
                raise ServiceError(404, f"Phone list {list_id} not found")
            updated, added = _publish(list_id, import_id)
    except BaseException:
        _discard_import(import_id)
        raise
    return added, updated


def _publish(list_id: int, import_id: int) -> tuple[int, int]:
    staged, visible = Lead.alias("s"), Lead.alias("v")
    updated = (
        Lead.update({f: getattr(staged, f.name) for f in (Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
                                                            Lead.ext_api_vars)})
        .from_(staged)
        .where((staged.import_id == import_id) & (staged.phone_list == Lead.phone_list)
               & (staged.phone == Lead.phone) & Lead.import_id.is_null())
        .execute()
    )
    twin = visible.select(peewee.SQL("1")).where(
        (visible.phone_list == Lead.phone_list) & (visible.phone == Lead.phone) & visible.import_id.is_null())
    Lead.delete().where((Lead.import_id == import_id) & peewee.fn.EXISTS(twin)).execute()
    added = Lead.update(import_id=None).where(Lead.import_id == import_id).execute()
    if added:
        PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
    LeadImport.delete().where(LeadImport.id == import_id).execute()
    return updated, added


def _discard_import(import_id: int) -> None:
    while True:
        with db.atomic():
            batch = Lead.select(Lead.id).where(Lead.import_id == import_id).limit(CHUNK * 5)
            if not Lead.delete().where(Lead.id.in_(batch)).execute():
                LeadImport.delete().where(LeadImport.id == import_id).execute()
                return


def _purge_stale_imports(list_id: int) -> None:
    stale = LeadImport.select(LeadImport.id).where(
        (LeadImport.phone_list == list_id) & (LeadImport.started < now() - STALE_IMPORT))
    for (import_id,) in stale.tuples():
        _discard_import(import_id)
