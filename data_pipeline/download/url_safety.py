"""Which URLs may be fetched: http(s) only, and never into private networks unless allowed.

The address check happens at connection time on the address actually dialled (see
``SafeHTTPAdapter``), so a DNS answer cannot change between the check and the connect, and
every redirect hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

ALLOWED_SCHEMES = ("http", "https")


class BlockedURL(Exception):
    """A URL we refuse to fetch; ``reason`` is a short stable label for stats."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses a connection may reach.

    By default only globally routable unicast addresses. ``allow_private`` lifts the rule
    entirely; ``allowed_networks`` (CIDR strings) lifts it for chosen ranges, e.g.
    ``("127.0.0.0/8",)`` for a test server.
    """

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = field(default=())

    def __post_init__(self):
        for net in self.allowed_networks:
            ipaddress.ip_network(net, strict=False)  # fail early on a typo

    def allows(self, address: str) -> bool:
        if self.allow_private:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self._listed(ip):
            return True
        if ip.version == 6 and ip in _NAT64_LOCAL_USE:
            return False  # translated into the operator's own networks only (RFC 8215)
        embedded = embedded_ipv4(ip) if ip.version == 6 else ()
        if embedded:  # the IPv4 address the packets finally reach decides
            return all(self._listed(v4) or _is_public(v4) for v4 in embedded)
        return _is_public(ip)

    def _listed(self, ip) -> bool:
        return any(ip in net for net in _networks(self.allowed_networks))


# IPv6 forms that carry an IPv4 address: translated (NAT64), tunnelled (6to4, Teredo) or written as IPv6
# (IPv4-mapped, IPv4-compatible). Packets to them end up at the IPv4 address, so that address is checked.
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for (a Teredo address names its server and its client)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_COMPATIBLE:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def _is_public(ip) -> bool:
    return ip.is_global and not ip.is_multicast


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]):
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def check_scheme(url: str) -> None:
    """Raise ``BlockedURL('bad_scheme')`` for anything but an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BlockedURL("bad_url", str(exc)) from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise BlockedURL("bad_scheme", f"only http(s) URLs are fetched, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise BlockedURL("bad_url", "URL has no host")


def _connect_checked(conn: HTTPConnection, policy: AddressPolicy):
    """Resolve, drop disallowed addresses, then connect to the first reachable remaining one."""
    host, port = conn._dns_host, conn.port
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    allowed = [info for info in infos if policy.allows(info[4][0])]
    if not allowed:
        addresses = ", ".join(sorted({info[4][0] for info in infos}))
        raise BlockedURL("blocked_address", f"{host} resolves to a non-public address ({addresses})")
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in allowed:
        sock = socket.socket(family, socktype, proto)
        try:
            for opt in conn.socket_options or ():
                sock.setsockopt(*opt)
            if conn.timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
            return sock
        except socket.timeout:
            sock.close()
            last_error = ConnectTimeoutError(conn, f"connection to {host} timed out")
        except OSError as exc:
            sock.close()
            last_error = NewConnectionError(conn, f"failed to connect to {host}: {exc}")
    raise last_error  # type: ignore[misc]


@lru_cache(maxsize=16)
def _pool_classes(policy: AddressPolicy):
    class CheckedHTTPConnection(HTTPConnection):
        def _new_conn(self):
            return _connect_checked(self, policy)

    class CheckedHTTPSConnection(HTTPSConnection):
        def _new_conn(self):
            return _connect_checked(self, policy)

    class CheckedHTTPPool(HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    return {"http": CheckedHTTPPool, "https": CheckedHTTPSPool}


class SafeHTTPAdapter(HTTPAdapter):
    """A requests adapter whose connections only reach addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, **kwargs):
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # Through a proxy the dialled address is the proxy's, so the check would be meaningless.
        raise BlockedURL("proxy_unsupported", "proxies are not used by the safe downloader")
