"""The webhook POST on the wire (engine.events.transport) against scripted receivers: what is sent, which
answers count, when a connection is kept, closed or refused, and TLS."""
from __future__ import annotations

import datetime
import ipaddress
import socket

import gevent
import gevent.server
import gevent.ssl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.events import transport
from engine.events.sender import Sender

OK = b"HTTP/1.1 204 No Content\r\n\r\n"


class Script:
    """A TCP server on 127.0.0.1 that reads each request whole and writes `answer(n)` for the n-th one.

    `answer` returns the bytes to write, or None to close the connection without a word; after writing,
    the connection is closed when `close_after(n)` says so. Records each request and each connection.
    """

    def __init__(self, answer=lambda n: OK, close_after=lambda n: False, ssl_context=None, hold=0.0):
        self.answer, self.close_after, self.hold = answer, close_after, hold
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        kw = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self.handle, **kw)
        self.server.start()
        self.port = self.server.server_port

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def handle(self, sock, _address) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                n = len(self.requests)
                if self.hold:
                    gevent.sleep(self.hold)
                reply = self.answer(n)
                if reply is None:
                    return
                sock.sendall(reply)
                if self.close_after(n):
                    return
        except OSError:
            return
        finally:
            self.open_now -= 1
            sock.close()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def make_script():
    scripts: list[Script] = []

    def make(**kw) -> Script:
        scripts.append(Script(**kw))
        return scripts[-1]

    yield make
    for script in scripts:
        script.stop()


@pytest.fixture
def make_sender():
    senders: list[Sender] = []

    def make(**kw) -> Sender:
        senders.append(Sender(allow_private=True, **kw))
        return senders[-1]

    yield make
    for one in senders:
        one.close()


def post(s: Sender, url: str, body: bytes = b'{"id":"e1"}', headers: dict[str, str] | None = None) -> int:
    return s.post(url, body, headers if headers is not None else {"Content-Type": "application/json"})


def test_the_request_on_the_wire(make_script, make_sender):
    script = make_script()
    status = post(make_sender(), script.url("/hooks/in?x=1"), b'{"a":"\xc3\xa9"}',
                  {"Content-Type": "application/json", "X-Switchdesk-Event-Id": "e1"})
    assert status == 204
    head, _, body = script.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hooks/in?x=1 HTTP/1.1"
    assert set(lines[1:]) == {f"Host: 127.0.0.1:{script.port}".encode(), b"User-Agent: switchdesk-webhooks/1",
                              b"Content-Length: 10", b"Content-Type: application/json", b"X-Switchdesk-Event-Id: e1"}
    assert body == b'{"a":"\xc3\xa9"}'


def test_route_builds_a_valid_request_line_from_any_stored_url():
    assert transport.route("https://example.com/a b/é?q=%20x")[1].startswith(
        b"POST /a%20b/%C3%A9?q=%20x HTTP/1.1\r\nHost: example.com\r\n")
    key, head = transport.route("http://[2001:db8::1]:8080")
    assert key == ("http", "2001:db8::1", 8080)
    assert b"POST / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n" in head
    assert b"Host: xn--bcher-kva.example\r\n" in transport.route("http://bücher.example/")[1]
    assert transport.route("http://example.com:80/x")[1].startswith(b"POST /x HTTP/1.1\r\nHost: example.com\r\n")
    assert b"\r\n\r\n" not in transport.route("http://example.com/a\x7fb\"<c>")[1]
    for bad in ("ftp://example.com/", "http:///nohost", "http://example.com:99999/", "/relative"):
        with pytest.raises(ValueError):
            transport.route(bad)


BIG = b"x" * (transport.MAX_ANSWER_BODY * 3)


