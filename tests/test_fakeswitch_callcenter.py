"""Tests of the mod_callcenter port against the real FreeSWITCH 1.10.12 recordings.

The replay is the ground truth: every ``callcenter_config`` reply recorded in the
fixtures must come out byte for byte, with the calls of the recorded runs driven
through the call-flow API at the recorded times.  The strategy and fairness tests
pin the dispatch rules switchdesk's pause and wrap-up design depends on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakeswitch._fixture_events import (
    Event,
    callcenter_events,
    fixtures_dir,
    load_events,
    load_exchanges,
)
from tests.fakeswitch.callcenter import CallCenter, separate_string

pytestmark = pytest.mark.skipif(not fixtures_dir().is_dir(), reason="FreeSWITCH fixtures not found")

MOH = "tone_stream://%(2000,4000,440,480);loops=-1"
README_QUEUES: dict[str, dict[str, str]] = {
    # support@default and sales@default as the recordings' queue list shows them
    "support@default": {"strategy": "longest-idle-agent", "moh-sound": MOH, "time-base-score": "system",
                        "tier-rule-wait-second": "300", "tier-rule-wait-multiply-level": "true",
                        "tier-rule-no-agent-no-wait": "false", "discard-abandoned-after": "60"},
    "sales@default": {"strategy": "ring-all", "moh-sound": MOH},
}


class Clock:
    """An injectable clock so every epoch in the port is deterministic."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def channel_block(ev: Event) -> list[tuple[str, str]]:
    """The channel headers of a recorded callcenter event (between Event-Sequence and CC-*)."""
    names = ev.names()
    start = names.index("Event-Sequence") + 1
    end = next(i for i, n in enumerate(names) if n.startswith("CC-"))
    return ev.headers[start:end]


def ts(ev: Event) -> float:
    return int(ev.get("Event-Date-Timestamp") or 0) / 1e6


# --------------------------------------------------------------------------- (a) replay


