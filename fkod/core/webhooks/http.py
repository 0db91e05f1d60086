"""The HTTP POST that delivers a webhook, pinned to addresses checked for safety.

The host is resolved on every attempt and every address must be public (see
``urls.resolve_safe_addresses``). The request then goes to a checked IP address directly,
with the original host name in the Host header and, for https, in SNI and certificate
verification. A second DNS answer therefore cannot send the request elsewhere.

Connections stay open between attempts in a ``WebhookConnectionPool``. A pooled connection
is reused only for the same scheme, checked address, port, host name and SSL context, so
reuse never skips the address check of the current DNS answer and never carries a request
for one name over a TLS session verified for another.

The requests go through httpcore (1.0) directly. It sends only the headers given here,
keeps no cookies, never follows redirects and never reads proxy variables, because a proxy
would connect to the host name itself and undo the address check.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime
import email.message
import email.utils
import errno
import functools
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpcore
import httpx

from fkod.core.webhooks.urls import (
    DEFAULT_PORTS,
    IPAddress,
    Resolver,
    UnsafeUrl,
    resolve_safe_addresses,
    validate_webhook_url,
)

logger = logging.getLogger(__name__)

USER_AGENT = "F-KOD-Webhooks/1.0"

# A Retry-After of more digits (over 317 years) is treated as invalid.
MAX_RETRY_AFTER_DIGITS = 10
_MAX_RETRY_AFTER_SECONDS = 10**MAX_RETRY_AFTER_DIGITS - 1

# Headers that this module sets itself or that describe the connection rather than the
# message, so a caller's value is dropped.
_MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
    }
)

# A header name is an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Characters left as they are when the request target is percent-encoded: the reserved
# characters of RFC 3986 and "%", so escapes already in the URL stay unchanged.
_TARGET_SAFE_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"

# Errors that end an exchange after the connection was made.
_TRANSFER_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    OSError,
)


@dataclass
class DeliveryResult:
    """Outcome of one delivery attempt.

    ``error`` is None only when a non-redirect response arrived and its body was read.
    A 3xx response keeps its ``status_code`` and has the error "redirect not followed: <code>".
    A failure while reading the body keeps the status code as well.
    ``retry_after_seconds`` is the response's Retry-After header in seconds from now (see
    ``parse_retry_after``) for any status, or None when there was no valid one.
    """

    status_code: int | None
    body: str
    duration_ms: int
    error: str | None
    retry_after_seconds: float | None = None


class _ConnectFailed(Exception):
    """The TCP or TLS connection to one address failed, so the next address may be tried."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class _StaleConnection(Exception):
    """A reused connection closed before any byte of the response arrived."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def post_webhook(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_seconds: float,
    allow_loopback: bool,
    max_response_bytes: int = 4096,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout_seconds: float | None = None,
    connection_pool: WebhookConnectionPool | None = None,
) -> DeliveryResult:
    """POST ``body`` to ``url`` once and return what happened, without following redirects.

    Network problems, timeouts and unsafe addresses are reported in ``DeliveryResult.error``
    and never raised. An unsafe address gives "unsafe address: " followed by the reason,
    which names the address, and nothing is sent. The addresses the host resolves to are
    tried in order while the connection fails. All of them share one deadline of
    ``timeout_seconds``, but a receiver that sends its response header a few bytes at a
    time can overrun it, because the read timeout applies to each socket read. Connecting
    to one address, TLS handshake included, is also bounded by ``connect_timeout_seconds``
    when it is given, and the next address is tried after it runs out.

    Connections are reused from ``connection_pool``, by default a pool shared by the
    process (see ``WebhookConnectionPool`` and ``close_pooled_connections``). When a reused
    connection closes before any byte of the response arrives, which happens when the
    receiver closed it while idle, the request is sent once more on a new connection. The
    receiver may then get the same request twice, as at-least-once delivery allows.

    At most ``max_response_bytes`` of the response body are read. ``User-Agent`` defaults
    to F-KOD-Webhooks/1.0, and ``Host``, ``Content-Length`` and connection headers in
    ``headers`` are replaced. ``ssl_context`` replaces the default certificate store
    (certifi), for example for a private CA; pass the same object on every call, because
    connections are reused only for the same context. Raises ValueError for an invalid
    argument or header and TypeError for a header name or value that is not a str.
    """
    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}.")
    if connect_timeout_seconds is not None and not connect_timeout_seconds > 0:
        raise ValueError(
            "connect_timeout_seconds must be positive or None, "
            f"got {connect_timeout_seconds!r}."
        )
    if max_response_bytes < 0:
        raise ValueError(
            f"max_response_bytes must not be negative, got {max_response_bytes!r}."
        )
    _validate_headers(headers)

    started = time.monotonic()
    deadline = started + timeout_seconds

    try:
        normalized = validate_webhook_url(
            url, allow_loopback=allow_loopback, require_https=False, resolve=False
        )
        parts = urlsplit(normalized)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[scheme]
        addresses = resolve_safe_addresses(
            host, port, allow_loopback=allow_loopback, resolver=resolver
        )
    except UnsafeUrl as exc:
        description = _describe_unsafe_url(exc)
        logger.warning("Webhook delivery not sent: %s", description)
        return DeliveryResult(None, "", _elapsed_ms(started), description)

    target_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    exchange = _Exchange(
        scheme=scheme,
        host=host,
        port=port,
        target=quote(target_path, safe=_TARGET_SAFE_CHARACTERS).encode("ascii"),
        headers=_build_headers(headers, host_header=parts.netloc, body_length=len(body)),
        body=body,
        ssl_context=ssl_context if ssl_context is not None else _default_ssl_context(),
        connect_timeout_seconds=connect_timeout_seconds,
        deadline=deadline,
        max_response_bytes=max_response_bytes,
        started=started,
        pool=connection_pool if connection_pool is not None else _DEFAULT_POOL,
    )

    error = "connection failed"
    for address in addresses:
        # The error of the address that used up the time is the one reported.
        if time.monotonic() >= deadline:
            break
        try:
            return _post_to_address(address, exchange)
        except _ConnectFailed as exc:
            error = exc.description
            logger.info(
                "Webhook connection to %s (%s) failed: %s", host, address, error
            )

    return DeliveryResult(None, "", _elapsed_ms(started), error)


def close_pooled_connections() -> None:
    """Close the connections of the process-wide pool that ``post_webhook`` uses by default.

    Connections in use by a delivery in progress are closed when that delivery ends. Call
    it at shutdown, or in tests before stopping a keep-alive receiver.
    """
    _DEFAULT_POOL.close()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Convert a Retry-After header value to seconds after ``now``.

    The value is delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT",
    or the obsolete RFC 850 and asctime forms). A date in the past gives 0.0. ``now`` is
    Unix time and defaults to the current time. Returns None for a missing or empty value,
    a signed or fractional number, a number of more than 10 digits, text that is not a date,
    and a date more than 9,999,999,999 seconds away.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None

    if text.isascii() and text.isdigit():
        if len(text) > MAX_RETRY_AFTER_DIGITS:
            return None
        return float(int(text))

    try:
        retry_at = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError):
        return None
    if retry_at.tzinfo is None:
        # HTTP-dates are in GMT, and the asctime form does not say so.
        retry_at = retry_at.replace(tzinfo=datetime.UTC)

    current = time.time() if now is None else now
    seconds = max(retry_at.timestamp() - current, 0.0)
    return seconds if seconds <= _MAX_RETRY_AFTER_SECONDS else None


@dataclass(frozen=True)
class _TargetKey:
    """Everything that must match for a pooled connection to carry a request."""

    scheme: str
    address: IPAddress
    port: int
    host: str
    # Compared by identity. None for http.
    ssl_context: ssl.SSLContext | None


@dataclass(eq=False)
class _Target:
    """The connections to one ``_TargetKey`` and the deliveries that use them now."""

    pool: httpcore.ConnectionPool
    last_used: float
    leases: int = 0
    retired: bool = False


class WebhookConnectionPool:
    """Keep-alive connections for webhook deliveries, grouped by target. Thread-safe.

    A target is one scheme, checked IP address, port, host name and SSL context, and
    each has its own httpcore connection pool. At most ``max_targets`` targets are kept,
    and the least recently used one is closed first. A target unused for ``idle_seconds``
    is closed at the next delivery through this pool, and a connection idle that long
    is not reused. Up to ``max_connections_per_target`` connections to one target are open
    at once, and a further delivery to it waits for one within its own deadline. A
    connection is closed after a failed exchange or a response body that was not read to
    its end. A target closed while a delivery uses it is closed when that delivery ends.
    """

    def __init__(
        self,
        *,
        max_targets: int = 32,
        max_connections_per_target: int = 16,
        idle_seconds: float = 10.0,
    ) -> None:
        if max_targets < 1:
            raise ValueError(f"max_targets must be at least 1, got {max_targets!r}.")
        if max_connections_per_target < 1:
            raise ValueError(
                "max_connections_per_target must be at least 1, "
                f"got {max_connections_per_target!r}."
            )
        if not idle_seconds > 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds!r}.")
        self._max_targets = max_targets
        self._max_connections_per_target = max_connections_per_target
        self._idle_seconds = idle_seconds
        self._backend = _ProbingBackend()
        self._lock = threading.Lock()
        self._targets: collections.OrderedDict[_TargetKey, _Target] = (
            collections.OrderedDict()
        )

    def close(self) -> None:
        """Close every connection. Connections in use are closed when their delivery ends."""
        with self._lock:
            closing = [self._retire(target) for target in self._targets.values()]
            self._targets.clear()
        _close_targets(closing)

    @contextlib.contextmanager
    def _lease(self, key: _TargetKey) -> Iterator[_Target]:
        """Yield the target for ``key``, created if needed, and keep it open meanwhile."""
        now = time.monotonic()
        with self._lock:
            closing = self._remove_idle_targets(now)
            target = self._targets.get(key)
            if target is None:
                target = _Target(self._new_connection_pool(key), now)
                self._targets[key] = target
                while len(self._targets) > self._max_targets:
                    _, oldest = self._targets.popitem(last=False)
                    closing.append(self._retire(oldest))
            else:
                self._targets.move_to_end(key)
            target.leases += 1
        _close_targets(closing)

        try:
            yield target
        finally:
            with self._lock:
                target.leases -= 1
                target.last_used = time.monotonic()
                close_now = target.retired and target.leases == 0
            if close_now:
                target.pool.close()

    def _discard(self, key: _TargetKey, target: _Target) -> None:
        """Remove ``target`` so that the next lease of ``key`` opens new connections."""
        with self._lock:
            if self._targets.get(key) is target:
                del self._targets[key]
            self._retire(target)

    def _forget_after_fork(self) -> None:
        # The child process must not write to sockets that the parent still uses, so it
        # drops them unclosed, and replaces a lock that another thread may have held.
        self._lock = threading.Lock()
        self._targets = collections.OrderedDict()

    def _new_connection_pool(self, key: _TargetKey) -> httpcore.ConnectionPool:
        # max_keepalive_connections equals max_connections because httpcore 1.0.9 counts
        # every connection, not only the idle ones, against it and would close idle
        # connections whenever more than that many exist.
        return httpcore.ConnectionPool(
            ssl_context=key.ssl_context,
            max_connections=self._max_connections_per_target,
            max_keepalive_connections=self._max_connections_per_target,
            keepalive_expiry=self._idle_seconds,
            network_backend=self._backend,
        )

    def _remove_idle_targets(self, now: float) -> list[_Target | None]:
        idle_keys = [
            key
            for key, target in self._targets.items()
            if target.leases == 0 and now - target.last_used >= self._idle_seconds
        ]
        return [self._retire(self._targets.pop(key)) for key in idle_keys]

    @staticmethod
    def _retire(target: _Target) -> _Target | None:
        """Mark ``target`` retired. Return it when no delivery uses it, for the caller to close."""
        target.retired = True
        return target if target.leases == 0 else None


def _close_targets(targets: list[_Target | None]) -> None:
    for target in targets:
        if target is not None:
            target.pool.close()


@dataclass
class _AttemptProbe:
    """Network activity of one exchange: whether it opened a connection, and the bytes read."""

    opened_connection: bool = False
    bytes_received: int = 0


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

# httpcore's synchronous backend connects and reads in the thread that sends the request,
# so a context variable set around one exchange reaches the streams that carry it.
_current_probe: contextvars.ContextVar[_AttemptProbe | None] = contextvars.ContextVar(
    "webhook_attempt_probe", default=None
)


class _ProbingStream(httpcore.NetworkStream):
    """A network stream that adds every byte it reads to the current probe and ACKs at once."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._socket = stream.get_extra_info("socket")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, timeout)
        self._acknowledge_now()
        probe = _current_probe.get()
        if probe is not None:
            probe.bytes_received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _ProbingStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout)
        )

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)

    def _acknowledge_now(self) -> None:
        # A receiver that writes its response head and body separately without
        # TCP_NODELAY (Python's http.server does) delays the body until the head is
        # acknowledged. On a keep-alive connection Linux delays that ACK by about 40 ms,
        # which cut deliveries to such a receiver from about 900 to 170 per second
        # (loopback, 8 sending threads, 2 CPUs). Setting TCP_QUICKACK sends a pending ACK
        # at once. It exists on Linux only and lasts a few segments, so every read sets it.
        if _TCP_QUICKACK is None or self._socket is None:
            return
        with contextlib.suppress(OSError):
            self._socket.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


