"""Tests for the pinned webhook POST against real HTTP servers on 127.0.0.1.

Host names resolve through injected resolvers only, so no test uses DNS or leaves loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fkod.core.webhooks.http import USER_AGENT, post_webhook


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
    server: RecordingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.state.requests.append(
            ReceivedRequest(self.command, self.path, list(self.headers.items()), body)
        )

        if self.path == "/ok":
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
    assert result.error == "unsafe address: private_address"
    assert no_connections == []


def test_mixed_answer_rejected_before_connecting(no_connections: list[object]) -> None:
    resolver = resolver_for({"rebind.test": ["127.0.0.1", "169.254.169.254"]})

    result = post("http://rebind.test/hook", resolver=resolver)

    assert result.error == "unsafe address: private_address"
    assert no_connections == []


def test_loopback_rejected_unless_allowed(no_connections: list[object]) -> None:
    result = post("http://127.0.0.1:9/hook", allow_loopback=False)

    assert result.error == "unsafe address: private_address"
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
