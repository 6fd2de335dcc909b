"""`GET /metrics`: Prometheus text format, for loopback clients unless `--metrics-public`.

Request counts and latencies are recorded as requests finish, labelled by the
URL rule (`/api/user/<int:user_id>`), never the raw path, so the number of
series stays fixed. Everything else is read when Prometheus scrapes: the
engine's own state (ESL, last sync) from memory, the database-backed gauges
(outbox backlog and age, agents by status) with a few cheap aggregate
queries. Calls waiting per queue come from mod_callcenter's own
`members-count` events, cached as they arrive; the scrape never waits on
FreeSWITCH.

Metrics expose no account names and no secrets; they are kept off the
network by default all the same, since they tell an outsider how busy the
call center is.
"""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from peewee import fn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.envelope import APIError
from api.spec import endpoint
from engine.calls import recordings
from engine.store.db import db
from engine.store.models import AgentState, OutboxEvent

EXTENSION = "switchdesk_metrics"

bp = Blueprint("metrics", __name__)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class QueueWaiting:
    """Calls waiting per mod_callcenter queue, from `callcenter::info` `members-count` events.

    Cleared on every reconnect of the event connection: counts from before an outage are stale,
    and mod_callcenter sends a fresh count with the next change in each queue.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.events: dict[str, int] = {}

    def on_event(self, event: Any) -> None:
        key = getattr(event, "key", None) or "unknown"
        self.events[key] = self.events.get(key, 0) + 1
        if key == "callcenter::info" and event.get("CC-Action") == "members-count":
            queue, count = event.get("CC-Queue"), event.get("CC-Count")
            if isinstance(queue, str) and isinstance(count, str) and count.isdigit():
                self.counts[queue] = int(count)

    def reset(self, _client: Any = None) -> None:
        self.counts.clear()


class SwitchdeskCollector(Collector):
    """The gauges read at scrape time."""

    def __init__(self, app: Flask, waiting: QueueWaiting) -> None:
        self.app = app
        self.waiting = waiting

    def collect(self) -> Iterator[Any]:
        engine = self.app.config.get("ENGINE")
        account_ids = self.app.config.get("ACCOUNT_IDS", getattr(engine, "account_ids", None))
        yield from self._engine(engine)
        yield from self._database(account_ids)

    def _engine(self, engine: Any) -> Iterator[Any]:
        running = GaugeMetricFamily("switchdesk_engine_running", "1 when this process runs the FreeSWITCH engine")
        running.add_metric([], 1 if engine is not None else 0)
        yield running
        connected = GaugeMetricFamily("switchdesk_esl_connected",
                                      "1 while both event socket connections (events, commands) are up",
                                      labels=["connection"])
        if engine is None:
            return
        events, commands = engine.events.status(), engine.commands.status()
        connected.add_metric(["events"], 1 if events.connected else 0)
        connected.add_metric(["commands"], 1 if commands.connected else 0)
        yield connected
        reconnects = CounterMetricFamily("switchdesk_esl_reconnects", "Reconnects of each ESL connection",
                                         labels=["connection"])
        reconnects.add_metric(["events"], events.reconnects)
        reconnects.add_metric(["commands"], commands.reconnects)
        yield reconnects
        intake = CounterMetricFamily("switchdesk_esl_events", "ESL events received, by event name",
                                     labels=["event"])
        for name, count in sorted(self.waiting.events.items()):
            intake.add_metric([name], count)
        yield intake
        if events.event_lag is not None:
            yield GaugeMetricFamily("switchdesk_esl_event_lag_seconds",
                                    "Now minus the FreeSWITCH timestamp of the last event", value=events.event_lag)
        waiting = GaugeMetricFamily("switchdesk_queue_calls_waiting",
                                    "Callers waiting in each mod_callcenter queue (its members-count events)",
                                    labels=["queue"])
        for queue, count in sorted(self.waiting.counts.items()):
            waiting.add_metric([queue], count)
        yield waiting
        last = getattr(engine, "last_sync", None)
        if last is not None:
            yield GaugeMetricFamily("switchdesk_sync_last_duration_seconds",
                                    "Duration of the last full mod_callcenter sync", value=last.seconds)
            yield GaugeMetricFamily("switchdesk_sync_last_commands", "Commands sent by the last full sync",
                                    value=last.commands)
            yield GaugeMetricFamily("switchdesk_sync_last_errors", "Commands of the last full sync that failed",
                                    value=len(last.errors))
        if getattr(engine, "last_sync_at", None):
            yield GaugeMetricFamily("switchdesk_sync_last_timestamp_seconds", "When the last full sync ended",
                                    value=engine.last_sync_at)

    def _database(self, account_ids: list[int] | None) -> Iterator[Any]:
        """Two aggregate queries on indexed columns; limited to this box's accounts under --domains."""
        with db.connection_context():
            pending = OutboxEvent.select(fn.COUNT(1), fn.MIN(OutboxEvent.ts)).where(
                OutboxEvent.status == "pending")
            states = AgentState.select(AgentState.fs_status, fn.COUNT(1)).group_by(AgentState.fs_status)
            if account_ids is not None:
                pending = pending.where(OutboxEvent.account.in_(account_ids))
                states = states.where(AgentState.account.in_(account_ids))
            backlog, oldest = pending.tuples().get()
            by_status = list(states.tuples())
            recorded = recordings.usage(account_ids)
        yield GaugeMetricFamily("switchdesk_outbox_backlog", "Push events not yet delivered", value=backlog or 0)
        yield GaugeMetricFamily("switchdesk_outbox_oldest_age_seconds",
                                "Age of the oldest undelivered push event (0 when none)",
                                value=max(0.0, time.time() - oldest) if oldest else 0.0)
        yield GaugeMetricFamily("switchdesk_recordings_bytes", "Bytes held by complete recordings",
                                value=recorded["bytes"])
        yield GaugeMetricFamily("switchdesk_recordings", "Complete recordings", value=recorded["count"])
        yield GaugeMetricFamily("switchdesk_recordings_disk_free_bytes",
                                "Free bytes on the recordings folder's file system (-1: unknown)",
                                value=recorded["free"])
        yield CounterMetricFamily("switchdesk_recordings_refused", "Recordings refused for want of disk space",
                                  value=recorded["refused"])
        agents = GaugeMetricFamily("switchdesk_agents", "Agents by their mod_callcenter status", labels=["status"])
        for status, count in by_status:
            agents.add_metric([status or "unknown"], count)
        yield agents


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return address is not None and address.startswith("unix:")


