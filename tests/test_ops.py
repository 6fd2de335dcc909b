"""Deployment files: the VM's provisioning script, the Vagrantfile and the systemd unit.

FreeSWITCH cannot run here, so these are checked as far as tools allow:
`bash -n` and shellcheck on the provisioning script (CI installs shellcheck;
outside CI a missing shellcheck skips), `ruby -c` on the Vagrantfile when ruby
is there, `systemd-analyze verify` on the unit when available (a structural
check always), and the script's early refusal without a SignalWire token.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VAGRANT = ROOT / "vagrant"
PROVISION = VAGRANT / "provision.sh"
UNIT = VAGRANT / "systemd" / "switchdesk.service"
ENV_EXAMPLE = VAGRANT / "systemd" / "switchdesk.env.example"
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing in CI (make test-deps installs it)")
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    return path


def test_provision_script_parses():
    subprocess.run(["bash", "-n", str(PROVISION)], check=True)


def test_provision_script_passes_shellcheck():
    result = subprocess.run([need("shellcheck"), "--severity=style", str(PROVISION), str(ROOT / ".ci/postgres")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_vagrantfile_is_valid_ruby():
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (optional)")
    result = subprocess.run(["ruby", "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_vagrantfile_forwards_ports_and_passes_the_token():
    text = (VAGRANT / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert re.search(r'guest: 5060, host: 5060, protocol: "udp"', text)
    assert re.search(r'guest: 5060, host: 5060, protocol: "tcp"', text)
    assert re.search(r'guest: 8080, host: API_PORT, host_ip: "127.0.0.1"', text)
    assert '"SIGNALWIRE_TOKEN" => TOKEN' in text and 'path: "provision.sh"' in text
    # the synced folder is the checkout the provisioner installs from
    assert 'synced_folder "..", "/switchdesk"' in text and '"SWITCHDESK_SRC" => "/switchdesk"' in text


def test_provision_refuses_without_token_before_doing_anything(tmp_path):
    if Path("/etc/apt/auth.conf.d/freeswitch.conf").exists():
        pytest.skip("this machine already has the SignalWire apt credentials")
    # The script goes in on stdin and runs in /: nobody may not be able to enter the clone's folder
    # (a `mktemp -d` is root's alone), and what is tested must not depend on where the clone lies.
    cmd = ["bash", "-s"]
    if os.geteuid() == 0:
        # as nobody: were the token check broken, the script would stop at its root check, changing nothing
        if shutil.which("runuser") is None:
            pytest.skip("runuser is missing")
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    env = {"PATH": os.environ["PATH"], "SWITCHDESK_SRC": str(ROOT)}
    result = subprocess.run(cmd, input=PROVISION.read_text(), capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 1
    assert "SIGNALWIRE_TOKEN is not set" in result.stderr
    assert "Personal Access Token" in result.stderr
    assert "==>" not in result.stdout  # no step started


def test_provision_installs_the_packages_of_the_overlays_modules():
    """The script derives package names from modules.conf.xml; run its pipeline here."""
    script = PROVISION.read_text()
    pipeline = re.search(r"mapfile -t FS_MODULES < <\((.*?)\)\n", script, re.S).group(1)
    pipeline = pipeline.replace("$SRC", str(ROOT))
    packages = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, check=True).stdout.split()
    assert {"freeswitch-mod-callcenter", "freeswitch-mod-xml-curl", "freeswitch-mod-event-socket",
            "freeswitch-mod-sofia", "freeswitch-mod-console"} <= set(packages)
    assert all(re.fullmatch(r"freeswitch-mod-[a-z0-9-]+", p) for p in packages)


def test_provision_smoke_checks_api_esl_and_callcenter():
    script = PROVISION.read_text()
    assert "/api/health" in script and "/api/status" in script
    assert "module_exists mod_callcenter" in script
    assert re.search(r'/venv/bin/switchdesk"? init', script)


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_structure():
    service = unit()["Service"]
    assert service["User"] == "switchdesk" and service["Group"] == "switchdesk"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "/etc/switchdesk/switchdesk.env"
    assert service["ExecStart"] == "/opt/switchdesk/venv/bin/switchdesk serve"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes" and service["ProtectHome"] == "yes"
    assert "/var/lib/switchdesk" in service["ReadWritePaths"]
    assert service["CapabilityBoundingSet"] == ""
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
    # the provisioner installs exactly this unit and this venv
    script = PROVISION.read_text()
    assert "vagrant/systemd/switchdesk.service" in script and "PREFIX=/opt/switchdesk" in script


def test_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the structural test still ran)")
    # the venv does not exist here: point ExecStart at a binary that does, keep everything else
    copy = tmp_path / "switchdesk.service"
    copy.write_text(UNIT.read_text().replace("/opt/switchdesk/venv/bin/switchdesk serve", "/bin/true serve"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "Failed to connect" not in line and "System has not been booted" not in line]
    assert result.returncode == 0 and problems == [], problems


def test_env_example_names_only_options_serve_reads():
    cli = (ROOT / "engine" / "cli.py").read_text()
    read = set(re.findall(r'(?:os\.environ\.get|_env_flag)\("(SWITCHDESK_[A-Z_]+)"', cli))
    names = set(re.findall(r"^#?(SWITCHDESK_[A-Z_]+)=", ENV_EXAMPLE.read_text(), re.M))
    engine_read = {"SWITCHDESK_SECRET_KEY"}  # read by engine.directory.security, not the CLI
    assert names - engine_read <= read, names - engine_read - read
    assert {"SWITCHDESK_DB", "SWITCHDESK_ESL_PASSWORD", "SWITCHDESK_SECRET_KEY", "SWITCHDESK_XMLCURL_PASSWORD"} <= names
