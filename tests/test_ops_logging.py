"""Logs: one line per event (text or JSON), and no secret in them, ever.

The full-flow test runs the real `switchdesk serve` (its own process, monkey
patched, DEBUG, each format) against the FreeSWITCH emulator, drives it over
HTTP with every kind of secret in every place a client may put it (query
string, form, JSON, Authorization header, cookie, the ESL password), then
greps everything the process wrote for each secret value.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gevent
import pytest

from engine import logs
from tests.fakeswitch.server import FakeSwitch

ROOT = Path(__file__).resolve().parent.parent


# -- the formatters and the redaction -------------------------------------------------------------

def emit_through(fmt: str, *records: tuple[int, str, tuple, dict]) -> list[str]:
    stream = io.StringIO()
    handler = logs.setup(fmt, "DEBUG", stream)
    try:
        logger = logging.getLogger("switchdesk.test")
        for level, msg, args, extra in records:
            logger.log(level, msg, *args, extra=extra)
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue().splitlines()


def test_text_is_one_line_per_event_with_time_level_logger():
    lines = emit_through("text", (logging.INFO, "hello %s", ("world",), {"call_id": "c1"}))
    assert len(lines) == 2  # the traceback is folded into its line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO switchdesk\.test hello world call_id='c1'",
                        lines[0])
    assert " ERROR switchdesk.test failed | Traceback" in lines[1] and "RuntimeError: boom" in lines[1]


def test_json_is_one_object_per_line_with_extras():
    lines = emit_through("json", (logging.WARNING, "queue %d full", (7,), {"queue_id": 7, "api_key": "x"}))
    first = json.loads(lines[0])
    assert first["level"] == "WARNING" and first["logger"] == "switchdesk.test" and first["msg"] == "queue 7 full"
    assert first["queue_id"] == 7 and first["api_key"] == logs.MASK
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "RuntimeError: boom" in json.loads(lines[1])["exc"]


@pytest.mark.parametrize("text,secret", [
    ("GET /api/user?limit=5&api_key=sdk_0a1b2c3d4e5f_QWERTYuiop0123456789asdfghjklZXCVBNM_-xyz12 HTTP/1.1",
     "QWERTYuiop0123456789asdfghjklZXCVBNM_-xyz12"),
    ("POST /api/user?name=x&password=Hunter22Pw&email=a%40b.c HTTP/1.1", "Hunter22Pw"),
    ("body sip_password=SipSecret77&name=desk", "SipSecret77"),
    ('{"name": "x", "webhook_secret": "a \\" quoted secret"}', "quoted secret"),
    ("Authorization: Bearer sdk_aa_bb", "sdk_aa_bb"),
    ("GET /api/user?PassWord=Hunter22Pw HTTP/1.1", "Hunter22Pw"),  # names in any case
    ("X-API-KEY: short-key-1", "short-key-1"),
    ("GET /x?api-key=short-key-2 HTTP/1.1", "short-key-2"),
    ("note pa\u017fsword=Hunter22Pw", "Hunter22Pw"),  # re.IGNORECASE folds U+017F to "s"; lower() does not
    ("connecting to postgresql://switchdesk:DbPassw0rd@10.0.0.5/switchdesk", "DbPassw0rd"),
    ("Cookie: switchdesk_session=" + "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg",
     "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"),
])
def test_redact_masks_by_shape_and_name(text, secret):
    assert secret not in logs.redact(text)


def test_redact_keeps_ordinary_text():
    line = "sync: 12 commands, 0 errors, 0.034 s; queue 3@acme.test uuid 0d7f2a4e-1111-2222-3333-444455556666"
    assert logs.redact(line) == line
    assert logs.redact("GET /api/user?limit=5&q=smith HTTP/1.1") == "GET /api/user?limit=5&q=smith HTTP/1.1"


def test_configured_secrets_are_masked_exactly():
    logs.add_secret("correct-horse-battery")
    assert logs.redact("esl said correct-horse-battery twice: correct-horse-battery") == "esl said *** twice: ***"


# -- a full run of `switchdesk serve` -----------------------------------------------------------

def _blocking(fn, *args):
    """urllib blocks; run it in a real thread so the emulator's greenlets keep running."""
    return gevent.get_hub().threadpool.apply(fn, args)


