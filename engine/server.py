"""`switchdesk serve`: one gevent process for the API (and the engine's greenlets)."""
from __future__ import annotations

import logging
import signal
import socket
import sys

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger("switchdesk")


class NoDelayHandler(WSGIHandler):
    """pywsgi writes headers and body separately: without TCP_NODELAY a keep-alive
    client waits ~40 ms on Nagle's algorithm for every response."""

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a unix socket in tests)
        super().__init__(sock, address, server, rfile)


def make_server(app, host: str, port: int) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=NoDelayHandler, log=None, error_log=log)


def serve(db_url: str, host: str, port: int, *, max_body: int | None = None,
          webhook_allow_private: bool = False, esl: tuple[str, int] | None = None, esl_password: str = "",
          xmlcurl_password: str | None = None) -> int:
    """Serve the API and, unless `esl` is None, run the engine against FreeSWITCH in the same process."""
    from api import create_app
    from engine import db, schema

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    database = db.bind(db_url)
    with database.connection_context():
        schema.init_schema(database)
    config = {"MAX_CONTENT_LENGTH": max_body} if max_body else {}
    config["WEBHOOK_ALLOW_PRIVATE"] = webhook_allow_private
    if xmlcurl_password:
        config["XMLCURL_PASSWORD"] = xmlcurl_password
    engine = None
    if esl is not None:
        from engine.engine import Engine

        engine = Engine(esl[0], esl[1], esl_password)
        config["ENGINE"] = engine
    app = create_app(config)
    server = make_server(app, host, port)
    try:
        server.start()
    except OSError as exc:
        print(f"switchdesk: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    log.info("serving the API on http://%s:%d", host, server.server_port)
    if engine is not None:
        engine.start()
        log.info("engine: FreeSWITCH event socket at %s:%d", *esl)
    stopped = gevent.event.Event()

    def stop(signum: int) -> None:
        log.info("signal %d: shutting down", signum)
        stopped.set()

    gevent.signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, stop, signal.SIGINT)
    stopped.wait()
    if engine is not None:
        engine.stop()
    server.stop(timeout=5)
    database.close_all() if hasattr(database, "close_all") else None
    log.info("stopped")
    return 0
