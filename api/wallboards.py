"""Wallboard links (`/api/wallboard`, permission `wallboards`) and the wallboard itself (`/tv`).

`/tv?token=<token>` is a plain HTML/CSS/JS page served from api/static/tv (no build step, no CDN):
one tile per queue showing its `tv_name`, coloured by `background_color` / `font_color`, grouped by
`labels`, kept live by `/tv/stream?token=<token>` (Server-Sent Events, as /api/stats/stream but limited
to the link's queues and without agents). EventSource reconnects by itself; the page also restarts a
stream that has been silent too long. The token travels as `token=` so the access log masks it.
"""
from __future__ import annotations

import json
import os
from typing import Annotated

from flask import Blueprint, Response, request, send_from_directory
from pydantic import Field

from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import IdList, Schema, endpoint
from api.stats import SSE_EVENT, StreamEnded, figures, sse_response
from engine.stats import wallboards
from engine.store.db import connection
from engine.store.models import Account, WallboardLink, now

bp = Blueprint("wallboards", __name__, url_prefix="/api/wallboard")
tv = Blueprint("tv", __name__)

STATIC = os.path.join(os.path.dirname(__file__), "static", "tv")


class LinkCreate(Schema):
    name: Annotated[str, Field(min_length=1, max_length=200, description="what the link is for (a room, a TV)")]
    queue_ids: Annotated[IdList, Field(max_length=1000, description="only these queues (default: all)")] | None = None
    labels: Annotated[IdList, Field(max_length=1000, description="only queues with one of these labels")] | None = None


def _require_stats(principal: Principal) -> None:
    if not principal.can("stats"):
        raise APIError(403, "Permission denied: stats")  # a link shows statistics: no more than its creator sees


@endpoint(bp, "", ["GET"], summary="List wallboard links (never their tokens)", tag="wallboards",
          permission="wallboards")
def list_links(principal: Principal):
    links = WallboardLink.select().where(WallboardLink.account == principal.account_id).order_by(WallboardLink.id)
    return ok([wallboards.record(link) for link in links])


@endpoint(bp, "", ["POST"], summary="Create a wallboard link", tag="wallboards", permission="wallboards",
          body=LinkCreate, errors={409: "the account has the most links it may have"})
def create_link(principal: Principal, body: LinkCreate):
    """Returns the link with its `token` and `url` (`/tv?token=...`): shown this once, stored hashed."""
    _require_stats(principal)
    link, token = wallboards.create(principal.account_id, body.name, body.queue_ids or [], body.labels or [],
                                    principal.user.id)
    return ok({**wallboards.record(link), "token": token, "url": f"/tv?token={token}"})


@endpoint(bp, "/<int:link_id>", ["DELETE"], summary="Revoke a wallboard link", tag="wallboards",
          permission="wallboards")
def revoke_link(principal: Principal, link_id: int):
    """The TV's page and stream stop at once (an open stream ends at its next look)."""
    return ok(wallboards.record(wallboards.revoke(principal.account_id, link_id)))


def _link() -> WallboardLink:
    with connection():
        link = wallboards.resolve(request.args.get("token"))
    if link is None:
        raise APIError(404, "Unknown or revoked wallboard link")
    return link


class TokenQuery(Schema):
    token: Annotated[str, Field(min_length=1, max_length=100, description="the wallboard link's token")]


@endpoint(tv, "/tv", ["GET"], summary="The wallboard page (HTML)", tag="wallboards", auth=False, query=TokenQuery,
          media_type="text/html", errors={404: "unknown or revoked link"})
def page(query: TokenQuery) -> Response:
    """For a TV: tiles per queue of the link, live over `/tv/stream`."""
    _link()
    response = send_from_directory(STATIC, "index.html", mimetype="text/html", max_age=0)
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self'; script-src 'self'"
    return response


ASSETS = {"wallboard.js": "text/javascript", "wallboard.css": "text/css"}


@endpoint(tv, "/tv/static/<name>", ["GET"], summary="The wallboard page's script and style", tag="wallboards",
          auth=False, media_type="text/javascript", errors={404: "no such file"})
def asset(name: str) -> Response:
    """`wallboard.js` and `wallboard.css` only (nothing else is served from the folder)."""
    if name not in ASSETS:
        raise APIError(404, "Not found")
    return send_from_directory(STATIC, name, mimetype=ASSETS[name], max_age=300)


@endpoint(tv, "/tv/stream", ["GET"], summary="The wallboard's Server-Sent Events", tag="wallboards", auth=False,
          query=TokenQuery, media_type="text/event-stream", response=SSE_EVENT, errors={404: "unknown or revoked link",
                                                                     429: "too many streams are open"})
def stream(query: TokenQuery) -> Response:
    """As `GET /api/stats/stream` for the link's queues, without agents; `event: end` when it is revoked."""
    link = _link()
    queue_ids, labels, link_id = json.loads(link.queue_ids) or None, json.loads(link.labels) or None, link.id
    with connection():
        account = Account.get_by_id(link.account_id)
        WallboardLink.update(last_used_at=now()).where(WallboardLink.id == link_id).execute()

    partial = figures(account, queue_ids, labels, False)

    def read(queues: set[int] | None, agents: set[int] | None) -> dict:
        if not wallboards.still_valid(link_id):
            raise StreamEnded()
        return partial(queues, agents)

    return sse_response(account.id, read)