class _ProbingBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, with streams that report to the current probe."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.NetworkStream:
        probe = _current_probe.get()
        if probe is not None:
            probe.opened_connection = True
        stream = self._backend.connect_tcp(
            host, port, timeout, local_address, socket_options
        )
        return _ProbingStream(stream)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_DEFAULT_POOL = WebhookConnectionPool()
os.register_at_fork(after_in_child=_DEFAULT_POOL._forget_after_fork)


@dataclass(frozen=True)
class _Exchange:
    """One delivery's request, the same for every address tried."""

    scheme: str
    host: str
    port: int
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    ssl_context: ssl.SSLContext
    connect_timeout_seconds: float | None
    deadline: float
    max_response_bytes: int
    started: float
    pool: WebhookConnectionPool


def _post_to_address(address: IPAddress, exchange: _Exchange) -> DeliveryResult:
    """Send the request to one address, raising _ConnectFailed only when connecting fails."""
    key = _TargetKey(
        scheme=exchange.scheme,
        address=address,
        port=exchange.port,
        host=exchange.host,
        ssl_context=exchange.ssl_context if exchange.scheme == "https" else None,
    )

    with exchange.pool._lease(key) as target:
        try:
            return _send_once(target.pool, address, exchange, retry_if_stale=True)
        except _StaleConnection as exc:
            stale_error = exc.description
            # Connections of the same age to this target are likely closed as well.
            exchange.pool._discard(key, target)

    if time.monotonic() >= exchange.deadline:
        return DeliveryResult(None, "", _elapsed_ms(exchange.started), stale_error)
    logger.info(
        "Webhook connection to %s (%s) closed before a response; retrying once on a "
        "new connection",
        exchange.host,
        address,
    )
    with exchange.pool._lease(key) as target:
        return _send_once(target.pool, address, exchange, retry_if_stale=False)


