"""Time groups: the pure schedule (engine.callcenter.timegroups) across DST, and the /api/timegroup resource."""
from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from engine.callcenter import timegroups
from engine.callcenter.timegroups import SpecError, is_open, next_change
from engine.store.models import Queue, Tier, TimeGroup

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def spec(zone: str = "America/New_York", ranges=(), exceptions=()) -> dict:
    return {"timezone": zone, "ranges": list(ranges), "exceptions": list(exceptions)}


WEEKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:30"}


# --- the pure schedule ----------------------------------------------------------------------------


def test_weekly_range_in_the_groups_zone():
    office = spec(ranges=[WEEKDAYS])
    # Monday 2026-01-05, New York is UTC-5
    assert not is_open(office, utc(2026, 1, 5, 13, 59))
    assert is_open(office, utc(2026, 1, 5, 14, 0))
    assert is_open(office, utc(2026, 1, 5, 22, 29))
    assert not is_open(office, utc(2026, 1, 5, 22, 30))
    assert not is_open(office, utc(2026, 1, 10, 15, 0))  # Saturday
    assert next_change(office, utc(2026, 1, 5, 12, 0)) == utc(2026, 1, 5, 14, 0)
    assert next_change(office, utc(2026, 1, 5, 14, 0)) == utc(2026, 1, 5, 22, 30)
    # Friday evening: the next opening is Monday
    assert next_change(office, utc(2026, 1, 9, 23, 0)) == utc(2026, 1, 12, 14, 0)


def test_day_numbers_and_spans_mean_the_same_days():
    by_name = timegroups.normalise_ranges([WEEKDAYS])
    assert timegroups.normalise_ranges([{**WEEKDAYS, "days": [0, 1, 2, 3, 4]}]) == by_name
    assert timegroups.normalise_ranges([{**WEEKDAYS, "days": "mon-fri"}]) == by_name
    assert timegroups.normalise_ranges([{**WEEKDAYS, "days": ["Friday", "thu", "wed", "tue", "mon", "mon"]}]) == by_name
    assert timegroups.normalise_ranges([{"days": ["fri-mon"], "start": "9:00", "end": "24:00"}]) == [
        {"days": ["mon", "fri", "sat", "sun"], "start": "09:00", "end": "24:00"}]


def test_spring_forward_new_york():
    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC). A range starting in the gap
    # starts at the first valid instant after it.
    night = spec(ranges=[{"days": ["sun"], "start": "02:30", "end": "04:00"}])
    sunday = dt.datetime(2026, 3, 8, 0, 0, tzinfo=NY)
    assert next_change(night, sunday) == utc(2026, 3, 8, 7, 0)
    assert not is_open(night, utc(2026, 3, 8, 6, 59, 59))
    assert is_open(night, utc(2026, 3, 8, 7, 0))
    assert next_change(night, utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 8, 0)  # 04:00 EDT
    # A range wholly inside the gap does not open at all that day, but does the week after.
    lost = spec(ranges=[{"days": ["sun"], "start": "02:00", "end": "02:45"}])
    assert next_change(lost, sunday) == dt.datetime(2026, 3, 15, 2, 0, tzinfo=NY)


def test_spring_forward_day_is_23_hours_long():
    day = spec(ranges=[{"days": ["sun"], "start": "00:00", "end": "24:00"}])
    opens = next_change(day, utc(2026, 3, 7, 12, 0))
    closes = next_change(day, opens)
    assert opens == utc(2026, 3, 8, 5, 0) and closes == utc(2026, 3, 9, 4, 0)
    assert closes - opens == dt.timedelta(hours=23)


def test_fall_back_new_york_uses_the_first_occurrence():
    # 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:00-01:59 happens twice.
    repeated = spec(ranges=[{"days": ["sun"], "start": "01:15", "end": "01:45"}])
    first = utc(2026, 11, 1, 5, 15)  # 01:15 EDT
    assert next_change(repeated, utc(2026, 11, 1, 0, 0)) == first
    assert is_open(repeated, first)
    assert next_change(repeated, first) == utc(2026, 11, 1, 5, 45)
    assert not is_open(repeated, utc(2026, 11, 1, 6, 20))  # 01:20 EST, the second occurrence
    day = spec(ranges=[{"days": ["sun"], "start": "00:00", "end": "24:00"}])
    opens = next_change(day, utc(2026, 10, 31, 12, 0))
    assert next_change(day, opens) - opens == dt.timedelta(hours=25)


