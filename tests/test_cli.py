"""The `switchdesk` command line, the schema upgrade, and a real server on a free port."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.directory import accounts
from engine.store import db, schema
from engine.store.models import ALL_MODELS, ApiKey, User

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})}, timeout=60,
    )


def test_init_creates_the_secret_key_file_for_the_service_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'sd.db'}"
    env = {"SWITCHDESK_SECRET_KEY": ""}
    first = run_cli("init", "--db", url, "--domain", "pbx.example.com", env=env)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "switchdesk.key"
    assert f"created {key_file}" in first.stderr and key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 40 and key not in first.stdout + first.stderr
    again = run_cli("init", "--db", url, env=env)
    assert again.returncode == 0 and "created" not in again.stderr and key_file.read_text() == key


def test_init_creates_admin_once_and_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'sd.db'}"
    first = run_cli("init", "--db", url, "--domain", "Pbx.Example.com")
    assert first.returncode == 0, first.stderr
    assert "username: admin" in first.stdout
    password = next(line.split()[-1] for line in first.stdout.splitlines() if "password:" in line)
    key = next(line.split()[-1] for line in first.stdout.splitlines() if "api key:" in line)
    assert key.startswith("sdk_") and len(password) >= 8
    again = run_cli("init", "--db", url)
    assert again.returncode == 0
    assert "password" not in again.stdout and key not in again.stdout
    database = db.bind(url)
    with database.connection_context():
        assert User.select().count() == 1
        assert User.get().account.domain == "pbx.example.com"


def test_account_create_and_apikey_print_key_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'sd.db'}"
    assert run_cli("init", "--db", url, "--domain", "one.test").returncode == 0
    made = run_cli("account", "create", "Second", "--domain", "two.test", "--admin-username", "boss", "--db", url)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("sdk_") and len(made.stdout.strip().splitlines()) == 1
    dup = run_cli("account", "create", "Third", "--domain", "two.test", "--admin-username", "boss2", "--db", url)
    assert dup.returncode != 0 and "already used" in dup.stderr
    key = run_cli("apikey", "boss", "--db", url, env={"SWITCHDESK_DB": url})
    assert key.returncode == 0 and key.stdout.strip().startswith("sdk_")
    assert key.stdout.strip() != made.stdout.strip()
    missing = run_cli("apikey", "ghost", "--db", url)
    assert missing.returncode != 0 and "no user ghost" in missing.stderr


def test_upgrade_from_older_schema_keeps_data(tmp_path):
    """A database of the first release (before migration 0002) is upgraded by init."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = db.bind(url)
    with database.connection_context():
        database.create_tables(ALL_MODELS)
        run = schema.runner(database)
        run.fake("0001_initial")
        migrator = run.migrator
        migrator.migrate(migrator.drop_column("user", "api_ip_ranges"),
                         migrator.drop_column("user", "listen_protected"))  # added by 0007
        database.execute_sql('ALTER TABLE "account" DROP COLUMN "event_push_batch"')  # added by 0008
        database.execute_sql(
            "INSERT INTO account (name, domain, country, timezone, session_ttl, max_snooze, wrap_up_time, "
            "no_answer_delay_time, reject_delay_time, busy_delay_time, max_no_answer, ts) "
            "VALUES ('Old', 'old.test', 'US', 'UTC', 3600, 3, 10, 10, 10, 10, 3, 0)")
        database.execute_sql(
            "INSERT INTO user (account_id, active, is_admin, is_agent, in_reports, name, username, username_key, "
            "email, email_key, password_hash, timezone, sites, groups, intercept_groups, intercept_other_groups, "
            "geo_limit, follow_me, ts, permissions, override_device, device_overrides) VALUES "
            "(1, 1, 1, 0, 1, 'Old Admin', 'olda', 'olda', 'o@old.test', 'o@old.test', 'x', 'UTC', '[]', '[]', "
            "'[]', '[]', '', 0, 0, '{}', 0, '{}')")
        # rows referring to the user and the account ON DELETE CASCADE: a migration that rebuilt `user` or
        # `account` with foreign keys enforced deleted them
        database.execute_sql("INSERT INTO api_key (user_id, prefix, digest, ts) VALUES (1, 'sdk_old', 'd', 0)")
        assert "api_ip_ranges" not in {c.name for c in database.get_columns("user")}
    database.close_all()
    result = run_cli("init", "--db", url)
    assert result.returncode == 0, result.stderr
    database = db.bind(url)
    with database.connection_context():
        assert "api_ip_ranges" in {c.name for c in database.get_columns("user")}
        user = User.get()
        assert user.username == "olda" and user.api_ip_ranges == [] and user.listen_protected is False
        assert user.account.event_push_batch == 1
        assert [k.prefix for k in ApiKey.select()] == ["sdk_old"]  # kept through every migration
        assert {m.name for m in schema.runner(database).status() if m.applied} >= {
            "0001_initial", "0002_user_api_ip_ranges", "0007_user_listen_protected",
            "0008_account_event_push_batch"}


