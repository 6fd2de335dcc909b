"""The media library through the API: upload (WAV and MP3 at any rate, converted once), list, download,
rename, delete refused while a queue uses it; refusals (not audio, too large, too long) store nothing."""
from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
import soundfile

from api import create_app
from engine.media import library
from tests.conftest import Api


def tone(seconds: float, rate: int, channels: int = 1, fmt: str = "WAV", freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.4 * np.sin(2 * np.pi * freq * t)).astype("float32")
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    out = io.BytesIO()
    soundfile.write(out, data, rate, format=fmt)
    return out.getvalue()


@pytest.fixture
def media_dir(tmp_path):
    folder = tmp_path / "media"
    yield folder
    library.configure(None, max_bytes=library.MAX_BYTES, max_seconds=library.MAX_SECONDS)
    library._settings["dir"] = None


@pytest.fixture
def api(database, tenant, media_dir) -> Api:
    app = create_app({"TESTING": True, "MEDIA_DIR": str(media_dir)})
    return Api(app.test_client(), tenant)


def upload(api, data: bytes, filename: str = "hold.wav", **form):
    return api.post("/api/media", data={"file": (io.BytesIO(data), filename), **form},
                    content_type="multipart/form-data")


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_upload_converts_lists_downloads_renames_and_deletes(api, media_dir, tenant, other_tenant, client):
    # an MP3 at 44.1 kHz stereo: 16 kHz mono 16-bit WAV
    r = upload(api, tone(1.5, 44100, 2, "MP3"), "Welcome Message.mp3")
    assert r.status_code == 200, r.json
    mp3 = r.json["data"]
    assert mp3["name"] == "Welcome Message" and mp3["rate"] == 16000 and mp3["source_format"] == "mp3"
    assert mp3["source_rate"] == 44100 and mp3["source_channels"] == 2 and 1400 <= mp3["duration_ms"] <= 1600
    stored = media_dir / str(tenant.account_id)
    (path,) = stored.glob("*.wav")
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    assert mp3["size"] == path.stat().st_size and mp3["host"] == library.host()
    # a narrowband WAV (11.025 kHz): 8 kHz, never upsampled; the name comes from the form
    r = upload(api, tone(1.0, 11025), "x.wav", name="Announce")
    assert r.status_code == 200 and r.json["data"]["rate"] == 8000 and r.json["data"]["name"] == "Announce"
    ann = r.json["data"]
    # raw body with an audio/* content type
    r = api.post("/api/media?name=Raw", data=tone(0.5, 48000), content_type="audio/wav")
    assert r.status_code == 200 and r.json["data"]["rate"] == 16000
    # list, filter, get
    assert [m["name"] for m in api.get("/api/media").json["data"]] == ["Welcome Message", "Announce", "Raw"]
    assert [m["id"] for m in api.get("/api/media?name=Announce").json["data"]] == [ann["id"]]
    # download: the stored WAV
    r = api.get(f"/api/media/{ann['id']}/file")
    assert r.status_code == 200 and r.mimetype == "audio/wav" and r.data[:4] == b"RIFF"
    assert soundfile.info(io.BytesIO(r.data)).samplerate == 8000
    # rename; a taken name is 409
    assert api.put(f"/api/media/{ann['id']}", json={"name": "Periodic"}).json["data"]["name"] == "Periodic"
    assert api.put(f"/api/media/{ann['id']}", json={"name": "Raw"}).status_code == 409
    assert upload(api, tone(0.3, 8000), "Raw.wav").status_code == 409
    # another account sees none of it
    other = Api(api.client, other_tenant)
    for method, url in (("GET", f"/api/media/{ann['id']}"), ("GET", f"/api/media/{ann['id']}/file"),
                        ("DELETE", f"/api/media/{ann['id']}")):
        assert other(method, url).status_code == 404
    assert other.get("/api/media").json["data"] == []
    # in use by a queue: 409 naming it, nothing deleted; a media id of another account is refused on the queue
    q = api.post("/api/cc_queue", json={"name": "Sales", "strategy": "ring-all", "time_base_score": "system",
                                        "moh_id": mp3["id"], "announce_id": ann["id"], "announce_frequency": 30,
                                        "audio_playback": {"playlist": [mp3["id"], ann["id"]]}})
    assert q.status_code == 200, q.json
    r = api.delete(f"/api/media/{ann['id']}")
    assert r.status_code == 409 and f"queue {q.json['data']['id']} (Sales): announce_id, audio_playback.playlist" \
        in r.json["msg"]
    refused = other.post("/api/cc_queue", json={"name": "X", "strategy": "ring-all", "time_base_score": "system",
                                                "moh_id": mp3["id"]})
    assert refused.json["msg"] == f"moh_id: no media with id {mp3['id']}"
    bad = api.put(f"/api/cc_queue/{q.json['data']['id']}", json={"audio_playback": {"playlist": [999]}})
    assert bad.status_code == 400 and bad.json["msg"] == "audio_playback.playlist: no media with id 999"
    # unused again: deleted, and its file with it
    api.put(f"/api/cc_queue/{q.json['data']['id']}", json={"announce_id": None, "audio_playback": {}})
    before = len(files(media_dir))
    assert api.delete(f"/api/media/{ann['id']}").status_code == 200
    assert len(files(media_dir)) == before - 1
    assert api.get(f"/api/media/{ann['id']}").status_code == 404


