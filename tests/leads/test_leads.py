"""Phone list leads (vendor doc: Phone List Leads): writes, batches, CSV, streaming, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from engine.leads import csvformat, imports, streaming, validation
from engine.store.models import Lead, LeadImport, PhoneList
from tests.leads.test_phone_lists import add, make_list


def get_leads(api, list_id: int, **query) -> list[dict]:
    r = api.get(f"/api/phone_list/{list_id}/lead", query_string=query)
    assert r.status_code == 200
    body = json.loads(r.get_data())
    assert body["success"] is True
    return body["data"]


def phones(api, list_id: int, **query) -> list[str]:
    return [x["phone"] for x in get_leads(api, list_id, **query)]


@pytest.fixture
def plist(api) -> int:
    return make_list(api, "Leads")["id"]


def test_one_lead_shape_matches_the_document(api, plist):
    assert add(api, plist, {"phone": "972501234567", "name": "ABC office", "lead_id": "3", "priority": 1}) == {
        "added": 1, "updated": 0, "duplicates": 0, "list_rows": 1}
    assert get_leads(api, plist) == [{"id": "972501234567", "phone": "972501234567", "lead_id": "3", "priority": 1,
                                      "name": "ABC office", "tags": None, "ext_api_vars": {}}]


def test_ext_api_vars_returned_exactly_with_key_order(api, plist):
    ext = {"zeta": 1, "alpha": {"y": [3, "b"], "b": None}, "m": "שלום", "n": 1.5, "t": True}
    add(api, plist, {"phone": "5551000", "ext_api_vars": ext})
    raw = api.get(f"/api/phone_list/{plist}/lead").get_data(as_text=True)
    assert '"ext_api_vars":{"zeta":1,"alpha":{"y":[3,"b"],"b":null},"m":"שלום","n":1.5,"t":true}' in raw
    assert json.loads(raw)["data"][0]["ext_api_vars"] == ext
    r = api.put(f"/api/phone_list/{plist}/lead/5551000", json={"name": "x"})
    assert list(r.get_json()["data"]["ext_api_vars"]) == ["zeta", "alpha", "m", "n", "t"]


def test_ext_api_vars_null_is_kept_and_returned_as_null(api, plist):
    """The vendor document's third lead has `"ext_api_vars": null`: posted (fast path, standard decoder, form,
    CSV) or written with PUT, it is stored and returned as null; a lead without the field gets {}."""
    add(api, plist, [{"phone": "5551000", "ext_api_vars": None}, {"phone": "5552000"},
                     {"phone": "5553000", "priority": 1.0, "ext_api_vars": None}])  # a float: the standard path
    assert add(api, plist, {"phone": "5554000", "name": "one", "ext_api_vars": None})["added"] == 1
    r = api.post(f"/api/phone_list/{plist}/lead", data="phone,name,ext_api_vars\n5555000,csv,null\n",
                 content_type="text/csv")
    assert r.status_code == 200, r.get_json()
    by_phone = {x["phone"]: x["ext_api_vars"] for x in get_leads(api, plist)}
    assert by_phone == {"5551000": None, "5552000": {}, "5553000": None, "5554000": None, "5555000": None}
    assert '"phone":"5551000","lead_id":null,"priority":0,"name":null,"tags":null,"ext_api_vars":null' in api.get(
        f"/api/phone_list/{plist}/lead").get_data(as_text=True)
    r = api.put(f"/api/phone_list/{plist}/lead/5552000", json={"ext_api_vars": None})
    assert r.status_code == 200 and r.get_json()["data"]["ext_api_vars"] is None
    assert {x["phone"]: x["ext_api_vars"] for x in get_leads(api, plist)}["5552000"] is None
    r = api.put(f"/api/phone_list/{plist}/lead/5552000", json={"ext_api_vars": {"a": 1}})
    assert r.get_json()["data"]["ext_api_vars"] == {"a": 1}
    r = api.put(f"/api/phone_list/{plist}/lead/5551000", json={"name": "x"})  # untouched: stays null
    assert r.get_json()["data"]["ext_api_vars"] is None


def test_phones_normalised_and_unique_per_list(api, plist):
    """A number is one lead of a list whatever its form (the account is in the US): the lead keeps the
    form it was first stored in, and its place."""
    add(api, plist, {"phone": "+1 (555) 123-4567", "name": "a"})
    result = add(api, plist, [{"phone": "+1.555.123.4567", "name": "b"}, {"phone": "1 555 1234567", "name": "c"},
                              {"phone": "(555) 123-4567", "name": "d"}, {"phone": "972501234567", "name": "e"}])
    assert result == {"added": 1, "updated": 1, "duplicates": 2, "list_rows": 2}
    assert [(x["id"], x["name"]) for x in get_leads(api, plist)] == [("+15551234567", "d"), ("972501234567", "e")]
    assert [lead.phone_key for lead in Lead.select().order_by(Lead.id)] == ["+15551234567", "972501234567"]
    assert add(api, plist, {"phone": "+972501234567"})["added"] == 1  # 972... is no US number: another one
    other = make_list(api, "Other")["id"]
    assert add(api, other, {"phone": "+15551234567"})["added"] == 1  # unique per list only


def test_post_upsert_replaces_the_lead_and_keeps_its_place(api, plist):
    add(api, plist, [{"phone": "5551000", "name": "first", "tags": "x", "lead_id": "9"}, {"phone": "5552000"}])
    assert add(api, plist, {"phone": "5551000", "name": "again"})["updated"] == 1
    data = get_leads(api, plist)
    assert [x["phone"] for x in data] == ["5551000", "5552000"]
    assert data[0] == {"id": "5551000", "phone": "5551000", "lead_id": None, "priority": 0, "name": "again",
                       "tags": None, "ext_api_vars": {}}


def test_order_priority_desc_then_insertion(api, plist):
    add(api, plist, [{"phone": "5550001", "priority": 0}, {"phone": "5550002", "priority": 5},
                     {"phone": "5550003", "priority": 0}, {"phone": "5550004", "priority": -2},
                     {"phone": "5550005", "priority": 5}])
    add(api, plist, {"phone": "5550006", "priority": 5})
    assert phones(api, plist) == ["5550002", "5550005", "5550006", "5550001", "5550003", "5550004"]


def test_duplicates_inside_a_batch_last_one_wins(api, plist):
    result = add(api, plist, [{"phone": "5551000", "name": "one"}, {"phone": "555-1000", "name": "two"},
                              {"phone": "5552000"}])
    assert result == {"added": 2, "updated": 0, "duplicates": 1, "list_rows": 2}
    assert get_leads(api, plist)[0]["name"] == "two"


def test_bad_batch_refused_whole_with_every_bad_row(api, plist):
    add(api, plist, {"phone": "5559999", "name": "kept"})
    batch = [{"phone": "5551000"}, {"phone": "12"}, {"name": "no phone"}, {"phone": "5552000", "priority": "high"},
             "not an object", {"phone": "5553000", "ext_api_vars": [1]}, {"phone": "5554000", "name": "a\x01b"},
             {"phone": "5555000", "name": "x" * 201}, {"phone": "5556000", "tags": {"a": 1}},
             {"phone": "5557000", "priority": True}, {"phone": "5558000", "name": "fine"}]
    r = api.post(f"/api/phone_list/{plist}/lead", json=batch)
    assert r.status_code == 400
    body = r.get_json()
    assert body["success"] is False and body["msg"].startswith("leads[1].phone:")
    assert [(e["index"], e["field"]) for e in body["data"]["errors"]] == [
        (1, "phone"), (2, "phone"), (3, "priority"), (4, "lead"), (5, "ext_api_vars"), (6, "name"), (7, "name"),
        (8, "tags"), (9, "priority")]
    assert all(e["reason"] for e in body["data"]["errors"])
    assert phones(api, plist) == ["5559999"]
    assert api.get(f"/api/phone_list/{plist}").get_json()["data"]["list_rows"] == 1


def test_empty_and_malformed_bodies_are_400(api, plist):
    assert api.post(f"/api/phone_list/{plist}/lead", json=[]).status_code == 400
    r = api.post(f"/api/phone_list/{plist}/lead", data="[{", content_type="application/json")
    assert r.status_code == 400 and r.get_json()["msg"] == "Malformed JSON body"
    assert api.post(f"/api/phone_list/{plist}/lead", json=[1, 2]).status_code == 400
    assert api.post("/api/phone_list/999/lead", json={"phone": "5551000"}).status_code == 404


def test_form_and_query_single_lead(api, plist):
    r = api.post(f"/api/phone_list/{plist}/lead", data={"phone": "555 1000", "priority": "3",
                                                          "ext_api_vars": '{"b": 1, "a": 2}'})
    assert r.status_code == 200, r.get_json()
    r = api.post(f"/api/phone_list/{plist}/lead", query_string={"phone": "5552000", "name": "q"})
    assert r.status_code == 200, r.get_json()
    data = get_leads(api, plist)
    assert [(x["phone"], x["priority"]) for x in data] == [("5551000", 3), ("5552000", 0)]
    assert list(data[0]["ext_api_vars"]) == ["b", "a"]


def test_put_one_lead_is_partial(api, plist):
    add(api, plist, {"phone": "5551000", "name": "a", "lead_id": "1", "tags": "t", "ext_api_vars": {"k": 1}})
    r = api.put(f"/api/phone_list/{plist}/lead/555-1000", json={"priority": 7, "tags": None})
    assert r.status_code == 200
    assert r.get_json()["data"] == {"id": "5551000", "phone": "5551000", "lead_id": "1", "priority": 7,
                                    "name": "a", "tags": None, "ext_api_vars": {"k": 1}}
    r = api.put(f"/api/phone_list/{plist}/lead/5551000", json={"priority": "x"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("priority:")
    assert api.put(f"/api/phone_list/{plist}/lead/5550000", json={"name": "x"}).status_code == 404
    assert api.put(f"/api/phone_list/{plist}/lead/abc", json={"name": "x"}).status_code == 404


def test_put_renumbers_and_refuses_a_taken_number(api, plist):
    add(api, plist, [{"phone": "5551000"}, {"phone": "5552000"}])
    r = api.put(f"/api/phone_list/{plist}/lead/5551000", json={"phone": "+1 555 3000"})
    assert r.status_code == 200 and r.get_json()["data"]["id"] == "+15553000"
    r = api.put(f"/api/phone_list/{plist}/lead/+15553000", json={"phone": "5552000"})
    assert r.status_code == 409
    assert phones(api, plist) == ["+15553000", "5552000"]


def test_delete_one_and_many(api, plist):
    add(api, plist, [{"phone": f"555100{i}"} for i in range(8)])
    assert api.delete(f"/api/phone_list/{plist}/lead/555-1000").status_code == 200
    assert api.delete(f"/api/phone_list/{plist}/lead/5551000").status_code == 404
    r = api.delete(f"/api/phone_list/{plist}/lead", json=["5551001", "555 1002", "5559999"])
    assert r.get_json()["data"] == {"deleted": 2}
    r = api.delete(f"/api/phone_list/{plist}/lead", json={"phones": ["5551003"]})
    assert r.get_json()["data"] == {"deleted": 1}
    r = api.delete(f"/api/phone_list/{plist}/lead", query_string={"phones": "5551004,5551005"})
    assert r.get_json()["data"] == {"deleted": 2}
    r = api.delete(f"/api/phone_list/{plist}/lead", json=["5551006", "xx"])
    assert r.status_code == 400 and r.get_json()["data"]["errors"][0]["index"] == 1
    assert api.delete(f"/api/phone_list/{plist}/lead", json={}).status_code == 400
    assert phones(api, plist) == ["5551006", "5551007"]
    assert api.get(f"/api/phone_list/{plist}").get_json()["data"]["list_rows"] == 2


def test_csv_post_maps_known_columns_and_keeps_the_rest(api, plist):
    text = ("Phone,Name,crm_stage,priority,lead_id,region\n"
            "+1 555 100 0000,Ann,hot,2,A1,north\n"
            "\n"
            "5552000,,cold,,A2,\n")
    r = api.post(f"/api/phone_list/{plist}/lead", data=text.encode(), content_type="text/csv")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["data"]["added"] == 2
    data = get_leads(api, plist)
    assert data[0] == {"id": "+15551000000", "phone": "+15551000000", "lead_id": "A1", "priority": 2, "name": "Ann",
                       "tags": None, "ext_api_vars": {"crm_stage": "hot", "region": "north"}}
    assert data[1]["name"] is None and data[1]["ext_api_vars"] == {"crm_stage": "cold", "region": ""}


def test_csv_bad_rows_refused_whole(api, plist):
    text = "phone,priority\n5551000,1\nnope,2\n5553000,high\n"
    r = api.post(f"/api/phone_list/{plist}/lead", data=text, content_type="text/csv")
    assert r.status_code == 400
    assert [(e["index"], e["field"]) for e in r.get_json()["data"]["errors"]] == [(1, "phone"), (2, "priority")]
    assert phones(api, plist) == []
    r = api.post(f"/api/phone_list/{plist}/lead", data="name\nAnn\n", content_type="text/csv")
    assert r.status_code == 400 and "phone" in r.get_json()["msg"]
    r = api.post(f"/api/phone_list/{plist}/lead", data=b"phone\n\xff\xfe\n", content_type="text/csv")
    assert r.status_code == 400


def test_csv_export_round_trips_through_import(api, plist):
    add(api, plist, [{"phone": "5551000", "name": 'Ann "A", Jr', "priority": 2, "ext_api_vars": {"z": 1, "a": [1]}},
                     {"phone": "+15552000", "tags": "t1,t2", "lead_id": "7"}])
    import io

    out = io.StringIO()
    assert csvformat.write_csv(plist, out) == 2
    copy = make_list(api, "Copy")["id"]
    r = api.post(f"/api/phone_list/{copy}/lead", data=out.getvalue(), content_type="text/csv")
    assert r.status_code == 200, r.get_json()
    assert get_leads(api, copy) == get_leads(api, plist)


def test_csv_export_defuses_formulas_and_reads_back_the_same_values(api, plist):
    """OWASP CSV injection: no cell of the export starts with what a spreadsheet would run."""
    import csv
    import io

    risky = ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
             "'=already quoted", "'plain apostrophe", "ok"]  # tab and CR: refused as input (control characters)
    for value in ("\tTab", "\rCR", *risky):
        assert csvformat.restore(csvformat.defuse(value)) == value
    add(api, plist, [{"phone": f"+1555300{i}", "name": name, "lead_id": name, "tags": name,
                      "ext_api_vars": {"note": name}} for i, name in enumerate(risky)])
    out = io.StringIO()
    assert csvformat.write_csv(plist, out) == len(risky)
    cells = [cell for row in csv.reader(io.StringIO(out.getvalue(), newline="")) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'+15553000" in cells and "'plain apostrophe" in cells  # kept as it is: no formula follows
    copy = make_list(api, "Copy")["id"]
    r = api.post(f"/api/phone_list/{copy}/lead", data=out.getvalue(), content_type="text/csv")
    assert r.status_code == 200, r.get_json()
    assert get_leads(api, copy) == get_leads(api, plist)
    assert sorted(lead["name"] for lead in get_leads(api, copy)) == sorted(risky)


# --- large batches: the staged import -----------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(imports, "LARGE_BATCH", 10)
    monkeypatch.setattr(imports, "CHUNK", 4)
    monkeypatch.setattr(streaming, "READ_CHUNK", 7)


def test_large_batch_is_staged_and_counts_and_places_are_right(api, plist, small_chunks):
    add(api, plist, [{"phone": f"55510{i:02d}", "name": "old"} for i in range(5)])
    batch = [{"phone": f"55510{i:02d}", "name": "new", "priority": i % 2} for i in range(3, 30)]
    assert add(api, plist, batch) == {"added": 25, "updated": 2, "duplicates": 0, "list_rows": 30}
    data = get_leads(api, plist)
    assert len(data) == 30 and Lead.select().where(Lead.import_id.is_null(False)).count() == 0
    odd = [x["phone"] for x in data if x["priority"] == 1]
    assert odd == [f"55510{i:02d}" for i in range(3, 30) if i % 2]
    even = [x["phone"] for x in data if x["priority"] == 0]
    # 5551000..02 kept their (first) place; 03 and 04 were updated in place, before the new rows
    assert even[:5] == ["5551000", "5551001", "5551002", "5551004", "5551006"]
    assert [x["name"] for x in data if x["phone"] in ("5551000", "5551004")] == ["old", "new"]
    assert LeadImport.select().count() == 0


def test_staged_import_is_invisible_until_published(api, plist, tenant, small_chunks):
    add(api, plist, {"phone": "5559999", "priority": 1})
    seen = []

    def peek(done: int, total: int) -> None:
        seen.append((done, phones(api, plist), PhoneList.get_by_id(plist).list_rows))

    imports.add_leads(tenant.account_id, plist, [{"phone": f"55510{i:02d}"} for i in range(12)], progress=peek)
    assert [s[0] for s in seen] == [4, 8, 12]
    assert all(s[1] == ["5559999"] and s[2] == 1 for s in seen)
    assert len(phones(api, plist)) == 13


def test_failed_staged_import_leaves_the_list_unchanged(api, plist, tenant, small_chunks, monkeypatch):
    add(api, plist, {"phone": "5559999", "name": "kept"})

    def boom(list_id: int, import_id: int):
        raise RuntimeError("disk full")

    monkeypatch.setattr(imports, "_publish", boom)
    with pytest.raises(RuntimeError):
        imports.add_leads(tenant.account_id, plist, [{"phone": f"55510{i:02d}"} for i in range(12)])
    assert Lead.select().count() == 1 and LeadImport.select().count() == 0
    assert get_leads(api, plist)[0]["name"] == "kept"


def test_large_batch_with_one_bad_row_writes_nothing(api, plist, small_chunks):
    batch = [{"phone": f"55510{i:02d}"} for i in range(40)] + [{"phone": "x"}]
    r = api.post(f"/api/phone_list/{plist}/lead", json=batch)
    assert r.status_code == 400 and r.get_json()["data"]["errors"] == [
        {"index": 40, "field": "phone", "reason": "not a phone number (3 to 20 digits, optional +)"}]
    assert Lead.select().count() == 0 and LeadImport.select().count() == 0


def test_stale_import_rows_are_purged_by_the_next_import(api, plist, small_chunks):
    stale = LeadImport.create(phone_list=plist, started=1)
    Lead.create(phone_list=plist, phone="5550000", import_id=stale.id)
    add(api, plist, [{"phone": f"55510{i:02d}"} for i in range(12)])
    assert Lead.select().where(Lead.phone == "5550000").count() == 0
    assert LeadImport.select().count() == 0


# --- reading -----------------------------------------------------------------------------------


def test_keyset_pages_match_a_full_sort(api, plist, small_chunks):
    batch = [{"phone": f"5551{i:03d}", "priority": (i * 7) % 4} for i in range(60)]
    add(api, plist, batch)
    expected = [b["phone"] for b in sorted(batch, key=lambda b: -b["priority"])]  # stable: insertion order
    assert phones(api, plist) == expected
    assert phones(api, plist, limit=10, offset=13) == expected[13:23]
    assert phones(api, plist, offset=55) == expected[55:]
    assert phones(api, plist, limit=100) == expected


def test_filter_by_phone_prefix_or_name(api, plist):
    add(api, plist, [{"phone": "+972501111111", "name": "Dana"}, {"phone": "15551000", "name": "Office 972"},
                     {"phone": "97250222", "name": "Eli"}, {"phone": "4412345", "name": "bob danaher"}])
    assert phones(api, plist, q="dana") == ["+972501111111", "4412345"]
    assert phones(api, plist, q="972") == ["15551000", "97250222"]
    assert phones(api, plist, q="+972-50") == ["+972501111111"]
    assert phones(api, plist, q="100%") == []


def test_stream_of_50000_leads_is_valid_json_in_order(api, plist):
    batch = [{"phone": f"9725{i:07d}", "name": f"L{i}", "priority": 1 if i % 10 == 0 else 0,
              "ext_api_vars": {"i": i}} for i in range(50_000)]
    assert add(api, plist, batch)["added"] == 50_000
    r = api.get(f"/api/phone_list/{plist}/lead")
    assert r.is_streamed and r.mimetype == "application/json"
    data = json.loads(r.get_data())["data"]
    order = [x["ext_api_vars"]["i"] for x in data]
    assert order == [i for i in range(50_000) if i % 10 == 0] + [i for i in range(50_000) if i % 10]
    assert data[0] == {"id": "97250000000", "phone": "97250000000", "lead_id": None, "priority": 1, "name": "L0",
                       "tags": None, "ext_api_vars": {"i": 0}}
    page = get_leads(api, plist, limit=3, offset=4999)
    assert [x["ext_api_vars"]["i"] for x in page] == [49990, 1, 2]


# --- command line ------------------------------------------------------------------------------


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    from tests.test_cli import ROOT

    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, input=stdin)


def test_cli_import_and_export(tmp_path):
    from engine.store import db
    from engine.store.models import Account

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run_cli("init", "--db", url, "--domain", "cli.test").returncode == 0
    database = db.bind(url)
    with database.connection_context():
        list_id = PhoneList.create(account=Account.get().id, name="cli", name_key="cli").id
    database.close_all()
    rows = "\n".join(f"555{i:05d},Lead {i},{i % 3},north" for i in range(7000))
    (tmp_path / "leads.csv").write_text("phone,name,priority,region\n" + rows + "\n")
    done = run_cli("leads", "import", str(list_id), str(tmp_path / "leads.csv"), "--db", url)
    assert done.returncode == 0, done.stderr
    assert "added 7000, updated 0" in done.stdout
    assert "7000/7000 leads" in done.stderr and "[####" in done.stderr
    again = run_cli("leads", "import", str(list_id), "-", "--db", url, stdin="phone,name\n55500001,Renamed\n")
    assert "added 0, updated 1" in again.stdout and "7000 leads" in again.stdout
    bad = run_cli("leads", "import", str(list_id), "-", "--db", url, stdin="phone\n5551234\n\nnope\n")
    assert bad.returncode == 1 and "line 4: phone" in bad.stderr
    out = run_cli("leads", "export", str(list_id), "--db", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "phone,name,lead_id,priority,tags,ext_api_vars" and len(lines) == 7001
    assert lines[1] == '55500002,Lead 2,,2,,"{""region"":""north""}"'
    assert "55500001,Renamed,,0,,{}" in lines
    assert run_cli("leads", "export", "999", "--db", url).returncode == 1


# --- the msgspec decode path gives the standard decoder's outcome --------------------------------

_PHONES = ['"972501234567"', '"+1 (555) 123-4567"', '"1.555.123.4567"', '"12"', '""', "null", "5551234", "true",
           '"abc"', '"+15551234567"', '"\\u0663\\u0663\\u0663"', '"555\\n1234"', "1.5", '{"a": 1}',
           '"123456789012345678901"', '" 5551234 "']
_TEXTS = ['"Ann"', '" padded "', '""', "null", "12", "1.5", "true", '{"a": 1}', '"' + "x" * 201 + '"',
          '"' + "x" * 101 + '"', '"a\\u0001b"', '"tab\\there\\nline"', '"\\u007f"', '"\\u05e9\\u05dc"',
          '"\\u00a0nbsp "', '"\\ud800"', '"q\\"uote\\\\"', '"\\r"']
_PRIORITIES = ["0", "7", "-3", '"3"', '" 4 "', '"high"', "2.0", "2.5", "true", "null", '""', "2147483647",
               "2147483648", "-2147483649", "123456789012345678901234567890", "1e400", "[1]"]
_EXTS = ["{}", "null", '""', '{"crm_id": 1, "campaign": "spring"}',
         '{"z":1,"a":{"y":[3,"b"],"b":null},"m":"שלום"}', '{"n": 1.5}', '{"n": 1e16}', '{"n": 1.5e-05}',
         '{"big": 123456789012345678901234567890}', '{"a":1,"b":2,"a":3}',
         '{"s": "tab\\there\\nnl"}', '{"q": "\\"quoted\\" \\\\ \\/"}', '{"c": "\\u0001"}', '{"d": "\\u007f"}',
         '{"e": "\\u00e9"}', "[1]", '"{\\"k\\": 2}"', '"not json"', '{"x": NaN}', '{"x": 1e400}', "3", '{"k": -0}',
         '{"k": -0.0}', '{"deep": [[[{"a": [true, false, null]}]]]}', '{"u": "\\ud83d\\ude00"}', '{"l": "\\ud800"}',
         '{"": 0}', '{"t": true}']


def _outcome(call) -> tuple:
    from engine.errors import ServiceError

    try:
        return ("ok", call())
    except ServiceError as exc:
        return (exc.status, exc.msg, exc.data)


def _reference(body: bytes) -> tuple:
    """What the server answered before msgspec: json.loads, then check_leads over dicts."""
    try:
        rows = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return (400, "Malformed JSON body", None)
    return _outcome(lambda: validation.check_leads(rows))


def _row_text(fields: dict[str, str], spaced: bool) -> str:
    sep, colon = (", ", ": ") if spaced else (",", ":")
    return "{" + sep.join(f'"{name}"{colon}{value}' for name, value in fields.items()) + "}"


def test_fast_decode_matches_the_standard_decoder():
    """decode_leads + check_leads (structs) answers every body as json.loads + check_leads (dicts) does."""
    import hypothesis

    st = hypothesis.strategies

    def pick(plain: list[str], odd: list[str]):  # half plain values, so whole rows get through too
        return st.sampled_from(plain) | st.sampled_from(odd)

    texts = pick(['"Ann"', "null", '" padded "', '"שלום"'], _TEXTS)
    row = st.fixed_dictionaries({"phone": pick(['"972501234567"', '"+15551234567"', '"5551000"'], _PHONES)}, optional={
        "name": texts, "lead_id": texts,
        "priority": pick(["0", "7", "-3"], _PRIORITIES), "tags": texts,
        "ext_api_vars": pick(["{}", '{"crm_id": 1, "campaign": "spring"}'], _EXTS),
        "extra": st.sampled_from(['"x"', '{"y": [1, 2.5]}']),
    })
    rows = st.builds(_row_text, row, st.booleans()) | st.sampled_from(['"not an object"', "1", "null", "[]", "{}"])
    fast: list[Any] = []

    @hypothesis.settings(max_examples=1000, deadline=None, database=None)
    @hypothesis.given(st.lists(rows, min_size=1, max_size=5))
    def check(texts: list[str]) -> None:
        # the batch, then each row alone (a refused batch would hide what its good rows became)
        for body in [("[" + ",".join(texts) + "]").encode(), *(f"[{text}]".encode() for text in texts)]:
            decoded = validation.decode_leads(body)
            if decoded is not None:
                outcome = _outcome(lambda decoded=decoded: validation.check_leads(decoded))
                assert outcome == _reference(body), body
                fast.append(outcome[0])

    check()
    # many bodies really took the msgspec path, accepted and refused alike
    assert fast.count("ok") > 30 and len(fast) - fast.count("ok") > 30, fast


@pytest.mark.parametrize("body", [
    b'[{"phone": "5551000", "ext_api_vars": {"a": "\xff"}}]',  # msgspec keeps an ext object as unchecked bytes
    b'[{"phone": "5551000", "name": "\xff"}]',
    b'[{"phone": "5551000"}, {"phone": "12", "ext_api_vars": {"a": "\xff"}}]',
    b'[{"phone": "5551000", "priority": 1' + b"0" * 5000 + b"}]",  # past Python's int-from-text limit
    b'[{"phone": "5551000", "ext_api_vars": {"a": 1' + b"0" * 5000 + b"}}]",
    b'[{"phone": "5551000", "ext_api_vars": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}]",
])
def test_fast_decode_malformed_bodies(body):
    decoded = validation.decode_leads(body)
    assert _reference(body) == (400, "Malformed JSON body", None)
    assert decoded is None or _outcome(lambda: validation.check_leads(decoded)) == (400, "Malformed JSON body", None)


def test_plain_batch_is_checked_a_column_at_a_time_with_the_same_result():
    """The column check accepts exactly the batches the row check passes unchanged, with identical rows."""
    plain = [{"phone": f"+97250{i:07d}", "name": f" Lead {i} ", "lead_id": str(i), "priority": i % 3 - 1,
              "tags": "" if i % 2 else None, "ext_api_vars": {"crm_id": i, "m": "שלום", "n": None}} for i in range(50)]
    plain.append({"phone": "+972500000007", "name": "dup"})  # the last of duplicate phones wins
    decoded = validation.decode_leads(json.dumps(plain).encode())
    batch = validation._plain_batch(decoded)
    assert batch is not None and batch == validation.check_leads(plain)
    assert batch["+972500000007"][1] == "dup" and batch["+972500000001"][1] == "Lead 1"
    for change in ({"phone": "555 1000"}, {"phone": "5551000\n5552000"}, {"name": "a\x01"}, {"tags": "x" * 501},
                   {"lead_id": "\x7f"}, {"priority": 2**31}, {"priority": "3"}, {"ext_api_vars": {"f": 1.5}},
                   {"ext_api_vars": {"s": "a\nb"}}, {"phone": 5551000}):
        rows = [*plain[:3], {**plain[3], **change}]
        decoded = validation.decode_leads(json.dumps(rows).encode())
        assert validation._plain_batch(decoded) is None, change
        assert _outcome(lambda rows=rows: validation.check_leads(rows)) == _outcome(
            lambda decoded=decoded: validation.check_leads(decoded))


def test_api_takes_the_fast_path_for_arrays(api, plist, monkeypatch):
    seen = []
    real = validation.decode_leads
    monkeypatch.setattr(validation, "decode_leads", lambda body: seen.append(real(body)) or seen[-1])
    assert add(api, plist, [{"phone": "5551000", "ext_api_vars": {"n": 1e16, "k": "v"}}])["added"] == 1
    assert add(api, plist, {"phone": "5552000"})["added"] == 1
    assert seen[0] is not None and seen[1] is None  # an object body goes to the standard decoder
    raw = api.get(f"/api/phone_list/{plist}/lead").get_data(as_text=True)
    assert '"ext_api_vars":{"n":1e+16,"k":"v"}' in raw  # floats written as the standard encoder writes them
    r = api.post(f"/api/phone_list/{plist}/lead", data=b'[{"phone": "5553000", "ext_api_vars": {"a": "\xff"}}]',
                 content_type="application/json")
    assert r.status_code == 400 and r.get_json()["msg"] == "Malformed JSON body"


# --- canonical numbers -------------------------------------------------------------------------


def test_fast_phone_keys_match_the_phonenumbers_library():
    """numbers.phone_key's fast path gives exactly the library's key, for random numbers of every region."""
    import random

    import phonenumbers

    from engine.leads import numbers

    rnd = random.Random(7)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    fast = 0
    for _ in range(30_000):
        region = rnd.choice(regions)
        kind = rnd.random()
        if kind < 0.45:
            phone = f"+{rnd.choice(codes)}" + "".join(rnd.choices("0123456789", k=rnd.randint(1, 14)))
        elif kind < 0.55:
            phone = "+" + "".join(rnd.choices("0123456789", k=rnd.randint(3, 20)))
        else:
            example = phonenumbers.example_number(region)
            national = str(example.national_number) if example else "2125550100"
            if rnd.random() < 0.5:
                national = national[:rnd.randint(0, len(national))] + "".join(rnd.choices("0123456789", k=3))
            if rnd.random() < 0.2:
                national = "0" + national
            if rnd.random() < 0.1:
                national = str(phonenumbers.country_code_for_region(region)) + national
            phone = national.ljust(3, "1")
        phone = phone[:21]
        key = numbers._fast_key(phone, region)
        if key is not None:
            fast += 1
            assert key == numbers.slow_key(phone, region), (phone, region)
        assert numbers.phone_key(phone, region) == numbers.slow_key(phone, region)
    assert fast > 5000  # the fast path is taken for the common shapes
    assert numbers.phone_keys(["+12125550100", "2125550100", "5550100", "+441", "911"], "us") == [
        "+12125550100", "+12125550100", "5550100", "441", "911"]


def test_one_batch_of_one_number_in_several_forms_keeps_the_last_row(api, plist, small_chunks):
    rows = [{"phone": "212-555-0100", "name": "first"}, {"phone": "+1 212 555 0101", "name": "other"},
            {"phone": "+12125550100", "name": "second"}, {"phone": "212-555-0100", "name": "third"},
            {"phone": "12125550100", "name": "last"}]
    assert add(api, plist, rows) == {"added": 2, "updated": 0, "duplicates": 3, "list_rows": 2}
    assert [(x["phone"], x["name"]) for x in get_leads(api, plist)] == [
        ("12125550100", "last"), ("+12125550101", "other")]
    # a staged import (more than LARGE_BATCH numbers) updates the lead in its stored form, whatever the form posted
    big = [{"phone": f"+1 212 555 {100 + i:04d}", "name": f"big {i}"} for i in range(20)]
    assert add(api, plist, big) == {"added": 18, "updated": 2, "duplicates": 0, "list_rows": 20}
    data = get_leads(api, plist)
    assert data[:2] == [{**data[0], "phone": "12125550100", "name": "big 0"},
                        {**data[1], "phone": "+12125550101", "name": "big 1"}]
    assert Lead.select().where(Lead.phone_key == "+12125550100").count() == 1


def test_leads_of_one_number_kept_from_before_are_both_found_and_both_updated(api, plist, tenant, small_chunks):
    """Two leads that an older release kept apart (2125550100 and +12125550100 in one list) stay after
    migration 0004; lookups find both, a write of the number updates both and adds none (`updated` counts
    the posted numbers that the list held)."""
    Lead.insert_many([{"phone_list": plist, "phone": p, "phone_key": "+12125550100", "name": p, "ext_api_vars": {}}
                      for p in ("2125550100", "+12125550100")]).execute()
    PhoneList.update(list_rows=2).where(PhoneList.id == plist).execute()
    r = api.get("/api/phone_list/lookup", query_string={"phone": "(212) 555-0100"})
    assert [x["lead"]["phone"] for x in r.get_json()["data"]] == ["2125550100", "+12125550100"]
    assert add(api, plist, {"phone": "212.555.0100", "name": "new"}) == {
        "added": 0, "updated": 1, "duplicates": 0, "list_rows": 2}
    assert {x["name"] for x in get_leads(api, plist)} == {"new"}
    assert add(api, plist, [{"phone": "+12125550100", "name": "big"}] + [{"phone": f"55510{i:02d}"} for i in range(12)]
               ) == {"added": 12, "updated": 1, "duplicates": 0, "list_rows": 14}
    assert {x["name"] for x in get_leads(api, plist) if x["phone"].endswith("2125550100")} == {"big"}


# --- the event loop during a large import ------------------------------------------------------


def test_a_large_import_does_not_hold_the_event_loop(app, api, tenant, plist, database):
    """While 100,000 leads are posted to the in-process server, a ticker greenlet that sleeps 10 ms is never
    held for long and /api/health answers: the body is parsed and checked in gevent's threadpool, chunks
    are written with a turn for others between them, and SQLite's publishing transaction runs in a thread.
    Before, the loop was held for the whole parse and check (~0.5 s) and the publish (~0.2 s)."""
    import time

    import peewee

    if isinstance(database, peewee.PostgresqlDatabase):
        pytest.skip("psycopg yields to gevent only in a monkey-patched process (switchdesk serve; see "
                    "tests/test_ops_postgres.py), and the suite's is not")

    import gevent
    from gevent import socket

    from engine.server import make_server

    server = make_server(app, "127.0.0.1", 0)
    server.start()
    body = json.dumps([{"phone": f"+1212{n:07d}", "name": f"Lead {n}", "priority": n % 10,
                        "ext_api_vars": {"crm": n}} for n in range(100_000)]).encode()
    gaps: list[float] = []
    health: list[float] = []
    done = gevent.event.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            gevent.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last - 0.01)
            last = now

    def probe() -> None:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            while not done.is_set():
                start = time.perf_counter()
                sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
                reply = b""
                while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                    reply += sock.recv(65536)
                health.append(time.perf_counter() - start)
                gevent.sleep(0.005)

    def post() -> bytes:
        head = (f"POST /api/phone_list/{plist}/lead HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                f"Authorization: Bearer {tenant.key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=120) as sock:
            sock.sendall(head + body)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply

    try:
        tick, probing = gevent.spawn(ticker), gevent.spawn(probe)
        gevent.sleep(0.05)
        reply = gevent.spawn(post).get(timeout=120)
        done.set()
        gevent.joinall([tick, probing], timeout=5, raise_error=True)
    finally:
        server.stop(timeout=1)
    assert b" 200 " in reply.split(b"\r\n", 1)[0] and b'"added":100000' in reply, reply[:300]
    assert max(gaps) < 0.2, f"the loop was held for {max(gaps) * 1000:.0f} ms"
    assert health and max(health) < 0.25, f"/api/health took {max(health) * 1000:.0f} ms"