def _send_once(
    connection_pool: httpcore.ConnectionPool,
    address: IPAddress,
    exchange: _Exchange,
    *,
    retry_if_stale: bool,
) -> DeliveryResult:
    """Send the request on a pooled or new connection and read the response."""
    request = httpcore.Request(
        method=b"POST",
        url=httpcore.URL(
            scheme=exchange.scheme.encode("ascii"),
            host=str(address).encode("ascii"),
            port=exchange.port,
            target=exchange.target,
        ),
        headers=exchange.headers,
        content=exchange.body,
        extensions=_extensions(exchange),
    )

    probe = _AttemptProbe()
    token = _current_probe.set(probe)
    try:
        try:
            response = connection_pool.handle_request(request)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            raise _ConnectFailed(_describe_connect_error(exc)) from exc
        except _TRANSFER_ERRORS as exc:
            error = _describe_transfer_error(exc, probe)
            if retry_if_stale and _is_stale_connection_error(exc, probe):
                raise _StaleConnection(error) from exc
            logger.info(
                "Webhook delivery to %s (%s) failed: %s", exchange.host, address, error
            )
            return DeliveryResult(None, "", _elapsed_ms(exchange.started), error)

        try:
            raw_body, error = _read_limited(
                response, exchange.max_response_bytes, exchange.deadline
            )
        finally:
            # httpcore keeps the connection only when the whole body was read.
            response.close()
    finally:
        _current_probe.reset(token)

    if error is not None:
        logger.info(
            "Webhook delivery to %s (%s) got status %s, then failed: %s",
            exchange.host,
            address,
            response.status,
            error,
        )
    elif 300 <= response.status < 400:
        error = f"redirect not followed: {response.status}"

    return DeliveryResult(
        status_code=response.status,
        body=_decode_body(raw_body, response.headers),
        duration_ms=_elapsed_ms(exchange.started),
        error=error,
        retry_after_seconds=_retry_after_of(response.headers),
    )


