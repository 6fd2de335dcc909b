"""Dialer campaigns: what to dial (phone lists), how (mode, pacing), when (calling window), and every attempt.

A campaign's leads are the leads of its lead lists; each gets a `CampaignLead`
row the first time the dialer looks at it (state, attempts so far, when it may
be dialled again, who holds it now). That row is the lock that keeps a lead
from being dialled twice at once: claiming it is a conditional UPDATE in one
transaction (engine.dialer.leads), and it is released only when the attempt's
outcome is written, so a restart of switchdesk or a second box cannot dial it
again while its call may still be up.
"""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account, User
from engine.store.models.base import AccountScoped, BaseModel, now
from engine.store.models.callcenter import Queue, TimeGroup
from engine.store.models.phonelists import Lead, PhoneList

MODES = ("preview", "progressive", "predictive")
STATUSES = ("stopped", "running", "paused")
# outcomes of an attempt; the first four have their own retry delays
RETRY_OUTCOMES = ("no_answer", "busy", "failed", "machine")
# hangup: answered, then hung up within the abandon threshold with no agent; lost: ended while not followed
OUTCOMES = ("answered", "abandoned", "hangup", *RETRY_OUTCOMES, "lost", "skipped")
LEAD_STATES = ("new", "dialing", "retry", "done", "skipped")


class Campaign(AccountScoped):
    """A dialer campaign. `status` is what the client asked for (start/pause/stop)."""

    label = "Campaign"
    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="campaigns", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    # a deleted queue or time group leaves the campaign without one (it will not start without a queue)
    queue = peewee.ForeignKeyField(Queue, null=True, backref="campaigns", on_delete="SET NULL")
    mode = peewee.CharField(max_length=12, default="progressive")
    status = peewee.CharField(max_length=10, default="stopped")
    cid_num = peewee.CharField(max_length=32, null=True)
    cid_name = peewee.CharField(max_length=100, null=True)
    timegroup = peewee.ForeignKeyField(TimeGroup, null=True, backref="campaigns", on_delete="SET NULL")
    local_start = peewee.IntegerField(default=8 * 60)  # minutes after local midnight at the lead's number
    local_end = peewee.IntegerField(default=21 * 60)
    max_attempts = peewee.IntegerField(default=3)
    retry_no_answer = peewee.IntegerField(default=3600)  # seconds
    retry_busy = peewee.IntegerField(default=600)
    retry_failed = peewee.IntegerField(default=1800)
    retry_machine = peewee.IntegerField(default=7200)
    ring_timeout = peewee.IntegerField(default=30)
    call_script = peewee.CharField(max_length=100, null=True)
    amd = peewee.BooleanField(default=False)
    abandon_cap = peewee.FloatField(default=3.0)  # percent, predictive pacing
    max_ratio = peewee.FloatField(default=3.0)  # predictive: at most this many lines per agent
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)


class CampaignList(BaseModel):
    """A phone list of a campaign: `role` 'leads' (dialled) or 'dnc' (never dialled)."""

    campaign = peewee.ForeignKeyField(Campaign, backref="lists", on_delete="CASCADE")
    phone_list = peewee.ForeignKeyField(PhoneList, backref="campaigns", on_delete="CASCADE")
    role = peewee.CharField(max_length=5, default="leads")

    class Meta:
        primary_key = peewee.CompositeKey("campaign", "phone_list")


class CampaignLead(BaseModel):
    """A lead as a campaign sees it. `owner`/`lease_until` name the box dialling it (state 'dialing')."""

    id = peewee.AutoField()
    campaign = peewee.ForeignKeyField(Campaign, backref="leads", on_delete="CASCADE")
    # the number, canonical (engine.leads.numbers): one row per number even if several lists hold it, and
    # a lead deleted and imported again keeps its attempts (its `lead` is relinked by the number)
    phone_key = peewee.CharField(max_length=24)
    lead = peewee.ForeignKeyField(Lead, null=True, backref="campaign_leads", on_delete="SET NULL")
    lead_order = peewee.IntegerField(default=0)  # the lead's id when first seen: its age
    priority = peewee.IntegerField(default=0)
    state = peewee.CharField(max_length=8, default="new")
    attempts = peewee.IntegerField(default=0)
    next_at = peewee.BigIntegerField(default=0)  # epoch ms: not before
    owner = peewee.CharField(max_length=100, null=True)
    lease_until = peewee.BigIntegerField(null=True)
    last_outcome = peewee.CharField(max_length=12, null=True)
    skip_reason = peewee.CharField(max_length=200, null=True)
    disposition = peewee.CharField(max_length=100, null=True)
    ts = peewee.IntegerField(default=now)


CampaignLead.add_index(CampaignLead.index(CampaignLead.campaign, CampaignLead.phone_key, unique=True,
                                          name="campaignlead_unique"))
CampaignLead.add_index(CampaignLead.index(CampaignLead.campaign, CampaignLead.state, CampaignLead.priority.desc(),
                                          CampaignLead.lead_order, name="campaignlead_order"))


class Attempt(AccountScoped):
    """One call to a lead (its id is the call events' `dialer_id`); times are epoch milliseconds."""

    label = "Attempt"
    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="dial_attempts", on_delete="CASCADE")
    campaign = peewee.ForeignKeyField(Campaign, backref="attempts", on_delete="CASCADE")
    campaign_lead = peewee.ForeignKeyField(CampaignLead, backref="calls", on_delete="CASCADE")
    lead_ref = peewee.CharField(max_length=100, null=True)  # the lead's lead_id, or its row id
    phone = peewee.CharField(max_length=24)
    uuid = peewee.CharField(max_length=64, unique=True)  # origination_uuid of the lead's leg
    owner = peewee.CharField(max_length=100)
    mode = peewee.CharField(max_length=12)
    user = peewee.ForeignKeyField(User, null=True, backref="dial_attempts", on_delete="SET NULL")
    started_ms = peewee.BigIntegerField()
    answered_ms = peewee.BigIntegerField(null=True)
    agent_ms = peewee.BigIntegerField(null=True)  # an agent was bridged
    ended_ms = peewee.BigIntegerField(null=True, index=True)
    outcome = peewee.CharField(max_length=12, null=True)
    hangup_cause = peewee.CharField(max_length=60, null=True)
    disposition = peewee.CharField(max_length=100, null=True)
    disposition_by = peewee.IntegerField(null=True)
    notes = JSONField(null=True)


Attempt.add_index(Attempt.index(Attempt.campaign, Attempt.id, name="attempt_campaign"))
Attempt.add_index(Attempt.index(Attempt.owner, Attempt.ended_ms, name="attempt_live"))


class LeadSkip(BaseModel):
    """Why a lead was not dialled when its turn came (DNC, calling window, bad number...)."""

    id = peewee.AutoField()
    campaign = peewee.ForeignKeyField(Campaign, backref="skips", on_delete="CASCADE")
    campaign_lead = peewee.ForeignKeyField(CampaignLead, backref="skips", on_delete="CASCADE")
    reason = peewee.CharField(max_length=200)
    ts = peewee.IntegerField(default=now)
