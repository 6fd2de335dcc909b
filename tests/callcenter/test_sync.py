"""mod_callcenter kept in step with the database, against the emulator's port of mod_callcenter."""
from __future__ import annotations

import datetime as dt

import pytest

from engine.callcenter import sync
from engine.store.models import Account, Queue, Tier, TimeGroup, User
from tests.fakeswitch.callcenter import CallCenter
from tests.support import make_agent, provider


class Switch:
    """The api side of a switch: every command goes to the mod_callcenter model."""

    def __init__(self):
        self.cc = CallCenter(provider)
        self.sent: list[str] = []

    def api_many(self, commands: list[str]) -> list[str]:
        self.sent.extend(commands)
        out = []
        for command in commands:
            app, _, args = command.partition(" ")
            assert app == "callcenter_config"
            out.append(self.cc.command(args))
        return out

    def cc_list(self, what: str) -> list[dict[str, str]]:
        return sync.parse_table(self.cc.command(f"{what} list"))




@pytest.fixture
def world(database):
    account = Account.create(name="Acme", domain="acme.test", max_no_answer=3, wrap_up_time=10)
    support = Queue.create(account=account, name="Support", strategy="longest-idle-agent")
    sales = Queue.create(account=account, name="Sales", strategy="sequentially-by-next-agent-order")
    alice, bob = make_agent(account, "alice"), make_agent(account, "bob")
    Tier.create(account=account, queue=support, user=alice, level=1, position=1, joined=True)
    Tier.create(account=account, queue=support, user=bob, level=2, position=3, joined=True)
    Tier.create(account=account, queue=sales, user=bob, level=1, position=1, joined=False)
    return account, support, sales, alice, bob


def names(rows, key="name"):
    return sorted(r[key] for r in rows)


def test_full_sync_into_empty_switch_then_nothing_to_do(world):
    account, support, sales, alice, bob = world
    switch = Switch()
    result = sync.Syncer(switch.api_many).run()
    assert result.errors == [] and result.commands > 0
    assert names(switch.cc_list("queue")) == sorted([f"{support.id}@acme.test", f"{sales.id}@acme.test"])
    queues = {r["name"]: r for r in switch.cc_list("queue")}
    assert queues[f"{sales.id}@acme.test"]["strategy"] == "round-robin"
    agents = {r["name"]: r for r in switch.cc_list("agent")}
    assert set(agents) == {f"{alice.id}@acme.test", f"{bob.id}@acme.test"}
    assert agents[f"{alice.id}@acme.test"]["status"] == "Logged Out"  # quoted: not just "Logged"
    assert agents[f"{alice.id}@acme.test"]["max_no_answer"] == "3"
    tiers = {(r["queue"], r["agent"]): (r["level"], r["position"]) for r in switch.cc_list("tier")}
    assert tiers == {(f"{support.id}@acme.test", f"{alice.id}@acme.test"): ("1", "1"),
                     (f"{support.id}@acme.test", f"{bob.id}@acme.test"): ("2", "3")}
    again = sync.Syncer(switch.api_many).run()
    assert again.commands == 0


def test_changes_behind_our_back_are_healed_and_foreign_names_left_alone(world):
    account, support, sales, alice, bob = world
    switch = Switch()
    sync.Syncer(switch.api_many).run()
    cc = switch.cc
    a, b, q = f"{alice.id}@acme.test", f"{bob.id}@acme.test", f"{support.id}@acme.test"
    assert cc.command(f"agent set max_no_answer {a} 9").startswith("+OK")
    assert cc.command(f"tier del {q} {b}").startswith("+OK")
    assert cc.command(f"tier set level {q} {a} 5").startswith("+OK")
    assert cc.command("agent add 999@acme.test callback").startswith("+OK")  # stale one of ours
    assert cc.command("agent add 1001@default callback").startswith("+OK")  # the admin's own
    result = sync.Syncer(switch.api_many).run()
    assert result.errors == []
    agents = {r["name"]: r for r in switch.cc_list("agent")}
    assert agents[a]["max_no_answer"] == "3"
    assert "999@acme.test" not in agents and "1001@default" in agents
    tiers = {(r["queue"], r["agent"]): (r["level"], r["position"]) for r in switch.cc_list("tier")}
    assert tiers[(q, b)] == ("2", "3") and tiers[(q, a)] == ("1", "1")


