"""What FreeSWITCH is told about a queue's media and exits: callcenter.conf parameters, the queue's dialplan,
the exit routes, the sync that reloads one queue when only announce-* changed; and the exits' validation."""
from __future__ import annotations

import pytest

from api import create_app
from engine.callcenter import exits, fsconfig, sync
from engine.directory import views
from engine.errors import ServiceError
from engine.media import library
from engine.store.models import Account, Extension, Media, Queue, User
from tests.api.test_xml_curl import _dialplan_body, parse, post


@pytest.fixture
def world(database, tmp_path):
    library.configure(tmp_path / "media")
    account = Account.create(name="Example", domain="example.test")
    made = {name: Media.create(account=account, name=name, file=f"{name}.wav", host=library.host(), rate=16000,
                               duration_ms=1000, size=32044) for name in ("moh", "moh2", "ann", "join", "pre")}
    user = User.create(account=account, name="U", username="u1", username_key="u1", email="u@x.test",
                       email_key="u@x.test", password_hash="x")
    target = Queue.create(account=account, name="Overflow", strategy="ring-all")
    queue = Queue.create(account=account, name="Support", strategy="ring-all", moh_id=made["moh"].id,
                         announce_id=made["ann"].id, announce_frequency=30, join_announce=made["join"].id,
                         pre_bridge_announce=made["pre"].id, auto_answer=True, ring_timeout=12,
                         exits={"max_wait": {"type": "extension", "target": "200"},
                                "no_agent": {"type": "queue", "target": target.id},
                                "keys": {"1": {"type": "number", "target": "+14155550100"}, "#": {"type": "hangup"}}})
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    views.clear()
    yield account, queue, target, made, user
    library._settings["dir"] = None


@pytest.fixture
def fs_client(world):
    return create_app({"TESTING": True, "XMLCURL_PASSWORD": "xml-s3cret"}).test_client()


def path(account, name):
    return str(library.media_dir() / str(account.id) / f"{name}.wav")


def test_callcenter_conf_plays_the_queues_media(world, fs_client):
    account, queue, target, made, _ = world
    body = (b"hostname=vm&section=configuration&tag_name=configuration&key_name=name&key_value=callcenter.conf"
            + f"&CC-Queue={queue.id}%40example.test".encode())
    params = {p.get("name"): p.get("value") for p in parse(post(fs_client, "/configuration", body)).iter("param")}
    assert params["moh-sound"] == path(account, "moh")
    assert params["announce-sound"] == path(account, "ann") and params["announce-frequency"] == "30"
    # a playlist loops through its files (file_string), before moh_id; no announcement without a frequency
    queue.audio_playback = {"playlist": [made["moh"].id, made["moh2"].id]}
    queue.announce_frequency = 0
    assert dict(fsconfig.queue_params(queue, library.paths_of(account.id, fsconfig.media_ids(queue))))[
        "moh-sound"] == f"file_string://{path(account, 'moh')}!{path(account, 'moh2')}"
    assert "announce-sound" not in dict(fsconfig.queue_params(queue, {}))
    # no media (or one that is gone): the music that ships with switchdesk, never a file that cannot open
    assert dict(fsconfig.queue_params(target, {}))["moh-sound"] == fsconfig.DEFAULT_MOH
    assert dict(fsconfig.queue_params(queue, {}))["moh-sound"] == fsconfig.DEFAULT_MOH


