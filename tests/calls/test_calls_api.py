"""The API of call records, recordings, retention and live calls, on rows written as the engine writes them."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from engine.calls import recordings, records, supervision
from engine.directory import accounts
from engine.store.models import ActiveCall, CallRecord, CallRecordLeg, Recording, RetentionSetting, User
from tests.directory.test_privilege import as_user, make_user


@pytest.fixture
def folder(tmp_path: Path):
    recordings.configure(tmp_path / "rec", min_free=0, days=30)
    yield tmp_path / "rec"
    recordings.configure(None, min_free=recordings.DEFAULT_MIN_FREE, days=recordings.DEFAULT_DAYS)


def call(account_id: int, call_id: str, *, end_ts: int, queue_id: int | None = None, user_id: int | None = None,
         cid_num: str = "15550001111", cid_name: str = "Caller", cause: str = "NORMAL_CLEARING",
         direction: str = "queue") -> None:
    """A finished call as the call path writes it: the agent's leg ends, then the caller's."""
    first = {"id": call_id, "call_id": call_id, "type": direction, "cid_num": cid_num, "cid_name": cid_name,
             "dst_num": "7000", "queue_id": queue_id, "dst_user_id": user_id, "durationms": 5000, "billms": 4000,
             "hangup_cause": cause}
    agent = dict(first, id=call_id + "-b", billms=3000)
    records.leg_ended(account_id, call_id + "-b", agent, None, (end_ts - 10) * 1000, end_ts)
    records.leg_ended(account_id, call_id, first, {"variable_answer_epoch": str(end_ts - 4)},
                      (end_ts - 10) * 1000, end_ts)


def test_call_records_filter_page_and_export(api, other_api, tenant, other_tenant):
    now = int(time.time())
    for n in range(5):
        call(tenant.account_id, f"call-{n:04d}", end_ts=now - 100 + n, queue_id=1 if n % 2 else 2,
             user_id=tenant.admin_id if n == 3 else None, cause="NO_ANSWER" if n == 4 else "NORMAL_CLEARING")
    call(tenant.account_id, "call-evil", end_ts=now - 50, cid_name="=HYPERLINK(\"http://x\")", cid_num="+15550002222")
    call(other_tenant.account_id, "call-other", end_ts=now - 100)

    page = api.get("/api/cdr?limit=2").get_json()
    assert [r["call_id"] for r in page["data"]] == ["call-evil", "call-0004"]
    second = api.get(f"/api/cdr?limit=2&before_id={page['next_before_id']}").get_json()
    assert [r["call_id"] for r in second["data"]] == ["call-0003", "call-0002"]
    assert [r["call_id"] for r in api.get("/api/cdr?limit=2&offset=2").get_json()["data"]] == ["call-0003", "call-0002"]
    one = second["data"][0]
    assert one["answer_ts"] == now - 100 + 3 - 4 and one["start_ts"] == now - 110 + 3 and one["direction"] == "queue"
    assert sorted(leg["id"] for leg in one["legs"]) == ["call-0003", "call-0003-b"] and one["billms"] == 4000

    def ids(query: str) -> list[str]:
        reply = api.get(f"/api/cdr?{query}")
        assert reply.status_code == 200, reply.get_json()
        return sorted(r["call_id"] for r in reply.get_json()["data"])
    assert ids("queue_id=1") == ["call-0001", "call-0003"]
    assert ids(f"user_id={tenant.admin_id}") == ["call-0003"]
    assert ids("hangup_cause=NO_ANSWER") == ["call-0004"]
    assert ids("number=%2B15550002222") == ["call-evil"]
    assert ids(f"start={now - 60}") == ["call-evil"]
    assert ids(f"end={now - 108}") == ["call-0000", "call-0001"]
    assert ids("direction=outbound") == []
    assert api.get("/api/cdr/call-0001").get_json()["data"]["queue_id"] == 1
    # bounds and bad input: 400 in the envelope, never a 500
    for bad in ("limit=1001", "limit=0", "offset=-1", "before_id=0", "direction=sideways", "number=12a",
                "hangup_cause=drop%20table", "start=99999999999999"):
        reply = api.get(f"/api/cdr?{bad}")
        assert reply.status_code == 400 and reply.get_json()["success"] is False, bad
    # accounts never see each other's calls
    assert [r["call_id"] for r in other_api.get("/api/cdr").get_json()["data"]] == ["call-other"]
    assert other_api.get("/api/cdr/call-0001").status_code == 404

    reply = api.get("/api/cdr.csv?limit=10")
    assert reply.status_code == 200 and reply.mimetype == "text/csv" and reply.is_streamed
    rows = list(csv.DictReader(io.StringIO(reply.get_data(as_text=True))))
    assert [r["call_id"] for r in rows] == ["call-evil", "call-0004", "call-0003", "call-0002", "call-0001",
                                            "call-0000"]
    assert rows[0]["cid_name"] == "'=HYPERLINK(\"http://x\")"  # defused: a spreadsheet shows it as text
    assert rows[0]["src_num"] == "'+15550002222" and rows[0]["legs"] == "2"
    assert len(list(csv.reader(io.StringIO(api.get("/api/cdr.csv?queue_id=1").get_data(as_text=True))))) == 3


def test_call_records_need_the_reports_permission(api, client, tenant):
    user = make_user(api, "plain", permissions={"call_center_api": True})
    plain = as_user(client, user["id"])
    for path in ("/api/cdr", "/api/cdr.csv", "/api/recording", "/api/call/active", "/api/cc_agent/active_calls"):
        assert plain.get(path).status_code == 403, path
    assert plain.put("/api/retention", json={"cdr_days": 1}).status_code == 403


def test_retention_and_the_daily_clean_up(api, other_api, tenant, other_tenant, folder):
    now = int(time.time())
    reply = api.get("/api/retention").get_json()["data"]
    assert reply == {"cdr_days": None, "recording_days": None, "default_cdr_days": records.default_days(),
                     "default_recording_days": 30}
    assert api.put("/api/retention", json={"cdr_days": 0}).status_code == 400
    assert api.put("/api/retention", json={"cdr_days": 10, "recording_days": 5}).get_json()["data"]["cdr_days"] == 10
    assert api.put("/api/retention", json={"recording_days": None}).get_json()["data"] == {
        "cdr_days": 10, "recording_days": None, "default_cdr_days": records.default_days(),
        "default_recording_days": 30}
    call(tenant.account_id, "old", end_ts=now - 11 * 86400)
    call(tenant.account_id, "young", end_ts=now - 9 * 86400)
    call(other_tenant.account_id, "other-young", end_ts=now - 11 * 86400)  # the default (90 days) applies
    old = _recording(folder, tenant.account_id, "old", started=now - 31 * 86400)
    young = _recording(folder, tenant.account_id, "young", started=now - 29 * 86400)
    elsewhere = _recording(folder, tenant.account_id, "elsewhere", started=now - 31 * 86400)
    Recording.update(fs_host="other-box").where(Recording.id == elsewhere.id).execute()  # another box's file
    assert recordings.cleanup("this-box") == (1, 1)
    assert sorted(c for (c,) in CallRecord.select(CallRecord.call_id).tuples()) == ["other-young", "young"]
    assert CallRecordLeg.select().where(CallRecordLeg.call_id == "old").count() == 0
    assert not (folder / old.path).exists() and (folder / young.path).exists()
    assert sorted(r.call_id for r in Recording.select()) == ["elsewhere", "young"]
    assert RetentionSetting.select().count() == 1


def _recording(folder: Path, account_id: int, call_id: str, *, started: int | None = None, state: str = "complete",
               content: bytes = b"RIFF" + bytes(range(256)) * 40, path: str | None = None) -> Recording:
    rel = path or f"{account_id}/2026-01-01/{call_id}.wav"
    if path is None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    return Recording.create(account=account_id, call_id=call_id, leg_uuid=call_id, path=rel, state=state,
                            started_at=started or int(time.time()), ended_at=started or int(time.time()),
                            size=len(content), duration_ms=1000, queue_id=3, src_num="4000", dst_num="7000")


def test_recordings_list_download_and_delete(api, other_api, tenant, folder):
    content = b"RIFF" + bytes(range(256)) * 40
    done = _recording(folder, tenant.account_id, "call-a", content=content)
    writing = _recording(folder, tenant.account_id, "call-b", state="recording")
    call(tenant.account_id, "call-a", end_ts=int(time.time()))
    listed = api.get("/api/recording").get_json()["data"]
    assert [r["id"] for r in listed] == [done.id]  # offered only when complete
    record = api.get("/api/cdr/call-a").get_json()["data"]
    assert listed[0]["call_record_id"] == record["id"] and sorted(listed[0]["legs"]) == ["call-a", "call-a-b"]
    assert record["recording"] == {"id": done.id, "state": "complete"}
    assert api.get(f"/api/recording/{writing.id}").get_json()["data"]["call_record_id"] is None
    assert [r["id"] for r in api.get("/api/recording?state=recording").get_json()["data"]] == [writing.id]
    assert [r["id"] for r in api.get("/api/recording?queue_id=3&number=4000").get_json()["data"]] == [done.id]
    assert api.get("/api/recording?queue_id=4").get_json()["data"] == []
    assert api.get("/api/recording?limit=1001").status_code == 400

    url = f"/api/recording/{done.id}/download"
    whole = api.get(url)
    assert whole.status_code == 200 and whole.data == content and whole.headers["Accept-Ranges"] == "bytes"
    part = api.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == content[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
    assert api.get(url, headers={"Range": "bytes=10000-"}).data == content[10000:]
    assert api.get(url, headers={"Range": "bytes=-7"}).data == content[-7:]
    assert api.get(url, headers={"Range": "bytes=5-1"}).status_code == 416
    assert api.get(url, headers={"Range": f"bytes={len(content)}-"}).status_code == 416
    assert api.get(url, headers={"Range": "bytes=0-1,5-6"}).status_code == 200  # several ranges: the whole file
    # a hostile Range: numbers too long to be an offset are no range at all (int() of 5,000 digits raises)
    assert api.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"}).status_code == 200
    assert api.get(url, headers={"Range": "bytes=-" + "9" * 5000}).status_code == 200
    assert api.get(url, headers={"Range": "bytes=99999999999999999999-"}).status_code == 200
    assert api.get(f"/api/recording/{writing.id}/download").status_code == 404  # still being written
    assert other_api.get(url).status_code == 404 and other_api.get(f"/api/recording/{done.id}").status_code == 404
    assert other_api.delete(f"/api/recording/{done.id}").status_code == 404

    assert api.delete(f"/api/recording/{writing.id}").status_code == 409
    assert api.delete(f"/api/recording/{done.id}").status_code == 200
    assert not (folder / done.path).exists() and api.get(url).status_code == 404


def test_a_path_never_reaches_outside_the_folder(api, tenant, folder, tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF-secret")
    (folder / "link.wav").symlink_to(secret)
    for path in ("../secret.wav", str(secret), "link.wav", ""):
        row = _recording(folder, tenant.account_id, f"call-{len(path)}-{path[-4:]}", path=path or ".")
        reply = api.get(f"/api/recording/{row.id}/download")
        assert reply.status_code == 404 and b"secret" not in reply.data, path
        assert api.delete(f"/api/recording/{row.id}").status_code == 404
    assert secret.exists()
    for bad in ("../1", "..%2f1", "1.wav", "-1", "99999999999999999999"):
        assert api.get(f"/api/recording/{bad}/download").status_code == 404, bad


def test_orphans_in_status(api, tenant, folder):
    old = int(time.time()) - 600
    _recording(folder, tenant.account_id, "no-record", started=old)
    call(tenant.account_id, "failed-rec", end_ts=old)
    Recording.create(account=tenant.account_id, call_id="failed-rec", leg_uuid="x", path="x/failed.wav",
                     state="failed", started_at=old)
    call(tenant.account_id, "fine", end_ts=old)
    _recording(folder, tenant.account_id, "fine", started=old)
    assert api.get("/api/status").get_json()["data"]["recordings"] == {
        "recordings_without_call_record": 1, "call_records_without_recording": 1}


def _leg(account_id: int, uid: str, call_id: str, *, answered: bool, seen: int, **data) -> None:
    ActiveCall.create(uuid=uid, account=account_id, call_id=call_id, seen_ms=seen * 1000, answered=answered,
                      data={"id": uid, "call_id": call_id, **data})


def test_active_calls(api, other_api, tenant, other_tenant):
    now = int(time.time())
    agent = make_user(api, "agent1", is_agent=True)
    _leg(tenant.account_id, "leg0000a-1", "leg0000a-1", answered=True, seen=now - 30, type="queue", cid_num="4000",
         queue_id=7, started=True, answer_ts=now - 30)
    _leg(tenant.account_id, "leg0000a-2", "leg0000a-1", answered=True, seen=now - 20, type="queue",
         dst_user_id=agent["id"], queue_id=7, answer_ts=now - 19)
    _leg(tenant.account_id, "leg0000b-1", "leg0000b-1", answered=True, seen=now - 10, type="queue", queue_id=8)
    ActiveCall.update(started=True).where(ActiveCall.uuid == "leg0000b-1").execute()
    _leg(tenant.account_id, "leg0000c-1", "leg0000c-1", answered=False, seen=now - 5, type="internal")
    _leg(other_tenant.account_id, "leg0000d-1", "leg0000d-1", answered=True, seen=now - 5, type="inbound")
    ActiveCall.create(uuid="leg0000e-1", account=tenant.account_id, call_id="leg0000e-1", seen_ms=0, ended_at=now,
                      data={})
    calls = api.get("/api/call/active").get_json()["data"]
    assert [(c["call_id"], c["state"]) for c in calls] == [("leg0000a-1", "talking"), ("leg0000b-1", "in_queue"),
                                                           ("leg0000c-1", "ringing")]
    first = calls[0]
    assert first["agent_user_id"] == agent["id"] and first["answer_ts"] == now - 19 and first["queue_id"] == 7
    assert [leg["id"] for leg in first["legs"]] == ["leg0000a-1", "leg0000a-2"] and first["start_ts"] == now - 30
    assert api.get("/api/cc_agent/active_calls").get_json()["data"] == calls
    assert [c["call_id"] for c in api.get("/api/call/active?queue_id=8").get_json()["data"]] == ["leg0000b-1"]
    mine = api.get(f"/api/call/active?user_id={agent['id']}").get_json()["data"]
    assert [c["call_id"] for c in mine] == ["leg0000a-1"]
    assert api.get("/api/call/leg0000a-1").get_json()["data"] == first
    for missing in ("leg0000e-1", "leg0000d-1", "nope-nope-1", "x" * 65, "leg0000a-1%27%3B"):
        assert api.get(f"/api/call/{missing}").status_code == 404, missing
    assert [c["call_id"] for c in other_api.get("/api/call/active").get_json()["data"]] == ["leg0000d-1"]
    # without the engine nothing can be done to a call
    for action, body, status in (("hangup", {}, 503), ("transfer", {"number": "15551234567"}, 503),
                                 ("transfer", {"extension": "100"}, 404), ("listen", {}, 400)):  # 400: no device
        reply = api.post(f"/api/call/leg0000a-1/{action}", json=body)
        assert reply.status_code == status and reply.get_json()["success"] is False, (action, reply.get_json())
    assert api.post("/api/call/leg0000d-1/hangup").status_code == 404  # another account's
    assert api.post("/api/call/leg0000a-1/transfer", json={"number": "12"}).status_code == 400
    assert api.post("/api/call/leg0000a-1/listen", json={"session": "../../x"}).status_code == 400


def test_a_protected_agent_is_never_listened_to(api, client, tenant):
    agent = make_user(api, "agent2", is_agent=True, permissions={"call_center_api": True, "users": True})
    _leg(tenant.account_id, "leg0000p-1", "leg0000p-1", answered=True, seen=1, type="queue")
    _leg(tenant.account_id, "leg0000p-2", "leg0000p-1", answered=True, seen=2, type="queue", dst_user_id=agent["id"])
    assert api.put(f"/api/user/{agent['id']}", json={"listen_protected": True}).get_json()["data"][
        "listen_protected"] is True
    with pytest.raises(supervision.ServiceError) as refused:
        supervision.supervise(object(), tenant.account_id, "leg0000p-1", "listen", acting_user_id=tenant.admin_id)
    assert refused.value.status == 403
    # an agent cannot protect (or unprotect) itself
    own = as_user(client, agent["id"])
    reply = own.put(f"/api/user/{agent['id']}", json={"listen_protected": False})
    assert reply.status_code == 403 and User.get_by_id(agent["id"]).listen_protected is True
    assert accounts is not None


class _Client:
    def __init__(self, replies: dict[str, str] | None = None):
        self.sent: list[str] = []
        self.replies = replies or {}

    def api(self, command: str, timeout: float = 10, check: bool = True) -> str:
        self.sent.append(command)
        return next((reply for prefix, reply in self.replies.items() if command.startswith(prefix)), "+OK\n")


class _Engine:
    def __init__(self, client: _Client):
        self.commands = self
        self.client = client

    def require_client(self) -> _Client:
        return self.client


def test_transfer_and_hangup_commands(api, tenant):
    from engine.store.models import Extension, Queue

    queue = Queue.create(account=tenant.account_id, name="Sales")
    Extension.create(account=tenant.account_id, number="2001", target_type="device", target_id=1)
    _leg(tenant.account_id, "leg0000t-1", "leg0000t-1", answered=True, seen=1, type="queue")
    _leg(tenant.account_id, "leg0000t-2", "leg0000t-1", answered=True, seen=2, type="queue")
    client = _Client({"uuid_kill leg0000t-2": "-ERR No such channel!\n"})
    engine = _Engine(client)
    moved = [supervision.transfer(engine, tenant.account_id, "leg0000t-1", target) for target in (
        supervision.TransferTarget(extension="2001"), supervision.TransferTarget(queue_id=queue.id),
        supervision.TransferTarget(number="+15551234567"))]
    assert moved == ["leg0000t-1"] * 3  # the caller moves
    assert client.sent == [
        "uuid_transfer leg0000t-1 2001 XML acme.test",
        f"uuid_transfer leg0000t-1 'set:switchdesk_queue_id={queue.id},set:hangup_after_bridge=true,answer,"
        f"callcenter:{queue.id}@acme.test,hangup' inline",
        "uuid_transfer leg0000t-1 +15551234567 XML acme.test",
    ]
    with pytest.raises(supervision.ServiceError) as missing:
        supervision.transfer(engine, tenant.account_id, "leg0000t-1", supervision.TransferTarget(queue_id=queue.id + 9))
    assert missing.value.status == 404
    client.sent.clear()
    assert supervision.hangup(engine, tenant.account_id, "leg0000t-1") == 1  # the second leg went with the first
    assert client.sent == ["uuid_kill leg0000t-1 NORMAL_CLEARING", "uuid_kill leg0000t-2 NORMAL_CLEARING"]
    # an outbound call moves the called party, not our agent
    _leg(tenant.account_id, "leg0000o-1", "leg0000o-1", answered=True, seen=1, type="outbound")
    _leg(tenant.account_id, "leg0000o-2", "leg0000o-1", answered=True, seen=2, type="outbound")
    assert supervision.transfer(engine, tenant.account_id, "leg0000o-1",
                                supervision.TransferTarget(extension="2001")) == "leg0000o-2"