def test_berlin_transitions():
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    shop = spec("Europe/Berlin", ranges=[{"days": ["sun"], "start": "02:30", "end": "10:00"}])
    assert next_change(shop, dt.datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)) == utc(2026, 3, 29, 1, 0)
    assert next_change(shop, utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 29, 8, 0)
    assert next_change(shop, dt.datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)) == utc(2026, 10, 25, 0, 30)
    assert next_change(shop, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 9, 0)
    # The weekday office keeps its wall-clock hours on both sides of the change.
    office = spec("Europe/Berlin", ranges=[WEEKDAYS])
    assert is_open(office, utc(2026, 3, 27, 8, 0)) and not is_open(office, utc(2026, 3, 27, 7, 59))  # CET
    assert is_open(office, utc(2026, 3, 30, 7, 0)) and not is_open(office, utc(2026, 3, 30, 6, 59))  # CEST
    assert next_change(office, utc(2026, 3, 27, 20, 0)) == utc(2026, 3, 30, 7, 0)


def test_range_spanning_midnight():
    night = spec("UTC", ranges=[{"days": ["fri"], "start": "22:00", "end": "06:00"}])
    assert not is_open(night, utc(2026, 1, 9, 21, 59))  # Friday
    assert is_open(night, utc(2026, 1, 9, 22, 0))
    assert is_open(night, utc(2026, 1, 10, 5, 59))  # Saturday morning belongs to Friday's range
    assert not is_open(night, utc(2026, 1, 10, 6, 0))
    assert not is_open(night, utc(2026, 1, 8, 2, 0))  # Thursday night is not open
    assert next_change(night, utc(2026, 1, 9, 23, 0)) == utc(2026, 1, 10, 6, 0)
    # end 00:00 is the next midnight
    evening = spec("UTC", ranges=[{"days": ["mon"], "start": "18:00", "end": "00:00"}])
    assert next_change(evening, utc(2026, 1, 5, 19, 0)) == utc(2026, 1, 6, 0, 0)


def test_adjacent_and_overlapping_ranges_merge():
    split = spec("UTC", ranges=[{"days": ["mon"], "start": "08:00", "end": "12:00"},
                                {"days": ["mon"], "start": "12:00", "end": "13:00"},
                                {"days": ["mon"], "start": "10:00", "end": "11:00"}])
    assert next_change(split, utc(2026, 1, 5, 9, 0)) == utc(2026, 1, 5, 13, 0)


def test_always_open_and_never_open():
    always = spec("Asia/Tokyo", ranges=[{"days": "mon-sun", "start": "00:00", "end": "24:00"}])
    never = spec("Asia/Tokyo")
    for at in (utc(2026, 1, 1, 0, 0), utc(2026, 3, 8, 7, 0), utc(2031, 7, 4, 12, 34, 56)):
        assert is_open(always, at) and next_change(always, at) is None
        assert not is_open(never, at) and next_change(never, at) is None
    # also across a DST zone: the midnight boundaries of a 24/7 schedule never show
    assert next_change({**always, "timezone": "America/New_York"}, utc(2026, 3, 1, 0, 0)) is None


def test_closed_exception_closes_the_whole_day_even_a_range_from_the_day_before():
    night = spec("UTC", ranges=[{"days": "mon-sun", "start": "20:00", "end": "04:00"}],
                 exceptions=[{"date": "2026-12-25", "closed": True}])
    assert is_open(night, utc(2026, 12, 24, 23, 0))
    assert next_change(night, utc(2026, 12, 24, 23, 0)) == utc(2026, 12, 25, 0, 0)
    assert not is_open(night, utc(2026, 12, 25, 2, 0))
    assert not is_open(night, utc(2026, 12, 25, 21, 0))
    # The closure is exactly the calendar day: Christmas evening's range still covers the 26th's small hours.
    assert next_change(night, utc(2026, 12, 25, 0, 0)) == utc(2026, 12, 26, 0, 0)
    assert next_change(night, utc(2026, 12, 26, 0, 0)) == utc(2026, 12, 26, 4, 0)


