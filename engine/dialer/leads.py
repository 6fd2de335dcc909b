"""A campaign's leads: taking them in turn, checking them, and writing what became of each call.

Leads are taken by priority (larger first), then by age (the lead's id).
Claiming is one transaction that moves `CampaignLead.state` to 'dialing' with a
conditional UPDATE (`... WHERE state IN ('new', 'retry')`): on PostgreSQL the
candidates are read `FOR UPDATE SKIP LOCKED`, so two boxes never wait on or
take the same lead; on SQLite the transaction is IMMEDIATE (the write lock is
taken before reading). The 'dialing' state is left only when the attempt's
outcome is written (`finish`), or by the owner's reconciliation after a restart
(`engine.dialer.runner`), so a lead is never dialled twice at once.

A dialing lead carries a lease (`owner`, `lease_until`): the box following its
call renews it while the call lives (`renew`); a box that dies stops renewing,
and once the lease has run out any box driving the account (or the same one
restarted) takes the lead over (`reclaim`), looks its call up on its switch,
and follows it or finishes it. A preview lead held for an agent has no lease
until the agent's call is placed.

Before a claimed lead is dialled, in the same transaction: a number on one of
the campaign's DNC lists or any DNC list of the account is skipped for good; a
number outside its local calling window waits for the window (its next look is
set to the next local opening). Both reasons are recorded (`skip_reason`, and a
`LeadSkip` row each time the reason changes).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import peewee

from engine.dialer import window
from engine.leads.phonelists import holding
from engine.store.db import db, is_sqlite
from engine.store.models import Attempt, Campaign, CampaignLead, CampaignList, Lead, LeadSkip, PhoneList, now

CLAIM_SCAN = 4  # candidates read per lead wanted (some are skipped)
LEASE_MS = 60_000  # a box renews the leases of the calls it follows well before this (runner.RENEW_EVERY)
RECLAIM_BATCH = 100


def ms() -> int:
    """Epoch milliseconds by the dialer's clock (engine.dialer.runner.clock; the bench compresses it)."""
    from engine.dialer import runner
    return int(runner.clock() * 1000)


def lead_lists(campaign_id: int) -> peewee.SelectQuery:
    return CampaignList.select(CampaignList.phone_list).where(
        (CampaignList.campaign == campaign_id) & (CampaignList.role == "leads"))


def dnc_lists(campaign: Campaign) -> peewee.SelectQuery:
    """The campaign's DNC lists and every DNC-typed list of the account."""
    own = CampaignList.select(CampaignList.phone_list).where(
        (CampaignList.campaign == campaign.id) & (CampaignList.role == "dnc"))
    typed = PhoneList.select(PhoneList.id).where((PhoneList.account == campaign.account_id) & (PhoneList.type == "dnc"))
    return PhoneList.select(PhoneList.id).where(PhoneList.id.in_(own) | PhoneList.id.in_(typed))


def populate(campaign_id: int) -> int:
    """Add a CampaignLead for every visible lead of the campaign's lists whose number it does not have yet.

    One INSERT ... SELECT, grouped by canonical number (the highest priority, the oldest lead);
    conflicts with rows added meanwhile by another box are ignored.
    """
    known = CampaignLead.select(CampaignLead.phone_key).where(CampaignLead.campaign == campaign_id)
    # every NOT NULL column is given: peewee's defaults are Python's, and INSERT OR IGNORE would drop the rows
    source = (Lead.select(peewee.Value(campaign_id), Lead.phone_key, peewee.fn.MIN(Lead.id),
                          peewee.fn.MIN(Lead.id), peewee.fn.MAX(Lead.priority), peewee.Value("new"),
                          peewee.Value(0), peewee.Value(0), peewee.Value(now()))
              .where(Lead.phone_list.in_(lead_lists(campaign_id)) & Lead.import_id.is_null()
                     & Lead.phone_key.is_null(False) & Lead.phone_key.not_in(known))
              .group_by(Lead.phone_key))
    columns = [CampaignLead.campaign, CampaignLead.phone_key, CampaignLead.lead, CampaignLead.lead_order,
               CampaignLead.priority, CampaignLead.state, CampaignLead.attempts, CampaignLead.next_at, CampaignLead.ts]
    with db.atomic():
        before = CampaignLead.select().where(CampaignLead.campaign == campaign_id).count()
        CampaignLead.insert_from(source, columns).on_conflict_ignore().execute()
        return CampaignLead.select().where(CampaignLead.campaign == campaign_id).count() - before


@dataclass
class Claimed:
    """A lead taken for dialling, with what its call needs."""

    campaign_lead_id: int
    attempt_id: int
    uuid: str
    phone: str
    phone_key: str
    lead_ref: str
    name: str | None
    tags: str | None
    ext_api_vars: Any


def _candidates(campaign_id: int, limit: int, at_ms: int) -> list[CampaignLead]:
    query = (CampaignLead.select()
             .where((CampaignLead.campaign == campaign_id) & (CampaignLead.state.in_(("new", "retry")))
                    & (CampaignLead.next_at <= at_ms))
             .order_by(CampaignLead.priority.desc(), CampaignLead.lead_order).limit(limit))
    if not is_sqlite():
        query = query.for_update("FOR UPDATE SKIP LOCKED")
    return list(query)