def test_queue_dialplan_and_exits(world, fs_client):
    account, queue, target, made, user = world
    actions = [(a.get("application"), a.get("data")) for a in
               parse(post(fs_client, "/dialplan", _dialplan_body("7000", "example.test"))).iter("action")]
    names = [a for a, _ in actions]
    assert ("set", "cc_exit_keys=1#") in actions
    assert ("set", f"cc_outbound_announce={path(account, 'pre')}") in actions
    assert ("set", "cc_export_vars=sip_auto_answer,originate_timeout") in actions
    assert ("set", "originate_timeout=12") in actions and ("set", "sip_auto_answer=true") in actions
    assert names.index("answer") < names.index("playback") < names.index("callcenter") < names.index("transfer")
    assert ("playback", path(account, "join")) in actions
    assert (f"switchdesk_exit_{queue.id}_${{cc_cancel_reason}}_${{cc_exit_key}} XML example.test"
            == dict(actions)["transfer"])

    def exit_route(number):
        return [(a.get("application"), a.get("data")) for a in
                parse(post(fs_client, "/dialplan", _dialplan_body(number, "example.test"))).iter("action")]

    assert ("transfer", "200 XML example.test") in exit_route(f"switchdesk_exit_{queue.id}_TIMEOUT_")
    overflow = exit_route(f"switchdesk_exit_{queue.id}_NO_AGENT_TIMEOUT_")
    assert ("callcenter", f"{target.id}@example.test") in overflow
    assert ("transfer", "+14155550100 XML example.test") in exit_route(f"switchdesk_exit_{queue.id}_EXIT_WITH_KEY_1")
    assert ("hangup", "NORMAL_CLEARING") in exit_route(f"switchdesk_exit_{queue.id}_EXIT_WITH_KEY_#")
    # bridged, hung up, or a reason with no exit: hang up (never another account's queue)
    for number in (f"switchdesk_exit_{queue.id}__", f"switchdesk_exit_{queue.id}_BREAK_OUT_",
                   f"switchdesk_exit_{queue.id}_EXIT_WITH_KEY_5", "switchdesk_exit_999_TIMEOUT_"):
        assert exit_route(number)[-1] == ("hangup", "NORMAL_CLEARING"), number


def test_exits_validation(world):
    account, queue, target, _, user = world
    good = {"max_wait": {"type": "voicemail", "target": user.id}, "keys": {"*": {"type": "queue", "target": target.id}}}
    assert exits.validate(account.id, good, queue.id) == good
    assert exits.exit_keys(good) == "*"
    for bad, msg in (
        ([], "exits: must be an object"),
        ({"later": {}}, "exits: unknown field(s) later; known: max_wait, no_agent, keys"),
        ({"max_wait": {"type": "vm"}}, "exits.max_wait.type: must be one of queue, extension, voicemail, number, "
                                       "hangup"),
        ({"max_wait": {"type": "queue", "target": 999}}, "exits.max_wait.target: no queue with id 999"),
        ({"max_wait": {"type": "queue", "target": queue.id}}, "exits: a queue cannot exit to itself"),
        ({"no_agent": {"type": "voicemail", "target": "7"}}, "exits.no_agent.target: a user id"),
        ({"keys": {"12": {"type": "hangup"}}}, "exits.keys: '12' is not one key of 0-9 * #"),
        ({"keys": {"1": {"type": "number", "target": "call me"}}},
         "exits.keys.1.target: a phone number (digits, optionally a leading +, 2 to 20 digits)"),
        ({"max_wait": {"type": "hangup", "target": "x"}}, "exits.max_wait.target: hangup takes no target"),
    ):
        with pytest.raises(ServiceError) as raised:
            exits.validate(account.id, bad, queue.id)
        assert raised.value.status == 400 and raised.value.msg == msg


def test_sync_reloads_one_queue_when_only_its_announcement_changed(world):
    account, queue, target, made, _ = world
    desired, domains = sync.desired_state([account.id])
    name = fsconfig.queue_name(queue.id, account.domain)
    listed = {n: {k: v for k, v in row.items() if k != sync.DIGEST} for n, row in desired.queues.items()}
    actual = sync.State(queues=listed)
    loaded = {n: row[sync.DIGEST] for n, row in desired.queues.items()}
    assert sync.plan(desired, actual, domains, loaded=loaded) == []
    # announce-frequency is not in `queue list`: the digest sees it, and only that queue is reloaded
    Queue.update(announce_frequency=45).where(Queue.id == queue.id).execute()
    desired, domains = sync.desired_state([account.id])
    assert sync.plan(desired, actual, domains, loaded=loaded) == [f"queue reload {name}"]
    # unknown digests (a restarted switchdesk): judged by what `queue list` shows
    assert sync.plan(desired, actual, domains, loaded={}) == []
    assert not any(c.startswith("reload") for c in sync.plan(desired, actual, domains, loaded=loaded))
