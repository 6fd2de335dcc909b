"""`switchdesk serve`: one gevent process for the API (and the engine's greenlets)."""
from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from typing import Any

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from engine import logs

log = logging.getLogger("switchdesk")


XML_CURL_PREFIX = "/freeswitch/"
XML_CURL_LOG_SLOWER_THAN = 0.1  # seconds


class NoDelayHandler(WSGIHandler):
    """pywsgi writes headers and body separately: without TCP_NODELAY a keep-alive
    client waits ~40 ms on Nagle's algorithm for every response."""

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a unix socket in tests)
        super().__init__(sock, address, server, rfile)

    def run_application(self) -> None:
        super().run_application()
        if self.environ.get("switchdesk.body_refused"):  # api.envelope.BODY_REFUSED
            # Refused unread (401 before a large body, 413): close rather than let pywsgi read
            # and discard the rest, which may be 60 MB or an endless chunked stream. pywsgi skips
            # its discard when it believes the input broken.
            self.close_connection = True
            if self.wsgi_input is not None:
                self.wsgi_input._chunked_input_error = True

    def _log_error(self, t, v, tb) -> None:
        # pywsgi hands errors it catches (a streamed response failing after its first byte) to the
        # hub, which prints them raw to stderr: ours go through the log formatter and its redaction.
        # The response itself ends without its last chunk, so the client sees it broken, not short.
        if not issubclass(t, gevent.GreenletExit):
            log.error("error while serving %s %s", self.command, logs.redact(self.path or ""), exc_info=(t, v, tb))

    def log_request(self) -> None:
        # FreeSWITCH's xml_curl lookups come several per call: a line each would be most of the log
        # and a tenth of the CPU of a call. Those that fail or are slow are logged; /metrics counts all.
        if (self.path or "").startswith(XML_CURL_PREFIX) and (self._orig_status or "").startswith("200") \
                and self.time_finish and self.time_finish - self.time_start < XML_CURL_LOG_SLOWER_THAN:
            return
        super().log_request()

    def format_request(self) -> str:
        # the request line carries the query string, where api_key= and password= are valid input
        return logs.redact(super().format_request())


def make_server(app, host: Any, port: int | None = None) -> WSGIServer:
    """On (host, port), or on a listening socket given as `host` (engine.workers)."""
    return WSGIServer(host if port is None else (host, port), app, handler_class=NoDelayHandler,
                      log=logging.getLogger("switchdesk.access"), error_log=log)


def resolve_domains(domains: list[str] | None) -> list[int] | None:
    """The account ids this box serves (DESIGN.md Scale-out): None for all accounts."""
    if not domains:
        return None
    from engine.store.models import Account

    wanted = {d.strip().lower() for d in domains if d.strip()}
    found = {a.domain: a.id for a in Account.select(Account.id, Account.domain).where(Account.domain.in_(wanted))}
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"no account has the domain {', '.join(missing)}")
    return sorted(found.values())


def default_media_dir(db_url: str) -> str:
    """`media` beside a SQLite database file, else /var/lib/switchdesk/media."""
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        return os.path.join(os.path.dirname(os.path.abspath(db_url[len("sqlite:///"):])), "media")
    from engine.media.library import DEFAULT_DIR

    return DEFAULT_DIR


def _configure_recordings(db_url: str, recordings: tuple[str | None, int, int, int] | None) -> None:
    """The recordings folder (default: `recordings` beside a SQLite database, else ./recordings) and the
    retention defaults (engine.calls.recordings, engine.calls.records)."""
    from engine.calls import recordings as recording_files
    from engine.calls import records

    folder, min_free_mb, recording_days, cdr_days = recordings or (None, 500, 90, 90)
    if not folder:
        if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
            folder = os.path.join(os.path.dirname(os.path.abspath(db_url[len("sqlite:///"):].split("?", 1)[0])),
                                  "recordings")
        else:
            folder = os.path.abspath("recordings")
    recording_files.configure(folder, min_free=min_free_mb * 2**20, days=recording_days)
    records.configure(cdr_days=cdr_days)
    log.info("recordings go to %s", recording_files.settings.root)


