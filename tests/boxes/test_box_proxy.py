"""Two boxes on one database, in one process: two WSGI servers (gevent's pywsgi, as `serve` runs them) with
their own names and folders. A download asked of the box that does not hold the file is fetched from the
holder over HTTP, signed box to box, and streamed through with its Range; the holder's internal endpoint
refuses anything not signed for exactly that path and time; a holder that is down, stale, unknown or not
advertised is a 503; account and permission checks happen before anything is fetched."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from geventhttpclient import HTTPClient

from api import create_app
from engine import boxes
from engine.directory import accounts
from engine.media import library
from engine.server import make_server
from engine.store.models import Box, Media, Recording, User
from tests.conftest import Api
from tests.directory.test_privilege import make_user

AUDIO = b"RIFF" + bytes(range(256)) * 1200  # 307,204 bytes: several chunks each way
MEDIA = b"RIFF" + bytes(reversed(range(256))) * 20


class Counting:
    """The holder's WSGI app, counting the requests that reach its internal endpoint."""

    def __init__(self, app):
        self.app, self.internal = app, 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/internal/"):
            self.internal += 1
        return self.app(environ, start_response)


class Box_:
    def __init__(self, name: str, root: Path):
        self.name, self.recordings, self.media = name, root / "rec", root / "media"
        self.recordings.mkdir(parents=True)
        self.media.mkdir(parents=True)
        self.app = create_app({"TESTING": True, "BOX_NAME": name, "RECORDINGS_DIR": str(self.recordings),
                               "MEDIA_DIR": str(self.media)})
        self.counting = Counting(self.app)
        self.server = make_server(self.counting, "127.0.0.1", 0)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        client = HTTPClient("127.0.0.1", self.server.server_port, connection_timeout=5, network_timeout=20)
        try:
            response = client.get(path, headers=headers or {})
            body = response.read()
            response.release()
            return response.status_code, {k.lower(): v for k, v in response.items()}, body
        finally:
            client.close()


@pytest.fixture
def two_boxes(database, tmp_path):
    saved = dict(library._settings)
    a, b = Box_("box-a", tmp_path / "a"), Box_("box-b", tmp_path / "b")
    boxes.register("box-a", a.url)
    boxes.register("box-b", b.url)
    yield a, b
    for box in (a, b):
        box.server.stop(timeout=1)
    library._settings.update(saved)


def _recording(box: Box_, account_id: int, call_id: str, content: bytes = AUDIO, rel: str | None = None) -> Recording:
    rel = rel or f"{account_id}/2026-01-01/{call_id}.wav"
    if not rel.startswith(".."):
        (box.recordings / rel).parent.mkdir(parents=True, exist_ok=True)
        (box.recordings / rel).write_bytes(content)
    stamp = int(time.time())
    return Recording.create(account=account_id, call_id=call_id, leg_uuid=call_id, path=rel, state="complete",
                            fs_host=box.name, started_at=stamp, ended_at=stamp, size=len(content), duration_ms=1000)


def _media(box: Box_, account_id: int, name: str, content: bytes = MEDIA) -> Media:
    (box.media / str(account_id)).mkdir(parents=True, exist_ok=True)
    (box.media / str(account_id) / f"{name}.wav").write_bytes(content)
    return Media.create(account=account_id, name=name, file=f"{name}.wav", host=box.name, rate=8000,
                        duration_ms=1000, size=len(content))


def _auth(tenant) -> dict[str, str]:
    return tenant.auth()


