"""Account settings: domain, country, time zone, Event Push URL and secret, outbound gateway, user defaults."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, current_app
from pydantic import AfterValidator, BeforeValidator, Field

from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import Schema, endpoint
from api.users import Timezone
from engine.directory import accounts as service
from engine.events.sender import MAX_PER_REQUEST
from engine.store.models import Account

bp = Blueprint("account", __name__, url_prefix="/api/account")


def _country(value: str) -> str:
    import phonenumbers

    code = value.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code known to the phone number library")
    return code


def _secret(value: str) -> str:
    if value and len(value) < 16:
        raise ValueError("must have at least 16 characters (or be empty to remove it)")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class AccountFields(Schema):
    """Writable settings. On PUT only the submitted ones change."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    domain: Annotated[str, BeforeValidator(_lower), Field(
        min_length=1, max_length=253,
        description="FreeSWITCH domain the account's devices register in: a lower-case host name, unique; "
                    "fixed once the account has a device (409)",
    )] | None = None
    country: Annotated[str, Field(min_length=2, max_length=2, description=(
        "ISO 3166-1 alpha-2 code: the default region for phone numbers written without a country code"
    )), AfterValidator(_country)] | None = None
    timezone: Timezone | None = None
    event_push_url: Annotated[str, Field(max_length=2000, description=(
        "http(s) URL that receives the push events; loopback, link-local and private addresses are refused "
        "unless the server runs with --webhook-allow-private; an https:// receiver must present a certificate valid "
        "for its name (one that fails the check is retried, as a connection error is). Empty or null: no events "
        "are pushed"
    ))] | None = None
    webhook_secret: Annotated[str, Field(max_length=256), AfterValidator(_secret), Field(description=(
        "write-only: the HMAC-SHA256 key of X-Switchdesk-Signature, stored encrypted; empty or null removes it"
    ))] | None = None
    event_push_batch: Annotated[int, Field(ge=1, le=MAX_PER_REQUEST, description=(
        "events per webhook request, default 1: one event per POST, the vendor's body. Above 1 a request carries "
        "up to that many of the account's pending events as {\"account_id\", \"events\": [...]} in account_seq "
        "order (README, Event push: batched delivery), so a receiver that answers slowly still keeps up"
    ))] | None = None
    outbound_gateway: Annotated[str, Field(pattern=r"^([A-Za-z0-9_.-]{1,200})?$", description=(
        "FreeSWITCH gateway for calls to numbers outside the account (click-to-call's B leg)"
    ))] | None = None
    session_ttl: Annotated[int, Field(ge=60, le=31536000, description="seconds")] | None = None
    max_snooze: Annotated[int, Field(ge=0, le=100)] | None = None
    wrap_up_time: Annotated[int, Field(ge=0, le=86400, description="seconds")] | None = None
    no_answer_delay_time: Annotated[int, Field(ge=0, le=86400, description="seconds")] | None = None
    reject_delay_time: Annotated[int, Field(ge=0, le=86400, description="seconds")] | None = None
    busy_delay_time: Annotated[int, Field(ge=0, le=86400, description="seconds")] | None = None
    max_no_answer: Annotated[int, Field(ge=0, le=1000)] | None = None


_CLEARABLE = {"event_push_url", "webhook_secret", "outbound_gateway"}
_DEFAULTS = ("session_ttl", "max_snooze", "wrap_up_time", "no_answer_delay_time", "reject_delay_time",
             "busy_delay_time", "max_no_answer")


def account_record(account: Account) -> dict[str, Any]:
    """The settings as returned: the webhook secret only as `webhook_secret_set`."""
    record = {
        "id": account.id,
        "name": account.name,
        "domain": account.domain,
        "country": account.country,
        "timezone": account.timezone,
        "event_push_url": account.event_push_url,
        "webhook_secret_set": bool(account.webhook_secret_enc),
        "event_push_batch": account.event_push_batch,
        "outbound_gateway": account.outbound_gateway,
    }
    for name in _DEFAULTS:
        record[name] = getattr(account, name)
    record["ts"] = account.ts
    return record


@endpoint(bp, "", ["GET"], summary="Get the account's settings", tag="settings", permission="settings")
def get_account(principal: Principal):
    return ok(account_record(service.get_account(principal.account_id)))


@endpoint(bp, "", ["PUT"], summary="Update the account's settings (only submitted fields)", tag="settings",
          permission="settings", body=AccountFields,
          errors={409: "the domain is another account's, or fixed since the account has a device"})
def update_account(principal: Principal, body: AccountFields):
    """The defaults (`session_ttl` ... `max_no_answer`) apply to every user that does not override them."""
    fields: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in _CLEARABLE:
            raise APIError(400, f"{name}: may not be null")
        fields[name] = value
    account = service.update_settings(
        principal.account_id, fields,
        allow_private_webhooks=bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE")),
    )
    return ok(account_record(account))