@pytest.mark.parametrize("answer, closes, status, kept", [
    (OK, False, 204, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthank\r\n3\r\nyou\r\n0\r\n\r\n", False, 200, True),
    (b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Note: a\r\nX-Note: b\r\n\r\nok", False, 201, True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", False, 202, True),
    (b"HTTP/1.0 200 OK\r\n\r\nfine", True, 200, False),  # no length: the body ends with the connection
    (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False, 204, False),  # the server would keep it
    (b"HTTP/1.0 204 No Content\r\n\r\n", False, 204, False),
    (OK, True, 204, False),  # keep-alive promised, then closed while idle: a stale connection is not reused
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG), BIG), False, 200, False),  # cut off
], ids=["204", "chunked", "body", "interim", "until-close", "connection-close", "http-1.0", "stale", "too-long"])
def test_answers_and_when_their_connection_is_kept(make_script, make_sender, answer, closes, status, kept):
    script = make_script(answer=lambda n: answer, close_after=lambda n: closes)
    s = make_sender()
    for _ in range(3):
        assert post(s, script.url()) == status
        gevent.sleep(0.02)  # a close reaches the client's socket
    assert script.connections == (1 if kept else 3)


@pytest.mark.parametrize("answer", [
    None, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Filler: yes\r\n" * 10000 + b"Content-Length: 0\r\n\r\n",  # a head of 150 KB
    b"HTTP/1.1 102 Processing\r\n\r\n" * 10000 + OK,  # interim answers without end
])
def test_no_answer_or_a_broken_one_is_retried_later(make_script, make_sender, answer):
    script = make_script(answer=lambda n: answer, close_after=lambda n: True)
    s = make_sender()
    outcome = s.deliver(script.url(), b"{}", {})
    assert outcome.kind == "retry" and outcome.error
    assert post(make_sender(), make_script().url()) == 204  # and nothing is left broken for others


def test_the_deadline_closes_the_connection_and_frees_its_place(make_script, make_sender):
    slow = make_script(hold=5)
    s = make_sender(timeout=0.3, connections=1)
    with pytest.raises(TimeoutError):
        post(s, slow.url())
    slow.hold = 0
    assert post(s, slow.url()) == 204  # the pool's only place was given back
    assert slow.connections == 2


def test_at_most_connections_requests_in_flight_per_origin(make_script, make_sender):
    script = make_script(hold=0.1)
    s = make_sender(connections=2)
    jobs = [gevent.spawn(post, s, script.url()) for _ in range(6)]
    gevent.joinall(jobs, raise_error=True)
    assert [job.value for job in jobs] == [204] * 6
    assert script.most_open == 2


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_refused_addresses_are_checked_on_each_new_connection(make_script, scheme):
    script = make_script()
    s = Sender(allow_private=False)
    try:
        outcome = s.deliver(script.url(scheme=scheme), b"{}", {})
        assert outcome.kind == "failed" and "private address" in outcome.error
        assert script.connections == 0
    finally:
        s.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (server context, path of the certificate to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchdesk test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, str(cert_path)


def test_https_verifies_the_receiver_and_keeps_the_connection(make_script, make_sender, certificate):
    server_context, trusted = certificate
    script = make_script(ssl_context=server_context)
    def trusting_context(**_):
        context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)  # gevent's: the tests run unpatched
        context.load_verify_locations(cafile=trusted)
        return context

    trusting = make_sender(ssl_context_factory=trusting_context)
    assert [post(trusting, script.url(scheme="https")) for _ in range(3)] == [204] * 3
    assert script.connections == 1
    assert script.requests[0].startswith(b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:")
    usual = make_sender(ssl_context_factory=lambda **kw: gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT))
    outcome = usual.deliver(script.url(scheme="https"), b"{}", {})  # verified against no CA of ours: refused
    assert outcome.kind == "retry" and "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert len(script.requests) == 3


def test_liveness_check_tells_quiet_from_closed_or_talking():
    pool = transport.make_pool("http", "127.0.0.1", 9, connections=1, connect_timeout=1)
    a, b = socket.socketpair()
    ga = gevent.socket.socket(fileno=a.detach())
    try:
        assert pool._is_socket_alive(ga)
        b.send(b"x")
        gevent.sleep(0)
        assert not pool._is_socket_alive(ga)
        b.close()
        assert not pool._is_socket_alive(ga)
        ga.close()
        assert not pool._is_socket_alive(ga)
    finally:
        ga.close()
        pool.close()