def test_database_changes_reach_the_switch(world):
    account, support, sales, alice, bob = world
    switch = Switch()
    sync.Syncer(switch.api_many).run()
    Queue.update(strategy="ring-all", max_wait_time=120).where(Queue.id == support.id).execute()
    Tier.update(joined=True).where(Tier.queue == sales.id).execute()
    Tier.delete().where((Tier.queue == support.id) & (Tier.user == alice.id)).execute()
    User.update(wrap_up_time=30).where(User.id == bob.id).execute()
    switch.sent.clear()
    sync.Syncer(switch.api_many).run()
    sent = switch.sent[3:]
    assert f"callcenter_config queue reload {support.id}@acme.test" in sent
    assert f"callcenter_config tier add {sales.id}@acme.test {bob.id}@acme.test 1 1" in sent
    assert f"callcenter_config tier del {support.id}@acme.test {alice.id}@acme.test" in sent
    assert f"callcenter_config agent set wrap_up_time {bob.id}@acme.test 30" in sent
    queues = {r["name"]: r for r in switch.cc_list("queue")}
    assert queues[f"{support.id}@acme.test"]["strategy"] == "ring-all"
    Queue.delete().where(Queue.id == sales.id).execute()
    User.delete().where(User.id == alice.id).execute()
    sync.Syncer(switch.api_many).run()
    assert f"{sales.id}@acme.test" not in names(switch.cc_list("queue"))
    assert f"{alice.id}@acme.test" not in names(switch.cc_list("agent"))


def test_switch_restart_is_healed(world):
    switch = Switch()
    sync.Syncer(switch.api_many).run()
    before = (switch.cc_list("queue"), switch.cc_list("agent"), switch.cc_list("tier"))
    switch.cc = CallCenter(provider)  # FreeSWITCH restarted: empty mod_callcenter
    sync.Syncer(switch.api_many).run()
    after = (switch.cc_list("queue"), switch.cc_list("agent"), switch.cc_list("tier"))
    assert names(after[0]) == names(before[0]) and names(after[1]) == names(before[1])
    assert len(after[2]) == len(before[2]) == 2


def test_time_group_closed_means_no_tier(world):
    account, support, sales, alice, bob = world
    group = TimeGroup.create(account=account, name="Office", timezone="UTC",
                             ranges=[{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}])
    Tier.update(timegroup=group).where((Tier.queue == support.id) & (Tier.user == alice.id)).execute()
    monday_noon = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    sunday = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    open_state, _ = sync.desired_state(at=monday_noon)
    closed_state, _ = sync.desired_state(at=sunday)
    key = (f"{support.id}@acme.test", f"{alice.id}@acme.test")
    assert key in open_state.tiers and key not in closed_state.tiers


def test_quote_refuses_what_cannot_be_sent():
    assert sync.quote("Logged Out") == "'Logged Out'"
    assert sync.quote("Available") == "Available"
    with pytest.raises(ValueError):
        sync.quote("a'b")


def test_ready_time_rule_respects_mod_callcenters_own_delays():
    at = 1_800_000_000
    want = {"ready_time": str(at + 600), "reject_delay_time": "10", "busy_delay_time": "60",
            "no_answer_delay_time": "30"}
    # a pause until at+600: raised when lower
    assert sync.ready_time_command("1@a", want, {"ready_time": "0"}, at) == f"agent set ready_time 1@a {at + 600}"
    assert sync.ready_time_command("1@a", want, {"ready_time": str(at + 600)}, at) is None
    # an open-ended pause shortened to ten minutes: lowered
    assert sync.ready_time_command("1@a", want, {"ready_time": "2147483647"}, at) == \
        f"agent set ready_time 1@a {at + 600}"
    # no pause: mod_callcenter's own busy delay (now+60) is left alone, a pause we set is ended
    idle = dict(want, ready_time="0")
    assert sync.ready_time_command("1@a", idle, {"ready_time": str(at + 60)}, at) is None
    assert sync.ready_time_command("1@a", idle, {"ready_time": "2147483647"}, at) == f"agent set ready_time 1@a {at}"
    assert sync.ready_time_command("1@a", {}, {"ready_time": "2147483647"}, at) is None  # no runtime provider


@pytest.fixture
def runtime(monkeypatch):
    """A runtime provider driven by a dict, as agent control provides it."""
    values: dict[int, dict[str, str]] = {}
    monkeypatch.setattr(sync, "RUNTIME_PROVIDERS", [lambda ids: {i: values[i] for i in ids if i in values}])
    return values


