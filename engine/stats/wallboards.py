"""Wallboard links: how a TV that cannot log in sees one account's queues, read-only.

A link is a random token (256 bits, shown once, at creation) kept as its SHA-256, scoped to its
account and optionally to queues or labels; revoking it stops it at once (an open stream ends at its
next look). Whoever creates one needs the `wallboards` and `stats` permissions (a link shows
statistics, so it cannot give more than its creator can see).
"""
from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from engine.errors import ServiceError
from engine.store.db import db
from engine.store.models import Queue, WallboardLink, now

MAX_LINKS = 200  # per account


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def record(link: WallboardLink) -> dict[str, Any]:
    return {"id": link.id, "name": link.name, "queue_ids": json.loads(link.queue_ids),
            "labels": json.loads(link.labels), "created_by": link.created_by, "created_at": link.created_at,
            "revoked_at": link.revoked_at, "last_used_at": link.last_used_at}


def create(account_id: int, name: str, queue_ids: list[int], labels: list[int], created_by: int | None
           ) -> tuple[WallboardLink, str]:
    """A new link and its token (the only time the token exists outside the TV's URL)."""
    with db.atomic():
        if queue_ids:
            found = {q.id for q in Queue.select(Queue.id).where((Queue.account == account_id)
                                                                & Queue.id.in_(queue_ids))}
            missing = sorted(set(queue_ids) - found)
            if missing:
                raise ServiceError(400, f"queue_ids: no queue {missing[0]}")
        live = WallboardLink.select().where((WallboardLink.account == account_id)
                                            & WallboardLink.revoked_at.is_null()).count()
        if live >= MAX_LINKS:
            raise ServiceError(409, f"at most {MAX_LINKS} wallboard links per account")
        token = secrets.token_urlsafe(32)
        link = WallboardLink.create(account=account_id, name=name, token_hash=hash_token(token),
                                    queue_ids=json.dumps(sorted(set(queue_ids))),
                                    labels=json.dumps(sorted(set(labels))), created_by=created_by)
    return link, token


def revoke(account_id: int, link_id: int) -> WallboardLink:
    with db.atomic():
        link = WallboardLink.get_or_none((WallboardLink.id == link_id) & (WallboardLink.account == account_id))
        if link is None:
            raise ServiceError(404, "Wallboard link not found")
        if link.revoked_at is None:
            link.revoked_at = now()
            link.save()
    return link


def resolve(token: str | None) -> WallboardLink | None:
    """The live link of `token`, or None (unknown, malformed or revoked)."""
    if not token or len(token) > 100:
        return None
    link = WallboardLink.get_or_none(WallboardLink.token_hash == hash_token(token))
    if link is None or link.revoked_at is not None:
        return None
    return link


def still_valid(link_id: int) -> bool:
    return WallboardLink.select().where((WallboardLink.id == link_id) & WallboardLink.revoked_at.is_null()).exists()
