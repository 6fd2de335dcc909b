"""Queue media and behaviour on the real switch, heard by sipp phones: what each phone is sent is decoded
(PCMU) and every 20 ms packet classified by its dominant frequency, so each media file is told apart by
its tone. Media are uploaded through /api/media (converted by switchdesk, played by FreeSWITCH from
switchdesk's media folder); the queues' settings reach mod_callcenter through callcenter.conf and the
dialplan that switchdesk serves."""
from __future__ import annotations

import http.client
import io
import json
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import soundfile

from tests.realswitch.floor import Floor, eventually, first, invites
from tests.realswitch.sipp import RtpSink, _ulaw

pytestmark = pytest.mark.real_freeswitch

JOIN_HZ, MOH_HZ, MOH2_HZ, ANNOUNCE_HZ, PRE_BRIDGE_HZ = 1000, 500, 700, 1500, 2000


class ToneSink(RtpSink):
    """An RtpSink that keeps each PCMU packet with its arrival time."""

    def __init__(self):
        self.frames: list[tuple[float, bytes]] = []
        super().__init__()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F != 0:
                continue
            self.packets += 1
            self.frames.append((time.monotonic(), data[12 + 4 * (data[0] & 0x0F):]))

    def tones(self, since: float = 0.0) -> list[tuple[float, int]]:
        """(arrival, dominant frequency in Hz rounded to 50 Hz) of each packet that is not silence."""
        out = []
        for at, payload in list(self.frames):
            if at < since or len(payload) < 160:
                continue
            samples = np.array([_ulaw(b) for b in payload[:160]], dtype=float)
            if np.abs(samples).max() < 500:
                continue
            spectrum = np.abs(np.fft.rfft(samples * np.hanning(160)))
            out.append((at, int(np.argmax(spectrum)) * 50))
        return out

    def heard(self, hz: int, since: float = 0.0) -> list[float]:
        return [at for at, f in self.tones(since) if abs(f - hz) <= 50]


def runs(times: list[float], gap: float = 0.3) -> list[tuple[float, float]]:
    """Times grouped into (start, end) runs: packets less than `gap` apart belong together."""
    out: list[tuple[float, float]] = []
    for t in times:
        if out and t - out[-1][1] < gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def wav(hz: int, seconds: float, rate: int = 44100, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, (0.5 * np.sin(2 * np.pi * hz * t)).astype("float32"), rate, format=fmt)
    return out.getvalue()


