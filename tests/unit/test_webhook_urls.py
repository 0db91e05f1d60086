"""Tests for webhook URL safety checks.

Every test injects a resolver, so no test performs a real DNS lookup or connects anywhere.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from fkod.core.webhooks.urls import (
    UnsafeUrl,
    resolve_safe_addresses,
    validate_link_url,
    validate_webhook_url,
)

# 93.184.215.14 and 2606:4700::1111 are global unicast addresses. The tests only classify
# them and never connect to them.
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700::1111"


class FakeResolver:
    """Resolver that returns addresses from a fixed table and records every lookup."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


def make_resolver() -> FakeResolver:
    return FakeResolver(
        {
            "127.0.0.1.nip.io": ["127.0.0.1"],
            "hooks.example.com": [PUBLIC_V4, PUBLIC_V6],
            "rebind.example.com": [PUBLIC_V4, "10.0.0.1"],
            "metadata.example.com": ["169.254.169.254"],
            "mapped.example.com": ["::ffff:127.0.0.1"],
            "scoped.example.com": ["fe80::1%eth0"],
            "empty.example.com": [],
            "junk.example.com": ["not-an-address"],
        }
    )


def reject(
    url: str, *, allow_loopback: bool = False, require_https: bool = False
) -> UnsafeUrl:
    with pytest.raises(UnsafeUrl) as caught:
        validate_webhook_url(
            url,
            allow_loopback=allow_loopback,
            require_https=require_https,
            resolver=make_resolver(),
        )
    return caught.value


INTERNAL_URLS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://user@127.0.0.1/",
    "http://127.0.0.1.nip.io/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_url_rejected(url: str) -> None:
    error = reject(url)

    assert error.rule in {"private_address", "credentials_in_url"}
    assert error.message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://user@127.0.0.1/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[::a9fe:a9fe]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://198.18.0.1/",
        "http://[ff02::1]/",
        "http://metadata.example.com/",
    ],
)
def test_non_loopback_rejected_when_loopback_allowed(url: str) -> None:
    error = reject(url, allow_loopback=True)

    assert error.rule in {"private_address", "credentials_in_url"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://0x7f000001/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
        ("http://localhost:8000/x", "http://localhost:8000/x"),
        ("http://api.localhost/", "http://api.localhost/"),
        ("http://127.0.0.1.nip.io/", "http://127.0.0.1.nip.io/"),
    ],
)
def test_loopback_accepted_when_allowed(url: str, expected: str) -> None:
    normalized = validate_webhook_url(
        url, allow_loopback=True, require_https=False, resolver=make_resolver()
    )

    assert normalized == expected


def test_private_address_message_names_address() -> None:
    error = reject("http://0x7f000001/")

    assert error.rule == "private_address"
    assert "127.0.0.1" in error.message
    assert "loopback" in error.message


def test_metadata_message_names_link_local() -> None:
    error = reject("http://169.254.169.254/latest/meta-data/")

    assert "link-local" in error.message


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("JaVaScRiPt:alert(1)", "scheme_not_allowed"),
        ("ftp://x/", "scheme_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("//evil.test/x", "scheme_not_allowed"),
        ("data:text/plain,hello", "scheme_not_allowed"),
        ("gopher://hooks.example.com/", "scheme_not_allowed"),
        (" https://hooks.example.com/", "invalid_url"),
        ("https://hooks.example.com/ ", "invalid_url"),
        ("java\tscript:alert(1)", "invalid_url"),
        ("https://hooks.example.com/\n", "invalid_url"),
        ("https://hooks.exam\u200bple.com/", "invalid_url"),
        ("https://hooks.example.com\\@127.0.0.1/", "invalid_url"),
        ("https:///path-only", "invalid_url"),
        ("https://", "invalid_url"),
        ("", "invalid_url"),
        ("https://hooks.example.com:99999/", "invalid_url"),
        ("https://hooks.example.com:0/", "invalid_url"),
        ("https://hooks.example.com:abc/", "invalid_url"),
        ("https://256.1.1.1/", "invalid_url"),
        ("https://1.2.3.4.5/", "invalid_url"),
        ("https://08.0.0.1/", "invalid_url"),
        ("https://[not-ipv6]/", "invalid_url"),
        ("https://[fe80::1%25eth0]/", "invalid_url"),
        ("https://bad_label-.example..com/", "invalid_url"),
        ("https://" + "a" * 2100 + ".com/", "invalid_url"),
        ("https://user:pass@hooks.example.com/", "credentials_in_url"),
        ("https://@hooks.example.com/", "credentials_in_url"),
        ("http://x/", "https_required"),
        ("https://nowhere.example.com/", "unresolvable_host"),
        ("https://empty.example.com/", "unresolvable_host"),
        ("https://junk.example.com/", "unresolvable_host"),
        ("https://rebind.example.com/", "private_address"),
        ("https://mapped.example.com/", "private_address"),
        ("https://scoped.example.com/", "private_address"),
        ("https://127\u30020\u30020\u30021/", "private_address"),
        ("https://\u24dbocalhost/", "private_address"),
        ("https://[64:ff9b::7f00:1]/", "private_address"),
        ("https://[2002:7f00:1::]/", "private_address"),
    ],
)
def test_invalid_url_rejected_with_rule(url: str, rule: str) -> None:
    error = reject(url, require_https=True)

    assert error.rule == rule


def test_https_required_allows_loopback_http() -> None:
    normalized = validate_webhook_url(
        "http://127.0.0.1:8080/hook",
        allow_loopback=True,
        require_https=True,
        resolver=make_resolver(),
    )

    assert normalized == "http://127.0.0.1:8080/hook"