XML_CURL_RULE = "/freeswitch/<section>"
XML_CURL_SECTIONS = frozenset({"directory", "dialplan", "configuration"})


def install(app: Flask) -> None:
    """Request metrics, the scrape-time collector and the /metrics route, on a registry of this app."""
    disable_created_metrics()  # the *_created series double the output and say nothing here
    registry = CollectorRegistry()  # no auto_describe: registering must not run the collector's queries
    waiting = QueueWaiting()
    registry.register(SwitchdeskCollector(app, waiting))
    engine = app.config.get("ENGINE")
    if engine is not None:
        engine.events.on_event("*", waiting.on_event)
        engine.events.on_connect(waiting.reset)
    app.extensions[EXTENSION] = registry
    shared = app.config.get("METRICS_MULTIPROC_DIR")
    if shared:
        # serve --workers: this is the engine process, serving only what its workers relay (they counted
        # those requests already). The workers' request series are summed from their files.
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=shared)
        app.register_blueprint(bp)
        return
    requests = Counter("switchdesk_http_requests", "HTTP requests by route and status",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("switchdesk_http_request_duration_seconds", "Time to the response's headers, by route",
                        ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    # the labelled children, looked up once: `labels()` takes a lock and builds its key on every call
    series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if rule == XML_CURL_RULE:  # which of FreeSWITCH's lookups: a known section, never the client's text
            section = (request.view_args or {}).get("section")
            rule = f"/freeswitch/{section if section in XML_CURL_SECTIONS else 'other'}"
        method = request.method if request.method in METHODS else "other"  # clients choose methods
        key = (method, rule, response.status_code)
        children = series.get(key)
        if children is None:
            children = series[key] = (requests.labels(method, rule, str(key[2])), latency.labels(method, rule))
        children[0].inc()
        started = g.get("metrics_started")
        if started is not None:
            children[1].observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


@endpoint(bp, "/metrics", ["GET"], summary="Prometheus metrics in the text format", engine=True, tag="system",
          auth=False, response={"type": "string", "description": "Prometheus text exposition format 0.0.4"})
def metrics() -> Response:
    """Served to loopback clients only (403 otherwise) unless the server runs with `--metrics-public`."""
    if not current_app.config.get("METRICS_PUBLIC") and not _loopback(request.remote_addr):
        raise APIError(403, "metrics are served to loopback clients only (see --metrics-public)")
    return Response(generate_latest(current_app.extensions[EXTENSION]), mimetype=CONTENT_TYPE_LATEST)
