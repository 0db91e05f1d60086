"""The client address: REMOTE_ADDR, X-Forwarded-For behind trusted proxies, rate-limit subjects."""

from __future__ import annotations

import ipaddress

import pytest

from fkod.core.clientaddr import (
    MAX_FORWARDED_HOPS,
    limit_subject,
    parse_address,
    parse_trusted_proxies,
    resolve_client_address,
)
from fkod.core.settings import ConfigurationError

PROXIES = parse_trusted_proxies(["10.0.0.0/8", "fd00::/8"])


def resolve(remote, forwarded=None, trusted=PROXIES) -> str | None:
    address = resolve_client_address(remote, forwarded, trusted)
    return None if address is None else str(address)


@pytest.mark.parametrize("text,expected", [
    ("203.0.113.7", "203.0.113.7"),
    (" 203.0.113.7 ", "203.0.113.7"),
    ("203.0.113.7:51234", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("::ffff:198.51.100.4", "198.51.100.4"),
])
def test_parse_address_accepts(text, expected):
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize("text", [
    None, "", "unknown", "_hidden", "300.1.1.1", "1.2.3", "[2001:db8::1", "2001:db8::zz",
    "1.2.3.4:80:90", "\x00", "<script>",
])
def test_parse_address_rejects(text):
    assert parse_address(text) is None


def test_remote_addr_used_without_proxies():
    assert resolve("203.0.113.7", "198.51.100.1", trusted=()) == "203.0.113.7"


def test_header_ignored_from_untrusted_peer():
    assert resolve("203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_trusted_proxy_header_read():
    assert resolve("10.0.0.5", "198.51.100.1") == "198.51.100.1"


def test_trusted_proxy_without_header():
    assert resolve("10.0.0.5", None) == "10.0.0.5"
    assert resolve("10.0.0.5", "") == "10.0.0.5"


def test_chain_walked_from_right():
    # The client forged the leftmost entry; the rightmost untrusted one is real.
    forwarded = "192.0.2.66, 198.51.100.1, 10.1.1.1, 10.2.2.2"

    assert resolve("10.0.0.5", forwarded) == "198.51.100.1"


def test_ipv6_proxy_chain():
    assert resolve("fd00::5", "2001:db8::9, fd00::1") == "2001:db8::9"


def test_all_hops_trusted_takes_leftmost():
    assert resolve("10.0.0.5", "10.9.9.9, 10.1.1.1") == "10.9.9.9"


@pytest.mark.parametrize("forwarded,expected", [
    ("198.51.100.1, garbage", "10.0.0.5"),
    ("198.51.100.1, garbage, 10.2.2.2", "10.2.2.2"),
    ("garbage, 198.51.100.1", "198.51.100.1"),
    (",,,", "10.0.0.5"),
    ("198.51.100.1,", "10.0.0.5"),
])
def test_malformed_entry_stops_walk(forwarded, expected):
    assert resolve("10.0.0.5", forwarded) == expected


def test_walk_bounded():
    forwarded = ", ".join(["192.0.2.1"] + ["10.0.0.1"] * (MAX_FORWARDED_HOPS + 5))

    assert resolve("10.0.0.5", forwarded) == "10.0.0.1"


def test_missing_remote_addr():
    assert resolve(None, "198.51.100.1") is None
    assert resolve("not an address", "198.51.100.1") is None


def test_port_in_header_dropped():
    assert resolve("10.0.0.5", "198.51.100.1:4711") == "198.51.100.1"


def test_single_host_entry_trusted():
    trusted = parse_trusted_proxies(["192.0.2.10"])

    assert resolve("192.0.2.10", "198.51.100.1", trusted=trusted) == "198.51.100.1"
    assert resolve("192.0.2.11", "198.51.100.1", trusted=trusted) == "192.0.2.11"


def test_invalid_trusted_proxy_names_setting():
    expected = r"fkod\.proxy\.trusted_proxies.*'10\.0\.0\.0/33'"
    with pytest.raises(ConfigurationError, match=expected):
        parse_trusted_proxies(["10.0.0.0/8", "10.0.0.0/33"])


def test_host_bits_allowed_in_range():
    assert parse_trusted_proxies(["10.1.2.3/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


def test_limit_subject_ipv4():
    assert limit_subject("203.0.113.7") == "addr:203.0.113.7"


def test_limit_subject_ipv6_per_64():
    first = limit_subject("2001:db8:1:2::1")
    second = limit_subject("2001:db8:1:2:ffff::9")

    assert first == second == "addr:2001:db8:1:2::/64"
    assert limit_subject("2001:db8:1:3::1") != first


def test_limit_subject_unknown():
    assert limit_subject(None) == "addr:unknown"
