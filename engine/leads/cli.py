"""`switchdesk leads import|export`: CSV in and out of a phone list, straight against the database.

The import follows the API's rules (engine.leads.imports.add_leads): all rows or
none, upsert by phone, large files written as a staged import, so the engine
keeps writing while a million-row file goes in.
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

MAX_SHOWN_ERRORS = 20


def progress_bar(out: TextIO = sys.stderr, width: int = 30):
    """A progress callback drawing `[#####.....] done/total leads` on one line of `out`."""

    def draw(done: int, total: int) -> None:
        filled = width * done // total if total else width
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} leads")
        if done >= total:
            out.write("\n")
        out.flush()

    return draw


def cmd_import(args: argparse.Namespace) -> int:
    from engine.errors import ServiceError
    from engine.leads.csvformat import parse_csv
    from engine.leads.imports import add_leads
    from engine.store import db, schema

    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        print(f"switchdesk: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        schema.init_schema(database)
        lines: list[int] = []
        try:
            rows = parse_csv(data, lines)
            print(f"{len(rows)} rows read; checking and writing", file=sys.stderr)
            result = add_leads(None, args.list_id, rows, progress=progress_bar())
        except ServiceError as exc:
            print(f"switchdesk: {exc.msg}", file=sys.stderr)
            problems = (exc.data or {}).get("errors", []) if isinstance(exc.data, dict) else []
            for problem in problems[:MAX_SHOWN_ERRORS]:
                line = lines[problem["index"]] if problem.get("index", -1) < len(lines) else "?"
                print(f"  line {line}: {problem['field']}: {problem['reason']}", file=sys.stderr)
            if len(problems) > MAX_SHOWN_ERRORS:
                print(f"  ... and {len(problems) - MAX_SHOWN_ERRORS} more", file=sys.stderr)
            return 1
    print(f"added {result['added']}, updated {result['updated']}, duplicates {result['duplicates']}; "
          f"list {args.list_id} has {result['list_rows']} leads")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.errors import ServiceError
    from engine.leads.csvformat import write_csv
    from engine.leads.phonelists import get_list
    from engine.store import db

    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        try:
            get_list(None, args.list_id)
        except ServiceError as exc:
            print(f"switchdesk: {exc.msg}", file=sys.stderr)
            return 1
        count = write_csv(args.list_id, sys.stdout)
    sys.stdout.flush()
    print(f"{count} leads exported", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return cmd_import(args) if args.leads_command == "import" else cmd_export(args)
