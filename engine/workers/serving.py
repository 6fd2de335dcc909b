"""Both sides of `serve --workers N` (see engine.workers): the engine process's and a worker's."""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
from typing import Any

import gevent
import gevent.event

from engine.store import changes
from engine.workers import hub, proxy
from engine.workers.supervisor import Workers, WorkerSpec, die_with_parent

log = logging.getLogger("switchdesk.workers")

BACKLOG = 1024
READY_TIMEOUT = 60.0


class EngineSide:
    """The engine process: opens the public socket for its workers, serves their engine-bound requests on a
    private one, relays between them (engine.workers.hub) and keeps them running."""

    def __init__(self, settings: dict[str, Any], config: dict[str, Any], host: str, port: int, count: int,
                 *, engine: Any = None) -> None:
        from gevent.pywsgi import WSGIServer

        from engine.server import NoDelayHandler

        # 0700: only this user reaches the sockets; systemd's RuntimeDirectory= if the unit has one
        self.folder = tempfile.mkdtemp(prefix="switchdesk-", dir=os.environ.get("RUNTIME_DIRECTORY") or None)
        try:
            self.listener = socket.create_server((host, port), backlog=BACKLOG)
        except OSError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.listener.set_inheritable(True)
        self.port = self.listener.getsockname()[1]
        self.engine = engine
        self.token = secrets.token_urlsafe(32)
        metrics_dir = os.path.join(self.folder, "metrics")
        os.mkdir(metrics_dir, 0o700)
        changes.others_write(True)
        self.hub = hub.Hub(os.path.join(self.folder, "hub.sock"), relay_changes=True,
                           status=self._status, on_lost=self._lost).start()
        from api import create_app

        app = create_app({**config, "METRICS_MULTIPROC_DIR": metrics_dir, "ENGINE_PROCESS": True})
        private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(self.folder, "engine.sock")
        private.bind(path)
        os.chmod(path, 0o600)
        private.listen(BACKLOG)
        # no access log: the worker that relayed a request logs it
        self.internal = WSGIServer(private, proxy.Gate(app, self.token), handler_class=NoDelayHandler, log=None,
                                   error_log=logging.getLogger("switchdesk"))
        log.info("workers: their sockets are in %s", self.folder)
        self.internal.start()
        self.workers = Workers(count, WorkerSpec(index=0, fd=self.listener.fileno(), hub=self.hub.path, engine=path,
                                                 token=self.token, metrics_dir=metrics_dir, parent=os.getpid(),
                                                 origin=changes.ORIGIN, settings=settings))

    def _status(self) -> dict[str, Any] | None:
        return self.engine.status() if self.engine is not None else None

    def _lost(self) -> None:
        if self.engine is not None:
            self.engine.request_sync()

    def start_workers(self) -> None:
        self.workers.start()

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> bool:
        """Until a worker accepts requests: FreeSWITCH fetches through them what the engine's first sync loads."""
        if self.hub.ready.wait(timeout):
            return True
        log.warning("no worker accepts requests after %.0f s; starting the engine all the same", timeout)
        return False

    def stop_workers(self) -> None:
        self.workers.stop()

    def stop(self) -> None:
        self.workers.stop()
        self.hub.stop()
        self.internal.stop(timeout=5)
        self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_worker(spec: WorkerSpec) -> int:
    """A worker: the API and xml_curl on the inherited socket until SIGTERM; or, in role `deliver`, the
    webhook sender, woken by the events every process records."""
    die_with_parent(spec.parent)
    if spec.role == "deliver":
        return run_sender(spec)
    from engine.server import make_server, settle_heap
    from engine.store import db

    settings = spec.settings
    prepared = _set_up(spec)
    if isinstance(prepared, int):
        return prepared
    database, _account_ids, config = prepared
    line = hub.HubClient(spec.hub, relay_changes=True).start()
    has_engine = bool(settings.get("engine"))

    def engine_status() -> dict[str, Any] | None:
        if not has_engine:
            return None
        if not line.connected.is_set() or line.status is None:
            return {"freeswitch": {"connected": False, "last_error": "the engine process is not reachable"}}
        return line.status

    config["ENGINE_PROXY"] = proxy.Target(spec.engine, spec.token)
    config["ENGINE_STATUS"] = engine_status
    from api import create_app

    app = create_app(config)
    app.before_request(proxy.relay_hook)
    remote = None
    if not db.is_sqlite():
        from engine.store import pgnotify

        remote = pgnotify.RemoteChanges.for_database(database).start()  # other processes' changes
    listener = socket.socket(fileno=spec.fd)
    server = make_server(app, listener)
    server.start()
    line.serving()
    log.info("worker %d serving (pid %d)", spec.index, os.getpid())
    settle_heap()
    _until_sigterm()
    server.close()  # accept no more; let the requests in flight end
    server.stop(timeout=5)
    line.stop()
    if remote is not None:
        remote.stop()
    database.close_all() if hasattr(database, "close_all") else None
    return 0


def run_sender(spec: WorkerSpec) -> int:
    """The webhook sender (engine.events.delivery) in a process of its own: the engine process's loop is left
    to FreeSWITCH's events. Every process's commits that record an event wake it over the hub."""
    from engine.events.delivery import Deliverer
    from engine.server import settle_heap

    os.close(spec.fd)  # serves no HTTP
    settings = spec.settings
    prepared = _set_up(spec)
    if isinstance(prepared, int):
        return prepared
    database, account_ids, _config = prepared
    line = hub.HubClient(spec.hub, relay_changes=False, announce=False, role="deliver").start()
    concurrency = settings.get("webhook_concurrency")
    # the same owner after a restart: the leases the last sender of this serve held are taken back at once
    # (it has exited: the supervisor starts no other before), instead of after they run out
    deliverer = Deliverer(account_ids=account_ids, allow_private=settings["webhook_allow_private"],
                          owner=f"serve-{spec.origin[:12]}",
                          **({"concurrency": concurrency} if concurrency else {})).start()
    log.info("webhook sender serving (pid %d)", os.getpid())
    settle_heap()
    _until_sigterm()
    deliverer.stop()  # finishes the requests in flight and records them
    line.stop()
    database.close_all() if hasattr(database, "close_all") else None
    return 0


def _set_up(spec: WorkerSpec) -> int | tuple[Any, Any, dict[str, Any]]:
    """As the engine process set itself up (engine.server._prepare), as one of several writing processes."""
    from engine.server import _prepare

    prepared = _prepare(spec.settings, init_schema=False)
    if isinstance(prepared, int):
        return prepared
    changes.others_write(True)
    # one origin for the whole serve: on PostgreSQL its processes ignore each other's NOTIFY, since they
    # hear each other over the hub first (and wait for it), and other boxes hear them all as one
    changes.ORIGIN = spec.origin
    return prepared


def _until_sigterm() -> None:
    stopped = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopped.set)
    # a terminal's ^C reaches the whole process group: the engine process decides, and sends SIGTERM
    gevent.signal_handler(signal.SIGINT, lambda: None)
    stopped.wait()
