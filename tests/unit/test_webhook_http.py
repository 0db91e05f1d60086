"""Tests for the pinned webhook POST against real HTTP servers on 127.0.0.1.

Host names resolve through injected resolvers only, so no test uses DNS or leaves loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fkod.core.webhooks.http import (
    USER_AGENT,
    close_pooled_connections,
    parse_retry_after,
    post_webhook,
)


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class ReceiverState:
    requests: list[ReceivedRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)


class RecordingHandler(BaseHTTPRequestHandler):
    """Handler that records each request exactly and responds according to its path."""

    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection ends after this many seconds, so a test that leaves
    # one open cannot hang in server_close().
    timeout = 10
    server: RecordingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.state.requests.append(
            ReceivedRequest(self.command, self.path, list(self.headers.items()), body)
        )
        path, _, query = self.path.partition("?")
        options = dict(parse_qsl(query))

        if path == "/redirect-to":
            self.send_response(int(options["status"]))
            self.send_header("Location", options["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/retry-after":
            self.send_response(int(options.get("status", "503")))
            for value in options.get("values", "").split("|"):
                if value:
                    self.send_header("Retry-After", value)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/ok":
            self._respond(200, "received ☕".encode(), "text/plain; charset=utf-8")
        elif self.path == "/error":
            self._respond(500, b"internal failure", "text/plain")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            self.server.state.release.wait(10)
            self._respond(200, b"late", "text/plain")
        elif self.path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"first part")
            self.wfile.flush()
            self.server.state.release.wait(10)
        elif self.path == "/large":
            self._respond(200, b"x" * 1_000_000, "text/plain")
        elif self.path == "/latin1":
            self._respond(200, b"caf\xe9 \xff", "text/plain; charset=utf-8")
        else:
            self._respond(404, b"not found", "text/plain")

    def _respond(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    # server_close() joins the handler threads, so no handler outlives its test.
    daemon_threads = False
    block_on_close = True

    def __init__(self, state: ReceiverState) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        # The client closes the connection early on purpose in the timeout and size tests.
        pass


@dataclass
class Receiver:
    state: ReceiverState
    port: int

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@contextlib.contextmanager
def run_server(server: RecordingServer) -> Iterator[None]:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        yield
    finally:
        # A pooled keep-alive connection would keep its handler thread, which
        # server_close() joins, waiting for another request.
        close_pooled_connections()
        server.state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = ReceiverState()
    server = RecordingServer(state)
    with run_server(server):
        yield Receiver(state, server.server_address[1])


def resolver_for(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def header_values(request: ReceivedRequest, name: str) -> list[str]:
    return [value for key, value in request.headers if key.lower() == name.lower()]


def post(url: str, body: bytes = b"{}", **kwargs):
    options = {"timeout_seconds": 5.0, "allow_loopback": True}
    options.update(kwargs)
    return post_webhook(url, body, {"Content-Type": "application/json"}, **options)


def test_success_records_status_and_body(receiver: Receiver) -> None:
    body = '{"event": "partner.created", "name": "Café ☕"}'.encode()

    result = post(receiver.url("/ok"), body)

    assert result.error is None
    assert result.status_code == 200
    assert result.body == "received ☕"
    assert result.duration_ms >= 0
    assert len(receiver.state.requests) == 1
    received = receiver.state.requests[0]
    assert received.method == "POST"
    assert received.path == "/ok"
    assert received.body == body


def test_success_sends_expected_headers(receiver: Receiver) -> None:
    post_webhook(
        receiver.url("/ok"),
        b"{}",
        {
            "Content-Type": "application/json",
            "X-FKOD-Signature": "t=1,v1=ab",
            "Host": "spoofed.test",
        },
        timeout_seconds=5.0,
        allow_loopback=True,
    )

    received = receiver.state.requests[0]
    assert header_values(received, "Content-Type") == ["application/json"]
    assert header_values(received, "User-Agent") == [USER_AGENT]
    assert header_values(received, "X-FKOD-Signature") == ["t=1,v1=ab"]
    assert header_values(received, "Host") == [f"127.0.0.1:{receiver.port}"]
    assert header_values(received, "Content-Length") == ["2"]
    assert header_values(received, "Transfer-Encoding") == []
    assert header_values(received, "Connection") == []
    assert header_values(received, "Accept-Encoding") == ["identity"]


def test_caller_user_agent_kept(receiver: Receiver) -> None:
    post_webhook(
        receiver.url("/ok"),
        b"{}",
        {"user-agent": "Custom/2.0"},
        timeout_seconds=5.0,
        allow_loopback=True,
    )

    assert header_values(receiver.state.requests[0], "User-Agent") == ["Custom/2.0"]


def test_server_error_recorded(receiver: Receiver) -> None:
    result = post(receiver.url("/error"))

    assert result.status_code == 500
    assert result.body == "internal failure"
    assert result.error is None


def test_redirect_not_followed(receiver: Receiver) -> None:
    result = post(receiver.url("/redirect"))

    assert result.status_code == 302
    assert result.error == "redirect not followed: 302"
    assert [request.path for request in receiver.state.requests] == ["/redirect"]


def test_slow_receiver_times_out(receiver: Receiver) -> None:
    result = post(receiver.url("/slow"), timeout_seconds=0.3)

    assert result.status_code is None
    assert result.error == "timed out"
    assert result.duration_ms < 3000


def test_stalled_body_times_out(receiver: Receiver) -> None:
    result = post(receiver.url("/slow-body"), timeout_seconds=0.5)

    assert result.status_code == 200
    assert result.error == "timed out"
    assert result.body == "first part"


def test_closed_port_connection_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = post(f"http://127.0.0.1:{port}/ok")

    assert result.status_code is None
    assert result.error == "connection refused"
    assert result.body == ""


def test_large_response_truncated(receiver: Receiver) -> None:
    result = post(receiver.url("/large"), max_response_bytes=4096)

    assert result.status_code == 200
    assert result.error is None
    assert result.body == "x" * 4096


def test_non_ascii_path_percent_encoded(receiver: Receiver) -> None:
    result = post(receiver.url("/hooks/café?name=Zoë&sum=1%2B1"))

    assert result.status_code == 404
    assert receiver.state.requests[0].path == "/hooks/caf%C3%A9?name=Zo%C3%AB&sum=1%2B1"


def test_invalid_utf8_body_replaced(receiver: Receiver) -> None:
    result = post(receiver.url("/latin1"))

    assert result.body == "caf\ufffd \ufffd"


def test_host_header_keeps_original_name(receiver: Receiver) -> None:
    calls: list[str] = []
    resolver = resolver_for({"hooks.test": ["127.0.0.1"]}, calls)

    result = post(receiver.url("/ok", host="hooks.test"), resolver=resolver)

    assert result.status_code == 200
    assert header_values(receiver.state.requests[0], "Host") == [
        f"hooks.test:{receiver.port}"
    ]
    assert calls == ["hooks.test"]


def test_next_address_tried_after_refusal(receiver: Receiver) -> None:
    # Nothing listens on 127.0.0.2 at this port, so the first connection is refused.
    resolver = resolver_for({"hooks.test": ["127.0.0.2", "127.0.0.1"]})

    result = post(receiver.url("/ok", host="hooks.test"), resolver=resolver)

    assert result.status_code == 200
    assert result.error is None


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def forbid_connect(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"unexpected connection to {address!r}")

    def forbid_create_connection(
        address: object, *args: object, **kwargs: object
    ) -> None:
        attempts.append(address)
        raise AssertionError(f"unexpected connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", forbid_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", forbid_connect)
    monkeypatch.setattr(socket, "create_connection", forbid_create_connection)
    return attempts


def test_private_address_rejected_before_connecting(
    no_connections: list[object],
) -> None:
    resolver = resolver_for({"hooks.internal.test": ["10.0.0.1"]})

    result = post_webhook(
        "http://hooks.internal.test/hook",
        b"{}",
        {},
        timeout_seconds=1.0,
        allow_loopback=False,
        resolver=resolver,
    )

    assert result.status_code is None
    assert result.error == (
        "unsafe address: The host 'hooks.internal.test' resolves to 10.0.0.1, "
        "which is a private address."
    )
    assert no_connections == []


def test_mixed_answer_rejected_before_connecting(no_connections: list[object]) -> None:
    resolver = resolver_for({"rebind.test": ["127.0.0.1", "169.254.169.254"]})

    result = post("http://rebind.test/hook", resolver=resolver)

    assert result.error.startswith("unsafe address: ")
    assert "169.254.169.254" in result.error
    assert no_connections == []


def test_loopback_rejected_unless_allowed(no_connections: list[object]) -> None:
    result = post("http://127.0.0.1:9/hook", allow_loopback=False)

    assert result.error == "unsafe address: The address 127.0.0.1 is a loopback address."
    assert no_connections == []


# Each kind of address a host name may not resolve to, with the word the error uses.
# 93.184.215.14 is a public address that is only classified, never contacted.
REFUSED_ANSWERS = [
    (["127.0.0.1"], "loopback"),
    (["::1"], "loopback"),
    (["169.254.169.254"], "link-local"),
    (["::ffff:127.0.0.1"], "loopback"),
    (["::ffff:a9fe:a9fe"], "link-local"),
    (["10.0.0.1"], "private"),
    (["172.16.0.1"], "private"),
    (["192.168.1.1"], "private"),
    (["100.64.0.1"], "CGNAT"),
    (["fd00::1"], "private"),
    (["fe80::1"], "link-local"),
    (["0.0.0.0"], "unspecified"),
    (["::"], "unspecified"),
    (["224.0.0.1"], "multicast"),
    (["93.184.215.14", "10.0.0.1"], "private"),
]


@pytest.mark.parametrize(("answers", "kind"), REFUSED_ANSWERS)
def test_refused_answer_not_contacted(
    no_connections: list[object], answers: list[str], kind: str
) -> None:
    refused = str(ipaddress.ip_address(answers[-1]))

    result = post(
        "http://hooks.test/hook",
        allow_loopback=False,
        resolver=resolver_for({"hooks.test": answers}),
    )

    assert result.status_code is None
    assert result.body == ""
    assert result.error.startswith("unsafe address: The host 'hooks.test' resolves to ")
    assert refused in result.error
    assert kind in result.error
    assert no_connections == []


@pytest.mark.parametrize(
    ("answers", "kind"),
    [case for case in REFUSED_ANSWERS if case[0] not in (["127.0.0.1"], ["::1"])],
)
def test_refused_answer_not_contacted_with_loopback_allowed(
    no_connections: list[object], answers: list[str], kind: str
) -> None:
    result = post(
        "http://hooks.test/hook",
        allow_loopback=True,
        resolver=resolver_for({"hooks.test": answers}),
    )

    assert result.status_code is None
    assert result.error.startswith("unsafe address: ")
    assert kind in result.error
    assert no_connections == []


def test_unresolvable_host_reported(no_connections: list[object]) -> None:
    result = post("http://missing.test/hook", resolver=resolver_for({}))

    assert result.error == "unresolvable host"
    assert no_connections == []


def test_invalid_url_reported(no_connections: list[object]) -> None:
    result = post("ftp://127.0.0.1/hook")

    assert result.error == "invalid url: scheme_not_allowed"
    assert no_connections == []


def test_header_with_line_break_raises() -> None:
    with pytest.raises(ValueError):
        post_webhook(
            "http://127.0.0.1:9/",
            b"{}",
            {"X-Test": "a\r\nInjected: yes"},
            timeout_seconds=1.0,
            allow_loopback=True,
        )


@pytest.mark.parametrize(
    "headers",
    [
        {"X Test": "1"},
        {"X-Test:": "1"},
        {"": "1"},
        {"X-Tést": "1"},
        {"X-Test": "caf\u00e9"},
        {"X-Test": "a\x01b"},
        {"X-Test": "a\x7fb"},
    ],
)
def test_invalid_header_raises(
    no_connections: list[object], headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        post_webhook(
            "http://127.0.0.1:9/",
            b"{}",
            headers,
            timeout_seconds=1.0,
            allow_loopback=True,
        )

    assert no_connections == []


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_invalid_connect_timeout_raises(value: float) -> None:
    with pytest.raises(ValueError):
        post("http://127.0.0.1:9/", connect_timeout_seconds=value)


@pytest.fixture
def connected_addresses(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record the address of every outgoing TCP connection and let it proceed."""
    addresses: list[object] = []
    create_connection = socket.create_connection

    def record(address: object, *args: object, **kwargs: object) -> socket.socket:
        addresses.append(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", record)
    return addresses


@pytest.mark.parametrize("status", [302, 307])
def test_redirect_to_metadata_not_followed(
    receiver: Receiver, connected_addresses: list[object], status: int
) -> None:
    location = "http://169.254.169.254/latest/meta-data/"
    query = urlencode({"status": status, "location": location})

    result = post(receiver.url(f"/redirect-to?{query}"))

    assert result.status_code == status
    assert result.error == f"redirect not followed: {status}"
    assert len(receiver.state.requests) == 1
    assert connected_addresses == [("127.0.0.1", receiver.port)]


@pytest.mark.parametrize("status", [302, 307])
def test_redirect_to_other_port_not_followed(receiver: Receiver, status: int) -> None:
    other = RecordingServer(ReceiverState())
    location = f"http://127.0.0.1:{other.server_address[1]}/ok"
    query = urlencode({"status": status, "location": location})

    with run_server(other):
        result = post(receiver.url(f"/redirect-to?{query}"))

    assert result.status_code == status
    assert result.error == f"redirect not followed: {status}"
    assert len(receiver.state.requests) == 1
    assert other.state.requests == []


def test_proxy_variables_ignored(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = RecordingServer(ReceiverState())
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    with run_server(proxy):
        result = post(receiver.url("/ok"))

    assert result.status_code == 200
    assert len(receiver.state.requests) == 1
    assert proxy.state.requests == []


@pytest.mark.parametrize(
    ("status", "values", "expected"),
    [
        (503, "120", 120.0),
        (429, "0", 0.0),
        (200, "30", 30.0),
        (302, "5", 5.0),
        (503, "", None),
        (503, "soon", None),
        (503, "-5", None),
        (503, "10|20", None),
        (503, "7|7", 7.0),
    ],
)
def test_retry_after_returned(
    receiver: Receiver, status: int, values: str, expected: float | None
) -> None:
    query = urlencode({"status": status, "values": values})

    result = post(receiver.url(f"/retry-after?{query}"))

    assert result.status_code == status
    assert result.retry_after_seconds == expected


def test_retry_after_http_date_returned(receiver: Receiver) -> None:
    in_one_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    query = urlencode({"status": 503, "values": in_one_minute})

    result = post(receiver.url(f"/retry-after?{query}"))

    assert result.retry_after_seconds is not None
    assert 55 <= result.retry_after_seconds <= 60


def test_retry_after_absent_is_none(receiver: Receiver) -> None:
    result = post(receiver.url("/ok"))

    assert result.retry_after_seconds is None


# 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
DATE_NOW = 1445412480.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("9999999999", 9999999999.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        ("Wednesday, 21-Oct-15 07:30:00 GMT", 120.0),
        ("Wed Oct 21 07:30:00 2015", 120.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after_valid(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=DATE_NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "0x10",
        "12345678901",
        "soon",
        "\u0661\u0662",
        "Wed, 21 Oct 2015 25:30:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "2015-10-21T07:30:00Z",
    ],
)
def test_parse_retry_after_invalid(value: str | None) -> None:
    assert parse_retry_after(value, now=DATE_NOW) is None


def test_parse_retry_after_date_uses_current_time() -> None:
    in_two_minutes = email.utils.formatdate(time.time() + 120, usegmt=True)

    seconds = parse_retry_after(in_two_minutes)

    assert seconds is not None
    assert 115 <= seconds <= 120


@dataclass
class TlsFiles:
    ca_pem: str
    cert_path: Path
    key_path: Path


def make_tls_files(directory: Path, server_name: str) -> TlsFiles:
    """Write a test CA and a server certificate for ``server_name`` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "F-KOD test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    cert_path = directory / f"{server_name}.crt"
    key_path = directory / f"{server_name}.key"
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return TlsFiles(ca_pem, cert_path, key_path)


def tls_receiver(tls: TlsFiles) -> tuple[RecordingServer, ReceiverState]:
    state = ReceiverState()
    server = RecordingServer(state)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_path, tls.key_path)

    def record_server_name(
        ssl_socket: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext
    ) -> None:
        state.server_names.append(name)

    context.sni_callback = record_server_name
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server, state


def test_https_uses_hostname_for_sni_and_verification(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path, "hooks.test")
    server, state = tls_receiver(tls)
    port = server.server_address[1]
    client_context = ssl.create_default_context(cadata=tls.ca_pem)

    with run_server(server):
        result = post(
            f"https://hooks.test:{port}/ok",
            resolver=resolver_for({"hooks.test": ["127.0.0.1"]}),
            ssl_context=client_context,
        )

    assert result.error is None
    assert result.status_code == 200
    assert state.server_names == ["hooks.test"]
    assert header_values(state.requests[0], "Host") == [f"hooks.test:{port}"]


def test_https_certificate_for_other_name_rejected(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path, "other.test")
    server, state = tls_receiver(tls)
    port = server.server_address[1]
    client_context = ssl.create_default_context(cadata=tls.ca_pem)

    with run_server(server):
        result = post(
            f"https://hooks.test:{port}/ok",
            resolver=resolver_for({"hooks.test": ["127.0.0.1"]}),
            ssl_context=client_context,
        )

    assert result.status_code is None
    assert result.error == "tls certificate verification failed"
    assert state.requests == []


def test_https_ip_literal_certificate_for_name_rejected(tmp_path: Path) -> None:
    # Without a host name there is no SNI name to verify, so a name certificate fails.
    tls = make_tls_files(tmp_path, "hooks.test")
    server, state = tls_receiver(tls)
    port = server.server_address[1]
    client_context = ssl.create_default_context(cadata=tls.ca_pem)

    with run_server(server):
        result = post(f"https://127.0.0.1:{port}/ok", ssl_context=client_context)

    assert result.error == "tls certificate verification failed"
    assert state.server_names == [None]


@contextlib.contextmanager
def silent_tcp_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """Accept TCP connections and never send a byte, so a TLS handshake stalls; yield the port."""
    listener = socket.create_server((host, port))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_until_stopped() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=accept_until_stopped)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_stalled_tls_handshake_ends_at_connect_timeout() -> None:
    with silent_tcp_server() as port:
        result = post(
            f"https://127.0.0.1:{port}/ok",
            timeout_seconds=10.0,
            connect_timeout_seconds=0.3,
        )

    assert result.status_code is None
    assert result.error == "connect timed out"
    assert 250 <= result.duration_ms < 3000


def test_stalled_tls_handshake_ends_at_total_timeout() -> None:
    with silent_tcp_server() as port:
        result = post(f"https://127.0.0.1:{port}/ok", timeout_seconds=0.3)

    assert result.error == "connect timed out"
    assert 250 <= result.duration_ms < 3000


def test_next_address_tried_after_connect_timeout(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path, "hooks.test")
    server, state = tls_receiver(tls)
    port = server.server_address[1]
    resolver = resolver_for({"hooks.test": ["127.0.0.2", "127.0.0.1"]})

    with run_server(server), silent_tcp_server("127.0.0.2", port):
        result = post(
            f"https://hooks.test:{port}/ok",
            resolver=resolver,
            ssl_context=ssl.create_default_context(cadata=tls.ca_pem),
            timeout_seconds=10.0,
            connect_timeout_seconds=0.3,
        )

    assert result.error is None
    assert result.status_code == 200
    assert len(state.requests) == 1
    assert 250 <= result.duration_ms < 3000