class Replay:
    """Drives a CallCenter through the recorded runs, checking every callcenter_config reply."""

    def __init__(self) -> None:
        self.clock = Clock(1795856700.0)
        self.cc = CallCenter(lambda name: README_QUEUES.get(name), now=self.clock)
        self.checked = 0
        self.current: dict[str, str] = {}  # member uuid -> agent being offered

    def run(self, command: str, expected: bytes) -> None:
        assert self.cc.command(command).encode() == expected, command
        self.checked += 1

    def prehistory(self) -> None:
        """What happened before the recordings: one answered call and member caddb7b8 abandoned at 740."""
        cc, clock = self.cc, self.clock
        assert cc.command("queue load support@default") == "+OK\n"
        assert cc.command("queue load sales@default") == "+OK\n"
        for c in ("agent add seed@default callback", "agent set contact seed@default user/9@x",
                  "tier add support@default seed@default", "agent set status seed@default Available"):
            assert cc.command(c) == "+OK\n"
        clock.t = 1795856701.0
        m = cc.member_join("support@default", "seed-session", [("Caller-Caller-ID-Number", "9")])
        assert m is not None and cc.next_offer("support@default") is not None
        cc.agent_answered(m, "seed@default")
        clock.t = 1795856705.0
        cc.bridge_end(m)
        assert cc.command("agent del seed@default") == "+OK\n"
        clock.t = 1795856735.0
        m = cc.member_join("support@default", "old-session",
                           [("Caller-Caller-ID-Name", "Caller 1000"), ("Caller-Caller-ID-Number", "1000")],
                           member_uuid="caddb7b8-9e0a-45e1-9502-8d6213eaba9f")
        clock.t = 1795856740.0
        cc.member_abandon(m)

    def scenario(self, name: str) -> None:
        """Walk ``<name>.plain.esl`` in order; API events run the next command of ``<name>.control.esl``."""
        commands = [x for x in load_exchanges(f"{name}.control.esl") if x.command.startswith("api callcenter_config")]
        cc = self.cc
        members: dict[str, str] = {}  # session uuid -> member uuid
        for ev in load_events(f"{name}.plain.esl"):
            self.clock.t = ts(ev)
            kind, action = ev.get("Event-Name"), ev.get("CC-Action")
            if kind == "API" and ev.get("API-Command") == "callcenter_config":
                x = commands.pop(0)
                assert x.command == "api callcenter_config " + (ev.get("API-Command-Argument") or "")
                self.run(x.command[len("api callcenter_config "):], x.reply)
            elif action == "member-queue-start":
                session = ev.get("CC-Member-Session-UUID") or ""
                m = cc.member_join(ev.get("CC-Queue") or "", session, channel_block(ev),
                                   member_uuid=ev.get("CC-Member-UUID"))
                assert m is not None
                members[session] = m.uuid
            elif action == "agent-state-change" and ev.get("CC-Agent-State") == "Receiving":
                pair = cc.next_offer("support@default")
                assert pair is not None, f"{name}: no offer at {self.clock.t}"
                assert pair[0].name == ev.get("CC-Agent")
                self.current[pair[1].uuid] = pair[0].name
            elif kind == "CHANNEL_ANSWER" and ev.get("Call-Direction") == "outbound":
                (member_uuid, agent), = self.current.items()
                cc.agent_answered(member_uuid, agent, bridge=False)
            elif kind == "CHANNEL_BRIDGE":
                (member_uuid, _), = self.current.items()
                cc.complete_bridge(member_uuid)
            elif kind == "CHANNEL_HANGUP" and ev.get("Hangup-Cause") == "NO_ANSWER":
                member_uuid, agent = self.current.popitem()
                cc.agent_no_answer(member_uuid, agent)
            elif kind == "CHANNEL_HANGUP" and ev.get("Call-Direction") == "inbound":
                m = cc.member(members[ev.get("Unique-ID") or ""])
                assert m is not None
                if m.state == "Answered":
                    cc.bridge_end(m)
                else:
                    cc.member_abandon(m)
                self.current.pop(m.uuid, None)
            elif kind == "CHANNEL_HANGUP" and ev.get("Hangup-Cause") == "ORIGINATOR_CANCEL":
                assert not any(o.bridged for o in cc.offers)
        assert commands == [], f"{name}: commands left over"

    def config_api(self) -> None:
        """callcenter-config-api.esl ran at 1795856826 with no call up."""
        self.clock.t = 1795856826.1
        bg = next(e for e in load_events("callcenter-config-api.esl") if e.get("Event-Name") == "BACKGROUND_JOB")
        for x in load_exchanges("callcenter-config-api.esl"):
            if x.command.startswith("api callcenter_config"):
                self.run(x.command[len("api callcenter_config"):].removeprefix(" "), x.reply)
            elif x.command.startswith("api json "):
                assert self.cc.json_api(json.loads(x.command[len("api json "):])).encode() == x.reply
                self.checked += 1
            elif x.command.startswith("api callcenter_break "):
                assert self.cc.break_command(x.command[len("api callcenter_break "):]).encode() == x.reply
            elif x.command.startswith("bgapi callcenter_config "):
                assert self.cc.command(x.command[len("bgapi callcenter_config "):]) == bg.body
                self.checked += 1


def test_separate_string_quotes_like_freeswitch() -> None:
    """Quoted values are one argument; unquoted words split; the 8th argument keeps the rest."""
    assert separate_string("agent set status a 'On Break'") == ["agent", "set", "status", "a", "On Break"]
    assert separate_string("agent set status a Available (On Demand)")[4] == "Available"
    assert separate_string("a b c d e f g h i j")[7] == "h i j"
    assert separate_string("  x   y ") == ["x", "y"]


def test_replay_every_recorded_callcenter_config_reply() -> None:
    """Every recorded reply, in the order and at the times of the one FreeSWITCH run that made them."""
    r = Replay()
    r.prehistory()
    for name in ("agent-no-answer", "abandon-no-agent", "abandon-while-ringing"):
        r.scenario(name)
    r.config_api()
    r.scenario("queue-call-answered")
    total = sum(
        1 for f in ("agent-no-answer.control.esl", "abandon-no-agent.control.esl",
                    "abandon-while-ringing.control.esl", "queue-call-answered.control.esl",
                    "callcenter-config-api.esl")
        for x in load_exchanges(f)
        if "callcenter_config" in x.command
    )
    assert r.checked == total


