"""SIP phones made of sipp (Debian's sip-tester) scenarios, and an RTP sink to hear what a phone is sent.

Each sipp binds 127.0.0.1 with its own SIP port (`-p`) and media ports (`-mp`). The SDP a phone offers
or answers names the port of an `RtpSink` when one is given (the test then counts and decodes the RTP
FreeSWITCH sends it), else sipp's own media port (where nothing listens to the audio).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from tests.realswitch.freeswitch import HOST, free_port, free_range

SIPP = shutil.which("sipp")

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'

_SDP = """v=0
o=sipp 53655765 2353687637 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio {rtp_port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
"""

# Our answer to FreeSWITCH's BYE, in every scenario.
_OK_BYE = """
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
"""


def _cdata(text: str) -> str:
    return "<![CDATA[\n" + text.strip("\n") + "\n\n]]>"


def register_scenario(user: str, domain: str, expires: int, expect: int) -> str:
    """REGISTER, answer the 401 digest challenge (-au/-ap), expect `expect` (200, or 403 for a bad password)."""
    def request(cseq: int, auth: str) -> str:
        return f"""
REGISTER sip:{domain} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@{domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@{domain}>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
{auth}Max-Forwards: 70
Expires: {expires}
User-Agent: switchdesk-test-sipp
Content-Length: 0
"""
    return _HEAD + f"""<scenario name="register {escape(user)}">
  <send retrans="500">{_cdata(request(1, ""))}</send>
  <recv response="401" auth="true"/>
  <send retrans="500">{_cdata(request(2, "[authentication]" + chr(10)))}</send>
  <recv response="{expect}"/>
</scenario>
"""


def call_scenario(user: str, domain: str, number: str, rtp_port: str, hold_ms: int) -> str:
    """INVITE `number`, answer the 407 challenge, wait for 200, ACK; then hang up after `hold_ms`
    (or take FreeSWITCH's BYE if it comes first)."""
    sdp = _SDP.format(rtp_port=rtp_port)

    def invite(cseq: int, auth: str) -> str:
        return f"""
INVITE sip:{number}@{domain} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@{domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@{domain}>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
{auth}Max-Forwards: 70
User-Agent: switchdesk-test-sipp
Content-Type: application/sdp
Content-Length: [len]

{sdp}"""
    ack_407 = f"""
ACK sip:{number}@{domain} SIP/2.0
[last_Via:]
From: <sip:{user}@{domain}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
"""
    in_dialog = f"""
{{method}} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@{domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{number}@{domain}>[peer_tag_param]
Call-ID: [call_id]
CSeq: {{cseq}}
[routes]
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0
"""
    return _HEAD + f"""<scenario name="call {escape(number)}">
  <send retrans="500">{_cdata(invite(1, ""))}</send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>{_cdata(ack_407)}</send>
  <send retrans="500">{_cdata(invite(2, "[authentication]" + chr(10)))}</send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" rtd="true"/>
  <send>{_cdata(in_dialog.format(method="ACK", cseq="2 ACK"))}</send>
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>
  <send next="end">{_cdata(_OK_BYE)}</send>
  <label id="hangup"/>
  <send retrans="500">{_cdata(in_dialog.format(method="BYE", cseq="3 BYE"))}</send>
  <recv response="200" crlf="true"/>
  <label id="end"/>
</scenario>
"""


def answer_scenario(user: str, rtp_port: str, ring_ms: int, stay_ms: int) -> str:
    """Take one INVITE: 180, then 200 with SDP after `ring_ms`; stay `stay_ms` (or until FreeSWITCH's BYE),
    then hang up."""
    sdp = _SDP.format(rtp_port=rtp_port)
    reply = """
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
{extra}"""
    bye = f"""
BYE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$to];tag=[pid]SIPpTag01[call_number]
To: [$from]
Call-ID: [call_id]
CSeq: 1 BYE
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0
"""
    ringing = reply.format(status="180 Ringing", user=user, extra="Content-Length: 0\n")
    answered = reply.format(status="200 OK", user=user,
                            extra=f"Content-Type: application/sdp\nContent-Length: [len]\n\n{sdp}")
    return _HEAD + f"""<scenario name="answer {escape(user)}">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sip:[^&gt;;]*" search_in="hdr" header="Contact:" assign_to="contact"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp="&lt;[^&gt;]*&gt;" search_in="hdr" header="To:" assign_to="to"/>
    </action>
  </recv>
  <send>{_cdata(ringing)}</send>
  <pause milliseconds="{ring_ms}"/>
  <send retrans="500">{_cdata(answered)}</send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="{stay_ms}" ontimeout="hangup"/>
  <send next="end">{_cdata(_OK_BYE)}</send>
  <label id="hangup"/>
  <send retrans="500">{_cdata(bye)}</send>
  <recv response="200" crlf="true"/>
  <label id="end"/>
</scenario>
"""


def ring_scenario(user: str) -> str:
    """Take an INVITE and ring (180) without ever answering; when FreeSWITCH gives up (CANCEL), 200 the
    CANCEL and 487 the INVITE. sipp runs it once per call (`-m`, see Phone.ring)."""
    reply = """
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
{cseq}
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
"""
    ringing = reply.format(status="180 Ringing", user=user, cseq="[last_CSeq:]")
    cancelled = reply.format(status="200 OK", user=user, cseq="[last_CSeq:]")
    terminated = reply.format(status="487 Request Terminated", user=user, cseq="CSeq: [$cseq] INVITE")
    return _HEAD + f"""<scenario name="ring {escape(user)}">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="true" assign_to="cseq"/>
    </action>
  </recv>
  <send>{_cdata(ringing)}</send>
  <recv request="CANCEL"/>
  <send>{_cdata(cancelled)}</send>
  <send>{_cdata(terminated)}</send>
  <recv request="ACK"/>
</scenario>
"""


def busy_scenario(user: str) -> str:
    """Take an INVITE and refuse it with 486 Busy Here (FreeSWITCH: USER_BUSY); ACK ends it."""
    busy = f"""
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
"""
    return _HEAD + f"""<scenario name="busy {escape(user)}">
  <recv request="INVITE" crlf="true"/>
  <send>{_cdata(busy)}</send>
  <recv request="ACK"/>
</scenario>
"""


def subscribe_scenario(user: str, domain: str, target: str, expires: int) -> str:
    """SUBSCRIBE to the dialog events (BLF) of `target` in the domain (answering a digest challenge if one
    comes), then take and 200 every NOTIFY until stopped (SippRun.stop)."""
    def request(cseq: int, auth: str) -> str:
        return f"""
SUBSCRIBE sip:{target}@{domain} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@{domain}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{target}@{domain}>
Call-ID: [call_id]
CSeq: {cseq} SUBSCRIBE
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
{auth}Max-Forwards: 70
Event: dialog
Accept: application/dialog-info+xml
Expires: {expires}
User-Agent: switchdesk-test-sipp
Content-Length: 0
"""
    ok_notify = f"""
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
"""
    return _HEAD + f"""<scenario name="subscribe {escape(target)}">
  <send retrans="500">{_cdata(request(1, ""))}</send>
  <recv response="407" optional="true" auth="true" next="auth"/>
  <recv response="401" optional="true" auth="true" next="auth"/>
  <recv response="200" optional="true" next="watch"/>
  <recv response="202" next="watch"/>
  <label id="auth"/>
  <send retrans="500">{_cdata(request(2, "[authentication]" + chr(10)))}</send>
  <recv response="200" optional="true" next="watch"/>
  <recv response="202"/>
  <label id="watch"/>
  <recv request="NOTIFY"/>
  <send next="watch">{_cdata(ok_notify)}</send>
</scenario>
"""


@dataclass
class SippRun:
    """One sipp process; `wait()` returns it once sipp has exited."""

    name: str
    command: list[str]
    process: subprocess.Popen
    messages: Path
    errors: Path
    output: Path

    def wait(self, timeout: float = 60) -> SippRun:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        return self

    def stop(self) -> SippRun:
        """End a sipp that waits without end (a subscription)."""
        if self.process.poll() is None:
            self.process.terminate()
        return self.wait(5)

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0

    def report(self) -> str:
        """What went wrong, for an assertion message: exit code, sipp's errors and the SIP it saw."""
        def tail(path: Path, size: int = 6000) -> str:
            try:
                return path.read_text(errors="replace")[-size:]
            except OSError:
                return "(none)"
        return (f"sipp {self.name} exited {self.process.returncode}\n--- errors ---\n{tail(self.errors)}"
                f"\n--- output ---\n{tail(self.output, 2000)}\n--- SIP messages ---\n{tail(self.messages)}")

    def sip_log(self) -> str:
        try:
            return self.messages.read_text(errors="replace")
        except OSError:
            return ""


class Phone:
    """A SIP device on loopback: fixed SIP and media ports, so the contact it registers stays reachable."""

    def __init__(self, workdir: Path, fs_sip_port: int, domain: str, username: str, password: str):
        self.workdir, self.fs_sip_port = workdir, fs_sip_port
        self.domain, self.username, self.password = domain, username, password
        self.sip_port = free_port()
        self.media_port = free_range(4)  # sipp binds audio and video, RTP and RTCP
        self.runs = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def _sipp(self, name: str, scenario: str, timeout_s: int, password: str | None = None,
              calls: int = 1) -> SippRun:
        if SIPP is None:
            raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
        self.runs += 1
        stem = self.workdir / f"{self.username}-{self.runs:02d}-{name}"
        path = stem.with_suffix(".xml")
        path.write_text(scenario)
        command = [SIPP, f"{HOST}:{self.fs_sip_port}", "-sf", str(path), "-i", HOST, "-p", str(self.sip_port),
                   "-mp", str(self.media_port), "-m", str(calls), "-l", "1", "-nostdin", "-timeout", f"{timeout_s}s",
                   # 200 OK to in-dialog NOTIFY/INFO/UPDATE/OPTIONS, as a phone does (FreeSWITCH NOTIFYs `talk`
                   # to a phone asked to answer by itself)
                   "-aa",
                   "-timeout_error", "-au", self.username, "-ap", password or self.password,
                   "-trace_msg", "-message_file", f"{stem}.messages.log",
                   "-trace_err", "-error_file", f"{stem}.errors.log"]
        output = Path(f"{stem}.out")
        with open(output, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.workdir)
        return SippRun(name, command, process, Path(f"{stem}.messages.log"), Path(f"{stem}.errors.log"), output)

    def register(self, password: str | None = None, expires: int = 3600, expect: int = 200) -> SippRun:
        """REGISTER with digest auth and wait for the answer (expires 3600 s: no refresh needed in a session)."""
        scenario = register_scenario(self.username, self.domain, expires, expect)
        return self._sipp(f"register-{expect}", scenario, 15, password).wait(20)

    def unregister(self) -> SippRun:
        return self._sipp("unregister", register_scenario(self.username, self.domain, 0, 200), 15).wait(20)

    def call(self, number: str, hold_seconds: float, rtp_port: int | None = None) -> SippRun:
        """Dial `number` in the background; hangs up after `hold_seconds` once answered. `wait()` on it."""
        scenario = call_scenario(self.username, self.domain, number,
                                 str(rtp_port) if rtp_port else "[media_port]", int(hold_seconds * 1000))
        return self._sipp("call", scenario, int(hold_seconds) + 30)

    def answer(self, stay_seconds: float, ring_seconds: float = 0.2, rtp_port: int | None = None,
               timeout_s: int = 60) -> SippRun:
        """Wait in the background for one call to this phone and answer it; `wait()` on it."""
        scenario = answer_scenario(self.username, str(rtp_port) if rtp_port else "[media_port]",
                                   int(ring_seconds * 1000), int(stay_seconds * 1000))
        return self._sipp("answer", scenario, timeout_s)

    def busy(self, timeout_s: int = 60) -> SippRun:
        """Wait in the background for one call and refuse it busy (486); `wait()` on it."""
        return self._sipp("busy", busy_scenario(self.username), timeout_s)

    def listening(self) -> bool:
        """Whether a sipp of this phone has bound its SIP port (read from /proc/net/udp: binding the port
        to find out could take it from a sipp starting at that moment)."""
        wanted = f":{self.sip_port:04X} "
        try:
            with open("/proc/net/udp") as table:
                return any(wanted in line.split(None, 3)[1] + " " for line in table if ":" in line)
        except OSError:
            time.sleep(0.3)  # not Linux: give sipp the time it usually needs
            return True

    def wait_listening(self, timeout: float = 5) -> None:
        """Until the background sipp (answer, ring) can take calls: FreeSWITCH's INVITE to a port nobody
        has bound yet fails at once (NORMAL_TEMPORARY_FAILURE)."""
        deadline = time.monotonic() + timeout
        while not self.listening():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sipp for {self.username} not listening on {self.sip_port} in {timeout} s")
            time.sleep(0.02)

    def subscribe(self, target: str, expires: int = 60, timeout_s: int = 60) -> SippRun:
        """In the background: subscribe to `target`'s dialog events (a BLF key) and take every NOTIFY; read them
        from its messages while it runs, `stop()` it once seen (it never ends by itself)."""
        return self._sipp("subscribe", subscribe_scenario(self.username, self.domain, target, expires), timeout_s)

    def ring(self, calls: int = 1, timeout_s: int = 60) -> SippRun:
        """Wait in the background for `calls` calls to this phone, one at a time, and let each ring (180)
        until FreeSWITCH cancels it; never answers. `wait()` on it."""
        return self._sipp("ring", ring_scenario(self.username), timeout_s, calls=calls)


class RtpSink:
    """A UDP port that counts the RTP packets sent to it and keeps their PCMU payloads."""

    def __init__(self):
        self.port = free_range(2)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, self.port))
        self.sock.settimeout(0.2)
        self.packets = 0
        self.payload_types: set[int] = set()
        self.audio = bytearray()
        self.first: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-sink-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:  # not RTP version 2
                continue
            if self.first is None:
                self.first = time.monotonic()
            self.packets += 1
            payload_type = data[1] & 0x7F
            self.payload_types.add(payload_type)
            if payload_type == 0:
                header = 12 + 4 * (data[0] & 0x0F)
                self.audio += data[header:]

    def loudest(self) -> int:
        """The largest sample magnitude heard (PCMU decoded; silence is 0, the generated chime ~3277)."""
        return max((abs(_ulaw(b)) for b in self.audio), default=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample
