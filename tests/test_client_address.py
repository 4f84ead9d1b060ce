"""Client addresses (#14 item 4, ruling 4 of #23): X-Forwarded-For counts only from trusted
proxies, read from the right; IPv6 counted by /64; a loopback proxy nobody trusts is warned of."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from conftest import ServerFactory

from cocoon_platform.ops.client_address import ClientAddresses, parse_networks


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    return {"client": (peer, 50000), "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}


def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    nobody = ClientAddresses([])
    assert nobody.bucket_of(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    proxies = ClientAddresses(parse_networks("127.0.0.1/32, 10.0.0.0/8"))
    assert proxies.bucket_of(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9", "peer not trusted"
    assert proxies.bucket_of(scope("127.0.0.1", "198.51.100.1")) == "198.51.100.1"
    # The client wrote the leftmost entries itself: the first hop no trusted proxy added is the client.
    assert proxies.bucket_of(scope("127.0.0.1", "1.2.3.4, 198.51.100.1, 10.1.1.1")) == "198.51.100.1"
    assert proxies.bucket_of(scope("127.0.0.1", "1.2.3.4", "198.51.100.1")) == "198.51.100.1", "headers joined"
    assert proxies.bucket_of(scope("127.0.0.1", "garbage")) == "127.0.0.1"
    assert proxies.bucket_of(scope("127.0.0.1")) == "127.0.0.1"
    assert proxies.bucket_of({"client": None, "headers": []}) == "unknown"


def test_ipv6_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() -> None:
    addresses = ClientAddresses([])
    first = addresses.bucket_of(scope("2001:db8:1:2::1"))
    assert first == addresses.bucket_of(scope("2001:db8:1:2:ffff:ffff:ffff:ffff")) == "2001:db8:1:2::/64"
    assert addresses.bucket_of(scope("2001:db8:1:3::1")) != first
    assert addresses.bucket_of(scope("::ffff:198.51.100.7")) == "198.51.100.7"
    resolved = addresses.resolve(scope("::1"))
    assert resolved is not None and resolved.is_loopback


def test_trusted_proxies_setting_is_validated() -> None:
    assert parse_networks("") == []
    assert parse_networks("127.0.0.1, ::1, 10.0.0.0/8") == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.0.0.0/8"),
    ]
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks("10.0.0.0/8,not-an-ip")


def register(url: str, forwarded: str) -> int:
    return httpx.post(url + "/api/register", headers={"X-Forwarded-For": forwarded}).status_code


def test_rotating_x_forwarded_for_gets_no_new_signups_by_default(server_factory: ServerFactory) -> None:
    """Seen: with uvicorn trusting X-Forwarded-For from loopback, every rotated value was a new bucket."""
    server = server_factory(rate_limit_signup_per_minute="2")
    assert [register(server.url, f"198.51.100.{i}") for i in range(4)] == [200, 200, 429, 429]
    log = server.log()
    assert log.count("carry X-Forwarded-For but COCOON_TRUSTED_PROXIES is empty") == 1, log


def test_a_trusted_proxy_gives_each_client_its_own_bucket(server_factory: ServerFactory) -> None:
    server = server_factory(rate_limit_signup_per_minute="1", trusted_proxies="127.0.0.1/32")
    assert register(server.url, "198.51.100.1") == 200
    assert register(server.url, "198.51.100.1") == 429
    assert register(server.url, "198.51.100.2") == 200, "another client behind the same proxy"
    assert register(server.url, "2001:db8:5:6::1") == 200
    assert register(server.url, "2001:db8:5:6::2") == 429, "the same /64"
    assert "COCOON_TRUSTED_PROXIES is empty" not in server.log()