def serve(db_url: str, host: str, port: int, *, max_body: int | None = None,
          webhook_allow_private: bool = False, webhook_concurrency: int | None = None,
          esl: tuple[str, int] | None = None, esl_password: str = "",
          xmlcurl_password: str | None = None, domains: list[str] | None = None, log_format: str = "text",
          log_level: str = "INFO", metrics_public: bool = False, outbound: tuple[str, int] | None = None,
          media_dir: str | None = None, media_max_bytes: int | None = None,
          media_max_seconds: int | None = None,
          recordings: tuple[str | None, int, int, int] | None = None, box_name: str | None = None,
          advertise_url: str | None = None, workers: int = 0, realtime: bool = False) -> int:
    """Serve the API and, unless `esl` is None, run the engine against FreeSWITCH in the same process.

    `domains` limits the engine (mod_callcenter sync, agent control, webhooks) to those accounts: with
    several boxes on one database each account's domain is served by exactly one box. `outbound` is where
    the engine listens for FreeSWITCH's outbound-socket calls (check-in codes, engine.callcenter.checkin).
    `box_name` names this box in the registry and on the files it holds (default: the machine's host name);
    `advertise_url` is where the other boxes reach its API (default: from `host` unless that is loopback).
    `workers` > 0: the API and xml_curl are served by that many worker processes (engine.workers), this
    process keeps the engine, the webhook deliverer and the check-in socket.
    `realtime`: every process's event loop at real-time CPU priority (engine.priority).
    """
    settings = {
        "db_url": db_url, "max_body": max_body, "webhook_allow_private": webhook_allow_private,
        "xmlcurl_password": xmlcurl_password, "domains": domains, "log_format": log_format,
        "log_level": log_level, "metrics_public": metrics_public,
        "outbound": list(outbound) if outbound is not None else None, "media_dir": media_dir,
        "media_max_bytes": media_max_bytes, "media_max_seconds": media_max_seconds,
        "recordings": list(recordings) if recordings is not None else None, "box_name": box_name,
        "advertise_url": advertise_url, "engine": esl is not None, "esl_password": esl_password,
        "workers": workers, "webhook_concurrency": webhook_concurrency, "realtime": realtime,
    }
    prepared = _prepare(settings, init_schema=True)
    if isinstance(prepared, int):
        return prepared
    database, account_ids, config = prepared
    engine = None
    if esl is not None:
        from engine.engine import Engine

        engine = Engine(esl[0], esl[1], esl_password, account_ids=account_ids)
        config["ENGINE"] = engine
    split = None
    if workers > 0:
        from engine.workers import serving

        try:
            split = serving.EngineSide(settings, config, host, port, workers, engine=engine)
        except OSError as exc:
            print(f"switchdesk: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        server_port = split.port
        split.start_workers()  # and the webhook sender's process
    else:
        from api import create_app

        app = create_app(config)
        server = make_server(app, host, port)
        try:
            server.start()
        except OSError as exc:
            print(f"switchdesk: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 1
        server_port = server.server_port
    log.info("serving the API on http://%s:%d%s", host, server_port,
             f" ({workers} worker processes)" if workers else "")
    from engine import boxes

    if advertise_url is None:
        boxes.settings.url = boxes.default_url(host, server_port)
    heartbeat = boxes.Heartbeat().start()  # this box in the registry: other boxes fetch its files through it
    checkins = None
    if engine is not None and outbound is not None:
        from engine.callcenter.checkin import make_server as make_checkin_server

        checkins = make_checkin_server(outbound[0], outbound[1], group=engine.group)
        try:
            checkins.start()
        except OSError as exc:
            print(f"switchdesk: --outbound-listen: {exc.strerror or exc}", file=sys.stderr)
            split.stop() if split is not None else server.stop(timeout=1)
            return 1
    if engine is not None:
        from engine.store import pgnotify

        if split is not None:
            split.wait_serving()
        # PostgreSQL: changes committed through other boxes' APIs reach this engine within milliseconds
        if pgnotify.attach(engine, database) is not None:
            log.info("engine: listening for other boxes' changes (PostgreSQL NOTIFY %s)", pgnotify.changes.CHANNEL)
        engine.start()
        log.info("engine: FreeSWITCH event socket at %s:%d", *esl)
    remote = None
    if engine is None and not db_is_sqlite():
        from engine.store import pgnotify

        # the xml_curl answers come from memory (engine.directory.views) only while this process hears
        # other boxes' changes; with the engine, its own listener does that
        remote = pgnotify.RemoteChanges.for_database(database).start()
    checkpointer = None
    if db_is_sqlite() and database.database != ":memory:":
        from engine.store.checkpoint import Checkpointer

        checkpointer = Checkpointer(database.database).start()
    deliverer = None
    if split is None:
        from engine.events.delivery import Deliverer

        deliverer = Deliverer(account_ids=account_ids, allow_private=webhook_allow_private,
                              **({"concurrency": webhook_concurrency} if webhook_concurrency else {})).start()

    settle_heap()
    stopped = gevent.event.Event()

    def stop(signum: int) -> None:
        log.info("signal %d: shutting down", signum)
        stopped.set()

    gevent.signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, stop, signal.SIGINT)
    stopped.wait()
    if split is not None:
        split.stop_workers()  # first: their requests in flight may still need the engine
    heartbeat.stop()
    if deliverer is not None:
        deliverer.stop()
    if checkins is not None:
        checkins.stop()
    if engine is not None:
        engine.stop()
    if remote is not None:
        remote.stop()
    if split is not None:
        split.stop()
    else:
        server.stop(timeout=5)
    if checkpointer is not None:
        checkpointer.stop()
    database.close_all() if hasattr(database, "close_all") else None
    log.info("stopped")
    return 0


def settle_heap() -> None:
    """Move what start-up made into the garbage collector's permanent generation (`gc.freeze`).

    A full collection walks every object the process holds, and runs on the event loop, in the middle of
    whatever it was doing: with Flask, peewee, the models and the app loaded that is ~100,000 objects and
    17-33 ms (seen during call storms, each a stall of every request in flight). What start-up made lives
    as long as the process, so it need not be walked again; a collection first, so that no garbage is
    kept for good.
    """
    gc.collect()
    gc.freeze()


def db_is_sqlite() -> bool:
    from engine.store import db

    return db.is_sqlite()


def _prepare(settings: dict[str, Any], *, init_schema: bool) -> int | tuple[Any, list[int] | None, dict[str, Any]]:
    """Logging, secrets, the database and the folders, as the engine process and every worker set them up
    alike; the app's config. An exit code when the settings cannot be used."""
    from engine.store import db, schema

    try:
        logs.setup(settings["log_format"], settings["log_level"])
    except ValueError as exc:  # from the environment: argparse checks only the command line
        print(f"switchdesk: {exc}", file=sys.stderr)
        return 2
    from engine import priority

    priority.apply(bool(settings.get("realtime")))  # before any thread is started: those start at normal
    for secret in (settings.get("esl_password"), settings.get("xmlcurl_password")):
        logs.add_secret(secret)
    from engine.directory import security

    db_url = settings["db_url"]
    security.use_key_file(security.default_key_file(db_url))
    if init_schema and not security.has_secret_key():
        log.warning("no key to encrypt webhook secrets (%s, %s, or `switchdesk init` for SQLite): "
                    "setting a webhook_secret is refused until there is one",
                    security.SECRET_KEY_ENV, security.SECRET_KEY_FILE_ENV)
    from engine import boxes

    try:
        boxes.configure(settings.get("box_name"), settings.get("advertise_url"))
    except ValueError as exc:
        print(f"switchdesk: --hostname/--advertise-url: {exc}", file=sys.stderr)
        return 2
    # SQLite: the engine process checkpoints the write-ahead log off the loop (engine.store.checkpoint)
    database = db.bind(db_url, shared=bool(settings.get("workers")), background_checkpoints=True)
    with database.connection_context():
        if init_schema:
            schema.init_schema(database)
        try:
            account_ids = resolve_domains(settings.get("domains"))
        except ValueError as exc:
            print(f"switchdesk: --domains: {exc}", file=sys.stderr)
            return 2
    recordings = settings.get("recordings")
    try:
        _configure_recordings(db_url, tuple(recordings) if recordings is not None else None)
    except (OSError, ValueError) as exc:
        print(f"switchdesk: --recordings-dir: {exc}", file=sys.stderr)
        return 2
    max_body = settings.get("max_body")
    config: dict[str, Any] = {"MAX_CONTENT_LENGTH": max_body} if max_body else {}
    from engine.media import library as media_library

    media_library.configure(settings.get("media_dir") or default_media_dir(db_url),
                            max_bytes=settings.get("media_max_bytes"), max_seconds=settings.get("media_max_seconds"))
    config["WEBHOOK_ALLOW_PRIVATE"] = settings["webhook_allow_private"]
    config["METRICS_PUBLIC"] = settings["metrics_public"]
    config["ACCOUNT_IDS"] = account_ids  # this box's accounts (--domains), None for all
    if settings.get("xmlcurl_password"):
        config["XMLCURL_PASSWORD"] = settings["xmlcurl_password"]
    outbound = settings.get("outbound")
    if settings.get("engine") and outbound is not None:  # where the served dialplan sends ***<code> calls
        config["OUTBOUND_SOCKET"] = ("127.0.0.1" if outbound[0] in ("", "0.0.0.0", "::") else outbound[0],
                                     outbound[1])
    return database, account_ids, config
