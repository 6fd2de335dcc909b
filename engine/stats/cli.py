"""`switchdesk report queues|agents`: the reports of engine.stats.reports as CSV on stdout."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys


def add_parser(sub: argparse._SubParsersAction, db_arg) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="print a queue or agent report as CSV (as GET /api/report/...)")
    kinds = p.add_subparsers(dest="report_kind", required=True)
    for kind, ids in (("queues", "--queue-ids"), ("agents", "--user-ids")):
        pk = kinds.add_parser(kind, help=f"the {kind} report")
        db_arg(pk)
        pk.add_argument("--account-domain", required=True, help="the FreeSWITCH domain of the account")
        pk.add_argument("--from", dest="date_from", required=True, type=dt.date.fromisoformat,
                        help="first local date, YYYY-MM-DD")
        pk.add_argument("--to", dest="date_to", required=True, type=dt.date.fromisoformat,
                        help="last local date (included), YYYY-MM-DD")
        pk.add_argument("--group", choices=("interval", "day", "week", "month"), default="day")
        pk.add_argument(ids, dest="ids", default="", help="comma-separated ids (default: all)")


def run(args: argparse.Namespace) -> int:
    from engine.errors import ServiceError
    from engine.stats import reports
    from engine.store import db
    from engine.store.models import Account

    try:
        ids = [int(x) for x in args.ids.split(",") if x.strip()] or None
    except ValueError:
        print("switchdesk: ids: comma-separated numbers", file=sys.stderr)
        return 2
    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        account = Account.get_or_none(Account.domain == args.account_domain.strip().lower())
        if account is None:
            print(f"switchdesk: no account has the domain {args.account_domain}", file=sys.stderr)
            return 1
        try:
            if args.report_kind == "queues":
                rows, columns = reports.queues(account, args.date_from, args.date_to, args.group, ids), \
                    reports.CSV_QUEUE_COLUMNS
            else:
                rows, columns = reports.agents(account, args.date_from, args.date_to, args.group, ids), \
                    reports.CSV_AGENT_COLUMNS
        except ServiceError as exc:
            print(f"switchdesk: {exc.msg}", file=sys.stderr)
            return 2
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(columns)
    for row in rows:
        out.writerow(["" if row.get(c) is None else json.dumps(row[c], sort_keys=True) if isinstance(row.get(c), dict)
                      else row[c] for c in columns])
    return 0
