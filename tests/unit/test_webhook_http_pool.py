"""Tests for connection reuse in the webhook POST, against keep-alive servers on loopback.

The server numbers its connections from 1 and the requests on each connection from 1, and
misbehaves on the (connection, request) pairs a test scripts. Host names resolve through
injected resolvers only, so no test uses DNS or leaves loopback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fkod.core.webhooks.http import (
    DeliveryResult,
    WebhookConnectionPool,
    close_pooled_connections,
    post_webhook,
)
from tests.unit.test_webhook_http import make_tls_files

# What the server does with one request: "ok" responds with 200 and keeps the connection
# open, "close" closes the connection without a response, "reset" resets it, "partial"
# sends part of a status line and closes, "stall" sends part of the body and waits for the
# client to close, "large" responds with 200 and a 100 kB body.
Action = str


@dataclass
class ServerLog:
    """What a keep-alive server saw: requests as (connection, request) numbers, and closes."""

    requests: list[tuple[int, int]] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)
    connections: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)

    def wait_closed(self, connection: int, timeout: float = 5.0) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: connection in self.closed, timeout)


class KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle connection ends after this many seconds, so no test can hang on one.
    timeout = 5
    server: KeepAliveServer

    def setup(self) -> None:
        super().setup()
        log = self.server.log
        with log.condition:
            log.connections += 1
            self.connection_number = log.connections
        self.request_number = 0

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        log = self.server.log
        with log.condition:
            log.closed.add(self.connection_number)
            log.condition.notify_all()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.request_number += 1
        log = self.server.log
        with log.condition:
            log.requests.append((self.connection_number, self.request_number))
            log.condition.notify_all()

        action = self.server.script.get((self.connection_number, self.request_number), "ok")
        if action == "ok":
            self._respond(b"ok")
        elif action == "large":
            self._respond(b"x" * 100_000)
        elif action == "close":
            self.close_connection = True
        elif action == "reset":
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
            self.close_connection = True
        elif action == "partial":
            self.wfile.write(b"HTTP/1.1 2")
            self.wfile.flush()
            self.close_connection = True
        elif action == "stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"first part")
            self.wfile.flush()
            # Wait until the client closes the connection, or at most 5 seconds.
            select.select([self.connection], [], [], 5)
            self.close_connection = True
        else:
            raise AssertionError(f"unknown action {action!r}")

    def _respond(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 drops connects beyond it, and the client's
    # SYN retry then takes a second or more.
    request_queue_size = 64

    def __init__(
        self, script: dict[tuple[int, int], Action], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__((host, port), KeepAliveHandler)
        self.script = script
        self.log = ServerLog()

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients close connections early on purpose in several tests.
        pass

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextlib.contextmanager
def keep_alive_server(
    script: dict[tuple[int, int], Action] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    wrap: Callable[[socket.socket], socket.socket] | None = None,
) -> Iterator[KeepAliveServer]:
    server = KeepAliveServer(script or {}, host, port)
    if wrap is not None:
        server.socket = wrap(server.socket)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def pool() -> Iterator[WebhookConnectionPool]:
    connection_pool = WebhookConnectionPool()
    yield connection_pool
    connection_pool.close()


def resolver_for(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    return resolve


def post(url: str, pool: WebhookConnectionPool | None, **kwargs) -> DeliveryResult:
    options = {"timeout_seconds": 5.0, "allow_loopback": True, "connection_pool": pool}
    options.update(kwargs)
    return post_webhook(url, b"{}", {"Content-Type": "application/json"}, **options)


def test_second_delivery_reuses_connection(pool: WebhookConnectionPool) -> None:
    with keep_alive_server() as server:
        first = post(f"http://127.0.0.1:{server.port}/hook", pool)
        second = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert (first.status_code, first.error) == (200, None)
    assert (second.status_code, second.error) == (200, None)
    assert server.log.requests == [(1, 1), (1, 2)]


def test_each_host_name_gets_own_connection(pool: WebhookConnectionPool) -> None:
    resolver = resolver_for({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})

    with keep_alive_server() as server:
        for host in ("a.test", "b.test", "a.test", "b.test"):
            result = post(f"http://{host}:{server.port}/hook", pool, resolver=resolver)
            assert result.status_code == 200

    assert server.log.requests == [(1, 1), (2, 1), (1, 2), (2, 2)]


def test_new_dns_answer_gets_new_connection(pool: WebhookConnectionPool) -> None:
    answers = {"hooks.test": ["127.0.0.1"]}
    resolver = resolver_for(answers)

    with keep_alive_server() as first:
        with keep_alive_server(host="127.0.0.2", port=first.port) as second:
            before = post(f"http://hooks.test:{first.port}/hook", pool, resolver=resolver)
            answers["hooks.test"] = ["127.0.0.2"]
            after = post(f"http://hooks.test:{first.port}/hook", pool, resolver=resolver)

    assert before.status_code == 200
    assert after.status_code == 200
    assert first.log.requests == [(1, 1)]
    assert second.log.requests == [(1, 1)]


@pytest.mark.parametrize("rebound", ["10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1"])
def test_rebound_name_not_sent_on_pooled_connection(
    pool: WebhookConnectionPool, rebound: str
) -> None:
    answers = {"hooks.test": ["127.0.0.1"]}
    resolver = resolver_for(answers)

    with keep_alive_server() as server:
        before = post(f"http://hooks.test:{server.port}/hook", pool, resolver=resolver)
        answers["hooks.test"] = [rebound]
        after = post(f"http://hooks.test:{server.port}/hook", pool, resolver=resolver)

    assert before.status_code == 200
    assert after.status_code is None
    assert after.error.startswith("unsafe address: ")
    assert server.log.requests == [(1, 1)]


def test_each_ssl_context_gets_own_connection(
    pool: WebhookConnectionPool, tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path, "hooks.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls.cert_path, tls.key_path)
    contexts = [ssl.create_default_context(cadata=tls.ca_pem) for _ in range(2)]
    resolver = resolver_for({"hooks.test": ["127.0.0.1"]})

    def wrap(listener: socket.socket) -> socket.socket:
        return server_context.wrap_socket(listener, server_side=True)

    with keep_alive_server(wrap=wrap) as server:
        url = f"https://hooks.test:{server.port}/hook"
        results = [
            post(url, pool, resolver=resolver, ssl_context=context)
            for context in (contexts[0], contexts[1], contexts[0])
        ]

    assert [result.status_code for result in results] == [200, 200, 200]
    assert server.log.requests == [(1, 1), (2, 1), (1, 2)]


@pytest.mark.parametrize("action", ["close", "reset"])
def test_stale_connection_retried_on_new_one(
    pool: WebhookConnectionPool, action: Action
) -> None:
    with keep_alive_server({(1, 2): action}) as server:
        first = post(f"http://127.0.0.1:{server.port}/hook", pool)
        second = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert first.status_code == 200
    assert second.status_code == 200
    assert second.error is None
    assert server.log.requests == [(1, 1), (1, 2), (2, 1)]


def test_partial_response_not_retried(pool: WebhookConnectionPool) -> None:
    with keep_alive_server({(1, 2): "partial"}) as server:
        post(f"http://127.0.0.1:{server.port}/hook", pool)
        result = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert result.status_code is None
    assert result.error == "invalid http response"
    assert server.log.requests == [(1, 1), (1, 2)]


@pytest.mark.parametrize(
    ("action", "error"),
    [("close", "connection closed before a response"), ("reset", "connection reset")],
)
def test_new_connection_closed_not_retried(
    pool: WebhookConnectionPool, action: Action, error: str
) -> None:
    with keep_alive_server({(1, 1): action}) as server:
        result = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert result.status_code is None
    assert result.error == error
    assert server.log.requests == [(1, 1)]


def test_failed_read_drops_connection(pool: WebhookConnectionPool) -> None:
    with keep_alive_server({(1, 1): "stall"}) as server:
        stalled = post(f"http://127.0.0.1:{server.port}/hook", pool, timeout_seconds=0.5)
        closed = server.log.wait_closed(1)
        later = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert stalled.status_code == 200
    assert stalled.error == "timed out"
    assert closed
    assert later.status_code == 200
    assert server.log.requests == [(1, 1), (2, 1)]


def test_partly_read_body_drops_connection(pool: WebhookConnectionPool) -> None:
    with keep_alive_server({(1, 1): "large"}) as server:
        large = post(f"http://127.0.0.1:{server.port}/hook", pool, max_response_bytes=10)
        closed = server.log.wait_closed(1)
        later = post(f"http://127.0.0.1:{server.port}/hook", pool)

    assert large.status_code == 200
    assert large.error is None
    assert large.body == "x" * 10
    assert closed
    assert later.status_code == 200
    assert server.log.requests == [(1, 1), (2, 1)]


def test_body_of_exactly_max_bytes_keeps_connection(pool: WebhookConnectionPool) -> None:
    with keep_alive_server() as server:
        first = post(f"http://127.0.0.1:{server.port}/hook", pool, max_response_bytes=2)
        second = post(f"http://127.0.0.1:{server.port}/hook", pool, max_response_bytes=2)

    assert first.body == "ok"
    assert second.body == "ok"
    assert server.log.requests == [(1, 1), (1, 2)]


def test_least_recently_used_target_closed() -> None:
    pool = WebhookConnectionPool(max_targets=2)
    resolver = resolver_for({f"{name}.test": ["127.0.0.1"] for name in "abc"})

    try:
        with keep_alive_server() as server:
            for host in ("a.test", "b.test", "a.test", "c.test"):
                post(f"http://{host}:{server.port}/hook", pool, resolver=resolver)
            b_closed = server.log.wait_closed(2)
            a_open = not server.log.wait_closed(1, timeout=0.2)
            post(f"http://a.test:{server.port}/hook", pool, resolver=resolver)
    finally:
        pool.close()

    assert b_closed
    assert a_open
    assert server.log.requests == [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3)]


def test_idle_target_closed_by_next_delivery() -> None:
    pool = WebhookConnectionPool(idle_seconds=0.2)
    resolver = resolver_for({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})

    try:
        with keep_alive_server() as server:
            post(f"http://a.test:{server.port}/hook", pool, resolver=resolver)
            time.sleep(0.3)
            post(f"http://b.test:{server.port}/hook", pool, resolver=resolver)
            a_closed = server.log.wait_closed(1)
            post(f"http://a.test:{server.port}/hook", pool, resolver=resolver)
    finally:
        pool.close()

    assert a_closed
    assert server.log.requests == [(1, 1), (2, 1), (3, 1)]


def test_target_in_use_closed_after_delivery() -> None:
    # With room for one target, the delivery to b.test evicts a.test while a.test's
    # response is still being read.
    pool = WebhookConnectionPool(max_targets=1)
    resolver = resolver_for({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})

    try:
        with keep_alive_server({(1, 1): "stall"}) as server:
            with ThreadPoolExecutor(max_workers=1) as executor:
                stalled = executor.submit(
                    post,
                    f"http://a.test:{server.port}/hook",
                    pool,
                    resolver=resolver,
                    timeout_seconds=1.0,
                )
                wait_until(lambda: server.log.requests == [(1, 1)])
                other = post(f"http://b.test:{server.port}/hook", pool, resolver=resolver)
                open_during_delivery = not server.log.wait_closed(1, timeout=0.2)
                stalled_result = stalled.result(timeout=5)
            closed_after = server.log.wait_closed(1)
    finally:
        pool.close()

    assert other.status_code == 200
    assert open_during_delivery
    assert stalled_result.status_code == 200
    assert stalled_result.body == "first part"
    assert stalled_result.error == "timed out"
    assert closed_after


def test_close_pooled_connections_closes_default_pool() -> None:
    with keep_alive_server() as server:
        result = post(f"http://127.0.0.1:{server.port}/hook", None)
        open_before = not server.log.wait_closed(1, timeout=0.2)
        close_pooled_connections()
        closed = server.log.wait_closed(1)

    assert result.status_code == 200
    assert open_before
    assert closed


def test_concurrent_deliveries_share_connections(pool: WebhookConnectionPool) -> None:
    threads = 8
    deliveries = 20 * threads

    with keep_alive_server() as server:
        with ThreadPoolExecutor(max_workers=threads) as executor:
            results = list(
                executor.map(
                    # A loaded machine can keep a thread waiting for seconds.
                    lambda _: post(f"http://127.0.0.1:{server.port}/hook", pool,
                                   timeout_seconds=30.0),
                    range(deliveries),
                )
            )

    assert [result.status_code for result in results] == [200] * deliveries
    assert [result.error for result in results] == [None] * deliveries
    assert len(server.log.requests) == deliveries
    assert server.log.connections <= threads


@pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK exists on Linux only"
)
def test_response_in_two_writes_not_delayed(pool: WebhookConnectionPool) -> None:
    # The handler writes the head and then the body without TCP_NODELAY, so a delayed
    # ACK would hold each body back for about 40 ms.
    with keep_alive_server() as server:
        results = [post(f"http://127.0.0.1:{server.port}/hook", pool) for _ in range(15)]

    assert [result.status_code for result in results] == [200] * 15
    assert server.log.connections == 1
    assert statistics.median(result.duration_ms for result in results) < 30


def test_pool_arguments_validated() -> None:
    with pytest.raises(ValueError):
        WebhookConnectionPool(max_targets=0)
    with pytest.raises(ValueError):
        WebhookConnectionPool(max_connections_per_target=0)
    with pytest.raises(ValueError):
        WebhookConnectionPool(idle_seconds=0)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