def upload(account, name: str, data: bytes, content_type: str = "audio/wav") -> dict:
    request = urllib.request.Request(f"{account.http.base}/api/media?name={name}", data=data, method="POST",
                                     headers={"Authorization": f"Bearer {account.key}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    assert reply["success"] is True, reply
    return reply["data"]


def refused_upload(account, size: int, content_type: str = "audio/wav") -> tuple[int, dict]:
    """POST /api/media announcing `size` bytes and sending none of them: the answer must come anyway."""
    base = urllib.parse.urlsplit(account.http.base)
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/media?name=big")
        connection.putheader("Authorization", f"Bearer {account.key}")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_caller_hears_join_moh_and_announcements_then_exits_to_an_extension(real_switch, account):
    """Join announcement first, then hold music that loops, the periodic announcement every 3 s, and
    after max_wait_time the caller is sent to the queue's `max_wait` exit: an extension that answers.
    (First, on the served API: a 50 MB upload is refused from its Content-Length, before its body.)"""
    status, reply = refused_upload(account, 50 * 1024 * 1024)
    assert status == 413 and reply["success"] is False and "limit" in reply["msg"], (status, reply)
    floor = Floor(real_switch, account)
    moh = upload(account, "moh", wav(MOH_HZ, 1.0, 44100, "MP3"), "audio/mpeg")
    moh2 = upload(account, "moh2", wav(MOH2_HZ, 0.8, 16000))
    join = upload(account, "join", wav(JOIN_HZ, 1.0, 8000))
    announce = upload(account, "announce", wav(ANNOUNCE_HZ, 0.6, 22050))
    assert (moh["rate"], join["rate"], announce["rate"]) == (16000, 8000, 16000)
    _, desk = floor.device("2301", extension="701")
    queue = floor.queue("Waiting", "6301", moh_id=moh["id"], audio_playback={"playlist": [moh["id"], moh2["id"]]},
                        join_announce=join["id"], announce_id=announce["id"],
                        announce_frequency=3, max_wait_time=8,
                        exits={"max_wait": {"type": "extension", "target": "701"}})
    caller = floor.caller("3301")
    sink = ToneSink()
    try:
        desk_answers = desk.answer(stay_seconds=1.5, timeout_s=40)
        desk.wait_listening()
        call = caller.call(queue.number, hold_seconds=25, rtp_port=sink.port)
        eventually(lambda: invites(desk_answers), bool, "the exit extension rings", timeout=20)
        exited = time.monotonic()
        desk_answers.wait(20)
        call.wait(20)
        assert desk_answers.ok, desk_answers.report() + real_switch.failure_context()
    finally:
        sink.close()
    start = sink.frames[0][0]
    joined = runs(sink.heard(JOIN_HZ))
    held = sink.heard(MOH_HZ)
    held2 = sink.heard(MOH2_HZ)
    announced = runs(sink.heard(ANNOUNCE_HZ))
    timeline = [(round(a - start, 2), round(b - start, 2)) for a, b in runs([t for t, _ in sink.tones()])]
    context = (f"join {joined} moh runs {runs(held)[:6]} moh2 runs {runs(held2)[:6]} announce {announced} "
               f"all {timeline}")
    # the join announcement comes first, once, about its length
    assert len(joined) == 1 and joined[0][0] - start < 1.0 and 0.7 < joined[0][1] - joined[0][0] < 1.3, context
    assert held and min(held) > joined[0][1] - 0.1, context
    # the playlist plays in order and loops: the first file again after the second, well past their 1.8 s
    assert held2 and min(held2) > min(held), context
    assert any(a > min(held2) for a, _ in runs(held)), context
    assert max(held) - min(held) > 4, context
    # announcements every 3 s while waiting (8 s of waiting: at least two, ~3 s apart)
    assert len(announced) >= 2, context
    gaps = np.diff([a for a, _ in announced])
    assert all(2.0 < g < 4.5 for g in gaps), (gaps, context)
    # max_wait_time (8 s) then the exit: the desk phone is offered the caller
    waited = exited - start
    print(f"\nwaited {waited:.2f} s; {context}")
    assert 7.0 < waited < 11.0, (waited, context)
    assert "sip:3301@" in invites(desk_answers)[0].text
    assert first(call, True, "BYE ") or call.ok, call.report()
    # a change takes effect live: that one queue is reloaded (its moh_sound in mod_callcenter's list), the
    # module never is (its uptime-bound state, the other queues, stay)
    listed = floor.switch.queues()[queue.name]["moh_sound"]
    assert listed.startswith("file_string://") and listed.endswith(".wav"), listed
    log_before = len(real_switch.fs.log_text())
    floor.http.ok("PUT", f"/api/cc_queue/{queue.id}", {"audio_playback": {}, "moh_id": moh2["id"]})
    # (`queue reload` unloads, then loads: the queue may be missing from the list for a moment)
    eventually(lambda: floor.switch.queues().get(queue.name, {}).get("moh_sound", ""),
               lambda sound: sound.endswith(".wav") and not sound.startswith("file_string://"),
               "the queue reloaded with its new hold music")
    since = real_switch.fs.log_text()[log_before:]
    assert "Stopping: mod_callcenter" not in since and "Successfully Loaded [mod_callcenter]" not in since


def test_agent_offer_ring_timeout_auto_answer_and_pre_bridge_announce(real_switch, account):
    """top-down queue with ring_timeout 3 and auto_answer: the first agent's phone is asked to answer by
    itself and its offer is cancelled after 3 s (its device would ring 30 s); the second agent answers and
    hears the pre-bridge announcement before the caller is put through."""
    floor = Floor(real_switch, account)
    pre = upload(account, "pre-bridge", wav(PRE_BRIDGE_HZ, 0.8, 16000))
    queue = floor.queue("Offers", "6311", strategy="top-down", ring_timeout=3, auto_answer=True,
                        pre_bridge_announce=pre["id"])
    first_agent = floor.agent("2311")  # its device rings 30 s (the default timeout)
    second_agent = floor.agent("2312")
    floor.join(queue, [first_agent.user_id, 3, 1, 1], [second_agent.user_id, 3, 2, 1])
    caller = floor.caller("3311")
    floor.check_in(first_agent, [queue])
    floor.check_in(second_agent, [queue])
    floor.ready(first_agent)
    floor.ready(second_agent)
    agent_sink, caller_sink = ToneSink(), ToneSink()
    try:
        rings = first_agent.phone.ring(timeout_s=30)
        answers = second_agent.phone.answer(stay_seconds=3, ring_seconds=0.2, rtp_port=agent_sink.port, timeout_s=30)
        first_agent.phone.wait_listening()
        second_agent.phone.wait_listening()
        call = caller.call(queue.number, hold_seconds=15, rtp_port=caller_sink.port)
        eventually(lambda: floor.bridged(caller.username, second_agent.sip), bool, "bridged to the second agent",
                   timeout=20)
        rings.wait(10)
        answers.wait(20)
        call.wait(20)
    finally:
        agent_sink.close()
        caller_sink.close()
    assert rings.ok, rings.report() + real_switch.failure_context()
    assert answers.ok, answers.report() + real_switch.failure_context()
    offer = invites(rings)[0]
    cancel = first(rings, True, "CANCEL ")
    assert cancel is not None, rings.report()
    # originate_timeout runs from the offer's start; the INVITE leaves after the directory lookup (up to ~1 s
    # on a loaded machine): between ring_timeout - 1.5 and ring_timeout + 1.5, far from the device's 30 s
    assert 1.5 < cancel.at - offer.at < 4.5, f"rang {cancel.at - offer.at:.2f} s, ring_timeout is 3"
    for run in (rings, answers):
        invite = invites(run)[0].text
        assert "answer-after=0" in invite, invite
    # the agent hears the announcement; the caller does not
    assert len(agent_sink.heard(PRE_BRIDGE_HZ)) > 20, agent_sink.tones()[:50]
    assert caller_sink.heard(PRE_BRIDGE_HZ) == []
