"""Session fixtures: one real FreeSWITCH and one `switchdesk serve` for the whole session, on loopback.

* ``real_switch``: the running pair (``.fs``: FreeSWITCH, ``.sd``: switchdesk, ``.esl()``: a probe,
  ``.new_account()``: an account with its own domain and API key made with the CLI, ``.phone()``: a
  sipp phone). Skips every test that uses it, with one line saying how to enable them, when no
  FreeSWITCH or no sipp can be had; ``SWITCHDESK_REQUIRE_FREESWITCH=1`` (CI) makes that a failure.
* ``SWITCHDESK_TEST_REAL_SWITCH=0`` skips them on purpose (e.g. the PostgreSQL run of ``make test``:
  the harness always gives switchdesk its own SQLite database, so a second run proves nothing new).
"""
from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realswitch.esl import EslProbe
from tests.realswitch.freeswitch import FreeSwitch, Ports, Unavailable, find_install
from tests.realswitch.sipp import SIPP, Phone
from tests.realswitch.switchdesk import Account, Http, Switchdesk


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.real_freeswitch)
            # one worker runs them all (`-n 2 --dist loadgroup`): one FreeSWITCH, started once
            item.add_marker(pytest.mark.xdist_group("realswitch"))


def _unavailable(reason: str):
    if os.environ.get("SWITCHDESK_REQUIRE_FREESWITCH") == "1":
        pytest.fail(f"SWITCHDESK_REQUIRE_FREESWITCH=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class RealSwitch:
    def __init__(self, fs: FreeSwitch, sd: Switchdesk, ports: Ports, root: Path, admin_key: str):
        self.fs, self.sd, self.ports, self.root = fs, sd, ports, root
        self.http = Http(sd.base, admin_key)  # account 1's admin
        self.profile = "switchdesk"

    def esl(self) -> EslProbe:
        """A connected probe; use it as a context manager."""
        return self.fs.probe().connect()

    def api(self, command: str) -> str:
        return self.fs.api(command)

    def new_account(self, prefix: str = "acct") -> Account:
        tag = secrets.token_hex(4)
        return self.sd.create_account(f"{prefix} {tag}", f"{prefix}-{tag}.test", f"{prefix}-{tag}")

    def phone(self, account: Account, username: str, password: str) -> Phone:
        return Phone(self.root / "phones", self.ports.sip, account.domain, username, password)

    def registrations(self) -> str:
        return self.api(f"sofia status profile {self.profile} reg")

    def failure_context(self) -> str:
        return self.fs.log_tail(40) + self.sd.log_tail(20)


@pytest.fixture(scope="session")
def real_switch(tmp_path_factory) -> Iterator[RealSwitch]:
    if os.environ.get("SWITCHDESK_TEST_REAL_SWITCH") == "0":
        pytest.skip("SWITCHDESK_TEST_REAL_SWITCH=0")
    try:
        install = find_install()
    except Unavailable as exc:
        _unavailable(str(exc))
    if SIPP is None:
        _unavailable("real FreeSWITCH tests need sipp: apt-get install sip-tester (../shared/freeswitch/install "
                     "does it when run as root)")
    root = tmp_path_factory.mktemp("realswitch")
    ports = Ports()
    esl_password, xmlcurl_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    fs = FreeSwitch(install, root / "fs", ports, esl_password, xmlcurl_password)
    sd = Switchdesk(root, ports.http, ports.outbound, ports.esl, esl_password, xmlcurl_password,
                    webhook_allow_private=True)  # the tests' webhook receivers listen on loopback
    fs.prepare()
    admin_key = sd.init("default.test")
    # switchdesk first, as on a real box: FreeSWITCH asks it for callcenter.conf while loading mod_callcenter
    # (and falls back to the local, empty file if nobody answers)
    started = time.monotonic()
    sd.start()
    try:
        fs.start()
    except BaseException:
        sd.stop()
        raise
    try:
        switch = RealSwitch(fs, sd, ports, root, admin_key)
        sd.wait_connected(switch.http)
        print(f"\nreal switch: FreeSWITCH up in {fs.start_seconds:.2f} s, switchdesk in {sd.start_seconds:.2f} s, "
              f"both connected after {time.monotonic() - started:.2f} s ({root})")
        yield switch
    finally:
        sd.stop()
        fs.stop()
        if os.environ.get("SWITCHDESK_KEEP_REAL_SWITCH") != "1":
            shutil.rmtree(root / "fs" / "sounds", ignore_errors=True)


@pytest.fixture
def account(real_switch) -> Account:
    """A fresh account (own domain, own admin key) per test: tests never see each other's devices."""
    return real_switch.new_account()
