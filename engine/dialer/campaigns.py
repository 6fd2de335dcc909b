"""The campaign service the API calls: campaigns, their lists, start/pause/stop, attempts, dispositions,
preview mode, live figures, and the DNC / calling-window check of click-to-call.

Every id a client gives (queue, time group, phone lists) must be the
account's (404 otherwise); each write is one transaction.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

from engine.dialer import leads as leadsvc
from engine.dialer import window
from engine.dialer.pacing import ABANDON_AFTER
from engine.errors import ServiceError
from engine.leads.numbers import phone_key
from engine.leads.phonelists import account_country, holding
from engine.leads.validation import normalize_phone
from engine.store.db import db
from engine.store.models import (
    Account,
    AgentState,
    Attempt,
    Campaign,
    CampaignLead,
    CampaignList,
    Extension,
    Lead,
    LeadSkip,
    PhoneList,
    Queue,
    Tier,
    TimeGroup,
)

FIELDS = ("name", "mode", "cid_num", "cid_name", "local_start", "local_end", "max_attempts", "retry_no_answer",
          "retry_busy", "retry_failed", "retry_machine", "ring_timeout", "call_script", "amd", "abandon_cap",
          "max_ratio")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def record(campaign: Campaign) -> dict[str, Any]:
    lists = list(CampaignList.select().where(CampaignList.campaign == campaign.id).order_by(CampaignList.phone_list))
    return {
        "id": campaign.id, "account_id": campaign.account_id, "name": campaign.name, "queue_id": campaign.queue_id,
        "mode": campaign.mode, "status": campaign.status, "cid_num": campaign.cid_num, "cid_name": campaign.cid_name,
        "timegroup_id": campaign.timegroup_id, "local_start": _hhmm(campaign.local_start),
        "local_end": _hhmm(campaign.local_end), "max_attempts": campaign.max_attempts,
        "retry": {"no_answer": campaign.retry_no_answer, "busy": campaign.retry_busy,
                  "failed": campaign.retry_failed, "machine": campaign.retry_machine},
        "ring_timeout": campaign.ring_timeout, "call_script": campaign.call_script, "amd": int(campaign.amd),
        "abandon_cap": campaign.abandon_cap, "max_ratio": campaign.max_ratio,
        "list_ids": [x.phone_list_id for x in lists if x.role == "leads"],
        "dnc_list_ids": [x.phone_list_id for x in lists if x.role == "dnc"],
        "ts": campaign.ts,
    }


def get(account_id: int, campaign_id: int) -> Campaign:
    return Campaign.owned(account_id, campaign_id)


def _lists(account_id: int, ids: list[int], role: str) -> list[PhoneList]:
    found = {p.id: p for p in PhoneList.select().where((PhoneList.account == account_id) & PhoneList.id.in_(ids))}
    for list_id in ids:
        if list_id not in found:
            raise ServiceError(404, f"Phone list {list_id} not found")
    return [found[i] for i in dict.fromkeys(ids)]


def save(account_id: int, campaign_id: int | None, fields: dict[str, Any]) -> Campaign:
    """Create (campaign_id None) or update with the submitted fields only."""
    with db.atomic():
        campaign = Campaign(account=account_id) if campaign_id is None else get(account_id, campaign_id)
        if "queue_id" in fields:
            if fields["queue_id"] is None:
                raise ServiceError(400, "queue_id: required")
            campaign.queue = Queue.owned(account_id, fields["queue_id"]).id
        elif campaign_id is None:
            raise ServiceError(400, "queue_id: required")
        if "timegroup_id" in fields:
            tg = fields["timegroup_id"]
            campaign.timegroup = TimeGroup.owned(account_id, tg).id if tg is not None else None
        for name in FIELDS:
            if name in fields:
                setattr(campaign, name, fields[name])
        if campaign.local_start == campaign.local_end:
            raise ServiceError(400, "local_end: the calling window may not be empty")
        taken = Campaign.select().where((Campaign.account == account_id) & (Campaign.name == campaign.name))
        if campaign.id is not None:
            taken = taken.where(Campaign.id != campaign.id)
        if taken.exists():
            raise ServiceError(409, f"name: a campaign named {campaign.name!r} exists")
        try:
            campaign.save()
        except peewee.IntegrityError:
            raise ServiceError(409, f"name: a campaign named {campaign.name!r} exists") from None
        both = set(fields.get("list_ids") or ()) & set(fields.get("dnc_list_ids") or ())
        if both:
            raise ServiceError(400, f"dnc_list_ids: phone list {min(both)} is also in list_ids")
        for role, key in (("leads", "list_ids"), ("dnc", "dnc_list_ids")):
            if key in fields:
                chosen = _lists(account_id, fields[key] or [], role)
                if role == "leads" and not chosen:
                    raise ServiceError(400, "list_ids: at least one phone list")
                # a list has one role in a campaign: given here, it leaves the other
                CampaignList.delete().where((CampaignList.campaign == campaign.id) & (
                    (CampaignList.role == role) | CampaignList.phone_list.in_([p.id for p in chosen]))).execute()
                for plist in chosen:
                    CampaignList.insert(campaign=campaign.id, phone_list=plist.id, role=role).execute()
        if campaign_id is None and "list_ids" not in fields:
            raise ServiceError(400, "list_ids: required")
    return campaign


def delete(account_id: int, campaign_id: int) -> None:
    with db.atomic():
        campaign = get(account_id, campaign_id)
        if Attempt.select().where((Attempt.campaign == campaign.id) & Attempt.ended_ms.is_null()).exists():
            raise ServiceError(409, f"Campaign {campaign_id} has calls in progress: stop it and wait for them to end")
        campaign.delete_instance(recursive=False)


def set_status(account_id: int, campaign_id: int, status: str) -> Campaign:
    """start / pause / stop: the dialer (engine.dialer.runner) follows `status`; calls up are not cut."""
    with db.atomic():
        campaign = get(account_id, campaign_id)
        if status == "running" and campaign.queue_id is None:
            raise ServiceError(409, "queue_id: the campaign's queue was deleted; set one before starting")
        campaign.status = status
        campaign.save()
        if status == "running":
            leadsvc.populate(campaign.id)
    return campaign


# -- attempts and dispositions --


def attempt_record(a: Attempt) -> dict[str, Any]:
    def sec(value: int | None) -> float | None:
        return round(value / 1000, 3) if value is not None else None
    return {"id": a.id, "campaign_id": a.campaign_id, "campaign_lead_id": a.campaign_lead_id, "lead_id": a.lead_ref,
            "phone": a.phone, "uuid": a.uuid, "mode": a.mode, "user_id": a.user_id, "started": sec(a.started_ms),
            "answered": sec(a.answered_ms), "agent_answered": sec(a.agent_ms), "ended": sec(a.ended_ms),
            "outcome": a.outcome, "hangup_cause": a.hangup_cause, "disposition": a.disposition,
            "disposition_by": a.disposition_by}


def attempts(account_id: int, campaign_id: int, *, after_id: int = 0, limit: int = 100,
             outcome: str | None = None) -> list[dict[str, Any]]:
    get(account_id, campaign_id)
    query = Attempt.select().where((Attempt.campaign == campaign_id) & (Attempt.id > after_id))
    if outcome:
        query = query.where(Attempt.outcome == outcome)
    return [attempt_record(a) for a in query.order_by(Attempt.id).limit(limit)]


def set_disposition(account_id: int, campaign_id: int, attempt_id: int, disposition: str, user_id: int,
                    *, any_agent: bool) -> dict[str, Any]:
    """After the call: the agent that took it (or a user with the campaigns permission) sets its disposition."""
    with db.atomic():
        get(account_id, campaign_id)
        attempt = Attempt.get_or_none((Attempt.id == attempt_id) & (Attempt.campaign == campaign_id)
                                      & (Attempt.account == account_id))
        if attempt is None:
            raise ServiceError(404, f"Attempt {attempt_id} not found")
        if not any_agent and attempt.user_id != user_id:
            raise ServiceError(403, "Permission denied: campaigns")
        attempt.disposition, attempt.disposition_by = disposition, user_id
        attempt.save()
        CampaignLead.update(disposition=disposition).where(CampaignLead.id == attempt.campaign_lead_id).execute()
    return attempt_record(attempt)


def skips(account_id: int, campaign_id: int, limit: int = 100, after_id: int = 0) -> list[dict[str, Any]]:
    get(account_id, campaign_id)
    rows = (LeadSkip.select(LeadSkip, CampaignLead.phone_key).join(CampaignLead)
            .where((LeadSkip.campaign == campaign_id) & (LeadSkip.id > after_id)).order_by(LeadSkip.id).limit(limit))
    return [{"id": s.id, "campaign_lead_id": s.campaign_lead_id, "phone": s.campaign_lead.phone_key,
             "reason": s.reason, "ts": s.ts} for s in rows]


# -- live figures --


def figures(account_id: int, campaign_id: int, dialer: Any = None) -> dict[str, Any]:
    campaign = get(account_id, campaign_id)
    states = dict(CampaignLead.select(CampaignLead.state, peewee.fn.COUNT(CampaignLead.id))
                  .where(CampaignLead.campaign == campaign.id).group_by(CampaignLead.state).tuples())
    # abandoned, as the pacing caps it: answered, and no agent within ABANDON_AFTER (2 s) of the answer,
    # whether the lead then hung up (outcome `abandoned`) or an agent took it later (`taken_late`)
    late = (Attempt.agent_ms - Attempt.answered_ms > int(ABANDON_AFTER * 1000)) & (Attempt.mode != "preview")
    counts = (Attempt.select(peewee.fn.COUNT(Attempt.id), peewee.fn.COUNT(Attempt.answered_ms),
                             peewee.fn.SUM(peewee.Case(None, [(Attempt.outcome == "abandoned", 1)], 0)),
                             peewee.fn.SUM(peewee.Case(None, [(late, 1)], 0)))
              .where(Attempt.campaign == campaign.id).tuples().get())
    dialled, answered, hung_up, taken_late = counts[0] or 0, counts[1] or 0, int(counts[2] or 0), int(counts[3] or 0)
    abandoned = hung_up + taken_late
    agents: dict[str, int] = {"free": 0, "busy": 0}
    if campaign.queue_id is not None:
        rows = (AgentState.select(AgentState.fs_state).join(Tier, on=(Tier.user == AgentState.user))
                .where((Tier.queue == campaign.queue_id) & (Tier.joined == True)  # noqa: E712
                       & AgentState.checked_in_at.is_null(False) & AgentState.pause.is_null()).tuples())
        for (state,) in rows:
            agents["busy" if state in ("Receiving", "In a queue call") else "free"] += 1
    out = {
        "campaign_id": campaign.id, "status": campaign.status, "mode": campaign.mode,
        "leads_left": states.get("new", 0) + states.get("retry", 0),
        "leads": {s: states.get(s, 0) for s in ("new", "retry", "dialing", "done", "skipped")},
        "dialled": dialled, "answered": answered, "abandoned": abandoned, "taken_late": taken_late,
        "abandon_rate": round(100.0 * abandoned / answered, 2) if answered else 0.0,
        "agents_busy": agents["busy"], "agents_free": agents["free"],
    }
    if dialer is not None:
        out["live"] = dialer.figures(campaign.id)
    return out


# -- preview mode --


def preview_next(account_id: int, campaign_id: int, user_id: int, owner: str) -> dict[str, Any] | None:
    """Give the agent the next lead of a preview campaign (held for it until it calls or skips)."""
    campaign = get(account_id, campaign_id)
    if campaign.mode != "preview":
        raise ServiceError(409, f"Campaign {campaign_id} is not a preview campaign")
    if campaign.status != "running":
        raise ServiceError(409, f"Campaign {campaign_id} is {campaign.status}")
    held = (Attempt.select().where((Attempt.campaign == campaign.id) & (Attempt.user == user_id)
                                   & (Attempt.mode == "preview") & Attempt.ended_ms.is_null()
                                   & Attempt.agent_ms.is_null()).first())
    if held is None:
        leadsvc.populate(campaign.id)
        zone = Account.get_by_id(account_id).timezone
        claimed = leadsvc.claim(campaign, 1, owner, zone=zone, mode="preview", user_id=user_id)
        if not claimed:
            return None
        held = Attempt.get_by_id(claimed[0].attempt_id)
    row = CampaignLead.get_by_id(held.campaign_lead_id)
    lead = Lead.get_or_none(Lead.id == row.lead_id) if row.lead_id else None
    return {"attempt_id": held.id, "campaign_lead_id": row.id, "phone": held.phone, "lead_id": held.lead_ref,
            "name": lead.name if lead else None, "tags": lead.tags if lead else None,
            "ext_api_vars": lead.ext_api_vars if lead else None, "call_script": campaign.call_script,
            "attempts": row.attempts}


def preview_attempt(account_id: int, campaign_id: int, attempt_id: int, user_id: int) -> tuple[Campaign, Attempt]:
    campaign = get(account_id, campaign_id)
    attempt = Attempt.get_or_none((Attempt.id == attempt_id) & (Attempt.campaign == campaign.id)
                                  & (Attempt.mode == "preview"))
    if attempt is None or attempt.user_id != user_id:
        raise ServiceError(404, f"Attempt {attempt_id} not found")
    if attempt.ended_ms is not None or attempt.agent_ms is not None:
        raise ServiceError(409, f"Attempt {attempt_id} is already {attempt.outcome or 'in progress'}")
    return campaign, attempt


def preview_skip(account_id: int, campaign_id: int, attempt_id: int, user_id: int) -> dict[str, Any]:
    _campaign, attempt = preview_attempt(account_id, campaign_id, attempt_id, user_id)
    with db.atomic():
        leadsvc.finish(attempt.id, "skipped", cause="SKIPPED_BY_AGENT")
        reason = f"skipped by agent {user_id} in preview"
        CampaignLead.update(state="skipped", skip_reason=reason).where(
            CampaignLead.id == attempt.campaign_lead_id).execute()
        LeadSkip.create(campaign=attempt.campaign_id, campaign_lead=attempt.campaign_lead_id, reason=reason)
    return attempt_record(Attempt.get_by_id(attempt.id))


# -- click-to-call's checks --


def clock() -> dt.datetime:
    """The wall clock the calling window is judged by; a test of something else pins it (the window is
    08:00-21:00, so a suite run at night must not depend on it)."""
    return dt.datetime.now(dt.UTC)


def call_check(account_id: int, destination: str, *, lead_id: str | None, campaign_id: int | None,
               at: dt.datetime | None = None) -> str | None:
    """Why a click-to-call to `destination` for a lead or campaign may not be placed now, or None.

    The account's DNC lists always apply (and the campaign's, when one is named); the calling window is the
    campaign's (its time group and local hours), else 08:00-21:00 at the number. The account's own
    extensions are not leads' numbers: neither applies to them."""
    at = at or clock()
    campaign = get(account_id, campaign_id) if campaign_id is not None else None
    phone = normalize_phone(destination)
    if phone is None or Extension.select().where((Extension.account == account_id)
                                                 & (Extension.number == destination)).exists():
        return None  # an extension of the account or a feature code: not a lead's number
    account = Account.get_by_id(account_id)
    key = phone_key(phone, account_country(account_id))
    lists = PhoneList.select(PhoneList.id).where((PhoneList.account == account_id) & (PhoneList.type == "dnc"))
    if campaign is not None:
        lists = leadsvc.dnc_lists(campaign)
    hit = (PhoneList.select(PhoneList.id, PhoneList.name).join(Lead)
           .where(Lead.id.in_(holding(lists, [key], [phone]))).first())
    if hit is not None:
        return f"{destination} is on do-not-call list {hit.name!r} ({hit.id})"
    start, end = (campaign.local_start, campaign.local_end) if campaign is not None else (8 * 60, 21 * 60)
    if campaign is not None and campaign.timegroup_id is not None:
        reason = window.timegroup_reason(TimeGroup.get_or_none(TimeGroup.id == campaign.timegroup_id), at)
        if reason:
            return f"the campaign's calling window: {reason}"
    return window.lead_window_reason(key, account.timezone, start, end, at)
