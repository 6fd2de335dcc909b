"""Accounts and API keys: what `switchdesk init`, `account create` and `apikey` do."""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import peewee

from engine.directory import security
from engine.errors import ServiceError
from engine.store import changes
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, ApiKey, Device, User

_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")


def domain_problem(domain: str) -> str | None:
    if not _DOMAIN.match(domain):
        return "must be a lower-case host name such as pbx.example.com"
    return None


@dataclass
class NewAccount:
    account: Account
    admin: User
    password: str
    api_key: str


def create_account(name: str, domain: str, admin_username: str, admin_email: str | None = None) -> NewAccount:
    """A new account with an admin user holding every permission, and that admin's first API key."""
    domain = domain.strip().lower()
    problem = domain_problem(domain)
    if problem:
        raise ServiceError(400, f"domain: {problem}")
    if not re.fullmatch(r"[A-Za-z0-9._@-]{3,100}", admin_username):
        raise ServiceError(400, "admin username: 3 to 100 letters, digits, '.', '_', '@' or '-'")
    password = security.random_password()
    password_hash = security.hash_password(password)  # before the transaction: it yields
    key, prefix, key_digest = security.new_api_key()
    email = admin_email or f"{admin_username.lower()}@{domain}"
    with db.atomic():
        if Account.select().where(Account.domain == domain).exists():
            raise ServiceError(409, f"domain {domain} is already used by another account")
        if User.select().where(
            (User.username_key == admin_username.lower()) | (User.email_key == email.lower())
        ).exists():
            raise ServiceError(409, "admin username or e-mail: already taken")
        account = Account.create(name=name, domain=domain)
        admin = User.create(
            account=account, name="Administrator", username=admin_username,
            username_key=admin_username.lower(), email=email, email_key=email.lower(),
            password_hash=password_hash, is_admin=True,
        )
        ApiKey.create(user=admin, prefix=prefix, digest=key_digest)
    changes.notify("account", account.id, [account.id])  # a domain that was no account's now is one
    return NewAccount(account, admin, password, key)


def issue_api_key(user: User) -> str:
    """A new key for `user`; the key itself is returned once and never stored."""
    key, prefix, key_digest = security.new_api_key()
    ApiKey.create(user=user, prefix=prefix, digest=key_digest)
    return key


def issue_api_key_for(username: str) -> str:
    user = User.get_or_none(User.username_key == username.lower())
    if user is None:
        raise ServiceError(404, f"no user {username}")
    return issue_api_key(user)


# --- account settings ----------------------------------------------------------------------------


def address_is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, link-local, private and other non-public addresses a webhook must not reach."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:  # fec0::/10: deprecated, yet routed inside some networks
            return True
        # An IPv6 address that carries an IPv4 one reaches it: mapped (::ffff:a.b.c.d), 6to4
        # (2002:AABB:CCDD::/48) and Teredo (2001::/32, whose client address is the second one).
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(v4 is not None and address_is_private(v4) for v4 in embedded):
            return True
        if address.ipv4_mapped is not None:
            return False
    return (address.is_loopback or address.is_link_local or address.is_private or address.is_unspecified
            or address.is_multicast or address.is_reserved or not address.is_global)


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _plain_host(host: str) -> bool:
    """A DNS name (international names through IDNA) or an IP literal: nothing percent-encoded,
    no spaces, backslashes or other characters that HTTP clients and resolvers read differently."""
    if ":" in host:
        return True  # urlsplit only gives a colon for a bracketed IPv6 literal, checked by the caller
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return False
    labels = ascii_host.split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an IP address when it is one, including the old IPv4 forms (`127.1`, `2130706433`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def webhook_url_problem(url: str, allow_private: bool) -> str | None:
    """Why `url` cannot be the Event Push URL, or None.

    Only literal addresses are checked here; the sender checks the resolved
    address again, since a name can change what it points to (DESIGN.md, Webhooks).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "the URL has no host"
    if any(char in (parts.netloc or "") for char in "%\\") or not _plain_host(host):
        return "the host must be a plain DNS name or IP address (nothing percent-encoded)"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "the host must be a plain DNS name or IP address (nothing percent-encoded)"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "must not point to a loopback, link-local or private address"
    address = _literal_address(host)
    if address is not None and address_is_private(address):
        return "must not point to a loopback, link-local or private address"
    return None


def get_account(account_id: int) -> Account:
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise ServiceError(404, f"Account {account_id} not found")
    return account


def update_settings(account_id: int, fields: dict[str, Any], *, allow_private_webhooks: bool = False) -> Account:
    """Change only the given settings.

    The domain is the FreeSWITCH domain devices register in (their SIP a1-hash
    includes it), so it is fixed once the account has a device.
    `webhook_secret` is write-only: stored encrypted, never returned.
    """
    fields = dict(fields)
    if fields.get("domain") is not None:
        fields["domain"] = fields["domain"].strip().lower()
        problem = domain_problem(fields["domain"])
        if problem:
            raise ServiceError(400, f"domain: {problem}")
    if fields.get("event_push_url"):
        problem = webhook_url_problem(fields["event_push_url"], allow_private_webhooks)
        if problem:
            raise ServiceError(400, f"event_push_url: {problem}")
    if "webhook_secret" in fields:
        secret = fields.pop("webhook_secret")
        try:
            fields["webhook_secret_enc"] = security.encrypt_secret(secret) if secret else None
        except security.NoSecretKey as exc:  # before any write: the whole PUT is refused, not half done
            raise ServiceError(409, f"webhook_secret: cannot be stored: {exc}") from None
    for name in ("event_push_url", "outbound_gateway"):
        if name in fields and not fields[name]:
            fields[name] = None
    pending = Pending()
    try:
        with db.atomic():
            account = get_account(account_id)
            if "domain" in fields and fields["domain"] != account.domain:
                if Device.select(Device.id).where(Device.account == account.id).exists():
                    raise ServiceError(409, "domain: the domain cannot change once the account has a device "
                                            "(devices register in it); delete the devices first")
                if Account.select(Account.id).where(
                    (Account.domain == fields["domain"]) & (Account.id != account.id)
                ).exists():
                    raise ServiceError(409, f"domain: {fields['domain']} is already used by another account")
            changed = {k: v for k, v in fields.items() if getattr(account, k) != v}
            if changed:
                for name, value in changed.items():
                    setattr(account, name, value)
                account.save()
                pending.add("account", account.id, [account.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"domain: {fields.get('domain')} is already used by another account") from None
    pending.send()
    return account