def _extensions(exchange: _Exchange) -> dict[str, object]:
    extensions: dict[str, object] = {"timeout": _timeouts(exchange)}
    if exchange.scheme == "https":
        # httpcore passes sni_hostname to the TLS handshake as server_hostname, which
        # sets SNI and is the name the certificate is verified against (httpcore 1.0).
        extensions["sni_hostname"] = exchange.host
    return extensions


def _timeouts(exchange: _Exchange) -> dict[str, float]:
    # NOTE: httpcore applies the read timeout to each socket read, not to the whole
    # response, so a receiver that sends its headers a few bytes at a time can hold a
    # delivery past the deadline. The body loop checks the deadline between reads, which
    # bounds its overrun to one read timeout.
    remaining = max(exchange.deadline - time.monotonic(), 0.001)
    connect = remaining
    if exchange.connect_timeout_seconds is not None:
        connect = min(exchange.connect_timeout_seconds, remaining)
    # httpcore uses the connect timeout for the TCP connect and for the TLS handshake.
    return {"connect": connect, "read": remaining, "write": remaining, "pool": remaining}


def _is_stale_connection_error(exc: BaseException, probe: _AttemptProbe) -> bool:
    """Tell whether ``exc`` came from a reused connection that returned nothing at all."""
    closed_or_reset = isinstance(
        exc, (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)
    )
    return closed_or_reset and not probe.opened_connection and probe.bytes_received == 0


