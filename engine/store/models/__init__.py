"""Every table of switchdesk. A new model module adds its classes to ALL_MODELS here."""
from engine.store.models.account import (
    ACCOUNT_DEFAULTS,
    Account,
    ApiKey,
    LoginFailure,
    PermissionGroup,
    User,
    UserSession,
)
from engine.store.models.agents import AgentState, CheckinCode, CheckinFailure
from engine.store.models.base import AccountScoped, BaseModel, now
from engine.store.models.callcenter import Device, Did, Extension, PauseReason, Queue, Tier, TimeGroup
from engine.store.models.calls import ActiveCall
from engine.store.models.dialer import Attempt, Campaign, CampaignLead, CampaignList, LeadSkip
from engine.store.models.outbox import OutboxEvent, WebhookLease
from engine.store.models.phonelists import LIST_TYPES, Lead, LeadImport, PhoneList

ALL_MODELS: list[type[BaseModel]] = [
    Account,
    PermissionGroup,
    User,
    ApiKey,
    UserSession,
    LoginFailure,
    OutboxEvent,
    WebhookLease,
    TimeGroup,
    PauseReason,
    Queue,
    Tier,
    Device,
    Extension,
    Did,
    PhoneList,
    LeadImport,
    Lead,
    AgentState,
    CheckinCode,
    CheckinFailure,
    ActiveCall,
    Campaign,
    CampaignList,
    CampaignLead,
    Attempt,
    LeadSkip,
]

__all__ = [
    "ACCOUNT_DEFAULTS",
    "ALL_MODELS",
    "LIST_TYPES",
    "Account",
    "AccountScoped",
    "ActiveCall",
    "AgentState",
    "ApiKey",
    "Attempt",
    "BaseModel",
    "Campaign",
    "CampaignLead",
    "CampaignList",
    "CheckinCode",
    "CheckinFailure",
    "Device",
    "Did",
    "Extension",
    "Lead",
    "LeadImport",
    "LeadSkip",
    "LoginFailure",
    "OutboxEvent",
    "PauseReason",
    "PermissionGroup",
    "PhoneList",
    "Queue",
    "Tier",
    "TimeGroup",
    "User",
    "UserSession",
    "WebhookLease",
    "now",
]
