"""Safety checks for webhook target URLs and for links shown to users.

A webhook URL makes this server send requests, so it must not reach loopback, private,
link-local (including cloud metadata) or otherwise non-public addresses. The checks run
when a URL is stored (``validate_webhook_url``) and again on every delivery
(``resolve_safe_addresses``), because a DNS name can point elsewhere between the two.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], list[str]]
# The registry key of the resolver that the webhook API's URL checks and test
# sends use. Unset, they ask the operating system (getaddrinfo); tests set a
# fixed table.
RESOLVER_KEY = "webhook_resolver"
"""Callable that maps ``(host, port)`` to the IP address strings the host resolves to."""

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048

_CGNAT_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
_LINK_LOCAL_V4_NETWORK = ipaddress.IPv4Network("169.254.0.0/16")
_IPV4_COMPATIBLE_NETWORK = ipaddress.IPv6Network("::/96")
_NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACK_FALLBACK_ADDRESSES = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)

# Unicode categories rejected anywhere in a URL: control and format characters (tab, NUL,
# zero-width and bidi marks) and every kind of space or line separator. Browsers strip some
# of them, so "java\tscript:" would otherwise run as "javascript:".
_REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})

_DNS_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


class UnsafeUrl(ValueError):
    """A URL a webhook may not target.

    ``rule`` is a stable snake_case code for API clients and ``message`` is a plain
    sentence that names what is wrong.
    """

    rule: str
    message: str

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def validate_webhook_url(
    url: str,
    *,
    allow_loopback: bool,
    require_https: bool,
    resolver: Resolver | None = None,
    resolve: bool = True,
) -> str:
    """Check a webhook URL when it is created or updated; return it normalized, or raise UnsafeUrl.

    The normalized form has a lowercase scheme and host, IP addresses in canonical form
    (``127.1`` becomes ``127.0.0.1``), no default port, a path of at least ``/`` and no
    fragment. With ``resolve`` true, a host name is resolved and every address must be
    public. ``allow_loopback`` admits only 127.0.0.0/8, ``::1`` and ``localhost`` names.
    ``require_https`` rejects ``http`` except for those loopback hosts when loopback is allowed.
    """
    parts = _split_http_url(url)
    host, address = _parse_host(parts)
    port = _parse_port(parts)

    if address is not None:
        written_host = parts.hostname or host
        _check_address(
            address, written_host, allow_loopback=allow_loopback, literal=True
        )
    elif _is_localhost_name(host) and not allow_loopback:
        raise UnsafeUrl("private_address", f"The host {host!r} is a loopback name.")

    scheme = parts.scheme.lower()
    if scheme == "http" and require_https:
        loopback_host = _is_localhost_name(host) or (
            address is not None and address.is_loopback
        )
        if not (allow_loopback and loopback_host):
            raise UnsafeUrl("https_required", "The URL must use https://.")

    if resolve and address is None and not _is_localhost_name(host):
        resolve_safe_addresses(
            host, port, allow_loopback=allow_loopback, resolver=resolver
        )

    return _build_url(scheme, host, address, port, parts)


def resolve_safe_addresses(
    host: str,
    port: int,
    *,
    allow_loopback: bool,
    resolver: Resolver | None = None,
) -> list[IPAddress]:
    """Resolve at delivery time and raise UnsafeUrl if ANY resolved address is not public (DNS rebinding).

    Returns the addresses in resolver order, without duplicates. ``host`` may also be an
    IP literal (legacy IPv4 forms included), which is checked without resolving. The names
    ``localhost`` and ``*.localhost`` map to 127.0.0.1 and ::1 without a lookup. Raises
    UnsafeUrl with rule ``unresolvable_host`` when the lookup fails or returns nothing.
    """
    host = host.lower()
    literal_address = _parse_ip_literal(host.strip("[]"))
    if literal_address is not None:
        _check_address(
            literal_address, host, allow_loopback=allow_loopback, literal=True
        )
        return [literal_address]

    if _is_localhost_name(host):
        if not allow_loopback:
            raise UnsafeUrl("private_address", f"The host {host!r} is a loopback name.")
        return list(_LOOPBACK_FALLBACK_ADDRESSES)

    lookup = resolver or _getaddrinfo_resolver
    try:
        answers = lookup(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(
            "unresolvable_host", f"The host {host!r} could not be resolved."
        ) from exc

    addresses: list[IPAddress] = []
    for answer in answers:
        # Drop an IPv6 zone suffix ("%eth0"), which resolvers may add to link-local addresses.
        text = str(answer).split("%", 1)[0]
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise UnsafeUrl(
                "unresolvable_host",
                f"The host {host!r} resolved to an invalid address.",
            ) from exc
        if address not in addresses:
            addresses.append(address)

    if not addresses:
        raise UnsafeUrl(
            "unresolvable_host", f"The host {host!r} did not resolve to any address."
        )

    for address in addresses:
        _check_address(address, host, allow_loopback=allow_loopback)
    return addresses


def validate_link_url(url: str) -> str:
    """Check a logo, homepage, documentation or support link and return it normalized.

    Only ``http`` and ``https`` URLs with a host and without user credentials pass, which
    rejects ``javascript:``, ``data:``, ``vbscript:``, ``file:`` and scheme-relative links.
    The host is not resolved, because the server does not fetch these links. Raises UnsafeUrl.
    """
    parts = _split_http_url(url)
    host, address = _parse_host(parts)
    port = _parse_port(parts)
    return _build_url(parts.scheme.lower(), host, address, port, parts)


def _describe_address(address: IPAddress) -> str | None:
    """Return why ``address`` is not public (for example "a loopback address"), or None if it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        problem = _describe_address(embedded)
        if problem is None:
            return None
        return f"an IPv6 address that embeds {embedded}, {problem}"

    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address in _LINK_LOCAL_V4_NETWORK or address.is_link_local:
        return "a link-local address, the range that cloud metadata services use"
    if address in _CGNAT_NETWORK:
        return "a shared (CGNAT) address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _getaddrinfo_resolver(host: str, port: int) -> list[str]:
    # NOTE: getaddrinfo has no timeout of its own, so a slow DNS server delays the caller
    # by the system resolver's timeout.
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _split_http_url(url: str) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("invalid_url", "The URL is missing.")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(
            "invalid_url", f"The URL is longer than {MAX_URL_LENGTH} characters."
        )
    for character in url:
        if unicodedata.category(character) in _REJECTED_CATEGORIES:
            raise UnsafeUrl(
                "invalid_url",
                f"The URL contains a space or control character (U+{ord(character):04X}).",
            )
    # Browsers read "\" as "/" in http(s) URLs while urllib does not, so the two could
    # disagree about the host.
    if "\\" in url:
        raise UnsafeUrl("invalid_url", "The URL contains a backslash.")

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeUrl("invalid_url", "The URL could not be parsed.") from exc

    scheme = parts.scheme.lower()
    if not scheme:
        raise UnsafeUrl(
            "scheme_not_allowed", "The URL has no scheme; start it with https://."
        )
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeUrl(
            "scheme_not_allowed",
            f"The scheme {scheme!r} is not allowed; use https:// or http://.",
        )
    if "@" in parts.netloc:
        raise UnsafeUrl(
            "credentials_in_url",
            "The URL must not contain a user name or password before the host.",
        )
    if not parts.netloc:
        raise UnsafeUrl("invalid_url", "The URL has no host.")
    return parts


