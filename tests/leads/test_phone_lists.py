"""Phone lists (vendor doc: Phone Lists): CRUD, search, type, list_rows, isolation, lookups."""
from __future__ import annotations

from engine.store.models import Lead, LeadImport, PhoneList
from tests.querycount import count_queries


def make_list(api, name: str = "Leads", **extra) -> dict:
    r = api.post("/api/phone_list", json={"name": name, **extra})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def add(api, list_id: int, leads) -> dict:
    r = api.post(f"/api/phone_list/{list_id}/lead", json=leads)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_create_get_list_shape(api, tenant):
    created = make_list(api, "Spring campaign")
    assert created == {"id": created["id"], "account_id": tenant.account_id, "name": "Spring campaign",
                       "type": "leads", "list_rows": 0}
    assert api.get(f"/api/phone_list/{created['id']}").get_json() == {"success": True, "data": created}
    assert api.get("/api/phone_list").get_json()["data"] == [created]


def test_name_required_and_type_checked(api):
    r = api.post("/api/phone_list", json={})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("name:")
    r = api.post("/api/phone_list", json={"name": "x", "type": "blacklist"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("type:")
    assert PhoneList.select().count() == 0


def test_names_unique_per_account_case_insensitive(api, other_api):
    make_list(api, "DNC", type="dnc")
    r = api.post("/api/phone_list", json={"name": "dnc"})
    assert r.status_code == 409 and "name" in r.get_json()["msg"]
    make_list(other_api, "DNC")  # another account may use the name
    other = make_list(api, "Other")
    r = api.put(f"/api/phone_list/{other['id']}", json={"name": "Dnc"})
    assert r.status_code == 409


def test_search_by_name_case_insensitive_and_type_filter(api):
    make_list(api, "Spring Leads")
    make_list(api, "Do not call", type="dnc")
    make_list(api, "VIP", type="special")
    names = [x["name"] for x in api.get("/api/phone_list", query_string={"q": "LEADS"}).get_json()["data"]]
    assert names == ["Spring Leads"]
    names = [x["name"] for x in api.get("/api/phone_list", query_string={"q": "o"}).get_json()["data"]]
    assert names == ["Do not call"]
    dnc = api.get("/api/phone_list", query_string={"type": "dnc"}).get_json()["data"]
    assert [x["type"] for x in dnc] == ["dnc"]


def test_put_is_partial_and_list_rows_read_only(api):
    plist = make_list(api, "A")
    add(api, plist["id"], [{"phone": "5551001"}, {"phone": "5551002"}])
    r = api.put(f"/api/phone_list/{plist['id']}", json={"type": "dnc", "list_rows": 99})
    assert r.status_code == 200
    assert r.get_json()["data"] == {**plist, "type": "dnc", "list_rows": 2}
    r = api.put(f"/api/phone_list/{plist['id']}", json={"name": None})
    assert r.status_code == 400


def test_list_rows_is_true_count_through_every_write(api):
    plist = make_list(api)
    lid = plist["id"]
    add(api, lid, [{"phone": f"555100{i}"} for i in range(5)])
    add(api, lid, [{"phone": "5551000"}, {"phone": "5552000"}])  # one update, one new
    api.delete(f"/api/phone_list/{lid}/lead/5551001")
    api.delete(f"/api/phone_list/{lid}/lead", json=["5551002", "5559999"])
    api.post(f"/api/phone_list/{lid}/lead", json=[{"phone": "5553000"}, {"phone": "bad"}])  # refused
    count = Lead.select().where(Lead.phone_list == lid).count()
    assert count == 4
    assert api.get(f"/api/phone_list/{lid}").get_json()["data"]["list_rows"] == count


def test_list_of_lists_runs_constant_queries(api, database):
    for i in range(3):
        add(api, make_list(api, f"L{i}")["id"], [{"phone": "5551000"}])
    with count_queries(database) as few:
        assert len(api.get("/api/phone_list").get_json()["data"]) == 3
    for i in range(3, 12):
        add(api, make_list(api, f"L{i}")["id"], [{"phone": "5551000"}, {"phone": "5551001"}])
    with count_queries(database) as many:
        data = api.get("/api/phone_list").get_json()["data"]
    assert len(data) == 12 and data[-1]["list_rows"] == 2
    assert many.count == few.count


def test_delete_list_takes_its_leads(api):
    keep, gone = make_list(api, "keep"), make_list(api, "gone")
    add(api, keep["id"], [{"phone": "5551000"}])
    add(api, gone["id"], [{"phone": "5551000"}, {"phone": "5551001"}])
    assert api.delete(f"/api/phone_list/{gone['id']}").status_code == 200
    assert api.get(f"/api/phone_list/{gone['id']}").status_code == 404
    assert Lead.select().where(Lead.phone_list == gone["id"]).count() == 0
    assert Lead.select().where(Lead.phone_list == keep["id"]).count() == 1
    assert api.delete(f"/api/phone_list/{gone['id']}").status_code == 404


def test_another_accounts_list_is_404_everywhere(api, other_api):
    theirs = make_list(other_api, "theirs")
    add(other_api, theirs["id"], [{"phone": "5551000"}])
    lid = theirs["id"]
    for method, url, kw in [
        ("GET", f"/api/phone_list/{lid}", {}),
        ("PUT", f"/api/phone_list/{lid}", {"json": {"name": "mine"}}),
        ("DELETE", f"/api/phone_list/{lid}", {}),
        ("GET", f"/api/phone_list/{lid}/lead", {}),
        ("POST", f"/api/phone_list/{lid}/lead", {"json": {"phone": "5552000"}}),
        ("DELETE", f"/api/phone_list/{lid}/lead", {"json": ["5551000"]}),
        ("PUT", f"/api/phone_list/{lid}/lead/5551000", {"json": {"name": "x"}}),
        ("DELETE", f"/api/phone_list/{lid}/lead/5551000", {}),
    ]:
        r = api(method, url, **kw)
        assert r.status_code == 404, (method, url, r.get_json())
        assert r.get_json()["success"] is False
    assert [x["name"] for x in other_api.get("/api/phone_list").get_json()["data"]] == ["theirs"]
    assert api.get("/api/phone_list").get_json()["data"] == []
    assert Lead.select().where(Lead.phone_list == lid).count() == 1


def test_permission_module_phone_lists(api, client, tenant):
    r = api.post("/api/user", json={"name": "Agent", "username": "agent1", "password": "Ab123456",
                                    "email": "a1@example.com", "permissions": {"call_center_api": True}})
    user_id = r.get_json()["data"]["id"]
    from engine.directory import accounts

    key = accounts.issue_api_key_for("agent1")
    r = client.get("/api/phone_list", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    api.put(f"/api/user/{user_id}", json={"permissions": {"call_center_api": True, "phone_lists": True}})
    r = client.get("/api/phone_list", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert client.get("/api/phone_list").status_code == 401


def test_lookup_finds_lists_holding_a_number_with_type(api, other_api):
    dnc = make_list(api, "DNC", type="dnc")
    leads = make_list(api, "Leads")
    vip = make_list(api, "VIP", type="special")
    add(api, dnc["id"], {"phone": "+1 555 123 4567"})
    add(api, leads["id"], {"phone": "+1-555-123-4567", "name": "Bob", "lead_id": "7"})
    add(api, vip["id"], {"phone": "972501234567"})  # without +: no US number, so not +972501234567
    add(api, vip["id"], {"phone": "+15551234568"})
    theirs = make_list(other_api, "Theirs", type="dnc")
    add(other_api, theirs["id"], {"phone": "+15551234567"})
    r = api.get("/api/phone_list/lookup", query_string={"phone": "+1 (555) 123-4567"})
    data = r.get_json()["data"]
    assert [(x["id"], x["type"]) for x in data] == [(dnc["id"], "dnc"), (leads["id"], "leads")]
    assert data[1]["lead"]["name"] == "Bob" and data[1]["lead"]["id"] == "+15551234567"
    r = api.get("/api/phone_list/lookup", query_string={"phone": "+15551234567", "type": "dnc"})
    assert [x["id"] for x in r.get_json()["data"]] == [dnc["id"]]
    assert api.get("/api/phone_list/lookup", query_string={"phone": "5550000"}).get_json()["data"] == []
    r = api.get("/api/phone_list/lookup", query_string={"phone": "12"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("phone:")
    assert api.get("/api/phone_list/lookup").status_code == 400


def test_lookup_ignores_hidden_rows_of_an_unpublished_import(api):
    plist = make_list(api, "DNC", type="dnc")
    imp = LeadImport.create(phone_list=plist["id"])
    Lead.create(phone_list=plist["id"], phone="5551234", import_id=imp.id)
    assert api.get("/api/phone_list/lookup", query_string={"phone": "5551234"}).get_json()["data"] == []
    assert api.get(f"/api/phone_list/{plist['id']}/lead").get_json()["data"] == []


def test_lookup_finds_a_number_whatever_its_form(api, tenant):
    """The account is in the US: these are one number, stored in any of the forms, looked up by any other,
    including `+` sent unencoded in the query string (decoded to a space). DELETE and PUT find it alike."""
    forms = ["212-555-0100", "(212) 555-0100", "12125550100", "+12125550100", "+1 212.555.0100", "2125550100"]
    lists = [make_list(api, f"DNC {i}", type="dnc")["id"] for i in range(len(forms))]
    for list_id, form in zip(lists, forms, strict=True):
        add(api, list_id, {"phone": form, "name": form})
    for query in [*forms, " 12125550100", "phone=+12125550100", "phone=%2B12125550100", "phone=+1+212+555+0100"]:
        r = api.get("/api/phone_list/lookup", query_string=query if query.startswith("phone=") else {"phone": query})
        assert r.status_code == 200, (query, r.get_json())
        assert [x["id"] for x in r.get_json()["data"]] == lists, query
        assert [x["lead"]["name"] for x in r.get_json()["data"]] == forms, query  # each lead as it was given
    assert api.get("/api/phone_list/lookup", query_string="phone=+12125550101").get_json()["data"] == []
    r = api.put(f"/api/phone_list/{lists[0]}/lead/+12125550100", json={"name": "renamed"})
    assert r.status_code == 200 and r.get_json()["data"]["phone"] == "2125550100"
    assert api.delete(f"/api/phone_list/{lists[1]}/lead", json=["1 (212) 555-0100"]).get_json()["data"] == {
        "deleted": 1}
    assert api.delete(f"/api/phone_list/{lists[2]}/lead/212.555.0100").status_code == 200
    assert [x["id"] for x in api.get("/api/phone_list/lookup", query_string={"phone": "2125550100"})
            .get_json()["data"]] == lists[:1] + lists[3:]
    assert [lead.phone_key for lead in Lead.select()] == ["+12125550100"] * 4


def test_lookup_keys_numbers_by_the_account_country(api, tenant):
    """National numbers are read in the account's country; a number that is no possible one (a short code,
    a local number) is keyed by its digits, so it still matches itself in any form."""
    from engine.store.models import Account

    Account.update(country="GB").where(Account.id == tenant.account_id).execute()
    dnc = make_list(api, "DNC", type="dnc")["id"]
    add(api, dnc, [{"phone": "020 7946 0958"}, {"phone": "+1 212 555 0100"}, {"phone": "118-118"}])
    for query, found in [("+44 20 7946 0958", True), ("442079460958", True), ("0044 20 7946 0958", True),
                         ("2079460958", True), ("12125550100", False), ("+12125550100", True),
                         ("118118", True), ("+118 118", True), ("(118) 118", True)]:
        data = api.get("/api/phone_list/lookup", query_string={"phone": query}).get_json()["data"]
        assert bool(data) is found, query
