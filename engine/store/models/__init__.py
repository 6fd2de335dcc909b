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
from engine.store.models.media import Media
from engine.store.models.outbox import OutboxEvent, WebhookLease
from engine.store.models.phonelists import LIST_TYPES, Lead, LeadImport, PhoneList
from engine.store.models.records import CallRecord, CallRecordLeg, Recording, RetentionSetting
from engine.store.models.sites import DeviceSite, Site
from engine.store.models.voicemail import VoicemailBox

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
    Media,
    VoicemailBox,
    CallRecord,
    CallRecordLeg,
    Recording,
    RetentionSetting,
    Campaign,
    CampaignList,
    CampaignLead,
    Attempt,
    LeadSkip,
    Site,
    DeviceSite,
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
    "CallRecord",
    "CallRecordLeg",
    "Campaign",
    "CampaignLead",
    "CampaignList",
    "CheckinCode",
    "CheckinFailure",
    "Device",
    "DeviceSite",
    "Did",
    "Extension",
    "Lead",
    "LeadImport",
    "LeadSkip",
    "LoginFailure",
    "Media",
    "OutboxEvent",
    "PauseReason",
    "PermissionGroup",
    "PhoneList",
    "Queue",
    "Recording",
    "RetentionSetting",
    "Site",
    "Tier",
    "TimeGroup",
    "User",
    "UserSession",
    "VoicemailBox",
    "WebhookLease",
    "now",
]
