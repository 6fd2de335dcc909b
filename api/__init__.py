"""The Flask application: the vendor REST API as one blueprint per resource."""
from __future__ import annotations

from typing import Any

from flask import Flask, request

from engine.store import db as dbmod

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # large enough for a 100,000-lead import


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; `config` may name `DATABASE_URL` to bind the database here."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=DEFAULT_MAX_BODY, MAX_FORM_MEMORY_SIZE=DEFAULT_MAX_BODY)
    app.config.update(config or {})
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    from api.spec import install_converters

    install_converters(app.url_map)  # before the blueprints: `<int:...>` rules bind their converter when added
    if app.config.get("DATABASE_URL"):
        dbmod.bind(app.config["DATABASE_URL"])

    from api import (
        account,
        agents,
        boxes,
        calls,
        campaigns,
        cdr,
        checkin,
        devices,
        dids,
        events,
        extensions,
        freeswitch,
        media,
        metrics,
        originate,
        pauses,
        pgroups,
        phone_lists,
        queues,
        recordings,
        reports,
        sites,
        stats,
        system,
        timegroups,
        users,
        voicemail,
        wallboards,
    )
    from api.auth import authenticate, credentials_outside_body
    from api.body import KEY_IN_BODY_MAX, is_chunked, key_may_be_in_body, read_chunked_body
    from api.envelope import BODY_REFUSED, APIError, install_error_handlers

    for module in (system, users, pgroups, freeswitch, phone_lists, queues, account,
                   devices, events, extensions, dids, pauses, timegroups, checkin, originate, agents, media,
                   voicemail, calls, cdr, recordings, campaigns, stats, wallboards, reports, boxes, sites):
        app.register_blueprint(module.bp)
    app.register_blueprint(wallboards.tv)
    install_error_handlers(app)
    metrics.install(app)
    if app.config.get("MEDIA_DIR"):
        from engine.media import library

        library.configure(app.config["MEDIA_DIR"])

    # No connection is taken before a request needs one: peewee connects on the first query, so
    # /api/health and refused requests hold none, and the pool serves the requests that query.
    @app.before_request
    def _guard_body() -> None:
        """Who is asking before what they send: a request with a large or chunked body is
        authenticated from its headers, query and cookie first; then a chunked body is read whole
        within the limit, or refused."""
        if not (is_chunked() or request.content_length):
            return
        view = app.view_functions.get(request.endpoint or "")
        try:
            if getattr(view, "requires_auth", False) and not key_may_be_in_body():
                if is_chunked() and not credentials_outside_body():
                    try:  # its key can only be in the body: read that much of it, no more
                        read_chunked_body(cap=KEY_IN_BODY_MAX)
                    except APIError as exc:
                        raise APIError(401, "Unauthorized") if exc.status == 413 else exc from None
                else:
                    authenticate()
            # a route with its own, smaller limit (media uploads) refuses a larger body before reading it
            limit = getattr(view, "body_limit", None)
            cap = limit() if limit is not None else None
            if cap is not None and (request.content_length or 0) > cap:
                raise APIError(413, f"Request body too large (limit {cap} bytes)")
            read_chunked_body(cap=cap)
        except APIError:
            request.environ[BODY_REFUSED] = True
            raise

    @app.teardown_request
    def _close_db(_exc: BaseException | None) -> None:
        if not dbmod.db.is_closed():
            dbmod.db.close()

    return app
