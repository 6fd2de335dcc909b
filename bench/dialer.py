"""The dialer over a simulated shift on the emulator: progressive and predictive side by side, and the API.

One process, as `switchdesk serve` runs: the engine (with the dialer plugin) on the FreeSWITCH emulator,
the API on a gevent WSGI server. Two campaigns run at the same time on the same switch, each with its own
queue of AGENTS agents and its own list of LEADS leads: one progressive, one predictive. The emulator's
leads (tests/fakeswitch/dialer_floor.py) answer with probability ANSWER_RATE after 5-20 s of ringing, are
busy 5% of the time, ring out after 25 s otherwise, talk 1-5 minutes, and hang up after 5-30 s if no agent
takes them. Time is compressed SCALE times (floor seconds on the emulator's mod_callcenter and the dialer's
clock; the real time taken is DAY / SCALE): the default is a 2-hour shift at 60x, two minutes of wall time.
Agents pick up an offer after BENCH_AGENT_ANSWER floor seconds (1). The emulator's lag (event delivery,
greenlets on a loaded box) is multiplied by SCALE in floor seconds: with the 2 s abandon rule it shows as
leads taken late even in progressive mode (`wait_p50_p90_p99`); bench/dialer_model.py has no lag.

Printed (one JSON line), per mode: agent talk-time utilisation (talk seconds / agents x shift), the
abandon rate as the issue defines it (answered leads with no agent within 2 s of the answer, whether they
then hung up or an agent took them later, per answered lead; as the emulator saw it, `abandon_rate`, and as
the dialer's attempts record it, `dialer_abandon_rate`), `hung_up_rate` (of those, the ones that hung up
with no agent: the narrower count earlier runs reported), calls dialled and answered; and the API's p50/p99
(`GET /api/campaign/{id}`, authenticated, on one keep-alive connection) idle before the shift and while
dialling. Targets: predictive >= 1.3x progressive's utilisation with abandon <= 3%; API p99 within 2x idle.
"""
from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port  # noqa: E402
from fairness import percentiles  # noqa: E402

AGENTS = int(os.environ.get("BENCH_AGENTS", "20"))
LEADS = int(os.environ.get("BENCH_LEADS", "10000"))
ANSWER_RATE = float(os.environ.get("BENCH_ANSWER_RATE", "0.3"))
SCALE = float(os.environ.get("BENCH_SCALE", "60"))
DAY = float(os.environ.get("BENCH_DAY", "7200"))  # floor seconds of the shift
IDLE_PROBE = float(os.environ.get("BENCH_IDLE_PROBE", "5"))
AGENT_ANSWER = float(os.environ.get("BENCH_AGENT_ANSWER", "1.0"))  # floor seconds an agent takes to pick up


def seed(url: str) -> dict:
    from engine.directory import accounts
    from engine.leads.numbers import phone_keys
    from engine.store import db, schema
    from engine.store.models import (
        Account,
        AgentState,
        Campaign,
        CampaignList,
        Device,
        Lead,
        PhoneList,
        Queue,
        Tier,
        User,
    )

    database = db.bind(url)
    out: dict = {"campaigns": {}}
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
        account_id = new.account.id
        Account.update(outbound_gateway="carrier", timezone="America/New_York", wrap_up_time=5).where(
            Account.id == account_id).execute()
        out["key"] = new.api_key
        for index, mode in enumerate(("progressive", "predictive")):
            queue = Queue.create(account=account_id, name=f"Q-{mode}", strategy="longest-idle-agent")
            for n in range(AGENTS):
                user = User.create(account=account_id, name=f"{mode}{n}", username=f"{mode}{n}",
                                   username_key=f"{mode}{n}", email=f"{mode}{n}@b.test", email_key=f"{mode}{n}@b.test",
                                   password_hash="x", is_agent=True)
                device = Device.create(account=account_id, name=f"d{mode}{n}", sip_username=f"{index}{n:03d}",
                                       sip_a1_hash="0" * 32, user=user.id)
                Tier.create(account=account_id, queue=queue.id, user=user.id, joined=True)
                AgentState.create(user=user.id, account=account_id, device=device.id, checked_in_at=1,
                                  fs_status="Available", fs_state="Waiting")
            plist = PhoneList.create(account=account_id, name=f"L-{mode}", name_key=f"l-{mode}", list_rows=LEADS)
            phones = [f"+1212{index + 2}{n:06d}" for n in range(LEADS)]
            keys = phone_keys(phones, "US")
            with database.atomic():
                for start in range(0, LEADS, 1000):
                    Lead.insert_many([{"phone_list": plist.id, "phone": p, "phone_key": k, "name": f"Lead {p}",
                                       "lead_id": p, "priority": 0, "ext_api_vars": "{}"}
                                      for p, k in zip(phones[start:start + 1000], keys[start:start + 1000],
                                                      strict=True)]).execute()
            campaign = Campaign.create(account=account_id, name=mode, queue=queue.id, mode=mode,
                                       local_start=0, local_end=24 * 60 - 1, max_attempts=3, ring_timeout=25,
                                       retry_no_answer=1800, retry_busy=600)
            CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
            out["campaigns"][mode] = {"id": campaign.id, "queue": f"{queue.id}@bench.test"}
    return out


def _quantiles(values: list[float], qs: tuple[float, ...]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs] if ordered else []


