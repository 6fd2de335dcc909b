"""freeswitch-conf as installed by its own install.sh: what the running switch shows of it, and what the
README says about it.

The stock configuration has IPv6 SIP profiles (`internal-ipv6`, `external-ipv6`: the latter takes calls
into the `public` context without a challenge); install.sh removes them with the other stock profiles, and
copies the overlay's files but not its own README.md and install.sh. The README's command for running the
ESL tests against a real box must carry the overlay's shipped ESL password.
(That switchdesk's log never shows a dialled check-in code is tests/realswitch/test_checkin.py's.)
"""
from __future__ import annotations

import re

import pytest

from tests.realswitch.freeswitch import OVERLAY, REPO

STOCK_PROFILES = ("internal", "external", "internal-ipv6", "external-ipv6")


def sofia_profiles(text: str) -> dict[str, str]:
    """`sofia status`: profile name -> state, for the rows of type `profile` (aliases and gateways left out)."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\S+)\s+profile\s+\S+\s+(RUNNING|DOWN)\b\S*",
                                                        text, re.M)}


@pytest.mark.real_freeswitch
def test_only_the_switchdesk_sip_profile_runs(real_switch):
    profiles = sofia_profiles(real_switch.api("sofia status"))
    assert profiles == {"switchdesk": "RUNNING"}, profiles
    for name in STOCK_PROFILES:
        assert not (real_switch.fs.conf / "sip_profiles" / f"{name}.xml").exists(), name
        assert "Invalid Profile" in real_switch.api(f"sofia status profile {name}"), name
    # and nothing listens where the stock profiles would (IPv6 on 5060/5080 of ::1, or on the IPv4 ports)
    xml = real_switch.api("sofia xmlstatus")
    assert "ipv6" not in xml.lower(), xml[:500]


@pytest.mark.real_freeswitch
def test_install_copies_the_overlay_but_not_its_readme_or_script(real_switch):
    conf = real_switch.fs.conf
    assert not (conf / "README.md").exists()
    assert not (conf / "install.sh").exists()
    # every other file of the overlay is there, as shipped (switchdesk_vars.xml gets the test's passwords)
    for path in OVERLAY.rglob("*"):
        if path.is_dir() or path.name in ("README.md", "install.sh", "switchdesk_vars.xml"):
            continue
        installed = conf / path.relative_to(OVERLAY)
        assert installed.exists(), installed
        if path.parent.name != "sip_profiles" and path.name != "event_socket.conf.xml":  # the harness sets ports
            assert installed.read_bytes() == path.read_bytes(), installed
    assert (conf / "switchdesk_vars.xml").exists()
    assert (conf / "switchdesk_moh" / "switchdesk-hold.wav").stat().st_size > 40000


def test_readme_real_switch_commands_use_the_overlays_esl_password():
    """Plain file check, no FreeSWITCH needed: README.md's `SWITCHDESK_TEST_ESL=host:port:password` examples
    must carry the password freeswitch-conf/switchdesk_vars.xml ships (and the xml_curl one likewise)."""
    shipped = (OVERLAY / "switchdesk_vars.xml").read_text()
    esl = re.search(r'data="switchdesk_esl_password=([^"]*)"', shipped).group(1)
    xmlcurl = re.search(r'data="switchdesk_xmlcurl_password=([^"]*)"', shipped).group(1)
    assert esl == "change-me-esl" and xmlcurl == "change-me-xmlcurl"
    readme = (REPO / "README.md").read_text()
    used = re.findall(r"SWITCHDESK_TEST_ESL=[\w.]+:\d+:(\S+)", readme)
    assert used, "README.md shows no SWITCHDESK_TEST_ESL=host:port:password command"
    assert set(used) == {esl}, used
    assert set(re.findall(r"SWITCHDESK_TEST_XMLCURL_PASSWORD=(\S+)", readme)) <= {xmlcurl}
    # and the event socket's default port in the README is the overlay's
    socket_conf = (OVERLAY / "autoload_configs" / "event_socket.conf.xml").read_text()
    port = re.search(r'name="listen-port" value="(\d+)"', socket_conf).group(1)
    assert {m for m in re.findall(r"SWITCHDESK_TEST_ESL=[\w.]+:(\d+):", readme)} == {port}
