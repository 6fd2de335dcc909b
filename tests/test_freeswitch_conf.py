"""The freeswitch-conf overlay: well-formed, loopback-only, and bound to routes that exist."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import pytest

CONF = Path(__file__).resolve().parent.parent / "freeswitch-conf"
FILES = sorted(CONF.rglob("*.xml"))


def variables() -> dict[str, str]:
    root = ET.parse(CONF / "switchdesk_vars.xml").getroot()
    out = {}
    for node in root.iter("X-PRE-PROCESS"):
        if node.get("cmd") == "set":
            name, _, value = node.get("data").partition("=")
            out[name] = value
    return out


def expand(value: str) -> str:
    return re.sub(r"\$\$\{(\w+)\}", lambda m: variables()[m.group(1)], value)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_file_is_well_formed(path):
    ET.parse(path)


def test_there_are_files():
    names = {str(p.relative_to(CONF)) for p in FILES}
    assert {"autoload_configs/event_socket.conf.xml", "autoload_configs/xml_curl.conf.xml",
            "autoload_configs/modules.conf.xml", "sip_profiles/switchdesk.xml"} <= names


def test_event_socket_on_loopback_with_password_variable():
    params = {p.get("name"): p.get("value")
              for p in ET.parse(CONF / "autoload_configs/event_socket.conf.xml").getroot().iter("param")}
    assert params["listen-ip"] == "127.0.0.1"
    assert params["password"] == "$${switchdesk_esl_password}"
    assert params["apply-inbound-acl"] == "loopback.auto"


def test_xml_curl_bindings_point_at_routes_that_exist(app):
    root = ET.parse(CONF / "autoload_configs/xml_curl.conf.xml").getroot()
    bindings = root.findall("./bindings/binding")
    assert {b.get("name") for b in bindings} == {"directory", "configuration", "dialplan"}
    adapter = app.url_map.bind("localhost")
    for binding in bindings:
        params = {p.get("name"): p for p in binding.iter("param")}
        url = urlparse(expand(params["gateway-url"].get("value")))
        assert url.hostname == "127.0.0.1"
        endpoint, args = adapter.match(url.path, method="POST")
        assert endpoint == "freeswitch.xml_curl" and args["section"] == binding.get("name")
        assert params["gateway-url"].get("bindings") == binding.get("name")
        assert params["gateway-credentials"].get("value").startswith("freeswitch:$${")


def test_modules_load_xml_curl_before_callcenter():
    modules = [m.get("module") for m in ET.parse(CONF / "autoload_configs/modules.conf.xml").getroot().iter("load")]
    for needed in ("mod_xml_curl", "mod_event_socket", "mod_sofia", "mod_callcenter", "mod_commands",
                   "mod_dptools", "mod_dialplan_xml", "mod_tone_stream"):
        assert needed in modules
    assert modules.index("mod_xml_curl") < modules.index("mod_callcenter")


def test_sip_profile_challenges_calls_and_forces_no_domain():
    profile = ET.parse(CONF / "sip_profiles/switchdesk.xml").getroot()
    params = {p.get("name"): p.get("value") for p in profile.iter("param")}
    assert params["auth-calls"] == "true"
    assert not [name for name in params if name.startswith("force-")]
    assert params["accept-blind-reg"] == "false"


def test_fallbacks_are_empty():
    cc = ET.parse(CONF / "autoload_configs/callcenter.conf.xml").getroot()
    assert not list(cc.iter("queue")) and not list(cc.iter("agent")) and not list(cc.iter("tier"))
    assert not list(ET.parse(CONF / "dialplan/public.xml").getroot().iter("extension"))
    assert not list(ET.parse(CONF / "directory/switchdesk.xml").getroot().iter("user"))