def _skip(row: CampaignLead, reason: str, *, final: bool, next_at: int | None = None) -> None:
    values: dict[Any, Any] = {CampaignLead.skip_reason: reason[:200], CampaignLead.ts: now()}
    if final:
        values[CampaignLead.state] = "skipped"
    if next_at is not None:
        values[CampaignLead.next_at] = next_at
    CampaignLead.update(values).where(CampaignLead.id == row.id).execute()
    if row.skip_reason != reason[:200]:
        LeadSkip.create(campaign=row.campaign_id, campaign_lead=row.id, reason=reason[:200])


def claim(campaign: Campaign, wanted: int, owner: str, *, zone: str, mode: str,
          user_id: int | None = None, new_uuid: Any = None) -> list[Claimed]:
    """Take up to `wanted` leads of the campaign for `owner`; DNC and window skips recorded on the way."""
    import uuid as uuidlib
    if wanted <= 0:
        return []
    at_ms = ms()
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    out: list[Claimed] = []
    transaction = db.atomic("IMMEDIATE") if is_sqlite() else db.atomic()
    with transaction:
        rows = _candidates(campaign.id, wanted * CLAIM_SCAN, at_ms)
        if not rows:
            return []
        keys = sorted({r.phone_key for r in rows})
        dnc: dict[str, str] = {}
        lists = dnc_lists(campaign)
        hits = (Lead.select(Lead.phone_key, Lead.phone, PhoneList.id, PhoneList.name).join(PhoneList)
                .where(Lead.id.in_(holding(lists, keys, keys))).tuples())
        for key, phone, list_id, list_name in hits:
            dnc.setdefault(key or phone, f"on do-not-call list {list_name!r} ({list_id})")
        leads = {lead.id: lead for lead in Lead.select().where(
            Lead.id.in_([r.lead_id for r in rows if r.lead_id is not None]) & Lead.import_id.is_null())}
        missing = [r for r in rows if r.lead_id is None or r.lead_id not in leads]
        if missing:  # deleted and maybe imported again: relink by number
            for lead in (Lead.select().where(Lead.phone_list.in_(lead_lists(campaign.id)) & Lead.import_id.is_null()
                                             & Lead.phone_key.in_([r.phone_key for r in missing]))
                         .order_by(Lead.id)):
                for r in missing:
                    if r.phone_key == lead.phone_key and (r.lead_id is None or r.lead_id not in leads):
                        r.lead_id = lead.id
                        leads[lead.id] = lead
                        CampaignLead.update(lead=lead.id).where(CampaignLead.id == r.id).execute()
        for row in rows:
            if len(out) >= wanted:
                break
            lead = leads.get(row.lead_id) if row.lead_id is not None else None
            if lead is None:
                _skip(row, "the lead is no longer in the campaign's lists", final=True)
                continue
            reason = dnc.get(row.phone_key)
            if reason:
                _skip(row, reason, final=True)
                continue
            reason = window.lead_window_reason(row.phone_key, zone, campaign.local_start, campaign.local_end, at)
            if reason:
                later = window.next_local_open(row.phone_key, zone, campaign.local_start, campaign.local_end, at)
                _skip(row, reason, final=False, next_at=int(later.timestamp() * 1000))
                continue
            # a preview lead is held for its agent (no lease) until the agent's call is placed
            lease = None if mode == "preview" else at_ms + LEASE_MS
            taken = CampaignLead.update({
                CampaignLead.state: "dialing", CampaignLead.owner: owner, CampaignLead.lease_until: lease,
                CampaignLead.attempts: CampaignLead.attempts + 1, CampaignLead.skip_reason: None,
                CampaignLead.ts: now(),
            }).where((CampaignLead.id == row.id) & CampaignLead.state.in_(("new", "retry"))).execute()
            if taken != 1:
                continue  # another box took it
            call_uuid = new_uuid() if new_uuid else str(uuidlib.uuid4())
            lead_ref = lead.lead_id or str(lead.id)
            attempt = Attempt.create(account=campaign.account_id, campaign=campaign.id, campaign_lead=row.id,
                                     lead_ref=lead_ref, phone=lead.phone, uuid=call_uuid, owner=owner, mode=mode,
                                     user=user_id, started_ms=at_ms)
            out.append(Claimed(row.id, attempt.id, call_uuid, lead.phone, row.phone_key, lead_ref, lead.name,
                               lead.tags, lead.ext_api_vars))
    return out


def renew(owner: str, attempt_ids: list[int], at_ms: int) -> set[int]:
    """Extend the leases of the leads of `attempt_ids` (calls `owner` follows); returns the attempts whose
    lead is still `owner`'s: another box that found the lease run out (this box stalled) has the others."""
    if not attempt_ids:
        return set()
    ours: set[int] = set()
    with db.atomic():
        for start in range(0, len(attempt_ids), 500):
            chunk = attempt_ids[start:start + 500]
            rows = Attempt.select(Attempt.campaign_lead).where(Attempt.id.in_(chunk))
            mine = ((CampaignLead.id.in_(rows)) & (CampaignLead.owner == owner)
                    & (CampaignLead.state == "dialing"))
            CampaignLead.update(lease_until=at_ms + LEASE_MS).where(mine).execute()
            ours.update(a for (a,) in Attempt.select(Attempt.id).join(CampaignLead).where(
                Attempt.id.in_(chunk) & (CampaignLead.owner == owner) & (CampaignLead.state == "dialing")).tuples())
    return ours


