"""Statistics and the wallboard on the real switch: three queue calls from a sipp caller — answered by the
agent's sipp phone, not answered (the agent's phone rings out and mod_callcenter puts it On Break; the caller
hangs up after 7 s: an abandon), and a short abandon (1 s, nobody available) — give the right counts, waits
and service level in /api/cc_queue/{id}/stats and /api/stats/agents, and on the /tv page in a headless
Chromium, which shows the caller waiting within 2 s of FreeSWITCH listing it in the queue."""
from __future__ import annotations

import time

import pytest

from tests.browser import chromium, screenshot
from tests.realswitch.floor import eventually
from tests.realswitch.test_call_events import QUEUE_NUMBER, center, check_in  # noqa: F401 - fixture

pytestmark = pytest.mark.real_freeswitch


def board(driver, queue_id: int, part: str) -> str:
    """The text shown in one part of a queue's tile, read in one step (the page replaces tiles as it
    renders, so an element found first and read after may be gone)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
        f'[data-queue="{queue_id}"] {part}') or ""


def finish(real_switch, *runs) -> None:
    for run in runs:
        run.wait(30)
        assert run.ok, run.report() + real_switch.failure_context()


def test_queue_figures_and_wallboard(real_switch, center):  # noqa: F811 - the fixture
    http, queue_id = center.account.http, center.queue["id"]
    queue_name = f"{queue_id}@{center.account.domain}"
    http.ok("PUT", f"/api/cc_queue/{queue_id}", {"sla_answer_time": 10, "sla_strategy": 2, "tv_name": "SUPPORT",
                                                 "background_color": "#0d47a1", "font_color": "#ffffff",
                                                 "labels": [1]})
    # two more tiles on the board, grouped by label: no calls, no agents
    for name, labels, colour in (("Sales", [1], "#1b5e20"), ("Billing", [2], "#4a148c")):
        http.post("/api/cc_queue", {"name": name, "strategy": "ring-all", "time_base_score": "system",
                                    "tv_name": name.upper(), "labels": labels, "background_color": colour})
    http.ok("PUT", f"/api/device/{center.agent_dev['id']}", {"timeout": 2})  # the unanswered offer rings 2 s
    check_in(real_switch, center)
    link = http.post("/api/wallboard", {"name": "Floor TV"})

    def stats() -> dict:
        return http.get(f"/api/cc_queue/{queue_id}/stats")

    with chromium() as driver:
        driver.get(real_switch.sd.base + link["url"])
        eventually(lambda: board(driver, queue_id, ".name"), lambda t: t == "SUPPORT", "the tile")
        assert board(driver, queue_id, ".fig.waiting .v") == "0"
        assert driver.execute_script(
            "return [...document.querySelectorAll('.group h2')].map(e => e.innerText)") == ["LABEL 1", "LABEL 2"]
        assert driver.execute_script(
            "return [...document.querySelectorAll('.tile .name')].map(e => e.innerText)") == [
            "SUPPORT", "SALES", "BILLING"]

        # 1. answered after ~0.5 s of ringing; the agent hangs up after 2 s
        answering = center.agent.answer(stay_seconds=2, ring_seconds=0.5)
        center.agent.wait_listening()
        call = center.caller.call(QUEUE_NUMBER, hold_seconds=15)
        finish(real_switch, answering, call)
        eventually(stats, lambda s: s["today"]["answered"] == 1 and s["today"]["avg_talk"] is not None,
                   "the answered call counted")

        # 2. the agent's phone rings out (2 s); the caller hangs up after 7 s. The board shows it waiting.
        ringing = center.agent.ring()
        center.agent.wait_listening()
        call = center.caller.call(QUEUE_NUMBER, hold_seconds=7)
        listed_at = shown_at = None
        deadline = time.monotonic() + 10
        while (listed_at is None or shown_at is None) and time.monotonic() < deadline:
            if listed_at is None and "|" + center.caller.username + "|" in real_switch.api(
                    f"callcenter_config queue list members {queue_name}"):
                listed_at = time.monotonic()
            if shown_at is None and board(driver, queue_id, ".fig.waiting .v") == "1":
                shown_at = time.monotonic()
            time.sleep(0.05)
        assert listed_at is not None and shown_at is not None, (listed_at, shown_at)
        assert shown_at - listed_at < 2.0, f"the board showed the caller {shown_at - listed_at:.2f} s late"
        screenshot(driver, "wallboard-caller-waiting")
        finish(real_switch, ringing, call)

        # 3. nobody is available (On Break after the missed offer): the caller gives up after 1 s
        call = center.caller.call(QUEUE_NUMBER, hold_seconds=1)
        finish(real_switch, call)
        data = eventually(stats, lambda s: s["today"]["offered"] == 3 and s["waiting"] == 0
                          and s["today"]["abandoned"] == 2, "three calls counted")
        eventually(lambda: board(driver, queue_id, ".row.today"), lambda t: "Offered 3" in t and "Abandoned 2" in t,
                   "the board's figures")
        assert board(driver, queue_id, ".fig.sl .v") == "50%"
        assert board(driver, queue_id, ".fig.waiting .v") == "0"
        screenshot(driver, "wallboard-after-three-calls")

    today = data["today"]
    assert (today["answered"], today["abandoned"], today["short_abandoned"], today["timed_out"]) == (1, 2, 1, 0), data
    assert today["answered_within_sla"] == 1 and today["service_level"] == 50.0, data  # 1 / (3 - 1 short)
    assert 0 <= today["avg_wait"] <= 3, data  # answered after ~0.5 s of ringing
    assert 5 <= today["max_wait"] <= 9, data  # the caller who waited 7 s
    assert 1.5 <= today["avg_talk"] <= 4, data
    assert data["agents"]["paused"] == 1, data  # On Break: the account's system pause
    agents = http.get("/api/stats/agents")
    alice = next(a for a in agents if a["user_id"] == center.agent_user["id"])
    assert (alice["today"]["offered"], alice["today"]["answered"], alice["today"]["missed"]) == (2, 1, 1), alice
    assert alice["activity"] == "paused" and alice["today"]["talk_time"] >= 1, alice
