"""Who is asking: the one client address that every per-address rule uses (ruling 4 of #23).

Rules:
- The peer (the TCP connection's other end) is the client, unless the peer is in
  COCOON_TRUSTED_PROXIES (CIDRs, empty by default). Forwarded headers from anyone else are
  ignored, so nobody gets a fresh sign-up bucket by rotating `X-Forwarded-For`.
- From a trusted proxy, `X-Forwarded-For` is read from the right: each hop appended by a trusted
  proxy is skipped, and the first address no trusted proxy vouches for is the client (what lies
  to the left of it was written by the client itself and proves nothing).
- An IPv6 client is counted by its /64: one subscriber usually holds a whole /64 and could
  otherwise draw a fresh address per request. An IPv4-mapped IPv6 address is its IPv4 address.
- With no proxy trusted, a loopback peer sending `X-Forwarded-For` is almost certainly a reverse
  proxy on the same host whose clients would all share one bucket: that is logged once.

uvicorn's own proxy-header handling is off (`serve`), so `scope["client"]` is always the peer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"  # no peer address (e.g. a Unix socket): one shared bucket


def parse_networks(text: str) -> list[IPNetwork]:
    """Comma-separated addresses or CIDRs (ValueError naming the bad one)."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    return networks


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def bucket(address: IPAddress) -> str:
    """The name a per-address rule counts this address under."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[IPNetwork]) -> None:
        self.trusted = tuple(trusted_proxies)
        self._warned = False

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, scope: Mapping[str, Any]) -> IPAddress | None:
        """The client's address for this request (None when the peer has none)."""
        client = scope.get("client")
        peer = _address(client[0]) if client else None
        if peer is None:
            return None
        if not self.trusted:
            if not self._warned and peer.is_loopback and _forwarded_for(scope) is not None:
                self._warned = True
                logger.warning(
                    "requests from loopback carry X-Forwarded-For but COCOON_TRUSTED_PROXIES is empty: "
                    "every client behind that proxy shares one address for sign-up and authentication "
                    "limits; set COCOON_TRUSTED_PROXIES to the proxy's address (e.g. 127.0.0.1/32)"
                )
            return peer
        if not self._is_trusted(peer):
            return peer
        forwarded = _forwarded_for(scope)
        client_address = peer
        if forwarded is not None:
            for hop in reversed(forwarded.split(",")):
                address = _address(hop)
                if address is None:
                    break  # unreadable: the last hop a trusted proxy vouched for stands
                client_address = address
                if not self._is_trusted(address):
                    break
        return client_address

    def from_trusted_proxy(self, scope: Mapping[str, Any]) -> bool:
        """Whether the peer is a trusted proxy, so that what it forwards (`X-Forwarded-Proto`) counts."""
        client = scope.get("client")
        peer = _address(client[0]) if client else None
        return peer is not None and self._is_trusted(peer)

    def bucket_of(self, scope: Mapping[str, Any]) -> str:
        address = self.resolve(scope)
        return bucket(address) if address is not None else UNKNOWN


def _forwarded_for(scope: Mapping[str, Any]) -> str | None:
    """Every X-Forwarded-For header of the request, joined in order (None when there is none)."""
    values = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return ",".join(values) if values else None