def test_a_migration_that_rebuilds_a_table_keeps_the_rows_referring_to_it(tmp_path, monkeypatch):
    """The migrator rebuilds a SQLite table to add a NOT NULL column (copy, DROP TABLE, rename): init runs
    migrations with foreign keys off, so dropping `user` cascades to none of its API keys."""
    import shutil

    folder = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "0099_rebuild_user.py").write_text(
        "from peewee import TextField\n\n\ndef up(migrator, db):\n"
        "    migrator.migrate(migrator.add_column('user', 'rebuilt', TextField(default='')))\n")
    url = f"sqlite:///{tmp_path / 'sd.db'}"
    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        made = accounts.create_account("Rebuilt", "rebuilt.test", "rebuilt-admin")  # with its first API key
        keys = [k.prefix for k in ApiKey.select()]
        monkeypatch.setattr(schema, "MIGRATIONS_DIR", str(folder))
        schema.init_schema(database)
        assert "rebuilt" in {c.name for c in database.get_columns("user")}
        assert len(keys) == 1 and [k.prefix for k in ApiKey.select()] == keys
        assert User.get_by_id(made.admin.id).username == "rebuilt-admin"
        assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1  # enforced again after
    database.close_all()


def _database_before_0004(database) -> None:
    """The schema as migration 0003 left it, with leads: no `phone_key`, two leads of one number in a list."""
    database.create_tables(ALL_MODELS)
    run = schema.runner(database)
    run.fake("0003_queue_colour_text")
    database.execute_sql('DROP INDEX "lead_list_key"')
    run.migrator.migrate(run.migrator.drop_column("lead", "phone_key"))
    account = database.execute_sql("INSERT INTO account (name, domain, country, timezone, session_ttl, max_snooze, "
                                   "wrap_up_time, no_answer_delay_time, reject_delay_time, busy_delay_time, "
                                   "max_no_answer, ts) VALUES ('Old', 'old.test', 'US', 'UTC', 3600, 3, 10, 10, 10, "
                                   "10, 3, 0) RETURNING id").fetchone()[0]
    plist = database.execute_sql("INSERT INTO phone_list (account_id, name, name_key, type, list_rows, ts) "
                                 f"VALUES ({account}, 'DNC', 'dnc', 'dnc', 7, 0) RETURNING id").fetchone()[0]
    for phone in ("2125550100", "+12125550100", "+442079460958", "5551000", "911", "12125550199", "+972501234567"):
        database.execute_sql("INSERT INTO lead (phone_list_id, phone, priority, ext_api_vars) "
                             f"VALUES ({plist}, '{phone}', 0, '{{}}')")


def _check_0004(database) -> None:
    from engine.leads import phonelists
    from engine.store.models import Lead

    assert "phone_key" in {c.name for c in database.get_columns("lead")}
    assert "lead_list_key" in {i.name for i in database.get_indexes("lead")}
    keys = {lead.phone: lead.phone_key for lead in Lead.select()}
    assert keys == {"2125550100": "+12125550100", "+12125550100": "+12125550100", "+442079460958": "+442079460958",
                    "5551000": "5551000", "911": "911", "12125550199": "+12125550199",
                    "+972501234567": "+972501234567"}
    # both leads of one number are kept, and a lookup in any form finds both
    found = phonelists.lookup(Lead.get().phone_list.account_id, "(212) 555-0100", "dnc")
    assert [x["lead"]["phone"] for x in found] == ["2125550100", "+12125550100"]


def test_upgrade_to_0004_keys_every_lead_and_keeps_leads_of_one_number(tmp_path, monkeypatch):
    """`switchdesk init` on a database before migration 0004 fills `phone_key` for every lead (in chunks,
    the account's country as the default region) and drops none."""
    import importlib

    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = db.bind(url)
    with database.connection_context():
        _database_before_0004(database)
    database.close_all()
    result = run_cli("init", "--db", url)
    assert result.returncode == 0, result.stderr
    assert "1 number(s) are held by more than one lead" in result.stderr
    database = db.bind(url)
    with database.connection_context():
        _check_0004(database)
        assert "0004_lead_phone_key" in {m.name for m in schema.runner(database).status() if m.applied}
    database.close_all()
    # the same on the test database (PostgreSQL when SWITCHDESK_TEST_DB names one), with chunks of 2 rows
    from tests.conftest import bind_test_database

    migration = importlib.import_module("engine.store.migrations.0004_lead_phone_key")
    monkeypatch.setattr(migration, "CHUNK", 2)
    database = bind_test_database(tmp_path)
    cascade = {"cascade": True} if url_is_postgres(database) else {}
    try:
        database.drop_tables(ALL_MODELS, safe=True, **cascade)
        database.execute_sql("DROP TABLE IF EXISTS schema_migration")
        _database_before_0004(database)
        with database.atomic():  # as init_schema runs it
            assert "0004_lead_phone_key" in schema.runner(database).up()
        _check_0004(database)
    finally:  # the next test's fixture builds its schema again
        database.drop_tables(ALL_MODELS, safe=True, **cascade)
        database.execute_sql("DROP TABLE IF EXISTS schema_migration")
        database.close_all()


