"""The dialer as an Engine plugin (engine/engine.py, PLUGIN_MODULES): it places the calls and follows them.

One greenlet paces every running progressive or predictive campaign of the
accounts this box drives: it counts the free and busy agents of the
campaign's queue (AgentState, as mod_callcenter reported them), asks the
pacing (engine.dialer.pacing) how many calls to start, claims that many leads
(engine.dialer.leads) and sends one ``bgapi originate`` with our own Job-UUID
per lead:

    originate {origination_uuid=<attempt uuid>,switchdesk_...}<lead> &callcenter(<queue id>@<domain>)

so the lead's leg, once answered, enters the campaign's queue through
mod_callcenter (DESIGN.md, "Dialled leads join a queue"). The lead is
``user/<sip user>@<domain>`` when its number is an extension of the account
routed to a device, else ``sofia/gateway/<account's outbound gateway>/<number>``;
the number is digits with an optional ``+`` (checked again here), every other
client string travels as a channel variable. The call events of these legs
carry campaign_id, dialer_id (the attempt id), lead_id, lead_name and
call_script (engine/calls/call_fields.py reads our variables).

What happened to each call comes from FreeSWITCH: the job's result
(``+OK`` answered, ``-ERR <cause>``), CHANNEL_ANSWER and
CHANNEL_HANGUP_COMPLETE of the lead's leg, mod_callcenter's
``bridge-agent-start`` (an agent took it) and, with AMD, mod_avmd's
``avmd::beep`` (an answering machine: the leg is hung up). An answered lead
that hung up without an agent after more than ABANDON_AFTER seconds is
abandoned; for the abandon rate the pacing caps, so is one an agent took only
after ABANDON_AFTER seconds (the issue's rule: no agent within 2 s). Per
event only a dict lookup is done for legs that are not ours.

After a (re)connect, and so after a restart of switchdesk, the attempts this
box left open are looked up in FreeSWITCH (``uuid_exists``): a leg still up is
followed again, a leg gone is finished from what was recorded (answered: done;
never answered: retried without counting the try), so a lead is neither lost
nor dialled twice. Every RENEW_EVERY seconds the box renews the leases of the
calls it follows and takes over, the same way, the leads of a box that stopped
renewing (engine.dialer.leads: `renew`, `reclaim`).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event

from engine.callcenter import fsconfig
from engine.dialer import leads as leadsvc
from engine.dialer import pacing, window
from engine.esl import quoting
from engine.esl.errors import ConnectionLost, ESLError
from engine.store import fastq
from engine.store.db import connection, db
from engine.store.models import (
    Account,
    AgentState,
    Attempt,
    Campaign,
    CampaignLead,
    Device,
    Extension,
    Tier,
    TimeGroup,
)

log = logging.getLogger("switchdesk.dialer")

EVENTS = ("CUSTOM avmd::beep",)
TICK = 0.25  # seconds between pacing passes (a finished call or an agent change wakes it sooner)
# ... while no campaign runs and no call is up: a start through this box's API wakes it at once (the route is
# the engine's), one through another box is seen within this; an idle box no longer asks 4 times a second
IDLE_TICK = 2.0
POPULATE_EVERY = 30.0  # wall-clock seconds between looks for leads added to the campaign's lists
ABANDON_AFTER = pacing.ABANDON_AFTER  # an answered lead with no agent after this long is abandoned
ACK_TIMEOUT = 10.0
FRESH = 10.0  # seconds: a call this young missing from FreeSWITCH may still be in the making
WINDOW = 900.0  # seconds of finished calls the predictive pacing learns from
RENEW_EVERY = 15.0  # dialer-clock seconds between lease renewals and looks for leases run out (LEASE_MS: 60 s)
PHONE = re.compile(r"^\+?[0-9]{3,20}$")

clock = time.time  # the bench compresses time on the emulator: it replaces this (and the emulator's)

_BUSY_CAUSES = {"USER_BUSY", "CALL_REJECTED", "NORMAL_CIRCUIT_CONGESTION"}
_NO_ANSWER_CAUSES = {"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT",
                     "RECOVERY_ON_TIMER_EXPIRE"}


def cause_outcome(cause: str) -> str:
    cause = (cause or "").strip().upper()
    if cause in _BUSY_CAUSES:
        return "busy"
    if cause in _NO_ANSWER_CAUSES:
        return "no_answer"
    return "failed"


@dataclass
class Live:
    """A dialer call in progress on this box (times: the dialer clock, seconds)."""

    attempt_id: int
    campaign_id: int
    uuid: str
    started: float
    answered: float | None = None
    agent: float | None = None
    user_id: int | None = None
    offered: bool = False  # an agent is being offered this lead (mod_callcenter's agent-offering)
    offered_at: float | None = None
    machine: bool = False
    preview: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class Dialer:
    """One per Engine: the pacing loop, the calls in flight, the rolling statistics per campaign."""

    def __init__(self, engine: Any, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or socket.gethostname()[:100]
        self.live: dict[str, Live] = {}
        self.stats: dict[int, pacing.Stats] = {}
        self.pacers: dict[int, pacing.Predictive] = {}
        self.populated: dict[int, float] = {}
        self.wraps: dict[int, int] = {}  # the account's wrap_up_time per campaign (mod_callcenter's wrap-up)
        self.ticks = 0
        self.idle = False  # the last pass found no running campaign
        self.renewed = -RENEW_EVERY  # when the leases were last renewed (dialer clock)
        self.reconciled = gevent.event.Event()
        self._wake = gevent.event.Event()
        self._loop: gevent.Greenlet | None = None

    # -- lifecycle --

    def start(self) -> None:
        self._loop = self.engine.group.spawn(self._run)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(IDLE_TICK if self.idle and not self.live else TICK)
            self._wake.clear()
            try:
                at = clock()
                if at - self.renewed >= RENEW_EVERY:  # also while the switch is away: this box is alive
                    self.renewed = at
                    with connection():
                        self.leases(at)
                if self.reconciled.is_set() and self.engine.commands.client is not None:
                    with connection():
                        self.tick()
            except Exception:
                log.exception("dialer pass failed")
                gevent.sleep(1)

    # -- pacing --

    def running(self) -> list[Campaign]:
        query = Campaign.select().where((Campaign.status == "running") & (Campaign.mode != "preview")
                                        & Campaign.queue.is_null(False))
        if self.engine.account_ids is not None:
            query = query.where(Campaign.account.in_(list(self.engine.account_ids)))
        return list(query)

    def tick(self) -> None:
        self.ticks += 1
        at = clock()
        campaigns = self.running()
        self.idle = not campaigns
        for campaign in campaigns:
            wall = time.monotonic()
            if wall - self.populated.get(campaign.id, -POPULATE_EVERY) >= POPULATE_EVERY:
                self.populated[campaign.id] = wall
                leadsvc.populate(campaign.id)
            account = Account.get_by_id(campaign.account_id)
            self.wraps[campaign.id] = account.wrap_up_time or 0
            wanted = self.wanted(campaign, at)
            if wanted <= 0:
                continue
            claimed = leadsvc.claim(campaign, wanted, self.owner, zone=account.timezone, mode=campaign.mode)
            for lead in claimed:
                self.live[lead.uuid] = Live(lead.attempt_id, campaign.id, lead.uuid, clock(),
                                            meta={"phone": lead.phone})
                self.engine.group.spawn(self._dial, account, campaign, lead)

    def floor(self, campaign: Campaign, at: float) -> pacing.Floor:
        wrap = self.wraps.get(campaign.id, 0)
        rows = (AgentState.select(AgentState.fs_status, AgentState.fs_state, AgentState.pause,
                                  AgentState.pause_until, AgentState.wrapup_until, AgentState.last_bridge_end)
                .join(Tier, on=(Tier.user == AgentState.user))
                .where((Tier.queue == campaign.queue_id) & (Tier.joined == True)  # noqa: E712
                       & AgentState.checked_in_at.is_null(False)).tuples())
        free = busy = 0
        wrapping: list[float] = []
        now_s = int(at)
        for status, state, pause, pause_until, wrapup_until, bridge_end in rows:
            if not (status or "").startswith("Available"):
                continue
            if pause is not None and (pause_until is None or pause_until > now_s):
                continue
            if state in ("Receiving", "In a queue call"):
                busy += 1
            elif state not in (None, "", "Waiting"):
                continue  # Idle: not taking calls
            elif (wrapup_until or 0) <= now_s and (bridge_end or 0) + wrap < now_s + 1:
                free += 1  # Waiting (an agent checked in and never offered a call has had no state change)
            else:
                busy += 1  # wrap-up: mod_callcenter offers again once last_bridge_end < now - wrap_up_time
                wrapping.append(max(wrapup_until or 0, (bridge_end or 0) + wrap + 1) - at)
        ringing = waiting = offered = 0
        for call in self.live.values():
            if call.campaign_id != campaign.id or call.preview:
                continue
            if call.answered is None:
                ringing += 1
            elif call.agent is None:
                waiting += 1
                offered += call.offered  # its agent is Receiving (counted busy): the lead needs no other
        return pacing.Floor(free=free, busy=busy, ringing=ringing, waiting=waiting, offered=offered,
                            wrapping=tuple(wrapping))

    def wanted(self, campaign: Campaign, at: float) -> int:
        if campaign.timegroup_id is not None:
            group = TimeGroup.get_or_none(TimeGroup.id == campaign.timegroup_id)
            if window.timegroup_reason(group, dt.datetime.fromtimestamp(at, dt.UTC)) is not None:
                return 0
        floor = self.floor(campaign, at)
        if campaign.mode == "progressive":
            return pacing.progressive(floor)
        pacer = self.pacer(campaign)
        stats = self.stats_of(campaign.id)
        pacer.grace = stats.grace(ABANDON_AFTER)
        elapsed = [at - c.agent for c in self.live.values() if c.campaign_id == campaign.id and c.agent is not None
                   and not c.preview]
        ages = [at - c.started for c in self.live.values() if c.campaign_id == campaign.id and c.answered is None
                and not c.preview]
        return pacer.lines(floor, stats.summary(at), stats, elapsed, ages)

    def pacer(self, campaign: Campaign) -> pacing.Predictive:
        pacer = self.pacers.get(campaign.id)
        if pacer is None:
            pacer = self.pacers[campaign.id] = pacing.Predictive(campaign.abandon_cap, campaign.max_ratio)
        pacer.cap, pacer.max_ratio = campaign.abandon_cap / 100.0, campaign.max_ratio
        return pacer

    def stats_of(self, campaign_id: int) -> pacing.Stats:
        stats = self.stats.get(campaign_id)
        if stats is None:
            stats = self.stats[campaign_id] = pacing.Stats(WINDOW)
        return stats

    # -- placing a call --

    def dial_string(self, account: Account, phone: str) -> str | None:
        """The lead's endpoint: a device for an extension of the account, else the outbound gateway."""
        if not PHONE.match(phone):
            return None
        ext = Extension.get_or_none((Extension.account == account.id) & (Extension.number == phone))
        if ext is not None and ext.target_type == "device":
            device = Device.get_or_none((Device.id == ext.target_id) & (Device.account == account.id))
            if device is not None:
                return quoting.check_name(f"user/{device.sip_username}@{account.domain}")
        gateway = account.outbound_gateway
        if gateway and re.match(r"^[A-Za-z0-9_.-]{1,100}$", gateway):
            return f"sofia/gateway/{gateway}/{phone}"
        return None

    def command(self, account: Account, campaign: Campaign, lead: leadsvc.Claimed, endpoint: str) -> str:
        variables: dict[str, Any] = {
            "origination_uuid": lead.uuid,
            "switchdesk_account_id": account.id,
            "switchdesk_call_type": "outbound",
            "switchdesk_dst_num": lead.phone,
            "switchdesk_queue_id": campaign.queue_id,
            "switchdesk_campaign_id": campaign.id,
            "switchdesk_dialer_id": lead.attempt_id,
            "switchdesk_lead_id": lead.lead_ref,
            "originate_timeout": campaign.ring_timeout,
            "hangup_after_bridge": "true",
        }
        if lead.name:
            variables["switchdesk_lead_name"] = lead.name
        if lead.tags:
            variables["switchdesk_tags"] = lead.tags
        if campaign.call_script:
            variables["switchdesk_call_script"] = campaign.call_script
        if campaign.cid_num:
            variables["origination_caller_id_number"] = campaign.cid_num
        if campaign.cid_name:
            variables["origination_caller_id_name"] = campaign.cid_name
        if campaign.amd:
            variables["execute_on_answer"] = "avmd_start"
        queue = quoting.check_name(fsconfig.queue_name(campaign.queue_id, account.domain))
        return f"originate {quoting.channel_vars(variables)}{endpoint} &callcenter({queue})"

    def _dial(self, account: Account, campaign: Campaign, lead: leadsvc.Claimed) -> None:
        with connection():
            try:
                endpoint = self.dial_string(account, lead.phone)
                if endpoint is None:
                    self._finish(lead.uuid, "failed", "NO_ROUTE_DESTINATION")
                    return
                command = self.command(account, campaign, lead, endpoint)
            except ValueError as exc:
                log.warning("attempt %s: not dialled: %s", lead.attempt_id, exc)
                self._finish(lead.uuid, "failed", "INVALID_NUMBER_FORMAT")
                return
        try:
            client = self.engine.commands.require_client()
            job = client.bgapi_async(command, timeout=ACK_TIMEOUT)
            body = job.get_result(timeout=campaign.ring_timeout + 30, check=False)
        except ESLError as exc:
            # connection lost or no answer: the call may be up; the reconciliation after the reconnect decides
            log.warning("attempt %s: %s", lead.attempt_id, exc)
            return
        with connection():
            text = body.strip()
            if text.startswith("+OK"):
                self._answered(lead.uuid, clock())
            else:
                cause = text[5:].strip() if text.startswith("-ERR ") else text
                self._finish(lead.uuid, cause_outcome(cause), cause)

    # -- preview: the agent's leg is followed; the lead is the leg it bridges to --

    def follow_preview(self, attempt: Attempt, call_uuid: str) -> None:
        """The agent is about to be rung for a preview lead: follow its leg (`call_uuid`); from now on this
        box holds the lead's lease (renewed while the call lives)."""
        at = clock()
        with connection(), db.atomic():
            Attempt.update(uuid=call_uuid, agent_ms=int(at * 1000), owner=self.owner).where(
                Attempt.id == attempt.id).execute()
            CampaignLead.update(owner=self.owner, lease_until=int(at * 1000) + leadsvc.LEASE_MS).where(
                CampaignLead.id == attempt.campaign_lead_id).execute()
        self.live[call_uuid] = Live(attempt.id, attempt.campaign_id, call_uuid, at, preview=True)

    def unfollow_preview(self, call_uuid: str) -> None:
        """The agent's leg failed: the lead stays held for the agent (no lease), nothing was dialled."""
        call = self.live.pop(call_uuid, None)
        if call is not None:
            with connection(), db.atomic():
                Attempt.update(agent_ms=None).where(Attempt.id == call.attempt_id).execute()
                CampaignLead.update(lease_until=None).where(CampaignLead.id.in_(
                    Attempt.select(Attempt.campaign_lead).where(Attempt.id == call.attempt_id))).execute()

    def _preview_end(self, uid: str, event: Any) -> None:
        bridged = _int(event.get("variable_bridge_epoch")) or event.get("variable_last_bridge_to")
        if bridged:
            call = self.live[uid]
            call.answered = call.agent = float(_int(event.get("variable_bridge_epoch")) or clock())
            self._finish(uid, "answered", event.get("Hangup-Cause"))
            return
        cause = event.get("variable_originate_disposition") or event.get("Hangup-Cause") or ""
        self._finish(uid, cause_outcome(cause) if cause not in ("SUCCESS", "NORMAL_CLEARING") else "failed", cause)

    # -- what FreeSWITCH tells --

    def _answered(self, uid: str, at: float) -> None:
        call = self.live.get(uid)
        if call is None or call.answered is not None:
            return
        call.answered = at
        if not call.preview:
            self.stats_of(call.campaign_id).dialled(at, True, at - call.started)
        fastq.execute("dialer.answered", lambda t, i: Attempt.update({Attempt.answered_ms: t}).where(
            Attempt.id == i), int(at * 1000), call.attempt_id)

    def on_channel(self, event: Any) -> None:
        uid = event.get("Unique-ID")
        call = self.live.get(uid) if uid else None
        if call is None:
            return
        name = event.get("Event-Name")
        with connection():
            if call.preview:
                if name == "CHANNEL_HANGUP_COMPLETE":
                    self._preview_end(uid, event)
            elif name == "CHANNEL_ANSWER":
                self._answered(uid, clock())
            elif name == "CHANNEL_HANGUP_COMPLETE":
                if call.answered is None:
                    answer_epoch = _int(event.get("variable_answer_epoch"))
                    if answer_epoch:
                        self._answered(uid, float(answer_epoch))
                cause = event.get("Hangup-Cause") or event.get("variable_hangup_cause") or ""
                if call.machine:
                    self._finish(uid, "machine", cause)
                elif call.answered is None:
                    self._finish(uid, cause_outcome(cause), cause)
                elif call.agent is not None:
                    self._finish(uid, "answered", cause)
                elif clock() - call.answered > ABANDON_AFTER:
                    self._finish(uid, "abandoned", cause)
                else:
                    self._finish(uid, "hangup", cause)

    def on_callcenter(self, event: Any) -> None:
        action = event.get("CC-Action")
        if action not in ("bridge-agent-start", "agent-offering", "bridge-agent-fail"):
            return
        uid = event.get("CC-Member-Session-UUID")
        call = self.live.get(uid) if uid else None
        if call is None or call.agent is not None:
            return
        if action != "bridge-agent-start":
            # an agent's phone rings for this lead (or stopped ringing unanswered: it waits for another)
            call.offered = action == "agent-offering"
            call.offered_at = clock() if call.offered else None
            return
        call.agent = clock()
        if not call.preview and call.answered is not None:
            stats = self.stats_of(call.campaign_id)
            if call.offered_at is not None:
                stats.agent_rang(call.agent, call.agent - call.offered_at)
            self._verdict(call, call.agent - call.answered > ABANDON_AFTER)
        parsed = fsconfig.parse_name(event.get("CC-Agent") or "")
        call.user_id = parsed[0] if parsed else None
        with connection():
            if call.user_id is None:
                fastq.execute("dialer.agent_ms", lambda t, i: Attempt.update({Attempt.agent_ms: t}).where(
                    Attempt.id == i), int(call.agent * 1000), call.attempt_id)
            else:
                fastq.execute("dialer.agent", lambda t, u, i: Attempt.update(
                    {Attempt.agent_ms: t, Attempt.user: u}).where(Attempt.id == i),
                    int(call.agent * 1000), call.user_id, call.attempt_id)

    def on_beep(self, event: Any) -> None:
        uid = event.get("Unique-ID")
        call = self.live.get(uid) if uid else None
        if call is None or call.agent is not None or call.machine:
            return
        call.machine = True
        client = self.engine.commands.client
        if client is not None:
            self.engine.group.spawn(_kill, client, uid)

    def _finish(self, uid: str, outcome: str, cause: str | None) -> None:
        call = self.live.pop(uid, None)
        if call is None:
            return
        at = clock()
        if leadsvc.finish(call.attempt_id, outcome, cause=cause, at_ms=int(at * 1000)):
            wrap = self.wraps.get(call.campaign_id, 0)
            stats = self.stats_of(call.campaign_id)
            if call.answered is None:
                stats.dialled(at, False, at - call.started)
            else:
                stats.ended(at, outcome == "abandoned", (at - call.agent + wrap) if call.agent is not None else None)
            if call.answered is not None and call.agent is None and not call.machine and not call.preview:
                self._verdict(call, outcome == "abandoned")  # hung up with no agent (after ABANDON_AFTER: abandoned)
        self.wake()

    def _verdict(self, call: Live, abandoned: bool) -> None:
        """An answered call's verdict (`abandoned`: no agent within ABANDON_AFTER seconds of its answer, the
        issue's definition, whether the lead then hung up or an agent took it later): into the window and the
        pacing's control loop."""
        at = clock()
        stats = self.stats_of(call.campaign_id)
        stats.verdict(at, abandoned)
        pacer = self.pacers.get(call.campaign_id)
        if pacer is not None:
            pacer.adapt(stats.summary(at), abandoned)

    # -- leases: a dead box's leads are taken over --

    def leases(self, at: float) -> None:
        """Renew the leases of the calls this box follows, drop the ones another box took over (this box
        stalled past its lease), and take over the leads whose lease ran out (`leads.reclaim`)."""
        at_ms = int(at * 1000)
        followed = {c.attempt_id: uid for uid, c in self.live.items()}
        ours = leadsvc.renew(self.owner, list(followed), at_ms)
        for attempt_id, uid in followed.items():
            if attempt_id not in ours and uid in self.live and self.live[uid].attempt_id == attempt_id:
                log.warning("attempt %s: its lease was taken over by another box; no longer followed here",
                            attempt_id)
                self.live.pop(uid, None)
        client = self.engine.commands.client if self.engine is not None else None
        if client is None or not self.reconciled.is_set():
            return  # the switch cannot be asked about the calls (or our own are not reconciled): take nothing
        taken = leadsvc.reclaim(self.owner, self.engine.account_ids, at_ms)
        for attempt in taken:
            try:
                exists = client.api(f"uuid_exists {attempt.uuid}", check=False).strip() == "true"
            except ESLError:
                exists = True  # cannot tell: keep following it; the next reconciliation decides
            if exists:
                self.live.setdefault(attempt.uuid, Live(
                    attempt.id, attempt.campaign_id, attempt.uuid, attempt.started_ms / 1000,
                    answered=attempt.answered_ms / 1000 if attempt.answered_ms else None,
                    agent=attempt.agent_ms / 1000 if attempt.agent_ms else None, user_id=attempt.user_id,
                    preview=attempt.mode == "preview"))
                continue
            answered = attempt.answered_ms and attempt.mode != "preview"
            leadsvc.finish(attempt.id, "answered" if answered else "lost", cause="LEASE_EXPIRED")
        if taken:
            log.info("dialer: took over %d lead(s) whose lease ran out", len(taken))

    # -- after a (re)connect --

    def reconcile(self) -> int:
        """Follow again or finish the attempts this box left open; returns how many were finished."""
        client = self.engine.commands.require_client()
        with connection():
            open_attempts = list(Attempt.select().where((Attempt.owner == self.owner) & Attempt.ended_ms.is_null()
                                                        & (Attempt.mode != "preview")))
        finished = 0
        for attempt in open_attempts:
            try:
                exists = client.api(f"uuid_exists {attempt.uuid}", check=False).strip() == "true"
            except ESLError:
                return finished
            known = self.live.get(attempt.uuid)
            if known is not None and known.answered is None and clock() - known.started < FRESH:
                continue  # placed a moment ago: FreeSWITCH may not have made the leg yet
            if exists:
                if known is None:  # after a restart: follow it again
                    self.live[attempt.uuid] = Live(
                        attempt.id, attempt.campaign_id, attempt.uuid, attempt.started_ms / 1000,
                        answered=attempt.answered_ms / 1000 if attempt.answered_ms else None,
                        agent=attempt.agent_ms / 1000 if attempt.agent_ms else None, user_id=attempt.user_id)
                continue
            # gone while we could not hear its end (a restart, or a lost connection): what we knew decides
            answered = (known.answered if known is not None else None) or attempt.answered_ms
            self.live.pop(attempt.uuid, None)
            with connection():
                if leadsvc.finish(attempt.id, "answered" if answered else "lost", cause="ENDED_WHILE_NOT_FOLLOWED"):
                    finished += 1
        if finished:
            log.info("dialer: %d attempt(s) ended while we could not hear", finished)
        return finished

    def _on_connect(self) -> None:
        self.reconciled.clear()
        for _ in range(100):
            if self.engine.events.connected and self.engine.commands.client is not None:
                break
            gevent.sleep(0.1)
        try:
            self.reconcile()
        except ConnectionLost:
            # gone again before we could ask: the next connection reconciles, and until then
            # nothing is taken over (reclaim waits for `reconciled`)
            log.info("dialer: FreeSWITCH went away before reconciliation; the next connection does it")
            return
        except Exception:
            log.exception("dialer reconciliation failed")
        self.reconciled.set()

    def figures(self, campaign_id: int) -> dict[str, Any]:
        """What only this box knows: calls in flight and the pacing's state."""
        ringing = sum(1 for c in self.live.values() if c.campaign_id == campaign_id and c.answered is None)
        waiting = sum(1 for c in self.live.values()
                      if c.campaign_id == campaign_id and c.answered is not None and c.agent is None)
        summary = self.stats_of(campaign_id).summary(clock())
        pacer = self.pacers.get(campaign_id)
        return {"ringing": ringing, "waiting": waiting, "window": summary,
                "predicting": pacer is not None and not pacer.fallback,
                "margin": round(pacer.z, 3) if pacer is not None else None}


def _kill(client: Any, uid: str) -> None:
    try:
        client.api(f"uuid_kill {uid}", check=False)
    except ESLError as exc:
        log.warning("uuid_kill %s: %s", uid, exc)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def attach(engine: Any) -> Dialer:
    dialer = Dialer(engine)
    engine.dialer = dialer
    for name in ("CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE"):
        engine.events.on_event(name, dialer.on_channel)
    engine.events.on_event("callcenter::info", dialer.on_callcenter)
    engine.events.on_event("avmd::beep", dialer.on_beep)
    engine.commands.on_connect(lambda _client: engine.group.spawn(dialer._on_connect))
    dialer.start()
    engine.on_stop(dialer.stop)
    return dialer