def test_downloads_through_the_box_that_does_not_hold_the_file(two_boxes, tenant, other_tenant):
    a, b = two_boxes
    rec = _recording(b, tenant.account_id, "call-b")
    media = _media(b, tenant.account_id, "hold")
    url = f"/api/recording/{rec.id}/download"

    # asked of box a: fetched from box b, whole and by range, exactly as b itself answers
    status, headers, body = a.get(url, _auth(tenant))
    assert (status, body) == (200, AUDIO) and headers["content-length"] == str(len(AUDIO))
    assert headers["content-type"] == "audio/wav" and headers["accept-ranges"] == "bytes"
    assert headers["content-disposition"] == f'attachment; filename="recording-{rec.id}.wav"'
    status, headers, body = a.get(url, {**_auth(tenant), "Range": "bytes=1000-4999"})
    assert (status, body) == (206, AUDIO[1000:5000])
    assert headers["content-range"] == f"bytes 1000-4999/{len(AUDIO)}" and headers["content-length"] == "4000"
    status, headers, body = a.get(url, {**_auth(tenant), "Range": "bytes=-300"})
    assert (status, body, headers["content-range"]) == (206, AUDIO[-300:], f"bytes {len(AUDIO) - 300}-{len(AUDIO) - 1}/"
                                                                           f"{len(AUDIO)}")
    status, headers, body = a.get(url, {**_auth(tenant), "Range": f"bytes={len(AUDIO)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(AUDIO)}" and b'"success":false' in body
    assert b.get(url, {**_auth(tenant), "Range": "bytes=1000-4999"})[2] == AUDIO[1000:5000]  # the holder itself
    through = b.counting.internal
    assert through == 4

    status, headers, body = a.get(f"/api/media/{media.id}/file", _auth(tenant))
    assert (status, body) == (200, MEDIA) and headers["content-disposition"] == 'attachment; filename="hold.wav"'
    status, headers, body = a.get(f"/api/media/{media.id}/file", {**_auth(tenant), "Range": "bytes=10-19"})
    assert (status, body, headers["content-range"]) == (206, MEDIA[10:20], f"bytes 10-19/{len(MEDIA)}")

    # a file of box a asked of box a stays local; asked of box b it comes from a
    mine = _recording(a, tenant.account_id, "call-a", content=MEDIA)
    before = a.counting.internal
    assert a.get(f"/api/recording/{mine.id}/download", _auth(tenant))[2] == MEDIA and a.counting.internal == before
    assert b.get(f"/api/recording/{mine.id}/download", _auth(tenant))[2] == MEDIA and a.counting.internal == before + 1

    # the file gone on the holder: its 404, relayed
    (b.recordings / rec.path).unlink()
    status, _, body = a.get(url, _auth(tenant))
    assert status == 404 and b"the file is gone" in body

    # another account's id, or a user without the module: refused by box a; box b is never asked
    through = b.counting.internal
    assert a.get(f"/api/recording/{rec.id}/download", _auth(other_tenant))[0] == 404
    assert a.get(f"/api/media/{media.id}/file", _auth(other_tenant))[0] == 404
    plain = make_user(Api(a.app.test_client(), tenant), "plain", permissions={"call_center_api": True})
    key = accounts.issue_api_key(User.get_by_id(plain["id"]))
    assert a.get(f"/api/media/{media.id}/file", {"Authorization": f"Bearer {key}"})[0] == 403
    assert a.get(url, {"Authorization": f"Bearer {key}"})[0] == 403
    assert a.get(url)[0] == 401
    assert b.counting.internal == through


def test_the_internal_endpoint_takes_only_signatures_for_its_path_and_time(two_boxes, tenant, monkeypatch):
    a, b = two_boxes
    rec = _recording(b, tenant.account_id, "call-b")
    elsewhere = _recording(a, tenant.account_id, "call-a")
    escape = _recording(b, tenant.account_id, "call-x", rel=f"../../a/rec/{elsewhere.path}")  # box a's file
    path = f"/internal/box/recording/{rec.id}"

    def refused(headers: dict[str, str], target: str = path) -> str:
        status, _, body = b.get(target, headers)
        assert status == 403, (status, body)
        return body.decode()

    assert "missing" in refused({})
    assert "missing" in refused(_auth(tenant))  # an API key is no box
    assert "does not match" in refused(boxes.sign("GET", f"/internal/box/recording/{elsewhere.id}"))
    assert "does not match" in refused(boxes.sign("POST", path))
    assert "does not match" in refused({**boxes.sign("GET", path), boxes.SIGNATURE_HEADER: "0" * 64})
    forged = boxes.sign("GET", path)
    assert "does not match" in refused({**forged, boxes.EXPIRES_HEADER: str(int(forged[boxes.EXPIRES_HEADER]) + 60)})
    assert "expired" in refused(boxes.sign("GET", path, at=time.time() - 120))
    assert "too far ahead" in refused(boxes.sign("GET", path, ttl=3600))
    assert "malformed" in refused({**forged, boxes.EXPIRES_HEADER: "1e9"})
    monkeypatch.setenv("SWITCHDESK_SECRET_KEY", "another-installation")
    other_key = boxes.sign("GET", path)
    monkeypatch.undo()
    assert "does not match" in refused(other_key)
    assert b.counting.internal == 10

    status, _, body = b.get(path, {**boxes.sign("GET", path), "Range": "bytes=0-99"})
    assert (status, body) == (206, AUDIO[:100])
    # only what this box holds, inside its folder
    target = f"/internal/box/recording/{elsewhere.id}"
    assert b.get(target, boxes.sign("GET", target))[0] == 404
    target = f"/internal/box/recording/{escape.id}"
    assert (b.recordings / escape.path).is_file() and b.get(target, boxes.sign("GET", target))[0] == 404
    target = "/internal/box/media/999"
    assert b.get(target, boxes.sign("GET", target))[0] == 404

    # a holder that refuses this box's signature (keys differ): 502, saying so
    real_sign = boxes.sign
    monkeypatch.setattr(boxes, "sign",
                        lambda method, path: {**real_sign(method, path), boxes.SIGNATURE_HEADER: "0" * 64})
    status, _, body = a.get(f"/api/recording/{rec.id}/download", _auth(tenant))
    assert status == 502 and b"same secret key" in body


def test_a_holder_down_stale_unknown_or_not_advertised_is_a_503(two_boxes, tenant, caplog):
    a, b = two_boxes
    rec = _recording(b, tenant.account_id, "call-b")
    url = f"/api/recording/{rec.id}/download"

    def unavailable(expected: str) -> None:
        status, headers, body = a.get(url, _auth(tenant))
        assert status == 503 and headers["content-type"] == "application/json", (status, body)
        assert expected in body.decode() and '"host":"' in body.decode(), body

    Box.update(heartbeat_at=int(time.time()) - boxes.STALE_AFTER - 5).where(Box.hostname == "box-b").execute()
    unavailable("has not reported for")
    boxes.beat("box-b")
    Box.update(url=None).where(Box.hostname == "box-b").execute()
    unavailable("advertises no URL")
    Recording.update(fs_host="box-z").where(Recording.id == rec.id).execute()
    unavailable("box box-z, which is not registered")
    Recording.update(fs_host="box-b").where(Recording.id == rec.id).execute()
    boxes.register("box-b", b.url)
    assert a.get(url, _auth(tenant))[0] == 200
    # a holder registered with another secret key: refused before asking it, saying why
    Box.update(key_check="0" * 32).where(Box.hostname == "box-b").execute()
    asked = b.counting.internal
    status, _, body = a.get(url, _auth(tenant))
    assert status == 502 and b"secret key differs" in body and b.counting.internal == asked
    with caplog.at_level("WARNING", logger="switchdesk.boxes"):
        boxes.register("box-a", a.url)
    assert "box-b has another secret key than this box (box-a)" in caplog.text
    boxes.register("box-b", b.url)
    b.server.stop(timeout=1)
    unavailable("cannot be reached")


def test_advertised_url_and_box_name_rules():
    assert boxes.default_url("127.0.0.1", 8080) is None
    assert boxes.default_url("localhost", 8080) is None
    assert boxes.default_url("::1", 8080) is None
    assert boxes.default_url("10.0.0.5", 8080) == "http://10.0.0.5:8080"
    assert boxes.default_url("fd00::5", 8080) == "http://[fd00::5]:8080"
    assert boxes.default_url("pbx1.example.net", 80) == "http://pbx1.example.net:80"
    assert boxes.check_url("https://pbx1.example.net:8443/switchdesk/") == "https://pbx1.example.net:8443/switchdesk"
    for bad in ("ftp://x", "http://", "http://x/?a=1", "http://u:p@x", "http://x:99999"):
        with pytest.raises(ValueError):
            boxes.check_url(bad)
    for bad in ("", "two words", "x" * 254, "tab\there"):
        with pytest.raises(ValueError):
            boxes.check_name(bad)