def _parse_host(parts: SplitResult) -> tuple[str, IPAddress | None]:
    """Return the lowercase ASCII host and, for an IP literal, its address."""
    host = parts.hostname or ""
    if not host:
        raise UnsafeUrl("invalid_url", "The URL has no host.")

    # Only a bracketed host may be IPv6, and zone ids ("%eth0") are not accepted.
    if parts.netloc.startswith("["):
        if "%" in host:
            raise UnsafeUrl(
                "invalid_url",
                f"The host [{host}] has an IPv6 zone id, which is not allowed.",
            )
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl(
                "invalid_url", f"The host [{host}] is not a valid IPv6 address."
            ) from exc
        return str(address), address

    if ":" in host or "%" in host:
        raise UnsafeUrl("invalid_url", f"The host {host!r} is not valid.")

    # IDNA mapping runs first because it turns characters such as U+3002 into "." and
    # fullwidth digits into ASCII digits, which can produce an IPv4 address.
    ascii_host = _to_ascii_host(host)

    # A host whose last label is a number is an IPv4 address, as in browsers. Such a host
    # that is not a valid address is rejected instead of being looked up in DNS.
    trimmed = ascii_host.removesuffix(".")
    if _NUMERIC_LABEL.match(trimmed.rsplit(".", 1)[-1]):
        address = _parse_legacy_ipv4(trimmed)
        if address is None:
            raise UnsafeUrl(
                "invalid_url", f"The host {host!r} is not a valid IPv4 address."
            )
        return str(address), address

    labels = trimmed.split(".")
    if len(ascii_host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise UnsafeUrl("invalid_url", f"The host {host!r} is not a valid host name.")
    return ascii_host, None


def _to_ascii_host(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UnsafeUrl(
            "invalid_url", f"The host {host!r} is not a valid host name."
        ) from exc


def _parse_port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("invalid_url", "The URL has an invalid port.") from exc
    if port is None:
        return DEFAULT_PORTS[parts.scheme.lower()]
    if port == 0:
        raise UnsafeUrl("invalid_url", "The URL has an invalid port 0.")
    return port


def _parse_ip_literal(host: str) -> IPAddress | None:
    """Parse ``host`` as an IPv6 or IPv4 address, accepting the legacy IPv4 forms."""
    try:
        return ipaddress.IPv6Address(host)
    except ValueError:
        pass
    trimmed = host.removesuffix(".")
    return _parse_legacy_ipv4(trimmed)


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse IPv4 the way inet_aton does, or return None.

    Each of one to four dot-separated parts is decimal, octal (leading 0) or hex (0x).
    The last part fills all remaining bytes, so ``127.1`` is 127.0.0.1 and ``2130706433``
    is one 32-bit number.
    """
    pieces = host.split(".")
    if not 1 <= len(pieces) <= 4:
        return None

    numbers: list[int] = []
    for piece in pieces:
        value = _parse_ipv4_number(piece)
        if value is None:
            return None
        numbers.append(value)

    *leading, last = numbers
    if any(value > 0xFF for value in leading):
        return None
    if last >= 1 << (8 * (4 - len(leading))):
        return None

    packed = 0
    for value in leading:
        packed = (packed << 8) | value
    packed = (packed << (8 * (4 - len(leading)))) | last
    return ipaddress.IPv4Address(packed)


def _parse_ipv4_number(piece: str) -> int | None:
    if not piece or len(piece) > 12:
        return None
    lowered = piece.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
        if digits == "":
            return 0
    elif len(lowered) > 1 and lowered.startswith("0"):
        digits, base = lowered[1:], 8
    else:
        digits, base = lowered, 10
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address carried in an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    # :: and ::1 are in ::/96 but are the unspecified and loopback addresses.
    if address in _NAT64_NETWORK or (
        address in _IPV4_COMPATIBLE_NETWORK and int(address) > 1
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _check_address(
    address: IPAddress, host: str, *, allow_loopback: bool, literal: bool = False
) -> None:
    """Raise UnsafeUrl unless ``address`` may be contacted; ``host`` is the name as written."""
    # allow_loopback admits 127.0.0.0/8 and ::1 themselves, not loopback embedded in an
    # IPv6 address such as ::ffff:127.0.0.1.
    if allow_loopback and address.is_loopback and _embedded_ipv4(address) is None:
        return
    problem = _describe_address(address)
    if problem is None:
        return

    if literal and host.strip("[]") == str(address):
        message = f"The address {address} is {problem}."
    elif literal:
        message = f"The host {host!r} is the address {address}, {problem}."
    else:
        message = f"The host {host!r} resolves to {address}, which is {problem}."
    raise UnsafeUrl("private_address", message)


def _is_localhost_name(host: str) -> bool:
    name = host.removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")


def _build_url(
    scheme: str, host: str, address: IPAddress | None, port: int, parts: SplitResult
) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        netloc = f"[{address}]"
    else:
        netloc = host
    if port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"
