"""Accounts and API keys: what `switchdesk init`, `account create` and `apikey` do."""
from __future__ import annotations

import re
from dataclasses import dataclass

from engine import security
from engine.db import db
from engine.errors import ServiceError
from engine.models import Account, ApiKey, User

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
            raise ServiceError(409, f"username {admin_username} is already taken")
        account = Account.create(name=name, domain=domain)
        admin = User.create(
            account=account, name="Administrator", username=admin_username,
            username_key=admin_username.lower(), email=email, email_key=email.lower(),
            password_hash=password_hash, is_admin=True,
        )
        ApiKey.create(user=admin, prefix=prefix, digest=key_digest)
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
