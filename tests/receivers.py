"""A loopback HTTP receiver that records every request, for webhook tests.

``Receiver`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 with a free port and
stores each request exactly as it arrived: method, path, headers in order, body
bytes and arrival time. It replies with a scripted sequence of ``Reply``
values, and the last one repeats for every later request::

    with Receiver(Reply(500), Reply(200)) as receiver:
        ...  # point a webhook at receiver.url
        first, second = receiver.wait_for(2, timeout=10)
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["ReceivedRequest", "Receiver", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One scripted response: its status, body, extra headers, and how long to wait first."""

    status: int = 200
    body: bytes = b"ok"
    delay_seconds: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived. ``received_at`` is the Unix time at which its head was read."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        """Return the value of header ``name`` (any case), or None when it is absent.

        Raises AssertionError when the header appears more than once, because a
        test that reads one value would otherwise check an arbitrary copy.
        """
        values = self.header_values(name)
        assert len(values) <= 1, f"header {name} appears {len(values)} times: {values}"
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Return every value of header ``name`` (any case), in the order received."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def header_dict(self) -> dict[str, str]:
        """Return the headers as a dict with lower-case names.

        A repeated header keeps its last value.
        """
        return {key.lower(): value for key, value in self.headers}


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RecordingServer

    def do_GET(self) -> None:
        self._record_and_reply()

    def do_POST(self) -> None:
        self._record_and_reply()

    def do_PUT(self) -> None:
        self._record_and_reply()

    def _record_and_reply(self) -> None:
        received_at = time.time()
        body = self._read_body()
        request = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers=tuple(self.headers.items()),
            body=body,
            received_at=received_at,
        )
        reply = self.server.receiver._record(request)

        # The wait ends early when the receiver closes, so a test never hangs on it.
        if reply.delay_seconds > 0 and self.server.receiver._closing.wait(reply.delay_seconds):
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first, for example after its own timeout.
            pass
        self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks = bytearray()
        while True:
            size_line = self.rfile.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailer fields end with an empty line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(chunks)
            chunks += self.rfile.read(size)
            self.rfile.readline()

    def log_message(self, format: str, *args) -> None:
        # Every request is recorded, so the default access log on stderr would only add noise.
        pass


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _RecordingHandler)

    def handle_error(self, request, client_address) -> None:
        # A client that disconnects mid-request is expected in timeout tests.
        # Any other handler error is kept so that the test can report it.
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            self.receiver.errors.append(error)


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and sends scripted replies.

    ``replies`` are ``Reply`` values or bare status codes, used in order. The
    last one repeats for every later request. With no replies, every request
    gets 200. Use it as a context manager: the server starts on entry and stops
    on exit, waking any reply that is still waiting out its delay.
    """

    def __init__(self, *replies: Reply | int, path: str = "/hook"):
        script = [Reply(item) if isinstance(item, int) else item for item in replies]
        self._script = script or [Reply()]
        self.path = path
        self.errors: list[BaseException] = []
        self._requests: list[ReceivedRequest] = []
        self._condition = threading.Condition()
        self._closing = threading.Event()
        self._server: _RecordingServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        self._server = _RecordingServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"receiver-{self.port}", daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The URL that reaches this receiver, with its path."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._condition:
            return list(self._requests)

    def __len__(self) -> int:
        with self._condition:
            return len(self._requests)

    def wait_for(self, count: int, timeout: float) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived and return all of them.

        Raises AssertionError, with the number received, when ``timeout``
        seconds pass first.
        """
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self._requests) >= count, timeout)
            received = list(self._requests)
        assert arrived, (
            f"expected {count} requests at {self.url} within {timeout} s, got {len(received)}"
        )
        return received

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._condition:
            index = len(self._requests)
            self._requests.append(request)
            self._condition.notify_all()
        return self._script[min(index, len(self._script) - 1)]
