"""Shared fixtures: a fresh database and app per test, an account with an admin key."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SWITCHDESK_SECRET_KEY", "test-secret-key")


def _worker_database() -> None:
    """Parallel workers (pytest-xdist) on PostgreSQL: each on a database of its own, created on first use,
    named after the one given (`<name>_gw0`, ...): every test empties the tables, and NOTIFY is per database.
    Set before any test module reads SWITCHDESK_TEST_DB; subprocesses (serve, the CLI) inherit it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("SWITCHDESK_TEST_DB", "")
    if not worker or not url.startswith("postgres") or os.environ.get("SWITCHDESK_TEST_DB_WORKER") == worker:
        return
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{worker}"
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["SWITCHDESK_TEST_DB"] = urlunsplit(parts._replace(path="/" + name))
    os.environ["SWITCHDESK_TEST_DB_WORKER"] = worker


_worker_database()

from api import create_app  # noqa: E402
from engine.directory import accounts  # noqa: E402  # noqa: E402
from engine.store import db, schema  # noqa: E402

_PG_TABLES: set[str] = set()  # the tables the last full PostgreSQL reset of this session created


def _reset_postgres(database) -> None:
    """Empty every table (ids restart at 1); rebuild the schema only when it is not the one this session built.

    DELETE and a sequence reset take ~2 ms; DROP and CREATE of every table took ~150 ms per test
    (TRUNCATE ~50 ms), which doubled the PostgreSQL run of the suite.
    """
    import peewee

    from engine.store.models import ALL_MODELS

    tables = {model._meta.table_name for model in ALL_MODELS}
    if tables == _PG_TABLES and set(database.get_tables()) >= tables | {"schema_migration"}:
        try:
            with database.atomic():
                for model in reversed(ALL_MODELS):  # children before parents
                    database.execute_sql(f'DELETE FROM "{model._meta.table_name}"')
        except peewee.IntegrityError:
            database.execute_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in sorted(tables)) + " CASCADE")
        database.execute_sql("SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname = current_schema()")
        return
    database.drop_tables(ALL_MODELS, cascade=True)
    database.execute_sql("DROP TABLE IF EXISTS schema_migration")
    schema.init_schema(database)
    _PG_TABLES.clear()
    _PG_TABLES.update(tables)


def bind_test_database(tmp_dir: Path):
    """SWITCHDESK_TEST_DB emptied, or a fresh SQLite file in `tmp_dir`; bound and connected."""
    url = os.environ.get("SWITCHDESK_TEST_DB") or f"sqlite:///{tmp_dir / 'switchdesk.db'}"
    database = db.bind(url)
    database.connect(reuse_if_open=True)
    if url.startswith("postgres"):
        _reset_postgres(database)
    else:
        schema.init_schema(database)
    return database


@pytest.fixture
def database(tmp_path: Path) -> Iterator:
    database = bind_test_database(tmp_path)
    yield database
    if not database.is_closed():
        database.close()
    if hasattr(database, "close_all"):
        database.close_all()


@pytest.fixture
def switch(database):
    """The FreeSWITCH emulator on loopback, its mod_callcenter loading queues from the test database."""
    from tests.fakeswitch.callcenter import CallCenter
    from tests.fakeswitch.server import FakeSwitch
    from tests.support import provider

    fs = FakeSwitch(password="ClueCon").start()
    fs.callcenter = CallCenter(provider)
    yield fs
    fs.stop()


@pytest.fixture
def app(database):
    app = create_app({"TESTING": True})
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Tenant:
    account_id: int
    admin_id: int
    key: str
    password: str
    domain: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(name: str, domain: str, admin: str) -> Tenant:
    new = accounts.create_account(name, domain, admin)
    return Tenant(new.account.id, new.admin.id, new.api_key, new.password, domain)


@pytest.fixture
def tenant(database) -> Tenant:
    return make_tenant("Acme", "acme.test", "admin")


@pytest.fixture
def other_tenant(database) -> Tenant:
    return make_tenant("Globex", "globex.test", "globexadmin")


class Api:
    """A thin helper over the test client that authenticates with a tenant's key."""

    def __init__(self, client, tenant: Tenant):
        self.client = client
        self.tenant = tenant

    def __call__(self, method: str, url: str, **kwargs):
        headers = kwargs.pop("headers", {})
        headers.update(self.tenant.auth())
        return self.client.open(url, method=method, headers=headers, **kwargs)

    def get(self, url, **kw):
        return self("GET", url, **kw)

    def post(self, url, **kw):
        return self("POST", url, **kw)

    def put(self, url, **kw):
        return self("PUT", url, **kw)

    def delete(self, url, **kw):
        return self("DELETE", url, **kw)


@pytest.fixture
def api(client, tenant) -> Api:
    return Api(client, tenant)


@pytest.fixture
def other_api(client, other_tenant) -> Api:
    return Api(client, other_tenant)


@pytest.fixture
def heard():
    """As if this process heard other boxes' change notices (engine.store.pgnotify LISTENing): what the
    in-memory views and FreeSWITCH's directory cache need on PostgreSQL before they keep anything."""
    from engine.store import changes

    marker = object()
    changes.hearing(marker, True)
    yield
    changes.hearing(marker, False)