def test_usage_and_errors_without_state() -> None:
    """Edge replies that do not depend on recorded state."""
    cc = CallCenter(lambda n: None, now=Clock(0))
    assert cc.command("").startswith("-USAGE: \ncallcenter_config <target> <args>,\n")
    assert cc.command("queue load q@x") == "-ERR Invalid Queue not found!\n"
    assert cc.command("queue count") == "0\n"
    assert cc.command("agent add a@x") == "-ERR Invalid!\n"
    assert cc.command("agent get uuid nosuch") == "-ERR Agent not found!\n"


# --------------------------------------------------------------------------- helpers for dispatch tests


def make_cc(strategy: str, **params: str) -> tuple[CallCenter, Clock]:
    clock = Clock(1_000_000.0)
    conf = {"strategy": strategy, **params}
    cc = CallCenter(lambda n: conf if n == "q@t" else None, now=clock)
    assert cc.command("queue load q@t") == "+OK\n"
    return cc, clock


def add_agents(cc: CallCenter, specs: list[tuple[str, int, int]], status: str = "Available") -> None:
    """Agents ``(name, level, position)`` with a tier in q@t, Available and Waiting."""
    for name, level, position in specs:
        assert cc.command(f"agent add {name} callback") == "+OK\n"
        assert cc.command(f"agent set contact {name} user/{name}") == "+OK\n"
        assert cc.command(f"tier add q@t {name} {level} {position}") == "+OK\n"
        assert cc.command(f"agent set status {name} '{status}'") == "+OK\n"


def call(cc: CallCenter, clock: Clock, n: int = 0) -> Any:
    clock.t += 1
    m = cc.member_join("q@t", f"session-{clock.t}-{n}", [("Caller-Caller-ID-Number", "100")])
    assert m is not None
    return m


def offered(cc: CallCenter, queue: str = "q@t") -> str | None:
    pair = cc.next_offer(queue)
    return pair[0].name if pair else None


def answer_and_hangup(cc: CallCenter, clock: Clock, m: Any, agent: str, talk: int = 10) -> None:
    cc.agent_answered(m, agent)
    clock.t += talk
    cc.bridge_end(m)
    clock.t += 1


def cycle(cc: CallCenter, clock: Clock, n: int) -> list[str]:
    """Offer ``n`` calls one after the other, each answered; who got them, in order."""
    got = []
    for _ in range(n):
        m = call(cc, clock)
        name = offered(cc)
        assert name is not None
        got.append(name)
        answer_and_hangup(cc, clock, m, name)
    return got


# --------------------------------------------------------------------------- (b) strategies


def test_round_robin_is_next_position_after_last_offered_then_wraps() -> None:
    """round-robin: the next position after the last-offered agent on the same level, then wrap around."""
    cc, clock = make_cc("round-robin")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 1, 3), ("z", 2, 1)])
    assert cycle(cc, clock, 5) == ["a", "b", "c", "a", "b"]


def test_round_robin_skips_busy_agent_and_continues_after_it() -> None:
    cc, clock = make_cc("round-robin")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 1, 3)])
    assert cycle(cc, clock, 1) == ["a"]
    cc.command("agent set status b 'On Break'")
    assert cycle(cc, clock, 2) == ["c", "a"]


def test_top_down_always_starts_from_the_top() -> None:
    """top-down restarts at the first position for every new member."""
    cc, clock = make_cc("top-down")
    add_agents(cc, [("c", 1, 3), ("a", 1, 1), ("b", 1, 2)])
    assert cycle(cc, clock, 3) == ["a", "a", "a"]


def test_top_down_moves_down_for_the_same_member_after_no_answer() -> None:
    cc, clock = make_cc("top-down")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 2, 1)])
    m = call(cc, clock)
    assert offered(cc) == "a"
    cc.agent_no_answer(m, "a")
    assert offered(cc) == "b"
    cc.agent_no_answer(m, "b")
    assert offered(cc) == "c"


def test_longest_idle_agent_orders_by_last_bridge_end_within_level() -> None:
    cc, clock = make_cc("longest-idle-agent")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 1, 3), ("d", 2, 1)])
    assert cycle(cc, clock, 4) == ["a", "b", "c", "a"]