def test_extra_range_and_replacement_ranges():
    office = spec("UTC", ranges=[WEEKDAYS], exceptions=[
        {"date": "2026-01-10", "start": "10:00", "end": "14:00"},  # a Saturday: extra opening
        {"date": "2026-01-12", "closed": True},  # Monday: closed, then ...
        {"date": "2026-01-12", "start": "12:00", "end": "13:00"},  # ... only this range
    ])
    assert is_open(office, utc(2026, 1, 10, 10, 0)) and not is_open(office, utc(2026, 1, 10, 14, 0))
    assert next_change(office, utc(2026, 1, 9, 18, 0)) == utc(2026, 1, 10, 10, 0)
    assert not is_open(office, utc(2026, 1, 12, 9, 30))
    assert is_open(office, utc(2026, 1, 12, 12, 30))
    assert next_change(office, utc(2026, 1, 12, 0, 0)) == utc(2026, 1, 12, 12, 0)
    assert next_change(office, utc(2026, 1, 12, 12, 0)) == utc(2026, 1, 12, 13, 0)
    assert next_change(office, utc(2026, 1, 12, 13, 0)) == utc(2026, 1, 13, 9, 0)


def test_a_far_exception_of_a_constant_schedule_is_found():
    always = spec("UTC", ranges=[{"days": "mon-sun", "start": "00:00", "end": "24:00"}],
                  exceptions=[{"date": "2030-05-01", "closed": True}])
    assert next_change(always, utc(2026, 1, 1, 0, 0)) == utc(2030, 5, 1, 0, 0)
    assert next_change(always, utc(2030, 5, 1, 0, 0)) == utc(2030, 5, 2, 0, 0)
    assert next_change(always, utc(2030, 5, 2, 0, 0)) is None
    never = spec("UTC", exceptions=[{"date": "2029-02-03", "start": "09:00", "end": "10:00"}])
    assert next_change(never, utc(2026, 1, 1)) == utc(2029, 2, 3, 9, 0)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(spec(), dt.datetime(2026, 1, 1))


@pytest.mark.parametrize("ranges, field", [
    ([{"days": ["mon"], "start": "25:00", "end": "26:00"}], "ranges.0.start"),
    ([{"days": ["mon"], "start": "24:00", "end": "01:00"}], "ranges.0.start"),
    ([{"days": ["mon"], "start": "09:00", "end": "09:00"}], "ranges.0.end"),
    ([{"days": ["mon"], "start": "9", "end": "10:00"}], "ranges.0.start"),
    ([{"days": ["moon"], "start": "09:00", "end": "10:00"}], "ranges.0.days"),
    ([{"days": [7], "start": "09:00", "end": "10:00"}], "ranges.0.days"),
    ([{"days": [], "start": "09:00", "end": "10:00"}], "ranges.0.days"),
    ([{"start": "09:00", "end": "10:00"}], "ranges.0.days"),
    (["mon 9-5"], "ranges.0"),
])
def test_malformed_ranges_name_the_item(ranges, field):
    with pytest.raises(SpecError) as err:
        timegroups.normalise_ranges(ranges)
    assert str(err.value).startswith(field + ":")


@pytest.mark.parametrize("exceptions, field", [
    ([{"date": "2026-02-30", "closed": True}], "exceptions.0.date"),
    ([{"date": "26-12-25", "closed": True}], "exceptions.0.date"),
    ([{"date": "1999-12-25", "closed": True}], "exceptions.0.date"),
    ([{"date": "2026-12-25"}], "exceptions.0"),
    ([{"date": "2026-12-25", "closed": "maybe"}], "exceptions.0.closed"),
    ([{"date": "2026-12-25", "start": "10:00"}], "exceptions.0.end"),
])
def test_malformed_exceptions_name_the_item(exceptions, field):
    with pytest.raises(SpecError) as err:
        timegroups.normalise_exceptions(exceptions)
    assert str(err.value).startswith(field + ":")


