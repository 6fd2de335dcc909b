"""Keep mod_callcenter in step with the database: read what FreeSWITCH has, send only the difference.

The database is the source of truth for configuration (DESIGN.md). A sync
reads `queue list`, `agent list` and `tier list` (about 70 ms on a real
switch), compares them with the desired state built from the database, and
sends the difference as plain `api` commands, pipelined. Only names that we
make (`<id>@<domain>` of a domain we serve) are ever changed or removed;
anything else on the switch is left alone. Tier *state* and agent *state* are
never compared: mod_callcenter rewrites them itself.

The planner (`plan`) is pure; `Syncer` runs it over an ESL connection.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine import fsconfig, timegroups
from engine.models import Account, Queue, Tier, TimeGroup, User

log = logging.getLogger("switchdesk.sync")

AGENT_FIELDS = ("contact", "status", "max_no_answer", "wrap_up_time", "reject_delay_time",
                "busy_delay_time", "no_answer_delay_time")
# What an agent that is not checked in looks like: a contact that fails at once.
IDLE_CONTACT = "error/user_not_registered"
QUEUE_COMPARED = ("strategy", "time_base_score", "tier_rules_apply", "tier_rule_wait_second",
                  "tier_rule_wait_multiply_level", "tier_rule_no_agent_no_wait", "discard_abandoned_after",
                  "abandoned_resume_allowed", "max_wait_time", "max_wait_time_with_no_agent",
                  "max_wait_time_with_no_agent_time_reached")


@dataclass
class State:
    """mod_callcenter's configuration as we compare it."""

    queues: dict[str, dict[str, str]] = field(default_factory=dict)
    agents: dict[str, dict[str, str]] = field(default_factory=dict)
    tiers: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


def parse_table(body: str) -> list[dict[str, str]]:
    """A `callcenter_config ... list` reply: a `|` header line, rows, then `+OK`."""
    lines = [line for line in body.splitlines() if line and line != "+OK"]
    if not lines or lines[0].startswith("-ERR"):
        return []
    header = lines[0].split("|")
    rows = []
    for line in lines[1:]:
        values = line.split("|")
        if len(values) != len(header):
            # a value with '|' in it (a contact we did not write): keep the name, skip the rest
            values = values[:1] + [""] * (len(header) - 1)
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def actual_state(queue_list: str, agent_list: str, tier_list: str) -> State:
    state = State()
    for row in parse_table(queue_list):
        state.queues[row["name"]] = row
    for row in parse_table(agent_list):
        state.agents[row["name"]] = {k: row.get(k, "") for k in AGENT_FIELDS}
    for row in parse_table(tier_list):
        try:
            state.tiers[(row["queue"], row["agent"])] = (int(row["level"]), int(row["position"]))
        except ValueError:
            continue
    return state


def quote(value: str) -> str:
    """An argument of callcenter_config: values with spaces must be single-quoted
    (unquoted `Logged Out` would set only `Logged`)."""
    if any(c in value for c in "\r\n'"):
        raise ValueError("control characters and quotes cannot be sent to callcenter_config")
    return f"'{value}'" if " " in value else value


def _ours(name: str, domains: set[str]) -> bool:
    parsed = fsconfig.parse_name(name)
    return parsed is not None and parsed[1] in domains


def queue_row(queue: Queue) -> dict[str, str]:
    params = dict(fsconfig.queue_params(queue))
    return {key: params[key.replace("_", "-")] for key in QUEUE_COMPARED}


def plan(desired: State, actual: State, domains: set[str]) -> list[str]:
    """The callcenter_config commands that turn `actual` into `desired`, in a safe order."""
    cmds: list[str] = []
    for name, row in desired.queues.items():
        have = actual.queues.get(name)
        if have is None:
            cmds.append(f"queue load {name}")
        elif any(have.get(k) != v for k, v in row.items()):
            cmds.append(f"queue reload {name}")
    for name, agent in desired.agents.items():
        have = actual.agents.get(name)
        if have is None:
            cmds.append(f"agent add {name} callback")
            have = {}
        for key in AGENT_FIELDS:
            if have.get(key) != agent[key]:
                cmds.append(f"agent set {key} {name} {quote(agent[key])}")
    for key in actual.tiers.keys() - desired.tiers.keys():
        if _ours(key[0], domains) or _ours(key[1], domains):
            cmds.append(f"tier del {key[0]} {key[1]}")
    for key, (level, position) in desired.tiers.items():
        have = actual.tiers.get(key)
        if have is None:
            cmds.append(f"tier add {key[0]} {key[1]} {level} {position}")
        else:
            if have[0] != level:
                cmds.append(f"tier set level {key[0]} {key[1]} {level}")
            if have[1] != position:
                cmds.append(f"tier set position {key[0]} {key[1]} {position}")
    for name in actual.agents.keys() - desired.agents.keys():
        if _ours(name, domains):
            cmds.append(f"agent del {name}")
    for name in actual.queues.keys() - desired.queues.keys():
        if _ours(name, domains):
            cmds.append(f"queue unload {name}")
    return cmds


