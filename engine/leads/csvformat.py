"""The CSV form of a phone list, read (API bodies, `leads import`) and written (`leads export`).

The two directions share one layout (lead fields as columns, extra columns as
ext_api_vars keys), so a change to it touches both and nothing else.

A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (OWASP's CSV injection), and phone lists come from anyone. So the export writes such a cell
with a leading `'` (which spreadsheets show as text and hide), and the import takes that `'` off
again, so an export reads back to the same values. A cell that really starts with `'` followed by
one of those characters gets a second `'`, so the round trip holds for every value.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, TextIO

from engine.errors import ServiceError
from engine.leads.streaming import iter_leads
from engine.leads.validation import LEAD_FIELDS

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_START = (*_FORMULA_START, "'")


def defuse(value: Any) -> Any:
    """A cell as written: quoted with `'` when a spreadsheet would run it."""
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and value and (
            value.startswith(_FORMULA_START) or (value[0] == "'" and value[1:2] in _ESCAPED_START and value[1:])):
        return "'" + value
    return value


def restore(cell: str) -> str:
    """A cell as read: the `'` that `defuse` added taken off."""
    if cell[:1] == "'" and cell[1:2] and cell[1] in _ESCAPED_START:
        return cell[1:]
    return cell


def parse_csv(data: bytes, lines: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV with a header: known columns are lead fields, every other column an ext_api_vars key.

    An `ext_api_vars` column (a JSON object, as `leads export` writes it)
    is the base the other extra columns are added to. Empty cells of the
    optional text fields are null. Blank lines are skipped; `lines`, when
    given, receives the file line number of each row for error messages.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError(400, "CSV: the file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        keys = [name.lower() if name.lower() in LEAD_FIELDS else name for name in header]
        if "phone" not in keys:
            raise ServiceError(400, "CSV: the first row must be a header with a phone column")
        known = [(i, k) for i, k in enumerate(keys) if k in LEAD_FIELDS and k != "ext_api_vars"]
        extra = [(i, k) for i, k in enumerate(keys) if k not in LEAD_FIELDS and k]
        ext_at = keys.index("ext_api_vars") if "ext_api_vars" in keys else None
        width = len(keys)
        rows: list[dict[str, Any]] = []
        for cells in reader:
            if not cells:
                continue
            line = reader.line_num
            if len(cells) > width:
                raise ServiceError(400, f"CSV line {line}: {len(cells)} cells but {width} header columns")
            cells = [restore(cell) for cell in cells] + [""] * (width - len(cells))
            row: dict[str, Any] = {k: (cells[i] if cells[i] != "" else None) for i, k in known}
            ext: Any = {}
            if ext_at is not None and cells[ext_at].strip():
                try:
                    ext = json.loads(cells[ext_at])
                except ValueError:
                    ext = cells[ext_at]
            if extra and isinstance(ext, dict):
                for i, k in extra:
                    ext[k] = cells[i]
            row["ext_api_vars"] = ext
            rows.append(row)
            if lines is not None:
                lines.append(line)
    except csv.Error as exc:
        raise ServiceError(400, f"CSV: {exc}") from None
    return rows


def write_csv(list_id: int, out: TextIO) -> int:
    """The list as CSV (the columns `parse_csv` reads back); returns the number of leads."""
    writer = csv.writer(out)
    writer.writerow(LEAD_FIELDS)
    count = 0
    for rows in iter_leads(list_id):
        writer.writerows([defuse(cell) for cell in (phone, name, lead_id, priority, tags, ext)]
                         for _id, phone, lead_id, priority, name, tags, ext in rows)
        count += len(rows)
    return count
