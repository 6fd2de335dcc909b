"""Reports over the 15-minute history (permission `reports`): `GET /api/report/queues` and `/agents`.

Dates are local dates of the account's time zone, `to` included; `group` is interval, day, week
(ISO weeks, from Monday) or month. Agents with `in_reports` false are left out.
`switchdesk report queues|agents` prints the same rows as CSV.

A report reads up to a year of rows: on SQLite it runs in a worker thread on a read-only connection of
its own (engine.stats.offloop), so the event loop (the call path, the streams) goes on meanwhile.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from flask import Blueprint
from pydantic import Field

from api.auth import Principal
from api.envelope import ok
from api.spec import IdList, Schema, endpoint
from engine.stats import offloop, reports

bp = Blueprint("reports", __name__, url_prefix="/api/report")


class ReportQuery(Schema):
    from_: dt.date = Field(alias="from", description="first local date (YYYY-MM-DD)")
    to: dt.date = Field(description="last local date, included (YYYY-MM-DD)")
    group: Literal["interval", "day", "week", "month"] = Field(
        "day", description=f"interval (15 minutes, at most {reports.MAX_INTERVAL_DAYS} days), day, week or month "
                           f"(at most {reports.MAX_DAYS} days)")


class QueueReportQuery(ReportQuery):
    queue_ids: Annotated[IdList, Field(max_length=1000, description="only these queues")] | None = None


class AgentReportQuery(ReportQuery):
    user_ids: Annotated[IdList, Field(max_length=5000, description="only these agents")] | None = None


@endpoint(bp, "/queues", ["GET"], summary="Queue report over a date range", tag="reports", permission="reports",
          query=QueueReportQuery)
def queue_report(principal: Principal, query: QueueReportQuery):
    """One row per queue and period with traffic: offered, answered, abandoned (short ones apart), timed out,
    lost, answered within the SLA, service level (the queue's sla_strategy), waits, talk and wrap-up."""
    return ok(offloop.run(reports.queues, principal.account, query.from_, query.to, query.group, query.queue_ids))


@endpoint(bp, "/agents", ["GET"], summary="Agent report over a date range", tag="reports", permission="reports",
          query=AgentReportQuery)
def agent_report(principal: Principal, query: AgentReportQuery):
    """One row per agent and period with activity: calls offered/answered/missed and seconds available,
    ringing, talking, in wrap-up, paused (and by pause reason) and checked in."""
    return ok(offloop.run(reports.agents, principal.account, query.from_, query.to, query.group, query.user_ids))