def probe(port: int, path: str, key: str, until: gevent.event.Event, interval: float = 0.02) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    while not until.is_set():
        t = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        body = conn.getresponse().read()
        out.append(time.perf_counter() - t)
        assert b'"success":true' in body, body[:200]
        gevent.sleep(interval)
    return out


def trace(engine, fs, setup) -> None:
    """BENCH_TRACE=1: every few floor seconds, what the emulator and the dialer each see (stderr)."""
    from collections import Counter

    from engine.store.db import connection
    from engine.store.models import Campaign
    while True:
        gevent.sleep(0.5)
        c = setup["campaigns"]["predictive"]
        members = Counter(m.state for m in fs.callcenter.members if m.queue == c["queue"])
        with connection():
            campaign = Campaign.get_by_id(c["id"])
            floor = engine.dialer.floor(campaign, engine.dialer.floor.__globals__["clock"]())
        pacer = engine.dialer.pacers.get(c["id"])
        print("members", dict(members), "dialer", floor, "margin", pacer and round(pacer.z, 3),
              "fallback", pacer and pacer.fallback, file=sys.stderr)


def main() -> None:
    from api import create_app
    from engine.dialer import runner
    from engine.engine import Engine
    from engine.store.db import connection
    from engine.store.models import Attempt, Campaign
    from tests.fakeswitch.callcenter import CallCenter
    from tests.fakeswitch.dialer_floor import DialerFloor, LeadBehaviour
    from tests.fakeswitch.server import FakeSwitch
    from tests.support import provider

    folder = tempfile.mkdtemp(prefix="bench-dialer-")
    url = f"sqlite:///{folder}/bench.db"
    setup = seed(url)
    fs = FakeSwitch(password="ClueCon").start()
    fs.callcenter = CallCenter(provider)
    floor = DialerFloor(fs, LeadBehaviour(answer_rate=ANSWER_RATE, busy_rate=0.05, ring=(5.0, 20.0),
                                          talk=(60.0, 300.0), patience=(5.0, 30.0)), scale=SCALE,
                        agent_answer=AGENT_ANSWER)
    runner.clock = floor.now
    runner.TICK = 0.02
    engine = Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600)
    engine.start()
    engine.commands.wait_connected(10)
    engine.wait_synced(30)
    app = create_app({"ENGINE": engine})
    port = free_port()
    server = WSGIServer(("127.0.0.1", port), app, log=None)
    server.start()
    stats_path = f"/api/campaign/{setup['campaigns']['predictive']['id']}"

    stop = gevent.event.Event()
    idle = gevent.spawn(probe, port, stats_path, setup["key"], stop)
    gevent.sleep(IDLE_PROBE)
    stop.set()
    idle_lat = idle.get()

    with connection():
        Campaign.update(status="running").execute()
    started = floor.now()
    stop = gevent.event.Event()
    busy = gevent.spawn(probe, port, stats_path, setup["key"], stop)
    engine.dialer.wake()
    if os.environ.get("BENCH_TRACE"):
        gevent.spawn(trace, engine, fs, setup)
    gevent.sleep(DAY / SCALE)
    with connection():
        Campaign.update(status="stopped").execute()
    shift = floor.now() - started
    stop.set()
    busy_lat = busy.get()
    gevent.sleep(2)
    out: dict = {"bench": "dialer", "agents": AGENTS, "leads": LEADS, "answer_rate": ANSWER_RATE, "scale": SCALE,
                 "agent_answer": AGENT_ANSWER,
                 "shift_s": round(shift)}
    with connection():
        for mode, c in setup["campaigns"].items():
            s = floor.stats.get(c["queue"])
            dialled = Attempt.select().where(Attempt.campaign == c["id"]).count()
            answered = Attempt.select().where((Attempt.campaign == c["id"])
                                              & Attempt.answered_ms.is_null(False)).count()
            # the abandon: answered, and no agent within 2 s of the answer (hung up, or taken later)
            dialer_abandoned = Attempt.select().where(
                (Attempt.campaign == c["id"]) & Attempt.answered_ms.is_null(False)
                & ((Attempt.agent_ms.is_null() & (Attempt.outcome == "abandoned"))
                   | (Attempt.agent_ms - Attempt.answered_ms > 2000))).count()
            late = sum(1 for w in s.waits if w > 2.0) if s else 0
            out[mode] = {
                "utilisation": round(s.talk / (AGENTS * shift), 4) if s else 0.0,
                "abandon_rate": round((s.abandoned + late) / s.answered, 4) if s and s.answered else 0.0,
                "hung_up_rate": round(s.abandoned / s.answered, 4) if s and s.answered else 0.0,
                "dialer_abandon_rate": round(dialer_abandoned / answered, 4) if answered else 0.0,
                "dialled": dialled, "answered": answered,
                # how long the leads an agent took waited for it (floor seconds): lag of the emulated floor
                # shows here (progressive's leads should find their agent at once)
                "wait_p50_p90_p99": [round(x, 2) for x in _quantiles(s.waits, (0.5, 0.9, 0.99))] if s else [],
            }
    prog, pred = out["progressive"]["utilisation"], out["predictive"]["utilisation"]
    out["ratio"] = round(pred / prog, 3) if prog else None
    out["api_idle"] = percentiles(idle_lat)
    out["api_dialling"] = percentiles(busy_lat)
    out["api_p99_ratio"] = round(out["api_dialling"]["p99_ms"] / out["api_idle"]["p99_ms"], 2)
    print(json.dumps(out))
    engine.stop()
    server.stop()
    floor.stop()
    fs.stop()


if __name__ == "__main__":
    main()