def test_https_required_rejects_resolved_loopback_http() -> None:
    error = reject("http://127.0.0.1.nip.io/", allow_loopback=True, require_https=True)

    assert error.rule == "https_required"


def test_public_url_normalized() -> None:
    resolver = make_resolver()

    normalized = validate_webhook_url(
        "HTTPS://Hooks.Example.COM:443/path?q=1#fragment",
        allow_loopback=False,
        require_https=True,
        resolver=resolver,
    )

    assert normalized == "https://hooks.example.com/path?q=1"
    assert resolver.calls == [("hooks.example.com", 443)]


def test_public_url_keeps_port_and_adds_path() -> None:
    normalized = validate_webhook_url(
        "https://hooks.example.com:8443",
        allow_loopback=False,
        require_https=True,
        resolver=make_resolver(),
    )

    assert normalized == "https://hooks.example.com:8443/"


def test_public_ip_literal_accepted_without_lookup() -> None:
    resolver = make_resolver()

    normalized = validate_webhook_url(
        f"https://[{PUBLIC_V6}]/",
        allow_loopback=False,
        require_https=True,
        resolver=resolver,
    )

    assert normalized == f"https://[{PUBLIC_V6}]/"
    assert resolver.calls == []


def test_nat64_of_public_address_accepted() -> None:
    normalized = validate_webhook_url(
        "https://[64:ff9b::5db8:d70e]/",
        allow_loopback=False,
        require_https=True,
        resolver=make_resolver(),
    )

    assert normalized == "https://[64:ff9b::5db8:d70e]/"


def test_unicode_host_converted_to_idna() -> None:
    resolver = FakeResolver({"xn--caf-dma.example": [PUBLIC_V4]})

    normalized = validate_webhook_url(
        "https://café.example/",
        allow_loopback=False,
        require_https=True,
        resolver=resolver,
    )

    assert normalized == "https://xn--caf-dma.example/"


def test_resolve_false_skips_lookup() -> None:
    resolver = make_resolver()

    normalized = validate_webhook_url(
        "https://later.example.com/",
        allow_loopback=False,
        require_https=True,
        resolver=resolver,
        resolve=False,
    )

    assert normalized == "https://later.example.com/"
    assert resolver.calls == []


def test_resolve_false_still_rejects_literal() -> None:
    with pytest.raises(UnsafeUrl) as caught:
        validate_webhook_url(
            "http://10.0.0.1/", allow_loopback=False, require_https=False, resolve=False
        )

    assert caught.value.rule == "private_address"


def test_localhost_rejected_without_lookup() -> None:
    resolver = make_resolver()

    with pytest.raises(UnsafeUrl):
        validate_webhook_url(
            "http://localhost/",
            allow_loopback=False,
            require_https=False,
            resolver=resolver,
        )

    assert resolver.calls == []


def test_resolve_returns_all_public_addresses() -> None:
    addresses = resolve_safe_addresses(
        "hooks.example.com", 443, allow_loopback=False, resolver=make_resolver()
    )

    assert addresses == [
        ipaddress.ip_address(PUBLIC_V4),
        ipaddress.ip_address(PUBLIC_V6),
    ]


def test_resolve_rejects_any_private_answer() -> None:
    with pytest.raises(UnsafeUrl) as caught:
        resolve_safe_addresses(
            "rebind.example.com", 443, allow_loopback=False, resolver=make_resolver()
        )

    assert caught.value.rule == "private_address"
    assert "10.0.0.1" in caught.value.message


def test_resolve_rejects_private_even_with_loopback() -> None:
    with pytest.raises(UnsafeUrl) as caught:
        resolve_safe_addresses(
            "rebind.example.com", 443, allow_loopback=True, resolver=make_resolver()
        )

    assert caught.value.rule == "private_address"


def test_resolve_unknown_host_unresolvable() -> None:
    with pytest.raises(UnsafeUrl) as caught:
        resolve_safe_addresses(
            "nowhere.example.com", 443, allow_loopback=False, resolver=make_resolver()
        )

    assert caught.value.rule == "unresolvable_host"


def test_resolve_removes_duplicates() -> None:
    resolver = FakeResolver({"twice.example.com": [PUBLIC_V4, PUBLIC_V4]})

    addresses = resolve_safe_addresses(
        "twice.example.com", 443, allow_loopback=False, resolver=resolver
    )

    assert addresses == [ipaddress.ip_address(PUBLIC_V4)]


def test_resolve_checks_literal_without_lookup() -> None:
    resolver = make_resolver()

    with pytest.raises(UnsafeUrl):
        resolve_safe_addresses(
            "0x7f000001", 80, allow_loopback=False, resolver=resolver
        )

    assert resolver.calls == []


def test_resolve_localhost_loopback_addresses() -> None:
    addresses = resolve_safe_addresses(
        "localhost", 80, allow_loopback=True, resolver=make_resolver()
    )

    assert addresses == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_resolve_loopback_answer_allowed() -> None:
    addresses = resolve_safe_addresses(
        "127.0.0.1.nip.io", 80, allow_loopback=True, resolver=make_resolver()
    )

    assert addresses == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:x",
        "file:///etc/passwd",
        "//evil.test/x",
        "https://user@example.com/",
        "https:///logo.png",
        "",
    ],
)
def test_link_url_rejected(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        validate_link_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/logo.png", "https://example.com/logo.png"),
        ("HTTP://Example.com/docs?page=2", "http://example.com/docs?page=2"),
        ("https://example.com", "https://example.com/"),
    ],
)
def test_link_url_accepted(url: str, expected: str) -> None:
    assert validate_link_url(url) == expected
