"""The address of the client behind a request, with trusted reverse proxies taken into account.

The connection's address (``REMOTE_ADDR``) is the client's unless it belongs
to one of the ranges in ``fkod.proxy.trusted_proxies``. Only then is
``X-Forwarded-For`` read, from the right: each proxy appends the address it
received the request from, so the first entry that is not a trusted proxy is
the client. Entries further left were written by the client itself and are
never used. Any client can send the header, so it is ignored when the
connection does not come from a trusted proxy.

NOTE: a server listening on a Unix socket gets no usable ``REMOTE_ADDR``, so
every client has the address None and shares one per-address rate limit.
Behind a reverse proxy, listen on TCP and list the proxy's address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence

from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REGISTRY_KEY = "trusted_proxies"
SETTING = "fkod.proxy.trusted_proxies"

# A longer chain of trusted proxies is a misconfiguration or an attack; the
# walk stops there and takes the last proxy reached as the client.
MAX_FORWARDED_HOPS = 20

# IPv6 clients are counted per /64 network by the rate limits, because one
# host commonly has a whole /64 and could rotate through its addresses.
IPV6_LIMIT_PREFIX = 64


def parse_trusted_proxies(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR ranges, where a bare address is one host; raise ConfigurationError if invalid."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"invalid setting {SETTING}: {value!r} is not an IP address or CIDR range "
                "such as 10.0.0.0/8 or fd00::/8"
            ) from None
    return tuple(networks)


def parse_address(text: str | None) -> IPAddress | None:
    """Parse one address as proxies write it; return None when it is not one.

    Accepts a bare IPv4 or IPv6 address, ``1.2.3.4:port``, ``[v6]`` and
    ``[v6]:port``. A zone (``%eth0``) is dropped and an IPv4-mapped IPv6
    address becomes the IPv4 address, so one client has one spelling.
    """
    if not text:
        return None
    candidate = text.strip()
    if candidate.startswith("["):
        end = candidate.find("]")
        if end == -1:
            return None
        candidate = candidate[1:end]
    elif candidate.count(":") == 1:
        candidate = candidate.partition(":")[0]
    candidate = candidate.partition("%")[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network
               for network in trusted)


def resolve_client_address(remote_addr: str | None, forwarded_for: str | None,
                           trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """Return the client's address from the connection's address and X-Forwarded-For.

    Returns None only when ``remote_addr`` itself is missing or not an address.
    A malformed entry in the header ends the walk, and the proxy that passed
    it on is taken as the client, because nothing it forwarded can be trusted.
    """
    remote = parse_address(remote_addr)
    if remote is None or not trusted or not is_trusted(remote, trusted):
        return remote
    if not forwarded_for:
        return remote

    entries = forwarded_for.split(",")
    client = remote
    for entry in reversed(entries[-MAX_FORWARDED_HOPS:]):
        address = parse_address(entry)
        if address is None:
            return client
        client = address
        if not is_trusted(address, trusted):
            return address
    return client


def client_address(request) -> str | None:
    """Return the client's address as text for the request (see the module docstring)."""
    trusted = request.registry.get(REGISTRY_KEY, ())
    address = resolve_client_address(request.environ.get("REMOTE_ADDR"),
                                     request.headers.get("X-Forwarded-For"), trusted)
    return None if address is None else str(address)


def limit_subject(address: str | None) -> str:
    """Return the rate-limit subject of a client address: the address, or its /64 for IPv6."""
    parsed = parse_address(address)
    if parsed is None:
        return "addr:unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((parsed, IPV6_LIMIT_PREFIX), strict=False)
        return f"addr:{network}"
    return f"addr:{parsed}"


def includeme(config):
    """Parse the trusted proxies and add ``request.client_address``, computed once per request."""
    trusted = parse_trusted_proxies(config.get_settings()[SETTING])
    config.registry[REGISTRY_KEY] = trusted
    if trusted:
        log.info("trusting X-Forwarded-For from %d proxy ranges", len(trusted))
    config.add_request_method(client_address, "client_address", reify=True)