@pytest.mark.parametrize("zone, start", [
    ("America/New_York", utc(2026, 3, 5)), ("America/New_York", utc(2026, 10, 29)),
    ("Europe/Berlin", utc(2026, 3, 26)), ("Europe/Berlin", utc(2026, 10, 22)),
    ("Australia/Lord_Howe", utc(2026, 4, 2)),  # a 30-minute DST shift
])
def test_next_change_matches_a_walk_in_quarter_hours(zone, start):
    """An independent oracle: every boundary here falls on a quarter hour, so stepping finds them all."""
    group = spec(zone, ranges=[
        {"days": ["sun"], "start": "01:30", "end": "02:45"},
        {"days": ["sun"], "start": "02:15", "end": "03:15"},
        {"days": "mon-fri", "start": "09:00", "end": "17:30"},
        {"days": ["sat"], "start": "23:00", "end": "01:45"},
    ], exceptions=[{"date": (start + dt.timedelta(days=2)).date().isoformat(), "closed": True}])
    step = dt.timedelta(minutes=15)
    states = [(start + i * step, is_open(group, start + i * step)) for i in range(10 * 96)]
    flips = [at for (_, before), (at, now) in itertools.pairwise(states) if now != before]
    assert len(flips) > 10
    expected = iter(flips)
    want = next(expected)
    for at, _ in states:
        while want is not None and want <= at:
            want = next(expected, None)
        if want is None:
            break
        assert next_change(group, at) == want, at


def test_property_is_open_is_constant_until_next_change():
    import hypothesis
    st = hypothesis.strategies

    times = st.integers(0, 24 * 4 - 1).map(lambda q: f"{q // 4:02d}:{q % 4 * 15:02d}")
    ranges = st.lists(st.fixed_dictionaries({
        "days": st.lists(st.sampled_from(timegroups.DAYS), min_size=1, max_size=7),
        "start": times, "end": times,
    }).filter(lambda r: r["start"] != r["end"]), max_size=4)
    dates = st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)).map(dt.date.isoformat)
    exceptions = st.lists(st.one_of(
        st.fixed_dictionaries({"date": dates, "closed": st.just(True)}),
        st.fixed_dictionaries({"date": dates, "start": times, "end": times}).filter(lambda r: r["start"] != r["end"]),
    ), max_size=3)
    zones = st.sampled_from(["America/New_York", "Europe/Berlin", "UTC", "Australia/Lord_Howe", "Asia/Kolkata"])
    instants = st.integers(int(utc(2026, 1, 1).timestamp()), int(utc(2026, 12, 31).timestamp()))

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(zones, ranges, exceptions, instants, st.lists(st.floats(0, 1), min_size=3, max_size=3))
    def check(zone, ranges, exceptions, start, fractions):
        group = spec(zone, ranges, exceptions)
        after = dt.datetime.fromtimestamp(start, UTC)
        state = is_open(group, after)
        change = next_change(group, after)
        if change is None:
            probes = [after + dt.timedelta(days=400 * f) for f in fractions]
        else:
            assert change > after
            assert is_open(group, change) != state
            probes = [after + (change - after) * f for f in fractions]
            probes.append(change - dt.timedelta(seconds=1) if change - after > dt.timedelta(seconds=1) else after)
        for probe in probes:
            if change is None or probe < change:
                assert is_open(group, probe) == state, (probe, change)

    check()


# --- the API ---------------------------------------------------------------------------------------


