"""Streamed reads of a phone list: keyset pages in list order, memory bounded by one page.

Lists run to millions of leads and the API streams them to the client; how a
page is fetched (index seeks, no transaction held open while the client reads)
is tuned for the database and changes apart from how leads are written.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import peewee

from engine.leads.validation import PHONE_JUNK
from engine.store.models import Lead

READ_CHUNK = 5000  # rows per keyset page when streaming a list

# ext_api_vars is read as its stored text: it is copied into the reply as is, never parsed.
ROW_COLUMNS = (Lead.id, Lead.phone, Lead.lead_id, Lead.priority, Lead.name, Lead.tags,
               peewee.fn.COALESCE(Lead.ext_api_vars, "null").coerce(False))  # SQL NULL: an explicit null


def iter_leads(list_id: int, *, limit: int | None = None, offset: int = 0, q: str | None = None,
               chunk: int | None = None) -> Iterator[list[tuple]]:
    """Chunks of (id, phone, lead_id, priority, name, tags, ext_api_vars JSON text) in list order.

    Keyset pagination on (priority desc, id) over the `lead_list_order`
    index. A page after (p, i) is two index seeks, `priority = p AND id > i`
    then `priority < p`, because one OR-ed condition would make the database
    rescan every earlier row of a priority for every page (most lists have a
    single priority). Each page is one short statement: no transaction or
    cursor stays open while the client reads, and memory stays bounded by one
    chunk.
    """
    chunk = chunk or READ_CHUNK
    base = Lead.select(*ROW_COLUMNS).where((Lead.phone_list == list_id) & Lead.import_id.is_null())
    if q:
        match = Lead.name.contains(q)
        digits = q.translate(PHONE_JUNK)
        if re.fullmatch(r"\+?[0-9]+", digits):
            match = match | Lead.phone.startswith(digits)
        base = base.where(match)
    remaining = limit
    last: tuple[int, int] | None = None
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        if last is None:
            page = base.order_by(Lead.priority.desc(), Lead.id).limit(size)
            rows = list((page.offset(offset) if offset else page).tuples())
        else:
            same = base.where((Lead.priority == last[0]) & (Lead.id > last[1])).order_by(Lead.id).limit(size)
            rows = list(same.tuples())
            if len(rows) < size:
                lower = base.where(Lead.priority < last[0]).order_by(Lead.priority.desc(), Lead.id)
                rows += list(lower.limit(size - len(rows)).tuples())
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = (rows[-1][3], rows[-1][0])
        if remaining is not None:
            remaining -= len(rows)
