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
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.callcenter import fsconfig, timegroups
from engine.media import library
from engine.store.models import Account, Queue, Tier, TimeGroup, User

log = logging.getLogger("switchdesk.sync")

AGENT_FIELDS = ("contact", "status", "max_no_answer", "wrap_up_time", "reject_delay_time",
                "busy_delay_time", "no_answer_delay_time")
# What an agent that is not checked in looks like: a contact that fails at once.
IDLE_CONTACT = "error/user_not_registered"
# seconds of clock skew and command latency allowed between us and mod_callcenter on ready_time
READY_SLACK = 5
QUEUE_COMPARED = ("strategy", "moh_sound", "time_base_score", "tier_rules_apply", "tier_rule_wait_second",
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


def parse_agents(agent_list: str) -> dict[str, dict[str, str]]:
    return {row["name"]: {k: row.get(k, "") for k in (*AGENT_FIELDS, "ready_time")}
            for row in parse_table(agent_list)}


def parse_tiers(tier_list: str) -> dict[tuple[str, str], tuple[int, int]]:
    tiers = {}
    for row in parse_table(tier_list):
        try:
            tiers[(row["queue"], row["agent"])] = (int(row["level"]), int(row["position"]))
        except ValueError:
            continue
    return tiers


def actual_state(queue_list: str, agent_list: str, tier_list: str) -> State:
    state = State(agents=parse_agents(agent_list), tiers=parse_tiers(tier_list))
    for row in parse_table(queue_list):
        state.queues[row["name"]] = row
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


DIGEST = "_digest"  # a desired queue row's key: every parameter, including those `queue list` does not show


def queue_row(queue: Queue, media: dict[int, str] | None = None) -> dict[str, str]:
    """What `queue list` shows of the queue's parameters, plus (under DIGEST) all of them: `queue list`
    has no column for announce-sound and announce-frequency, so a change there is seen by the digest."""
    items = fsconfig.queue_params(queue, media)
    params = dict(items)
    row = {key: params[key.replace("_", "-")] for key in QUEUE_COMPARED}
    row[DIGEST] = hashlib.sha256(repr(sorted(items)).encode()).hexdigest()[:16]
    return row


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def ready_time_command(name: str, want: dict[str, str], have: dict[str, str], at: int) -> str | None:
    """`ready_time` is shared with mod_callcenter, which pushes it forward itself after a
    rejected, busy or unanswered offer (now + the agent's delay). So it is raised to our
    deadline (a pause, a wrap-up) when lower, and lowered only when it lies beyond both our
    deadline and anything mod_callcenter's own delays could have set: a pause that ended."""
    if "ready_time" not in want:
        return None
    desired, current = _int(want["ready_time"]), _int(have.get("ready_time"))
    if desired > at and current < desired:
        return f"agent set ready_time {name} {desired}"
    native = max(_int(want.get(k)) for k in ("reject_delay_time", "busy_delay_time", "no_answer_delay_time"))
    if current > max(desired, at + native + READY_SLACK):
        return f"agent set ready_time {name} {max(desired, at)}"
    return None


def plan(desired: State, actual: State, domains: set[str], at: int | None = None,
         loaded: dict[str, str] | None = None) -> list[str]:
    """The callcenter_config commands that turn `actual` into `desired`, in a safe order.

    `loaded`: the DIGEST of each queue as last loaded; a queue whose parameters changed since is
    reloaded (`queue reload` of that one queue re-reads all its parameters) even when `queue list`
    shows no difference. A queue with no digest known is judged by what `queue list` shows.
    """
    at = int(time.time()) if at is None else at
    loaded = loaded or {}
    cmds: list[str] = []
    for name, row in desired.queues.items():
        have = actual.queues.get(name)
        if have is None:
            cmds.append(f"queue load {name}")
        elif any(have.get(k) != v for k, v in row.items() if k != DIGEST) or (
                loaded.get(name, row.get(DIGEST)) != row.get(DIGEST)):
            cmds.append(f"queue reload {name}")
    for name, agent in desired.agents.items():
        have = actual.agents.get(name)
        if have is None:
            cmds.append(f"agent add {name} callback")
            have = {}
        for key in AGENT_FIELDS:
            if have.get(key) != agent[key]:
                cmds.append(f"agent set {key} {name} {quote(agent[key])}")
        ready = ready_time_command(name, agent, have, at)
        if ready:
            cmds.append(ready)
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


# Providers of the per-agent runtime values that agent control fills in: `contact`, `status`,
# `ready_time` (epoch of the pause or wrap-up end, "0" for none) and any AGENT_FIELDS override.
# Without one, every agent is Logged Out with a contact that fails at once.
AgentRuntime = Callable[[list[int]], dict[int, dict[str, str]]]
RUNTIME_PROVIDERS: list[AgentRuntime] = []
# Called with the user ids of checked-in agents that FreeSWITCH shows On Break while the
# database says Available: mod_callcenter's max-no-answer rule fired while we could not hear
# it. A handler records it (a system pause) so the sync does not undo it.
ON_BREAK_HANDLERS: list[Callable[[list[int]], None]] = []


def desired_state(account_ids: Iterable[int] | None = None, at: dt.datetime | None = None,
                  user_ids: Iterable[int] | None = None) -> tuple[State, set[str]]:
    """The state mod_callcenter should have for the accounts this box serves (all by default).

    With `user_ids`, only those agents and their tiers (no queues): an incremental sync.
    """
    at = at or dt.datetime.now(dt.UTC)
    accounts = {a.id: a for a in (Account.select() if account_ids is None
                                  else Account.select().where(Account.id.in_(list(account_ids))))}
    state = State()
    only = None if user_ids is None else list(user_ids)
    if only is None:
        queues = list(Queue.select().where(Queue.account.in_(list(accounts))))
        media: dict[int, dict[int, str]] = {}
        for queue in queues:
            media.setdefault(queue.account_id, set()).update(fsconfig.media_ids(queue))  # type: ignore[arg-type]
        paths = {account_id: library.paths_of(account_id, ids) for account_id, ids in media.items() if ids}
        for queue in queues:
            state.queues[fsconfig.queue_name(queue.id, accounts[queue.account_id].domain)] = queue_row(
                queue, paths.get(queue.account_id))
    agents_q = User.select().where(User.account.in_(list(accounts)) & User.is_agent & (User.active == 1))
    if only is not None:
        agents_q = agents_q.where(User.id.in_(only))
    agents = list(agents_q)
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
    if only is not None:
        tiers = tiers.where(Tier.user.in_(only))
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
    full: bool = True


def _is_config_fetch(command: str) -> bool:
    return command.startswith(("queue load ", "queue reload "))


class Syncer:
    """Runs syncs over an ESL command channel and remembers what the switch has.

    `api_many(commands) -> replies` sends `api` commands pipelined on one
    connection and returns the replies in order. `bgapi_many`, when given,
    runs the commands that make FreeSWITCH fetch callcenter.conf from our own
    HTTP server (`queue load|reload`) as background jobs, so a slow fetch never
    holds up the commands behind it (DESIGN.md, ESL connections). No database
    transaction is open while either waits on FreeSWITCH.

    A full sync (`run`) reads the three lists and diffs everything. An agent
    sync (`run_agents`) re-reads only those agents (`agent list <name>`, 1-4 ms
    each on a real switch) and takes their tiers from what the last full sync
    saw plus what was sent since; the periodic full sync heals any drift.
    """

    def __init__(self, api_many: Callable[[list[str]], list[str]], account_ids: Iterable[int] | None = None,
                 bgapi_many: Callable[[list[str]], list[str]] | None = None):
        self.api_many = api_many
        self.bgapi_many = bgapi_many
        self.account_ids = list(account_ids) if account_ids is not None else None
        self.tiers: dict[tuple[str, str], tuple[int, int]] | None = None  # the switch's tiers, as last known
        self.loaded: dict[str, str] = {}  # queue name -> DIGEST of the parameters it was last loaded with

    def read(self) -> State:
        queue_list, agent_list, tier_list = self.api_many([
            "callcenter_config queue list", "callcenter_config agent list", "callcenter_config tier list",
        ])
        return actual_state(queue_list, agent_list, tier_list)

    def _adopt_on_break(self, desired: State, actual: State) -> bool:
        """Record On Break that mod_callcenter set while we could not hear it; True if any."""
        user_ids = []
        for name, want in desired.agents.items():
            if want["status"] == "Available" and actual.agents.get(name, {}).get("status") == "On Break":
                parsed = fsconfig.parse_name(name)
                if parsed is not None:
                    user_ids.append(parsed[0])
        if not user_ids or not ON_BREAK_HANDLERS:
            return False
        for handler in ON_BREAK_HANDLERS:
            try:
                handler(user_ids)
            except Exception:
                log.exception("on-break handler failed for %s", user_ids)
        return True

    def _send(self, commands: list[str]) -> list[tuple[str, str]]:
        """Send, queue fetches first (the tiers sent next refer to them); the commands that failed."""
        fetches = [c for c in commands if _is_config_fetch(c)] if self.bgapi_many else []
        rest = [c for c in commands if not _is_config_fetch(c)] if fetches else commands
        sent: list[tuple[str, str]] = []
        for batch, send in ((fetches, self.bgapi_many), (rest, self.api_many)):
            if batch and send is not None:
                sent.extend(zip(batch, send([f"callcenter_config {c}" for c in batch]), strict=True))
        errors = [(c, reply.strip()) for c, reply in sent if not reply.startswith("+OK")]
        for command, reply in errors:
            log.warning("sync: %s -> %s", command, reply)
        return errors

    def run(self) -> SyncResult:
        start = time.perf_counter()
        actual = self.read()
        desired, domains = desired_state(self.account_ids)
        if self._adopt_on_break(desired, actual):
            desired, domains = desired_state(self.account_ids)
        commands = plan(desired, actual, domains, loaded=self.loaded)
        errors = self._send(commands) if commands else []
        # our tiers as the switch now has them (agent syncs only look at our agents' tiers)
        self.tiers = None if errors else dict(desired.tiers)
        failed = {c.split()[-1] for c, _ in errors if _is_config_fetch(c)}
        # a failed load or reload is tried again by the next sync
        self.loaded = {name: "" if name in failed else row[DIGEST] for name, row in desired.queues.items()
                       if DIGEST in row}
        elapsed = time.perf_counter() - start
        log.info("sync: %d commands, %d errors, %.3f s", len(commands), len(errors), elapsed)
        return SyncResult(len(commands), errors, elapsed)

    def run_agents(self, user_ids: Iterable[int]) -> SyncResult:
        """Bring only these agents (and their tiers) in step; a full sync when nothing is known yet."""
        known = self.tiers  # a full sync asked for meanwhile (a reconnect) drops it: then we leave it be
        if known is None:
            return self.run()
        start = time.perf_counter()
        ids = sorted(set(user_ids))
        query = User.select(User.id, Account.id, Account.domain).join(Account).where(User.id.in_(ids))
        if self.account_ids is not None:
            query = query.where(User.account.in_(self.account_ids))
        rows = list(query)
        names = {fsconfig.agent_name(row.id, row.account.domain) for row in rows}
        accounts = sorted({row.account.id for row in rows})  # only theirs: not every account on the box
        if not names:
            return SyncResult(0, [], time.perf_counter() - start, full=False)
        ordered = sorted(names)
        actual = State()
        for reply in self.api_many([f"callcenter_config agent list {name}" for name in ordered]):
            actual.agents.update((n, a) for n, a in parse_agents(reply).items() if n in names)
        actual.tiers = {k: v for k, v in known.items() if k[1] in names}
        desired, domains = desired_state(accounts, user_ids=ids)
        if self._adopt_on_break(desired, actual):
            desired, domains = desired_state(accounts, user_ids=ids)
        commands = plan(desired, actual, domains)
        errors = self._send(commands) if commands else []
        if errors:
            self.tiers = None  # unsure what the switch has: the next sync is a full one
        else:
            for key in actual.tiers:
                known.pop(key, None)
            known.update(desired.tiers)
        elapsed = time.perf_counter() - start
        log.debug("agent sync %s: %d commands, %d errors, %.4f s", ids, len(commands), len(errors), elapsed)
        return SyncResult(len(commands), errors, elapsed, full=False)
