"""Reports over the 15-minute history: grouping in the account's time zone (across a daylight-saving change),
in_reports, the permission, bad input, and the CLI's CSV."""
from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo

from engine import cli
from engine.stats import counters, days
from engine.store import db as dbmod
from engine.store.models import Account, User
from tests.stats.test_stats_engine import new_queue
from tests.support import make_agent

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def at(y, m, d, hh, mm=0):
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=PARIS).timestamp())


def test_queue_and_agent_reports(api, tenant, other_api, database, monkeypatch, capsys):
    Account.update(timezone="Europe/Paris").where(Account.id == tenant.account_id).execute()
    days.forget()  # written behind the services' back: no change notice
    q = new_queue(api, "Sales", sla_answer_time=20, sla_strategy=1)
    a = tenant.account_id
    # 25 October 2026: clocks go back at 03:00 in Paris (a 25-hour day)
    rows = [
        (at(2026, 10, 24, 23, 45), dict(offered=2, answered=1, answered_sla=1, abandoned=1, wait_sum=10, wait_max=30)),
        (at(2026, 10, 25, 0, 0), dict(offered=1, answered=1, answered_sla=0, wait_sum=40, wait_max=40)),
        (at(2026, 10, 25, 23, 45), dict(offered=1, answered=1, answered_sla=1, wait_sum=5, wait_max=5)),
        (at(2026, 10, 26, 0, 15), dict(offered=3, answered=2, answered_sla=2, timed_out=1, wait_sum=8, wait_max=9)),
        (at(2026, 11, 2, 9, 0), dict(offered=1, answered=1, answered_sla=1, wait_sum=1, wait_max=1)),
    ]
    for start, values in rows:  # through the write path of the event handlers: 15-minute and day rows
        counters.add_queue(a, q["id"], start, **values)
    ann = make_agent(a, "ann")
    hidden = make_agent(a, "hidden", in_reports=False)
    for user in (ann, hidden):
        counters.add_agent(a, user.id, at(2026, 10, 25, 23, 45), answered=2, talk_sec=300, pause_sec=120,
                           checked_in_sec=900)
        counters.add_pause(a, user.id, at(2026, 10, 25, 23, 45), 7, 120)

    def report(kind, **params):
        response = api.get(f"/api/report/{kind}", query_string=params)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    days_before = report("queues", **{"from": "2026-10-24", "to": "2026-10-26"})
    assert [(r["period"], r["offered"], r["answered"]) for r in days_before] == [
        ("2026-10-24", 2, 1), ("2026-10-25", 2, 2), ("2026-10-26", 3, 2)]
    day = days_before[1]
    assert day["service_level"] == 50.0 and day["max_wait"] == 40 and day["avg_wait"] == 22.5
    assert day["start"] == at(2026, 10, 25, 0)
    weeks = report("queues", **{"from": "2026-10-19", "to": "2026-11-08", "group": "week"})
    assert [(r["period"], r["offered"]) for r in weeks] == [("2026-10-19", 4), ("2026-10-26", 3), ("2026-11-02", 1)]
    months = report("queues", **{"from": "2026-10-01", "to": "2026-11-30", "group": "month"})
    assert [(r["period"], r["offered"], r["timed_out"]) for r in months] == [("2026-10", 7, 1), ("2026-11", 1, 0)]
    quarter = report("queues", **{"from": "2026-10-25", "to": "2026-10-25", "group": "interval"})
    assert [r["period"] for r in quarter] == ["2026-10-25T00:00+02:00", "2026-10-25T23:45+01:00"]

    agents = report("agents", **{"from": "2026-10-25", "to": "2026-10-25"})
    assert [(r["name"], r["answered"], r["talk_time"], r["pause_time_by_reason"]) for r in agents] == [
        ("ann", 2, 300, {"7": 120})]
    assert hidden.id not in [r["user_id"] for r in agents]

    # the account moves to UTC: its day rows are rebuilt from the 15-minute rows
    Account.update(timezone="UTC").where(Account.id == tenant.account_id).execute()
    assert days.check_zones() == [a] and days.check_zones() == []
    utc = report("queues", **{"from": "2026-10-24", "to": "2026-10-26"})
    assert [(r["period"], r["offered"]) for r in utc] == [("2026-10-24", 3), ("2026-10-25", 4)]
    assert report("agents", **{"from": "2026-10-25", "to": "2026-10-25"})[0]["pause_time_by_reason"] == {"7": 120}
    Account.update(timezone="Europe/Paris").where(Account.id == tenant.account_id).execute()
    assert days.check_zones() == [a]
    assert report("queues", **{"from": "2026-10-24", "to": "2026-10-26"}) == days_before

    # bad input and isolation
    for params in ({"from": "2026-10-25"}, {"from": "2026-13-01", "to": "2026-10-25"},
                   {"from": "2026-10-25", "to": "2026-10-24"}, {"from": "2025-01-01", "to": "2026-10-25"},
                   {"from": "2026-01-01", "to": "2026-10-25", "group": "interval"},
                   {"from": "2026-10-25", "to": "2026-10-25", "group": "year"}):
        response = api.get("/api/report/queues", query_string=params)
        assert response.status_code == 400 and response.get_json()["success"] is False, params
    assert other_api.get("/api/report/queues", query_string={"from": "2026-10-25", "to": "2026-10-25"}
                         ).get_json()["data"] == []
    User.update(is_admin=False, permissions={"stats": True}).where(User.id == tenant.admin_id).execute()
    assert api.get("/api/report/queues", query_string={"from": "2026-10-25", "to": "2026-10-25"}).status_code == 403

    # the CLI prints the same rows as CSV
    monkeypatch.setattr(dbmod, "bind", lambda url, command_line=False: database)
    assert cli.main(["report", "queues", "--account-domain", tenant.domain, "--from", "2026-10-24",
                     "--to", "2026-10-26"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["period"], r["offered"], r["service_level"]) for r in printed] == [
        ("2026-10-24", "2", "100.0"), ("2026-10-25", "2", "50.0"), ("2026-10-26", "3", "100.0")]
    assert cli.main(["report", "agents", "--account-domain", tenant.domain, "--from", "2026-10-25",
                     "--to", "2026-10-25", "--group", "month"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["name"], r["talk_time"], r["pause_time_by_reason"]) for r in printed] == [("ann", "300", '{"7": 120}')]
    assert cli.main(["report", "queues", "--account-domain", "nobody.test", "--from", "2026-10-24",
                     "--to", "2026-10-26"]) == 1