def _read_limited(
    response: httpcore.Response, max_bytes: int, deadline: float
) -> tuple[bytes, str | None]:
    """Read at most ``max_bytes`` of the undecoded body and stop at the deadline.

    A body of up to ``max_bytes`` is read to its end, so its connection can be reused.
    """
    # NOTE: a longer body is not drained, so its connection is closed instead of reused.
    if max_bytes == 0:
        return b"", None
    collected = bytearray()
    try:
        for chunk in response.iter_stream():
            collected += chunk
            if len(collected) > max_bytes:
                break
            if time.monotonic() > deadline:
                return bytes(collected[:max_bytes]), "timed out"
    except _TRANSFER_ERRORS as exc:
        return bytes(collected[:max_bytes]), _describe_transfer_error(exc, None)
    return bytes(collected[:max_bytes]), None


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [
        value.decode("latin-1").strip()
        for key, value in headers
        if key.lower() == name
    ]


def _retry_after_of(headers: list[tuple[bytes, bytes]]) -> float | None:
    # Repeated Retry-After headers that disagree leave the wait unknown.
    values = set(_header_values(headers, b"retry-after"))
    if len(values) != 1:
        return None
    return parse_retry_after(values.pop())


def _decode_body(raw_body: bytes, headers: list[tuple[bytes, bytes]]) -> str:
    encoding = "utf-8"
    content_types = _header_values(headers, b"content-type")
    if content_types:
        message = email.message.Message()
        message["content-type"] = content_types[0]
        encoding = message.get_content_charset() or "utf-8"
    try:
        return raw_body.decode(encoding, errors="replace")
    except LookupError:
        return raw_body.decode("utf-8", errors="replace")