def test_sequentially_by_agent_order_and_unknown_strategy_use_position() -> None:
    for strategy in ("sequentially-by-agent-order", "no-such-strategy"):
        cc, clock = make_cc(strategy)
        add_agents(cc, [("b", 1, 2), ("a", 1, 1), ("c", 2, 1)])
        assert cycle(cc, clock, 2) == ["a", "a"], strategy


def test_levels_come_before_positions() -> None:
    cc, clock = make_cc("sequentially-by-agent-order")
    add_agents(cc, [("low", 2, 1), ("high", 1, 9)])
    assert cycle(cc, clock, 1) == ["high"]


def test_ring_all_offers_every_waiting_agent_and_first_answer_wins() -> None:
    cc, clock = make_cc("ring-all")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 2, 1)])
    m = call(cc, clock)
    offers = cc.dispatch()
    assert [o.agent_name for o in offers] == ["a", "b", "c"]
    events = cc.agent_answered(m, "b")
    fails = [e for e in events if e.get("CC-Action") == "bridge-agent-fail"]
    assert sorted((e.get("CC-Agent"), e.get("CC-Hangup-Cause")) for e in fails) == [
        ("a", "LOSE_RACE"), ("c", "LOSE_RACE")]
    assert cc.command("agent get state b") == "In a queue call"
    assert cc.command("agent get state a") == "Waiting"


def test_ring_progressively_adds_one_agent_per_delay() -> None:
    cc, clock = make_cc("ring-progressively", **{"ring-progressively-delay": "5"})
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 1, 3)])
    call(cc, clock)
    assert offered(cc) == "a"
    clock.t += 2
    assert offered(cc) is None
    clock.t += 3
    assert offered(cc) == "b"


def test_random_is_seeded_and_respects_levels() -> None:
    cc, clock = make_cc("random")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2), ("c", 1, 3), ("z", 2, 1)])
    got = cycle(cc, clock, 30)
    assert "z" not in got
    assert set(got) == {"a", "b", "c"}


def test_tier_rules_hold_higher_levels_until_wait_second() -> None:
    """tier_rules_apply: level 2 is tried only after tier_rule_wait_second * level (multiply) seconds."""
    cc, clock = make_cc("sequentially-by-agent-order", **{
        "tier-rules-apply": "true", "tier-rule-wait-second": "10", "tier-rule-wait-multiply-level": "true",
        "tier-rule-no-agent-no-wait": "false"})
    add_agents(cc, [("a", 1, 1), ("b", 2, 1)])
    cc.command("agent set status a 'On Break'")
    call(cc, clock)
    assert offered(cc) is None  # level 1 itself waits 1 * 10 s in the real module
    clock.t += 10
    assert offered(cc) is None  # a is On Break; level 2 needs 20 s
    clock.t += 10
    assert offered(cc) == "b"


def test_tier_rule_no_agent_no_wait_skips_empty_levels() -> None:
    cc, clock = make_cc("sequentially-by-agent-order", **{
        "tier-rules-apply": "true", "tier-rule-wait-second": "100", "tier-rule-no-agent-no-wait": "true"})
    add_agents(cc, [("b", 2, 1)])
    call(cc, clock)
    assert offered(cc) == "b"


# --------------------------------------------------------------------------- (c) fairness


def test_least_talk_time_and_fewest_calls() -> None:
    for strategy, long_talker in (("agent-with-least-talk-time", "a"), ("agent-with-fewest-calls", "a")):
        cc, clock = make_cc(strategy)
        add_agents(cc, [("a", 1, 1), ("b", 1, 2)])
        m = call(cc, clock)
        assert offered(cc) == long_talker
        answer_and_hangup(cc, clock, m, long_talker, talk=100)
        assert cycle(cc, clock, 1) == ["b"], strategy


