"""The connection pool under more concurrent requests than connections: a request waits for a
connection to come back instead of failing (50 keep-alive clients on PostgreSQL's 32 got 500s), and
a request that needs no database holds no connection."""
from __future__ import annotations

import threading
import time

from engine.store import db as dbmod


def test_a_request_waits_for_a_pooled_connection_instead_of_failing(api, database, monkeypatch):
    monkeypatch.setattr(database, "_max_connections", 1)
    if not database.is_closed():
        database.close()  # the fixture's own connection goes back to the pool
    taken, give_back = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:  # another thread: its connection is its own
        database.connect()
        taken.set()
        give_back.wait(10)
        database.close()

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    assert taken.wait(5)
    threading.Timer(0.3, give_back.set).start()
    start = time.monotonic()
    r = api.get("/api/user")
    assert r.status_code == 200, r.get_json()
    assert 0.2 < time.monotonic() - start < 5  # it waited for the connection, then was served
    holder.join(5)


def test_health_takes_no_database_connection(client, database, monkeypatch):
    if not database.is_closed():
        database.close()
    connects = []
    real_connect = database.connect
    monkeypatch.setattr(database, "connect", lambda *a, **kw: connects.append(1) or real_connect(*a, **kw))
    assert client.get("/api/health").status_code == 200
    assert connects == [] and dbmod.POOL_WAIT > 0