def test_refusals_store_nothing(api, media_dir, tenant):
    for junk, name in ((os.urandom(200_000), "noise.mp3"), (b"%PDF-1.4 not audio" * 100, "doc.wav"), (b"", "e.wav")):
        r = upload(api, junk, name)
        assert r.status_code == 400 and r.json["success"] is False and r.json["msg"].startswith("file: "), r.json
    r = api.post("/api/media", json={"name": "x"})
    assert r.status_code == 400 and r.json["msg"].startswith("file: ")
    # too long (limit lowered for the test): refused after reading the header, nothing kept
    library.configure(max_seconds=2)
    r = upload(api, tone(3, 8000))
    assert r.status_code == 400 and "too long" in r.json["msg"]
    # 50 MB: refused from its Content-Length before the body is read
    big = b"\0" * (50 * 1024 * 1024)
    r = api.post("/api/media", data=big, content_type="audio/wav")
    assert r.status_code == 413 and r.json["success"] is False and "limit" in r.json["msg"]
    assert files(media_dir) == [] and api.get("/api/media").json["data"] == []


def test_permission_module_media(api, client, tenant):
    from engine.directory import accounts
    from engine.store.models import User

    user = api.post("/api/user", json={"name": "Q", "username": "qonly", "password": "Qonly-pw-123",
                                       "email": "q@example.test", "permissions": {"call_center_api": True,
                                                                                  "queues": True}}).json["data"]
    token = accounts.issue_api_key(User.get_by_id(user["id"]))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/media", headers=headers).status_code == 403
    assert client.get("/api/cc_queue", headers=headers).status_code == 200
    r = api.put(f"/api/user/{user['id']}", json={"permissions": {"call_center_api": True, "media": True}})
    assert r.status_code == 200, r.json
    assert client.get("/api/media", headers=headers).status_code == 200


def test_conversion_runs_off_the_event_loop(api, media_dir):
    """While a long conversion runs, another greenlet keeps running (gevent's threadpool)."""
    import gevent

    data = tone(120, 48000, 2, "FLAC")
    ticks = []

    def ticker():
        end = time.monotonic() + 30
        while time.monotonic() < end:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    greenlet = gevent.spawn(ticker)
    gevent.sleep(0)
    started = time.monotonic()
    r = upload(api, data, "long.flac")
    took = time.monotonic() - started
    greenlet.kill()
    assert r.status_code == 200, r.json
    during = [t for t in ticks if started <= t <= started + took]
    gaps = np.diff(during) if len(during) > 1 else [took]
    # a conversion held on the loop would show as one gap as long as the upload; ticks come every 10 ms
    assert took > 0.1 and len(during) > 5 and max(gaps) < took / 2, (took, len(during), max(gaps))
    assert threading.active_count() >= 1