def test_available_resets_talk_time_and_calls_but_ready_time_pause_keeps_them() -> None:
    cc, clock = make_cc("agent-with-fewest-calls")
    add_agents(cc, [("a", 1, 1), ("b", 1, 2)])
    assert cycle(cc, clock, 2) == ["a", "b"]
    m = call(cc, clock)
    assert offered(cc) == "a"
    answer_and_hangup(cc, clock, m, "a")
    row = cc.agent("a")
    assert row is not None and (row.calls_answered, row.talk_time) == (2, 20)
    # pause via ready_time: excluded while in the future, back with counters intact
    cc.command(f"agent set ready_time a {int(clock.t) + 3600}")
    assert cycle(cc, clock, 1) == ["b"]
    cc.command(f"agent set ready_time a {int(clock.t)}")
    assert cycle(cc, clock, 1) == ["a"]  # back in, and still fairly ranked: 2 calls against b's 3
    assert (row.calls_answered, row.talk_time) == (3, 30)
    # Available again (from On Break) wipes the counters: a is now the fairest
    cc.command("agent set status a 'On Break'")
    cc.command("agent set status a Available")
    assert (row.calls_answered, row.talk_time, row.no_answer_count) == (0, 0, 0)
    assert cycle(cc, clock, 1) == ["a"]


def test_setting_available_when_already_available_changes_nothing() -> None:
    cc, clock = make_cc("agent-with-fewest-calls")
    add_agents(cc, [("a", 1, 1)])
    cycle(cc, clock, 1)
    row = cc.agent("a")
    assert row is not None
    before = (row.calls_answered, row.talk_time, row.last_status_change)
    clock.t += 50
    assert cc.command("agent set status a Available") == "+OK\n"
    assert (row.calls_answered, row.talk_time, row.last_status_change) == before


# --------------------------------------------------------------------------- (d) wrap-up, no-answer, delays


def test_wrap_up_window_after_last_bridge_end() -> None:
    cc, clock = make_cc("longest-idle-agent")
    add_agents(cc, [("a", 1, 1)])
    cc.command("agent set wrap_up_time a 5")
    m = call(cc, clock)
    assert offered(cc) == "a"
    cc.agent_answered(m, "a")
    clock.t += 10
    cc.bridge_end(m)
    end = cc.agent("a").last_bridge_end  # type: ignore[union-attr]
    call(cc, clock, 1)
    clock.t = end + 5
    assert offered(cc) is None  # last_bridge_end < now - wrap_up_time is false at exactly +5
    clock.t = end + 6
    assert offered(cc) == "a"


def test_no_answer_delay_then_on_break_after_max_no_answer() -> None:
    cc, clock = make_cc("longest-idle-agent")
    add_agents(cc, [("a", 1, 1)])
    cc.command("agent set max_no_answer a 2")
    cc.command("agent set no_answer_delay_time a 2")
    m = call(cc, clock)
    assert offered(cc) == "a"
    events = cc.agent_no_answer(m, "a")
    assert [e.get("CC-Action") for e in events if e.get("CC-Action")] == ["bridge-agent-fail", "agent-state-change"]
    assert cc.tier("q@t", "a").state == "No Answer"  # type: ignore[union-attr]
    clock.t += 1
    assert offered(cc) is None  # ready_time = now + 2
    clock.t += 1
    assert offered(cc) == "a"
    events = cc.agent_no_answer(m, "a")
    actions = [e.get("CC-Action") for e in events if e.get("CC-Action")]
    assert actions == ["agent-max-no-answer", "agent-status-change", "bridge-agent-fail", "agent-state-change"]
    assert cc.command("agent get status a") == "On Break"
    clock.t += 100
    assert offered(cc) is None


@pytest.mark.parametrize(("cause", "field", "tier_state"), [
    ("USER_BUSY", "busy_delay_time", "Ready"),
    ("CALL_REJECTED", "reject_delay_time", "Ready"),
])
def test_busy_and_reject_delays(cause: str, field: str, tier_state: str) -> None:
    cc, clock = make_cc("longest-idle-agent")
    add_agents(cc, [("a", 1, 1)])
    cc.command(f"agent set {field} a 7")
    m = call(cc, clock)
    assert offered(cc) == "a"
    cc.agent_no_answer(m, "a", cause=cause)
    row = cc.agent("a")
    assert row is not None and row.ready_time == int(clock.t) + 7 and row.no_answer_count == 0
    assert cc.tier("q@t", "a").state == tier_state  # type: ignore[union-attr]


