"""The Flask application: the vendor REST API as one blueprint per resource."""
from __future__ import annotations

from typing import Any

from flask import Flask

from engine.store import db as dbmod

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # large enough for a 100,000-lead import


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; `config` may name `DATABASE_URL` to bind the database here."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=DEFAULT_MAX_BODY, MAX_FORM_MEMORY_SIZE=DEFAULT_MAX_BODY)
    app.config.update(config or {})
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    if app.config.get("DATABASE_URL"):
        dbmod.bind(app.config["DATABASE_URL"])

    from api import (
        account,
        agents,
        checkin,
        devices,
        dids,
        events,
        extensions,
        freeswitch,
        metrics,
        originate,
        pauses,
        pgroups,
        phone_lists,
        queues,
        system,
        timegroups,
        users,
    )
    from api.envelope import install_error_handlers

    for module in (system, users, pgroups, freeswitch, phone_lists, queues, account,
                   devices, events, extensions, dids, pauses, timegroups, checkin, originate, agents):
        app.register_blueprint(module.bp)
    install_error_handlers(app)
    metrics.install(app)

    @app.before_request
    def _open_db() -> None:
        dbmod.db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_db(_exc: BaseException | None) -> None:
        if not dbmod.db.is_closed():
            dbmod.db.close()

    return app