def test_pause_through_ready_time_reaches_the_switch(world, runtime):
    account, support, sales, alice, bob = world
    switch = Switch()
    runtime[alice.id] = {"contact": "user/alice", "status": "Available", "ready_time": "2147483647"}
    sync.Syncer(switch.api_many).run()
    agents = {r["name"]: r for r in switch.cc_list("agent")}
    assert agents[f"{alice.id}@acme.test"]["ready_time"] == "2147483647"
    assert agents[f"{alice.id}@acme.test"]["status"] == "Available"
    runtime[alice.id]["ready_time"] = "0"
    syncer = sync.Syncer(switch.api_many)
    syncer.run()
    agents = {r["name"]: r for r in switch.cc_list("agent")}
    assert int(agents[f"{alice.id}@acme.test"]["ready_time"]) <= dt.datetime.now(dt.UTC).timestamp() + 1


def test_on_break_seen_on_the_switch_is_adopted_not_undone(world, runtime, monkeypatch):
    account, support, sales, alice, bob = world
    switch = Switch()
    runtime[alice.id] = {"contact": "user/alice", "status": "Available"}
    sync.Syncer(switch.api_many).run()
    switch.cc.command(f"agent set status {alice.id}@acme.test 'On Break'")  # max-no-answer while we were away
    seen: list[list[int]] = []

    def record(user_ids):
        seen.append(user_ids)
        for user_id in user_ids:
            runtime[user_id]["status"] = "On Break"

    monkeypatch.setattr(sync, "ON_BREAK_HANDLERS", [record])
    switch.sent.clear()
    sync.Syncer(switch.api_many).run()
    assert seen == [[alice.id]]
    assert not any("status" in c for c in switch.sent[3:])
    assert {r["name"]: r for r in switch.cc_list("agent")}[f"{alice.id}@acme.test"]["status"] == "On Break"


def test_agent_sync_reads_and_pushes_only_that_agent(world, runtime):
    account, support, sales, alice, bob = world
    switch = Switch()
    syncer = sync.Syncer(switch.api_many)
    syncer.run()
    runtime[bob.id] = {"contact": "user/bob", "status": "Available", "ready_time": "0"}
    Tier.update(joined=True).where(Tier.queue == sales.id).execute()
    switch.sent.clear()
    result = syncer.run_agents([bob.id])
    assert not result.full and result.errors == []
    assert switch.sent[0] == f"callcenter_config agent list {bob.id}@acme.test"
    assert not any(c.endswith(" list") for c in switch.sent)
    assert f"callcenter_config tier add {sales.id}@acme.test {bob.id}@acme.test 1 1" in switch.sent
    assert not any(f"{alice.id}@acme.test" in c for c in switch.sent)
    # the tiers it now knows of are right: a second agent sync has nothing to send
    switch.sent.clear()
    assert syncer.run_agents([bob.id]).commands == 0
    # and a full sync agrees
    assert syncer.run().commands == 0
    # an agent that stopped being one is removed with its tiers
    User.update(is_agent=False).where(User.id == bob.id).execute()
    syncer.run_agents([bob.id])
    assert f"{bob.id}@acme.test" not in names(switch.cc_list("agent"))
    assert not any(r["agent"] == f"{bob.id}@acme.test" for r in switch.cc_list("tier"))


def test_queue_loads_go_as_background_jobs_before_tiers(world):
    switch = Switch()
    jobs: list[str] = []

    def bgapi_many(commands):
        jobs.extend(commands)
        return switch.api_many(commands)

    result = sync.Syncer(switch.api_many, bgapi_many=bgapi_many).run()
    assert result.errors == []
    assert jobs and all(" queue load " in c for c in jobs)
    first_tier = next(i for i, c in enumerate(switch.sent) if " tier add " in c)
    assert all(switch.sent.index(c) < first_tier for c in jobs)


def test_foreign_tiers_are_left_alone_and_kept_out_of_the_tier_cache(world, monkeypatch):
    """The admin's own queue and agent on the same switch (names of no domain we serve)."""
    switch = Switch()
    syncer = sync.Syncer(switch.api_many)
    read = syncer.read

    def read_with_foreign_tier():
        actual = read()
        actual.tiers[("support@default", "1001@default")] = (1, 1)
        return actual

    monkeypatch.setattr(syncer, "read", read_with_foreign_tier)
    result = syncer.run()
    assert result.errors == []
    assert not any("@default" in c for c in switch.sent)
    assert syncer.tiers is not None and all(key[1].endswith("@acme.test") for key in syncer.tiers)