def test_offer_rewrites_tiers_in_other_queues_to_standby_and_back() -> None:
    clock = Clock(1_000_000.0)
    cc = CallCenter(lambda n: {"strategy": "longest-idle-agent"}, now=clock)
    add = ["agent add a callback", "tier add q1@t a", "tier add q2@t a", "agent set status a Available"]
    assert [cc.command(c) for c in add] == ["+OK\n"] * 4
    m = cc.member_join("q1@t", "s1", [])
    assert m is not None and offered(cc, "q1@t") == "a"
    assert (cc.tier("q1@t", "a").state, cc.tier("q2@t", "a").state) == ("Offering", "Standby")  # type: ignore[union-attr]
    cc.agent_answered(m, "a")
    assert cc.tier("q1@t", "a").state == "Active Inbound"  # type: ignore[union-attr]
    cc.bridge_end(m)
    assert (cc.tier("q1@t", "a").state, cc.tier("q2@t", "a").state) == ("Ready", "Ready")  # type: ignore[union-attr]


def test_on_demand_agent_goes_idle_after_a_call() -> None:
    cc, clock = make_cc("longest-idle-agent")
    add_agents(cc, [("a", 1, 1)], status="Available (On Demand)")
    m = call(cc, clock)
    assert offered(cc) == "a"
    answer_and_hangup(cc, clock, m, "a")
    assert cc.command("agent get state a") == "Idle"
    call(cc, clock, 1)
    assert offered(cc) is None


def test_queue_unknown_to_provider_fails_and_tier_add_autoloads() -> None:
    clock = Clock(0)
    cc = CallCenter(lambda n: {"strategy": "ring-all"} if n == "ok@t" else None, now=clock)
    cc.command("agent add a callback")
    assert cc.command("tier add ok@t a") == "+OK\n"  # get_queue loads a queue on first use
    assert cc.command("queue count") == "1\n"
    assert cc.command("tier add bad@t a") == "-ERR Queue not found!\n"


# --------------------------------------------------------------------------- (e) event sequences


def cc_actions(events: list[Event]) -> list[str]:
    return [e.get("CC-Action") or "" for e in events if e.get("Event-Subclass") == "callcenter::info"]


def recorded_call(name: str) -> tuple[list[Event], Event]:
    evs = callcenter_events(name)
    start = next(e for e in evs if e.get("CC-Action") == "member-queue-start")
    return evs, start


def run_recorded_setup(cc: CallCenter, name: str) -> None:
    for x in load_exchanges(f"{name}.control.esl"):
        if x.command.startswith("api callcenter_config") and " get " not in x.command \
                and " list" not in x.command and " count" not in x.command:
            cc.command(x.command[len("api callcenter_config "):])


def test_answered_call_matches_recording() -> None:
    """CC-Action sequence, and header names of each callcenter event, as in queue-call-answered.plain.esl."""
    rec, start = recorded_call("queue-call-answered.plain.esl")
    clock = Clock(ts(start))
    cc = CallCenter(lambda n: README_QUEUES.get(n), now=clock)
    cc.command("queue load support@default")
    run_recorded_setup(cc, "queue-call-answered")
    ours: list[Event] = []
    m = cc.member_join("support@default", start.get("CC-Member-Session-UUID") or "", channel_block(start))
    assert m is not None
    ours += cc.last_events
    pair = cc.next_offer("support@default")
    assert pair is not None
    ours += cc.last_events
    clock.t += 1
    ours += cc.agent_answered(m, "1001@default")
    clock.t += 5
    end = next(e for e in rec if e.get("CC-Action") == "member-queue-end")
    ours += cc.bridge_end(m, caller_headers=channel_block(end))
    ignore = {"agent-add", "agent-contact-change", "agent-status-change", "agent-uuid-get", "agent-state-get",
              "agent-status-get"}
    want = [e for e in rec if e.get("CC-Action") not in ignore]
    assert cc_actions(ours) == [e.get("CC-Action") for e in want]
    got = [e for e in ours if e.get("Event-Subclass") == "callcenter::info"]
    for mine, real in zip(got, want, strict=True):
        assert mine.names() == real.names(), real.get("CC-Action")
    # channel events of both legs, in the recorded order
    chan = [e.get("Event-Name") for e in ours if (e.get("Event-Name") or "").startswith("CHANNEL_")]
    assert chan == ["CHANNEL_OUTGOING", "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_PROGRESS", "CHANNEL_ANSWER",
                    "CHANNEL_BRIDGE", "CHANNEL_HANGUP", "CHANNEL_HANGUP", "CHANNEL_UNBRIDGE",
                    "CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY", "CHANNEL_DESTROY"]
    leg = pair[1].uuid
    start_ev = next(e for e in ours if e.get("CC-Action") == "bridge-agent-start")
    assert start_ev.get("CC-Member-UUID") == leg and start_ev.get("Unique-ID") == start_ev.get("CC-Agent-UUID")
    row = cc.agent("1001@default")
    assert row is not None and (row.calls_answered, row.talk_time, row.uuid) == (1, 5, "")