def _build_headers(
    headers: Mapping[str, str], *, host_header: str, body_length: int
) -> list[tuple[bytes, bytes]]:
    result = [("Host", host_header)]
    has_user_agent = False
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _MANAGED_HEADERS:
            continue
        if lowered == "user-agent":
            has_user_agent = True
        result.append((name, value))
    if not has_user_agent:
        result.append(("User-Agent", USER_AGENT))

    # The body is read undecoded, so a compressed response would be stored as bytes of
    # gzip. Asking for identity also avoids inflating a small download into a large one.
    result.append(("Accept-Encoding", "identity"))
    result.append(("Content-Length", str(body_length)))
    return [(name.encode("ascii"), value.encode("ascii")) for name, value in result]


def _validate_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"Header {name!r} must have a str name and value.")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"Header name {name!r} is invalid; use ASCII letters, digits and "
                "!#$%&'*+-.^_`|~ only."
            )
        if not value.isascii() or any(
            (ch < " " and ch != "\t") or ch == "\x7f" for ch in value
        ):
            raise ValueError(
                f"Header {name!r} has a line break, a control character or a "
                "non-ASCII character in its value."
            )


def _describe_unsafe_url(exc: UnsafeUrl) -> str:
    if exc.rule == "private_address":
        return f"unsafe address: {exc.message}"
    if exc.rule == "unresolvable_host":
        return "unresolvable host"
    return f"invalid url: {exc.rule}"


def _describe_connect_error(exc: BaseException) -> str:
    if isinstance(exc, httpcore.ConnectTimeout):
        return "connect timed out"
    for cause in _exception_chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls certificate verification failed"
        if isinstance(cause, ssl.SSLError):
            return "tls handshake failed"
        if isinstance(cause, OSError) and cause.errno == errno.ENETUNREACH:
            return "network unreachable"
        if isinstance(cause, OSError) and cause.errno == errno.EHOSTUNREACH:
            return "host unreachable"
    return "connection failed"


def _describe_transfer_error(exc: BaseException, probe: _AttemptProbe | None) -> str:
    """Describe a failed exchange. ``probe`` is None when the response headers had arrived."""
    if isinstance(exc, httpcore.TimeoutException):
        return "timed out"
    if isinstance(exc, httpcore.RemoteProtocolError):
        if probe is not None and probe.bytes_received == 0:
            return "connection closed before a response"
        return "invalid http response"
    if isinstance(exc, httpcore.LocalProtocolError):
        return "invalid request"
    for cause in _exception_chain(exc):
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, ssl.SSLError):
            return "tls error"
    return "network error"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Built once because each build loads and parses the whole certifi CA bundle, and
    # because pooled connections are reused only for the same context object. An
    # SSLContext may be shared between threads.
    return httpx.create_ssl_context(trust_env=False)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
