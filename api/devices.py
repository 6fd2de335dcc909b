"""Devices: SIP phones of the account, their owner (user) and their own extension."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import AfterValidator, BeforeValidator, Field

from api import users as users_api
from api.auth import Principal
from api.envelope import ok
from api.spec import Id, Page, Schema, endpoint, submitted_fields
from engine.directory import devices as service
from engine.directory import extensions, sites
from engine.store.models import Device, Extension

bp = Blueprint("devices", __name__, url_prefix="/api/device")


def _blank_is_null(value: Any) -> Any:
    """Forms cannot send null: an empty value clears a nullable field."""
    return None if value == "" else value


def _no_user(value: Any) -> Any:
    """user_id 0 (the vendor API's "none" elsewhere, e.g. pgroup_id) unassigns the device too."""
    return None if value in ("", 0, "0") else value


def _sip_password(value: str) -> str:
    from engine.directory.security import sip_password_problem

    problem = sip_password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _extension(value: str) -> str:
    problem = extensions.extension_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _single_line(value: str) -> str:
    # Caller ids and names reach SIP headers and channel variables, where a line break or tab is an injection.
    if any(c in value for c in "\t\n\r"):
        raise ValueError("line breaks and tabs are not allowed")
    return value


SingleLine = AfterValidator(_single_line)
Name = Annotated[str, Field(min_length=1, max_length=200), SingleLine]
SipUsername = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
SipPassword = Annotated[str, AfterValidator(_sip_password)]
ExtensionNumber = Annotated[str, AfterValidator(_extension)]
Nullable = BeforeValidator(_blank_is_null)


class DeviceFields(Schema):
    """Writable device fields. On PUT only the submitted ones change; registration fields are read-only."""

    name: Name | None = None
    sip_username: SipUsername | None = Field(None, description="unique in the account; [A-Za-z0-9._-]{1,64}")
    sip_password: SipPassword | None = Field(
        None, description="write-only; 12+ characters with letters and digits; stored only as the a1-hash, so it "
                          "is required again whenever sip_username changes")
    cid_num: Annotated[Annotated[str, Field(pattern=r"^\+?[0-9]{1,20}$")] | None, Nullable] = None
    cid_name: Annotated[Annotated[str, Field(max_length=100), SingleLine] | None, Nullable] = None
    user_id: Annotated[Id | None, BeforeValidator(_no_user)] = Field(
        None, description="the user the device belongs to; null (or 0): none")
    ring: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="ring order among the user's devices: lower rings first, equal values ring together")
    delay: Annotated[int, Field(ge=0, le=600)] | None = Field(None, description="seconds before it starts ringing")
    timeout: Annotated[int, Field(ge=1, le=600)] | None = Field(None, description="seconds it rings")
    extension: Annotated[ExtensionNumber | None, Nullable] = Field(
        None, description="the device's own extension; null removes every extension routing to the device")
    site_id: Annotated[Id | None, BeforeValidator(_no_user)] = Field(
        None, description="the device's site (GET /api/site): its outbound calls use the site's gateway and caller "
                          "id; null (or 0): none")


class DeviceCreate(DeviceFields):
    name: Name
    sip_username: SipUsername
    sip_password: SipPassword


class DeviceQuery(Page):
    q: Annotated[str, Field(max_length=200)] | None = Field(None, description="part of name or sip_username")
    user_id: Id | None = None


_NULLABLE = {"cid_num", "cid_name", "user_id", "extension", "site_id"}


def submitted(body: DeviceFields) -> dict[str, Any]:
    return submitted_fields(body, _NULLABLE)


def records(devices: list[Device]) -> list[dict[str, Any]]:
    """Device records with their extensions, in two queries per 5,000 devices at most."""
    numbers: dict[int, list[tuple[int, str]]] = {d.id: [] for d in devices}
    site_of: dict[int, int] = {}
    for chunk in extensions.chunks(list(numbers)):
        for ext in (Extension.select(Extension.id, Extension.number, Extension.target_id)
                    .where((Extension.target_type == "device") & Extension.target_id.in_(chunk))):
            numbers[ext.target_id].append((ext.id, ext.number))
        site_of.update(sites.device_sites(chunk))
    out = []
    for d in devices:
        own = sorted(numbers[d.id])
        out.append({
            "id": d.id,
            "account_id": d.account_id,
            "name": d.name,
            "sip_username": d.sip_username,
            "cid_num": d.cid_num,
            "cid_name": d.cid_name,
            "user_id": d.user_id,
            "site_id": site_of.get(d.id),
            "ring": d.ring,
            "delay": d.delay,
            "timeout": d.timeout,
            "extension": own[0][1] if own else None,
            "extensions": ",".join(sorted(number for _, number in own)),
            "registered": d.registered,
            "reg_contact": d.reg_contact,
            "reg_user_agent": d.reg_user_agent,
            "reg_network_ip": d.reg_network_ip,
            "reg_expires": d.reg_expires,
            "reg_ts": d.reg_ts,
            "ts": d.ts,
        })
    return out


def _user_devices(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    return {user_id: {"devices": devices} for user_id, devices in service.devices_of_users(user_ids).items()}


users_api.EXTRA_PROVIDERS.append(_user_devices)


@endpoint(bp, "", ["GET"], summary="List devices", tag="devices", permission="devices", query=DeviceQuery)
def list_devices(principal: Principal, query: DeviceQuery):
    """`q` matches part of the name or the SIP username; `user_id` lists one user's devices."""
    rows = Device.of(principal.account_id).order_by(Device.id)
    if query.q:
        rows = rows.where(Device.name.contains(query.q) | Device.sip_username.contains(query.q))
    if query.user_id is not None:
        rows = rows.where(Device.user == query.user_id)
    rows = query.page(rows)
    return ok(records(list(rows)))


@endpoint(bp, "/<int:device_id>", ["GET"], summary="Get a device", tag="devices", permission="devices")
def get_device(principal: Principal, device_id: int):
    return ok(records([service.get_device(principal.account_id, device_id)])[0])


@endpoint(bp, "", ["POST"], summary="Create a device", tag="devices", permission="devices", body=DeviceCreate,
          errors={409: "the SIP username is taken, or the extension routes elsewhere"})
def create_device(principal: Principal, body: DeviceCreate):
    """The password is stored only as FreeSWITCH's a1-hash md5("sip_username:domain:sip_password")."""
    device = service.create_device(principal.account_id, submitted(body))
    return ok(records([device])[0])


@endpoint(bp, "/<int:device_id>", ["PUT"], summary="Update a device (only submitted fields)", tag="devices",
          permission="devices", body=DeviceFields,
          errors={409: "the SIP username is taken, or the extension routes elsewhere"})
def update_device(principal: Principal, device_id: int, body: DeviceFields):
    """A new `sip_username` needs `sip_password` in the same request (400): the a1-hash covers both."""
    device = service.update_device(principal.account_id, device_id, submitted(body))
    return ok(records([device])[0])


@endpoint(bp, "/<int:device_id>", ["DELETE"], summary="Delete a device and its extensions", tag="devices",
          permission="devices")
def delete_device(principal: Principal, device_id: int):
    service.delete_device(principal.account_id, device_id)
    return ok()