# Providers of the per-agent runtime values (contact, status) that agent control fills in;
# without one, every agent is Logged Out with a contact that fails at once.
AgentRuntime = Callable[[list[int]], dict[int, dict[str, str]]]
RUNTIME_PROVIDERS: list[AgentRuntime] = []


def desired_state(account_ids: Iterable[int] | None = None, at: dt.datetime | None = None) -> tuple[State, set[str]]:
    """The state mod_callcenter should have for the accounts this box serves (all by default)."""
    at = at or dt.datetime.now(dt.UTC)
    accounts = {a.id: a for a in (Account.select() if account_ids is None
                                  else Account.select().where(Account.id.in_(list(account_ids))))}
    state = State()
    for queue in Queue.select().where(Queue.account.in_(list(accounts))):
        state.queues[fsconfig.queue_name(queue.id, accounts[queue.account_id].domain)] = queue_row(queue)
    agents = list(User.select().where(User.account.in_(list(accounts)) & User.is_agent & (User.active == 1)))
    runtime: dict[int, dict[str, str]] = {}
    for provider in RUNTIME_PROVIDERS:
        for user_id, values in provider([u.id for u in agents]).items():
            runtime.setdefault(user_id, {}).update(values)
    for user in agents:
        account = accounts[user.account_id]
        values = {
            "contact": IDLE_CONTACT,
            "status": "Logged Out",
            "max_no_answer": str(user.effective("max_no_answer", account)),
            "wrap_up_time": str(user.effective("wrap_up_time", account)),
            "reject_delay_time": str(user.effective("reject_delay_time", account)),
            "busy_delay_time": str(user.effective("busy_delay_time", account)),
            "no_answer_delay_time": str(user.effective("no_answer_delay_time", account)),
        }
        values.update(runtime.get(user.id, {}))
        state.agents[fsconfig.agent_name(user.id, account.domain)] = values
    groups = {g.id: g for g in TimeGroup.select().where(TimeGroup.account.in_(list(accounts)))}
    tiers = Tier.select().where(Tier.account.in_(list(accounts)) & Tier.joined)
    for tier in tiers:
        group = groups.get(tier.timegroup_id)
        if group is not None and not timegroups.is_open(
                {"timezone": group.timezone, "ranges": group.ranges, "exceptions": group.exceptions}, at):
            continue
        domain = accounts[tier.account_id].domain
        agent = fsconfig.agent_name(tier.user_id, domain)
        if agent in state.agents:
            state.tiers[(fsconfig.queue_name(tier.queue_id, domain), agent)] = (tier.level, tier.position)
    return state, {a.domain for a in accounts.values()}


@dataclass
class SyncResult:
    commands: int
    errors: list[tuple[str, str]]
    seconds: float


class Syncer:
    """Runs a sync over an ESL command channel.

    `api_many(commands) -> replies` sends `api` commands pipelined on one
    connection and returns the replies in order. No database transaction is
    open while it waits on FreeSWITCH: `queue load` makes FreeSWITCH fetch
    callcenter.conf from our own HTTP server.
    """

    def __init__(self, api_many: Callable[[list[str]], list[str]], account_ids: Iterable[int] | None = None):
        self.api_many = api_many
        self.account_ids = list(account_ids) if account_ids is not None else None

    def read(self) -> State:
        queue_list, agent_list, tier_list = self.api_many([
            "callcenter_config queue list", "callcenter_config agent list", "callcenter_config tier list",
        ])
        return actual_state(queue_list, agent_list, tier_list)

    def run(self) -> SyncResult:
        start = time.perf_counter()
        actual = self.read()
        desired, domains = desired_state(self.account_ids)
        commands = plan(desired, actual, domains)
        errors = []
        if commands:
            replies = self.api_many([f"callcenter_config {c}" for c in commands])
            errors = [(c, r.strip()) for c, r in zip(commands, replies, strict=True) if not r.startswith("+OK")]
            for command, reply in errors:
                log.warning("sync: %s -> %s", command, reply)
        elapsed = time.perf_counter() - start
        log.info("sync: %d commands, %d errors, %.3f s", len(commands), len(errors), elapsed)
        return SyncResult(len(commands), errors, elapsed)