def reclaim(owner: str, account_ids: Any, at_ms: int, limit: int = RECLAIM_BATCH) -> list[Attempt]:
    """Take over the leads whose lease ran out (the box dialling them stopped renewing: dead or cut off),
    for `owner`; returns their open attempts, now `owner`'s, for it to look up on its switch (a leg still up
    is followed, one gone is finished: `engine.dialer.runner`).

    One transaction: the candidates are read `FOR UPDATE SKIP LOCKED` on PostgreSQL (IMMEDIATE on SQLite)
    and each is taken by a conditional UPDATE (still dialing, lease still run out), so two boxes never take
    the same lead and a lease renewed meanwhile is kept by its box. `account_ids`: the accounts this box
    drives (None: all)."""
    transaction = db.atomic("IMMEDIATE") if is_sqlite() else db.atomic()
    out: list[Attempt] = []
    with transaction:
        expired = ((CampaignLead.state == "dialing") & CampaignLead.lease_until.is_null(False)
                   & (CampaignLead.lease_until < at_ms))
        campaigns = Campaign.select(Campaign.id)
        if account_ids is not None:
            campaigns = campaigns.where(Campaign.account.in_(list(account_ids)))
        ids = [c for (c,) in campaigns.tuples()]
        if not ids:
            return out
        # by campaign and state: the (campaign, state, ...) index, not a scan of every campaign's leads
        query = (CampaignLead.select(CampaignLead.id).where(CampaignLead.campaign.in_(ids) & expired)
                 .order_by(CampaignLead.id).limit(limit))
        if not is_sqlite():
            query = query.for_update("FOR UPDATE SKIP LOCKED")
        for (row_id,) in query.tuples():
            taken = CampaignLead.update({CampaignLead.owner: owner, CampaignLead.lease_until: at_ms + LEASE_MS,
                                         CampaignLead.ts: now()}).where(
                (CampaignLead.id == row_id) & expired).execute()
            if taken != 1:
                continue
            mine = (Attempt.campaign_lead == row_id) & Attempt.ended_ms.is_null()
            Attempt.update(owner=owner).where(mine).execute()
            out.extend(Attempt.select().where(mine))
            if not Attempt.select().where(mine).exists():  # nothing open (should not be): free the lead
                CampaignLead.update({CampaignLead.state: "retry", CampaignLead.owner: None,
                                     CampaignLead.lease_until: None, CampaignLead.next_at: at_ms}).where(
                    CampaignLead.id == row_id).execute()
    return out


def retry_delay(campaign: Campaign, outcome: str) -> int | None:
    """Seconds before the next attempt after `outcome`; None: the lead is done."""
    return {
        "no_answer": campaign.retry_no_answer, "busy": campaign.retry_busy, "failed": campaign.retry_failed,
        "machine": campaign.retry_machine, "abandoned": campaign.retry_failed,
        "hangup": campaign.retry_no_answer, "lost": 0,
    }.get(outcome)


def finish(attempt_id: int, outcome: str, *, cause: str | None = None, at_ms: int | None = None,
           fields: dict[str, Any] | None = None) -> bool:
    """Write the attempt's outcome and release its lead (retry later, or done). False if it had ended."""
    at_ms = at_ms if at_ms is not None else ms()
    with db.atomic():
        values: dict[Any, Any] = {Attempt.ended_ms: at_ms, Attempt.outcome: outcome}
        if cause:
            values[Attempt.hangup_cause] = cause[:60]
        for name, value in (fields or {}).items():
            values[getattr(Attempt, name)] = value
        if Attempt.update(values).where((Attempt.id == attempt_id) & Attempt.ended_ms.is_null()).execute() != 1:
            return False
        attempt = Attempt.select(Attempt.campaign, Attempt.campaign_lead).where(Attempt.id == attempt_id).get()
        campaign = Campaign.get_by_id(attempt.campaign_id)
        row = CampaignLead.get_by_id(attempt.campaign_lead_id)
        delay = retry_delay(campaign, outcome)
        if outcome == "lost":  # we never knew what happened: it does not count as a try
            update = {CampaignLead.state: "retry", CampaignLead.attempts: CampaignLead.attempts - 1,
                      CampaignLead.next_at: at_ms}
        elif delay is None or row.attempts >= campaign.max_attempts:
            update = {CampaignLead.state: "done"}
        else:
            update = {CampaignLead.state: "retry", CampaignLead.next_at: at_ms + delay * 1000}
        update.update({CampaignLead.owner: None, CampaignLead.lease_until: None,
                       CampaignLead.last_outcome: outcome, CampaignLead.ts: now()})
        CampaignLead.update(update).where(CampaignLead.id == row.id).execute()
    return True