def url_is_postgres(database) -> bool:
    import peewee

    return isinstance(database, peewee.PostgresqlDatabase)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_subprocess_answers_http_and_stops_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'sd.db'}"
    init = run_cli("init", "--db", url, "--domain", "serve.test")
    key = next(line.split()[-1] for line in init.stdout.splitlines() if "api key:" in line)
    port, outbound_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--db", url, "--listen", f"127.0.0.1:{port}",
         "--outbound-listen", f"127.0.0.1:{outbound_port}", "--hostname", "serve-box",
         "--advertise-url", "http://10.9.9.9:8080/"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    assert json.load(r) == {"success": True}
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/user?api_key={key}", timeout=5) as r:
            body = json.load(r)
        assert body["success"] is True and body["data"][0]["username"] == "admin"
        socket.create_connection(("127.0.0.1", outbound_port), timeout=5).close()  # check-in calls are taken
        with sqlite3.connect(tmp_path / "sd.db") as conn:  # registered in the box registry at start
            row = conn.execute("SELECT hostname, url, heartbeat_at FROM box").fetchall()
        assert [r[:2] for r in row] == [("serve-box", "http://10.9.9.9:8080")] and row[0][2] > time.time() - 60
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/user", timeout=5)
        assert err.value.code == 401 and json.load(err.value) == {"success": False, "msg": "Unauthorized"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, errs = proc.communicate(timeout=15)
    assert proc.returncode == 0, errs
    assert key not in errs and key not in out  # no secrets in logs


def _cli_with_stdin(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ), timeout=60)


def test_user_recovery_commands(tmp_path):
    from engine.directory import users
    from engine.store.models import ApiKey, UserSession

    url = f"sqlite:///{tmp_path / 'sd.db'}"
    init = run_cli("init", "--db", url, "--domain", "one.test")
    assert init.returncode == 0, init.stderr
    password = next(line.split()[-1] for line in init.stdout.splitlines() if "password:" in line)
    assert run_cli("account", "create", "Two", "--domain", "two.test", "--admin-username", "boss",
                   "--db", url).returncode == 0
    database = db.bind(url)
    with database.connection_context():
        users.login("admin", password, "127.0.0.1")
        clerk = User.create(account=1, name="Clerk", username="clerk", username_key="clerk", email="c@one.test",
                            email_key="c@one.test", password_hash="x")
    database.close_all()
    where = ("--db", url, "--account-domain", "one.test")

    weak = _cli_with_stdin("user", "set-password", *where, "admin", stdin="weak\n")
    assert weak.returncode != 0 and "password: must have at least 8 characters" in weak.stderr
    in_argv = run_cli("user", "set-password", *where, "admin", "N3wPassword")  # never from the command line
    assert in_argv.returncode != 0 and "unrecognized arguments" in in_argv.stderr
    elsewhere = _cli_with_stdin("user", "set-password", "--db", url, "--account-domain", "two.test", "admin",
                                stdin="N3wPassword\n")
    assert elsewhere.returncode != 0 and "no user admin in the account of domain two.test" in elsewhere.stderr
    changed = _cli_with_stdin("user", "set-password", *where, "ADMIN", stdin="N3wPassword\n")
    assert changed.returncode == 0, changed.stderr
    assert "N3wPassword" not in changed.stdout + changed.stderr
    made = run_cli("user", "make-admin", *where, "clerk")
    assert made.returncode == 0, made.stderr
    database = db.bind(url)
    with database.connection_context():
        assert UserSession.select().count() == 0  # the new password ended the admin's session
        assert users.login("admin", "N3wPassword", "127.0.0.1")[0].username == "admin"
        assert User.get_by_id(clerk.id).is_admin is True
        admin_keys = ApiKey.select().where(ApiKey.user == User.get(User.username == "admin").id).count()
        assert admin_keys == 1  # a password change keeps the API keys
    database.close_all()
    revoked = run_cli("user", "revoke", *where, "admin")
    assert revoked.returncode == 0, revoked.stderr
    assert "1 session(s) ended, 1 API key(s) deleted" in revoked.stdout
    database = db.bind(url)
    with database.connection_context():
        assert UserSession.select().count() == 0
        assert ApiKey.select().join(User).where(User.username == "admin").count() == 0
        assert ApiKey.select().join(User).where(User.username == "boss").count() == 1  # another account's: kept
    database.close_all()


def test_account_create_waits_for_a_running_servers_write(tmp_path):
    """Beside a busy `serve`, a deferred transaction that read before serve's write committed could not
    write after it: "database is locked" at once. The command line's transactions begin IMMEDIATE."""
    import sqlite3
    import threading

    path = tmp_path / "sd.db"
    url = f"sqlite:///{path}"
    assert run_cli("init", "--db", url, "--domain", "first.example").returncode == 0
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE account SET name = 'busy' WHERE id = 1")

    def commit_later() -> None:
        time.sleep(1.5)
        writer.execute("COMMIT")

    threading.Thread(target=commit_later).start()
    result = run_cli("account", "create", "Second", "--domain", "second.example", "--admin-username", "boss",
                     "--db", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("sdk_")
