"""The HTTP POST that delivers a webhook, pinned to addresses checked for safety.

The host is resolved once per delivery and every address must be public (see
``urls.resolve_safe_addresses``). The request then goes to a checked IP address directly,
with the original host name in the Host header and, for https, in SNI and certificate
verification. A second DNS answer therefore cannot send the request elsewhere.
"""

from __future__ import annotations

import errno
import functools
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

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


@dataclass
class DeliveryResult:
    """Outcome of one delivery attempt.

    ``error`` is None only when a non-redirect response arrived and its body was read.
    A 3xx response keeps its ``status_code`` and has the error "redirect not followed: <code>".
    A failure while reading the body keeps the status code as well.
    """

    status_code: int | None
    body: str
    duration_ms: int
    error: str | None


class _ConnectFailed(Exception):
    """The TCP or TLS connection to one address failed, so the next address may be tried."""

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
) -> DeliveryResult:
    """POST ``body`` to ``url`` once and return what happened, without following redirects.

    Network problems, timeouts and unsafe addresses are reported in ``DeliveryResult.error``
    and never raised. The addresses the host resolves to are tried in order while the
    connection fails. All attempts share one deadline of ``timeout_seconds``, which a slowly
    sent response header can overrun (see the NOTE below). At most ``max_response_bytes`` of
    the response body are read. ``User-Agent`` defaults to F-KOD-Webhooks/1.0, and
    ``Host``, ``Content-Length`` and connection headers in ``headers`` are replaced.
    ``ssl_context`` replaces the default certificate store (certifi), for example for a
    private CA. Raises ValueError for an invalid argument or header and TypeError for a
    header name or value that is not a str.
    """
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}.")
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
        logger.warning("Webhook delivery not sent: %s (%s)", description, exc.message)
        return DeliveryResult(None, "", _elapsed_ms(started), description)

    request_headers = _build_headers(headers, host_header=parts.netloc)
    target_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = ssl_context if ssl_context is not None else _default_ssl_context()

    error = "connection failed"
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = "timed out"
            break
        try:
            return _post_to_address(
                address,
                scheme=scheme,
                host=host,
                port=port,
                target_path=target_path,
                body=body,
                headers=request_headers,
                ssl_context=context,
                deadline=deadline,
                max_response_bytes=max_response_bytes,
                started=started,
            )
        except _ConnectFailed as exc:
            error = exc.description
            logger.info(
                "Webhook connection to %s (%s) failed: %s", host, address, error
            )

    return DeliveryResult(None, "", _elapsed_ms(started), error)


def _post_to_address(
    address: IPAddress,
    *,
    scheme: str,
    host: str,
    port: int,
    target_path: str,
    body: bytes,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext,
    deadline: float,
    max_response_bytes: int,
    started: float,
) -> DeliveryResult:
    """Send the request to one address, raising _ConnectFailed only when connecting fails."""
    address_text = f"[{address}]" if address.version == 6 else str(address)
    target_url = f"{scheme}://{address_text}:{port}{target_path}"

    # httpcore passes the sni_hostname extension to the TLS handshake as server_hostname,
    # which sets SNI and is the name the certificate is verified against (httpx 0.29,
    # httpcore 1.0).
    extensions = {"sni_hostname": host} if scheme == "https" else {}

    # NOTE: httpx applies this timeout to each socket read, not to the whole response, so
    # a receiver that sends its headers a few bytes at a time can hold a delivery past the
    # deadline. The body loop checks the deadline between reads, which bounds its overrun
    # to one read timeout.
    timeout = httpx.Timeout(max(deadline - time.monotonic(), 0.001))

    # trust_env=False ignores proxy variables, because a proxy would connect to the host
    # name itself and undo the address check.
    with httpx.Client(
        verify=ssl_context, trust_env=False, follow_redirects=False, timeout=timeout
    ) as client:
        request = client.build_request(
            "POST", target_url, content=body, headers=headers, extensions=extensions
        )
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise _ConnectFailed(_describe_connect_error(exc)) from exc
        except (httpx.HTTPError, OSError) as exc:
            error = _describe_transfer_error(exc)
            logger.info("Webhook delivery to %s (%s) failed: %s", host, address, error)
            return DeliveryResult(None, "", _elapsed_ms(started), error)

        try:
            raw_body, error = _read_limited(response, max_response_bytes, deadline)
        finally:
            # Closing a partly read response closes its connection.
            response.close()

    if error is not None:
        logger.info(
            "Webhook delivery to %s (%s) got status %s, then failed: %s",
            host,
            address,
            response.status_code,
            error,
        )
    elif 300 <= response.status_code < 400:
        error = f"redirect not followed: {response.status_code}"

    return DeliveryResult(
        status_code=response.status_code,
        body=_decode_body(raw_body, response),
        duration_ms=_elapsed_ms(started),
        error=error,
    )


def _read_limited(
    response: httpx.Response, max_bytes: int, deadline: float
) -> tuple[bytes, str | None]:
    """Read at most ``max_bytes`` of the undecoded body and stop at the deadline."""
    collected = bytearray()
    if max_bytes == 0:
        return b"", None
    try:
        for chunk in response.iter_raw():
            collected += chunk
            if len(collected) >= max_bytes:
                break
            if time.monotonic() > deadline:
                return bytes(collected[:max_bytes]), "timed out"
    except (httpx.HTTPError, OSError) as exc:
        return bytes(collected[:max_bytes]), _describe_transfer_error(exc)
    return bytes(collected[:max_bytes]), None


def _decode_body(raw_body: bytes, response: httpx.Response) -> str:
    encoding = response.charset_encoding or "utf-8"
    try:
        return raw_body.decode(encoding, errors="replace")
    except LookupError:
        return raw_body.decode("utf-8", errors="replace")


def _build_headers(
    headers: Mapping[str, str], *, host_header: str
) -> list[tuple[str, str]]:
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
    result.append(("Connection", "close"))
    return result


def _validate_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"Header {name!r} must have a str name and value.")
        if not name or any(ch in name for ch in " \t\r\n:\0"):
            raise ValueError(f"Header name {name!r} is invalid.")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"Header {name!r} has a line break or NUL in its value.")


def _describe_unsafe_url(exc: UnsafeUrl) -> str:
    if exc.rule == "private_address":
        return f"unsafe address: {exc.rule}"
    if exc.rule == "unresolvable_host":
        return "unresolvable host"
    return f"invalid url: {exc.rule}"


def _describe_connect_error(exc: BaseException) -> str:
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


def _describe_transfer_error(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "invalid http response"
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
    # Built once because each build loads and parses the whole certifi CA bundle. An
    # SSLContext may be shared between threads.
    return httpx.create_ssl_context(trust_env=False)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