def create(api, **over):
    body = {"name": "Office", "timezone": "Europe/Berlin", "ranges": [WEEKDAYS],
            "exceptions": [{"date": "2026-12-25", "closed": True}], **over}
    r = api.post("/api/timegroup", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_create_get_update_delete(api, tenant):
    data = create(api, ranges=[{"days": "mon-fri", "start": "9:00", "end": "17:30"}])
    assert data["account_id"] == tenant.account_id
    assert data["ranges"] == [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:30"}]
    assert data["exceptions"] == [{"date": "2026-12-25", "closed": True}]
    assert isinstance(data["open"], bool) and isinstance(data["next_change"], int)
    assert api.get(f"/api/timegroup/{data['id']}").get_json()["data"] == data
    r = api.put(f"/api/timegroup/{data['id']}", json={"name": "Office hours"})
    assert r.get_json()["data"]["name"] == "Office hours"
    assert r.get_json()["data"]["ranges"] == data["ranges"]  # partial update
    r = api.put(f"/api/timegroup/{data['id']}", json={"ranges": None})
    assert r.get_json()["data"]["ranges"] == [] and r.get_json()["data"]["open"] is False
    assert api.delete(f"/api/timegroup/{data['id']}").status_code == 200
    assert api.get(f"/api/timegroup/{data['id']}").status_code == 404


def test_form_body_with_json_text(api):
    r = api.post("/api/timegroup", data={"name": "Nights", "timezone": "UTC",
                                         "ranges": '[{"days": [0], "start": "22:00", "end": "06:00"}]'})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["data"]["ranges"] == [{"days": ["mon"], "start": "22:00", "end": "06:00"}]


def test_timezone_defaults_to_the_accounts(api, tenant):
    from engine.store.models import Account

    Account.update(timezone="Asia/Jerusalem").where(Account.id == tenant.account_id).execute()
    assert api.post("/api/timegroup", json={"name": "Null zone", "timezone": None}).status_code == 400
    r = api.post("/api/timegroup", json={"name": "Default zone"})
    assert r.get_json()["data"]["timezone"] == "Asia/Jerusalem"


def test_bad_input_names_the_field_and_changes_nothing(api):
    cases = [
        ({"name": "x", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "x", "ranges": [{"days": ["mon"], "start": "09:00", "end": "25:00"}]}, "ranges.0.end"),
        ({"name": "x", "exceptions": [{"date": "tomorrow", "closed": True}]}, "exceptions.0.date"),
        ({"name": "x", "ranges": "not json"}, "ranges"),
        ({"timezone": "UTC"}, "name"),
        ({"name": "x\x00y"}, "name"),
    ]
    for body, field in cases:
        r = api.post("/api/timegroup", json=body)
        assert r.status_code == 400, body
        assert r.get_json()["msg"].startswith(field + ":"), (body, r.get_json()["msg"])
    assert TimeGroup.select().count() == 0


def test_duplicate_name_409(api):
    create(api)
    assert api.post("/api/timegroup", json={"name": "Office"}).status_code == 409
    other = create(api, name="Other")
    assert api.put(f"/api/timegroup/{other['id']}", json={"name": "Office"}).status_code == 409


def test_other_accounts_time_group_is_404(api, other_api):
    data = create(api)
    for call in (other_api.get, other_api.delete):
        assert call(f"/api/timegroup/{data['id']}").status_code == 404
    assert other_api.put(f"/api/timegroup/{data['id']}", json={"name": "Mine"}).status_code == 404
    assert other_api.get("/api/timegroup").get_json()["data"] == []


def test_delete_in_use_by_a_tier_is_409_naming_the_queues(api, tenant):
    from engine.store.models import User

    data = create(api)
    sales = Queue.create(account=tenant.account_id, name="Sales")
    support = Queue.create(account=tenant.account_id, name="Support")
    for queue in (sales, support):
        Tier.create(account=tenant.account_id, queue=queue, user=User.get_by_id(tenant.admin_id),
                    timegroup=data["id"])
    r = api.delete(f"/api/timegroup/{data['id']}")
    assert r.status_code == 409
    assert "Sales" in r.get_json()["msg"] and "Support" in r.get_json()["msg"]
    assert r.get_json()["data"]["queue_ids"] == [sales.id, support.id]
    assert TimeGroup.get_or_none(TimeGroup.id == data["id"]) is not None
    Tier.update(timegroup=None).execute()
    assert api.delete(f"/api/timegroup/{data['id']}").status_code == 200


def test_permission_module(client, tenant):
    from engine.store.models import User
    from tests.conftest import Api

    User.update(is_admin=False, permissions={"call_center_api": True}).where(User.id == tenant.admin_id).execute()
    api = Api(client, tenant)
    assert api.get("/api/timegroup").status_code == 403
    User.update(permissions={"call_center_api": True, "timegroups": True}).where(
        User.id == tenant.admin_id).execute()
    assert api.get("/api/timegroup").status_code == 200