@pytest.mark.parametrize("name", ["abandon-no-agent", "abandon-while-ringing", "agent-no-answer"])
def test_no_answer_and_abandon_flows_match_recordings(name: str) -> None:
    """The callcenter actions of the failure flows, as recorded (thread races compared as sets per step)."""
    rec, start = recorded_call(f"{name}.plain.esl")
    clock = Clock(ts(start))
    cc = CallCenter(lambda n: README_QUEUES.get(n), now=clock)
    cc.command("queue load support@default")
    run_recorded_setup(cc, name)
    ours: list[Event] = []
    m = cc.member_join("support@default", start.get("CC-Member-Session-UUID") or "", channel_block(start))
    assert m is not None
    ours += cc.last_events
    for ev in rec:
        action = ev.get("CC-Action")
        clock.t = ts(ev)
        if action == "agent-offering":
            pair = cc.next_offer("support@default")
            assert pair is not None
            ours += cc.last_events
        elif action == "bridge-agent-fail" and ev.get("CC-Hangup-Cause") == "NO_ANSWER":
            ours += cc.agent_no_answer(m, ev.get("CC-Agent") or "")
        elif action == "member-queue-end":
            ours += cc.member_abandon(m, caller_headers=channel_block(ev))
    ignore = {"agent-add", "agent-contact-change", "agent-status-get", "agent-state-get"}
    want = [e.get("CC-Action") for e in rec if e.get("CC-Action") not in ignore]
    want = [a for i, a in enumerate(want) if not (a == "agent-status-change" and i == 0)]
    got = cc_actions(ours)
    assert sorted(got) == sorted(want)
    real_end = next(e for e in rec if e.get("CC-Action") == "member-queue-end")
    my_end = next(e for e in ours if e.get("CC-Action") == "member-queue-end")
    assert my_end.names() == real_end.names()
    assert (my_end.get("CC-Cause"), my_end.get("CC-Cancel-Reason")) == ("Cancel", "BREAK_OUT")
    fails_real = [(e.get("CC-Hangup-Cause"), e.names()) for e in rec if e.get("CC-Action") == "bridge-agent-fail"]
    fails_mine = [(e.get("CC-Hangup-Cause"), e.names()) for e in ours if e.get("CC-Action") == "bridge-agent-fail"]
    assert fails_mine == fails_real
    row = cc.command("queue list members support@default").splitlines()[1].split("|")
    # the member stays listed, Abandoned, with no session and no serving agent (as the control files show)
    left = real_end.get("CC-Member-Leaving-Time")
    assert (row[2], row[3], row[10], row[13], row[15]) == (m.uuid, "", left, "", "Abandoned")


def test_tick_applies_max_wait_time() -> None:
    """cc_member_thread_run: past max-wait-time the member leaves with TIMEOUT (the call is not hung up)."""
    cc, clock = make_cc("longest-idle-agent", **{"max-wait-time": "10"})
    m = call(cc, clock)
    clock.t += 9
    assert cc_actions(cc.tick()) == []
    clock.t += 1
    events = cc.tick()
    assert cc_actions(events) == ["member-queue-end", "members-count"]
    assert events[0].get("CC-Cancel-Reason") == "TIMEOUT"
    assert not any(e.get("Event-Name") == "CHANNEL_HANGUP" for e in events)
    assert m.state == "Abandoned"