def _http(method: str, url: str, *, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http(method, url, **kw):
    return _blocking(lambda: _http(method, url, **kw))


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached")
        gevent.sleep(0.05)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_full_run_logs_no_secret(tmp_path, fmt):
    esl_password = "EslPw-" + secrets.token_hex(6)
    env = {**os.environ, "SWITCHDESK_SECRET_KEY": "SecretKey-" + secrets.token_hex(12),
           "SWITCHDESK_ESL_PASSWORD": esl_password, "SWITCHDESK_XMLCURL_PASSWORD": "XmlCurl-" + secrets.token_hex(6)}
    env.pop("SWITCHDESK_TEST_DB", None)
    db_url = os.environ.get("SWITCHDESK_TEST_DB") or f"sqlite:///{tmp_path / 'sd.db'}"
    if db_url.startswith("postgres"):
        from engine.store import db, schema
        from engine.store.models import ALL_MODELS

        database = db.bind(db_url)
        with database.connection_context():
            database.drop_tables(ALL_MODELS, cascade=True)
            database.execute_sql("DROP TABLE IF EXISTS schema_migration")
            schema.init_schema(database)
        database.close_all()
    cli = [sys.executable, "-m", "engine.cli"]
    init = subprocess.run([*cli, "init", "--db", db_url, "--domain", "acme.test"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    admin_password = re.search(r"password: (\S+)", init.stdout).group(1)
    api_key = re.search(r"api key: +(\S+)", init.stdout).group(1)

    fs = FakeSwitch(password=esl_password).start()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([*cli, "serve", "--db", db_url, "--listen", "127.0.0.1:0",
                                 "--esl", f"127.0.0.1:{fs.port}", "--outbound-listen", "127.0.0.1:0",
                                 "--log-level", "debug", "--log-format", fmt],
                                env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        port = wait_for(lambda: (m := re.search(r"serving the API on http://127\.0\.0\.1:(\d+)",
                                                log_path.read_text())) and m.group(1), what="server start")
        base = f"http://127.0.0.1:{port}"
        bearer = {"Authorization": f"Bearer {api_key}"}
        user_password = "UserPw" + secrets.token_hex(5)
        sip_password = "SipPw" + secrets.token_hex(8)
        webhook_secret = "whsec " + secrets.token_hex(10)
        wrong_password = "WrongPw" + secrets.token_hex(4)

        status, headers, _ = http("POST", f"{base}/api/user/login", data=json.dumps(
            {"username": "admin", "password": admin_password}).encode(), headers={"Content-Type": "application/json"})
        assert status == 200
        session = re.search(r"switchdesk_session=([^;]+)", headers["Set-Cookie"]).group(1)
        assert http("POST", f"{base}/api/user/login", data=json.dumps(
            {"username": "admin", "password": wrong_password}).encode(),
            headers={"Content-Type": "application/json"})[0] == 401
        query = urllib.parse.urlencode({"api_key": api_key, "name": "Agent One", "username": "agent1",
                                        "email": "agent1@acme.test", "password": user_password, "is_agent": 1})
        status, _, body = http("POST", f"{base}/api/user?{query}")
        assert status == 200, body
        form = urllib.parse.urlencode({"name": "Desk", "sip_username": "2001", "sip_password": sip_password})
        status, _, body = http("POST", f"{base}/api/device", data=form.encode(),
                               headers={**bearer, "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        status, _, body = http("PUT", f"{base}/api/account",
                               data=json.dumps({"webhook_secret": webhook_secret}).encode(),
                               headers={"Cookie": f"switchdesk_session={session}", "Content-Type": "application/json"})
        assert status == 200, body
        assert http("GET", f"{base}/api/user?api_key={api_key}&password={user_password}")[0] in (200, 400)
        assert http("GET", f"{base}/api/user?api_key=sdk_0_{sip_password}")[0] == 401
        wait_for(lambda: json.loads(http("GET", f"{base}/api/status", headers=bearer)[2])["data"]["freeswitch"]
                 ["connected"], what="ESL connected")
        assert http("GET", f"{base}/metrics")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        fs.stop()
    output = log_path.read_text()
    lines = output.splitlines()
    # the run did log, at DEBUG, the requests and the ESL traffic
    assert any("/api/device" in line for line in lines) and any("/api/user?" in line for line in lines)
    assert any("DEBUG" in line and ">>" in line for line in lines)
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert {"ts", "level", "logger", "msg"} <= set(records[0])
    for secret in (admin_password, api_key, api_key.split("_", 2)[2], session, user_password, sip_password,
                   webhook_secret, wrong_password, esl_password, env["SWITCHDESK_SECRET_KEY"],
                   env["SWITCHDESK_XMLCURL_PASSWORD"]):
        assert secret not in output, f"a secret reached the log: {secret[:4]}..."
        assert urllib.parse.quote_plus(secret) not in output
