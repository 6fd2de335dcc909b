"""Two boxes on one database (DESIGN.md Scale-out): each engine drives only the accounts of its domains.

Two engines, each with its own FreeSWITCH emulator, share the test database;
box A serves a.example, box B serves b.example. Neither may create, change or
remove the other's queues, agents or tiers, even when the other's names are
present on its switch.
"""
from __future__ import annotations

import gevent
import pytest

from engine import server
from engine.engine import Engine
from engine.store import changes
from engine.store.models import Account, Queue, Tier, User
from tests.fakeswitch.callcenter import CallCenter
from tests.fakeswitch.server import FakeSwitch
from tests.support import listed, provider, wait_until


def make_account(domain: str):
    account = Account.create(name=domain, domain=domain)
    queue = Queue.create(account=account, name="Support")
    agent = User.create(account=account, name="Agent", username=f"agent@{domain}", username_key=f"agent@{domain}",
                        email=f"agent@{domain}", email_key=f"agent@{domain}", password_hash="x", is_agent=True)
    Tier.create(account=account, queue=queue, user=agent, joined=True)
    return account, queue, agent


@pytest.fixture
def boxes(database):
    a = make_account("a.example")
    b = make_account("b.example")
    switches, engines = [], []
    for account in (a[0], b[0]):
        fs = FakeSwitch(password="ClueCon").start()
        fs.callcenter = CallCenter(provider)
        switches.append(fs)
        engines.append(Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600,
                              account_ids=server.resolve_domains([account.domain])))
    # box B's switch already carries one of A's agents (e.g. A moved boxes): B must leave it alone
    foreign = f"{a[2].id}@a.example"
    switches[1].callcenter.command(f"agent add {foreign} callback")
    for engine in engines:
        engine.start()
    for engine in engines:
        assert engine.commands.wait_connected(10) and engine.wait_synced(10)
    yield a, b, switches, engines
    for engine in engines:
        engine.stop()
    for fs in switches:
        fs.stop()


def writes(fs, start: int = 0) -> list[str]:
    return [c.line for c in fs.received[start:]
            if "callcenter_config" in c.line and not c.line.endswith(" list") and " list " not in c.line]


def test_each_box_drives_only_its_own_accounts(boxes):
    (acc_a, queue_a, agent_a), (acc_b, queue_b, agent_b), (fs_a, fs_b), _ = boxes
    assert set(listed(fs_a, "queue")) == {f"{queue_a.id}@a.example"}
    assert set(listed(fs_b, "queue")) == {f"{queue_b.id}@b.example"}
    assert set(listed(fs_a, "agent")) == {f"{agent_a.id}@a.example"}
    # B created its own agent and did not remove A's, which it does not serve
    assert set(listed(fs_b, "agent")) == {f"{agent_b.id}@b.example", f"{agent_a.id}@a.example"}
    assert set(listed(fs_a, "tier")) == {(f"{queue_a.id}@a.example", f"{agent_a.id}@a.example")}
    assert set(listed(fs_b, "tier")) == {(f"{queue_b.id}@b.example", f"{agent_b.id}@b.example")}
    assert not any("a.example" in line for line in writes(fs_b))
    assert not any("b.example" in line for line in writes(fs_a))


def test_a_change_reaches_only_the_owning_box(boxes):
    (acc_a, queue_a, agent_a), _, (fs_a, fs_b), _ = boxes
    before_a, before_b = len(fs_a.received), len(fs_b.received)
    Tier.update(level=7).where(Tier.user == agent_a.id).execute()
    changes.notify("tier", acc_a.id, [agent_a.id])
    wait_until(lambda: listed(fs_a, "tier")[(f"{queue_a.id}@a.example", f"{agent_a.id}@a.example")]["level"] == "7")
    new_queue = Queue.create(account=acc_a, name="Sales")
    changes.notify("queue", acc_a.id, [new_queue.id])
    wait_until(lambda: f"{new_queue.id}@a.example" in listed(fs_a, "queue"))
    gevent.sleep(0.2)
    assert writes(fs_b, before_b) == []
    assert len(writes(fs_a, before_a)) >= 2


def test_resolve_domains():
    assert server.resolve_domains(None) is None and server.resolve_domains([]) is None


def test_resolve_domains_refuses_unknown(database):
    Account.create(name="A", domain="a.example")
    assert server.resolve_domains(["A.Example"]) == [Account.get(Account.domain == "a.example").id]
    with pytest.raises(ValueError, match=r"nope\.example"):
        server.resolve_domains(["a.example", "nope.example"])


def test_domains_flag_parses():
    from engine import cli

    args = cli.build_parser().parse_args(["serve", "--domains", "A.example, b.example,"])
    assert args.domains == ["a.example", "b.example"]
    assert cli.build_parser().parse_args(["serve"]).domains is None


def test_serve_refuses_a_domain_no_account_has(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'sd.db'}"
    cli = [sys.executable, "-m", "engine.cli"]
    subprocess.run([*cli, "init", "--db", url, "--domain", "a.example"], capture_output=True, check=True, timeout=60)
    result = subprocess.run([*cli, "serve", "--db", url, "--no-esl", "--listen", "127.0.0.1:0",
                             "--domains", "a.example,nope.example"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no account has the domain nope.example" in result.stderr
