"""The outbound URL guard: where the gateway may send requests that someone else chose the URL of.

A Driver names its event URL and processes' callback URLs; a community's plugin config names a
self-hosted server. Left alone, such a URL could make the gateway call into its own network (a
database's admin port, a cloud metadata service). Two checks stop that:

- When a URL is registered, :func:`check_url`: ``http`` or ``https`` with a host, no credentials.
- When a connection is opened, :class:`GuardedTransport`: the host is resolved once, every address
  it resolves to must be public (not loopback, private, link-local, unique-local, multicast,
  reserved or unspecified, in IPv4, IPv6 or IPv4-mapped IPv6), and the connection goes to an
  address that was checked: the name is never looked up a second time, so a DNS answer that
  changes between the check and the connection (DNS rebinding) gains nothing. The request keeps
  its URL: the ``Host`` header, TLS SNI and the certificate check all use the original name.

``METAGOV_OUTBOUND_ALLOWLIST`` lets chosen hosts, ``host:port`` pairs or networks through anyway
(a Driver on the same machine or network). In development, loopback is allowed too, so that a
Driver on the developer's machine receives its events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from metagov import tracing

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolves a host name to the addresses a connection may use, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]

URL_RULE = "must be an http:// or https:// URL with a host (and no user or password)"
MAX_URL_LENGTH = 2000
# NAT64 (RFC 6052) embeds an IPv4 address in an IPv6 one: judged by the IPv4 address inside.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def check_url(url: str) -> str:
    """Registration-time check of a URL the gateway will call: returns it, or raises
    ``ValueError`` naming the rule. Where it may connect is decided at connect time."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(URL_RULE)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(URL_RULE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(URL_RULE)
    if parts.username is not None or parts.password is not None:
        raise ValueError(URL_RULE)
    return url


class URLNotAllowed(httpx.ConnectError):
    """The guard refused to connect. A :class:`httpx.ConnectError`, so code that handles a
    platform it cannot reach handles this too; ``reason`` says which rule refused."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"connections to {host!r} are not allowed ({reason})")
        self.host = host
        self.reason = reason


def _judged(address: IPAddress) -> IPAddress:
    """The address whose kind decides: the IPv4 address inside a mapped or NAT64 one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why the gateway may not connect to ``address`` on its own accord, or None if it may."""
    address = _judged(address)
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:  # shared address space (100.64/10), documentation ranges…
        return "not_public"
    return None


@dataclass(frozen=True)
class Allowlist:
    """Hosts, ``host:port`` pairs and networks (CIDR) the guard lets through anyway."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """Read ``METAGOV_OUTBOUND_ALLOWLIST`` entries; raises ``ValueError`` naming a bad one."""
        hosts: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, sep, port = entry.rpartition(":")
            if sep and port.isdigit() and host and ("]" in host or ":" not in host):
                number = int(port)
                if not 0 < number < 65536:
                    raise ValueError(f"{raw!r}: the port is out of range")
                host_ports.add((host.strip("[]"), number))
                continue
            if "/" in entry or ":" in entry or " " in entry:
                raise ValueError(f"{raw!r} is not a host, host:port or network")
            hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def allows_host(self, host: str, port: int) -> bool:
        name = host.lower().rstrip(".")
        return name in self.hosts or (name, port) in self.host_ports

    def allows_address(self, address: IPAddress, port: int) -> bool:
        if (str(address), port) in self.host_ports or str(address) in self.hosts:
            return True
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class OutboundPolicy:
    """Where the guarded client may connect."""

    allowlist: Allowlist = Allowlist()
    allow_loopback: bool = False

    def check(self, host: str, port: int, addresses: Sequence[str]) -> list[str]:
        """The addresses to connect to for ``host``, all of them checked; raises
        :class:`URLNotAllowed` if any is refused (a name that also resolves to an internal
        address is not trusted with either)."""
        if not addresses:
            raise URLNotAllowed(host, "unresolvable")
        if self.allowlist.allows_host(host, port):
            return list(addresses)
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if self.allowlist.allows_address(address, port):
                continue
            reason = refusal(address, allow_loopback=self.allow_loopback)
            if reason is not None:
                raise URLNotAllowed(host, reason)
        return list(addresses)


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, each once, in the order it gave them."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [str(literal)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, behind the guard: each TCP connection resolves its host once,
    checks every address, and connects to a checked one. TLS is started afterwards by httpcore
    with the original host name, so SNI and certificate checks are unchanged."""

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._policy.check(host, port, await self._resolve(host, port))
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise URLNotAllowed(path, "unix_socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes through :class:`GuardedBackend`. It uses
    no proxy from the environment: a proxy would resolve the name itself, out of the guard's
    sight."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver = system_resolver,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
    ) -> None:
        # Not the parent's constructor: it builds a pool on the default network backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )


def policy_of(environment: str, allowlist: Iterable[str]) -> OutboundPolicy:
    """The policy the settings describe: loopback is allowed in development only."""
    return OutboundPolicy(Allowlist.parse(allowlist), allow_loopback=environment == "development")


def guarded_client(
    policy: OutboundPolicy, *, timeout: float, resolver: Resolver = system_resolver
) -> httpx.AsyncClient:
    """An HTTP client for URLs a Driver or a community chose: guarded, no redirects followed,
    no environment proxies."""
    return httpx.AsyncClient(
        transport=tracing.client_transport(GuardedTransport(policy, resolver=resolver)),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "metagov-gateway"},
    )


def error_code(exc: Exception) -> str:
    """A short, stable code for a failed request, for what Drivers are shown: never a remote
    body or the socket's own words, which could map the gateway's network for them."""
    if isinstance(exc, URLNotAllowed):
        return "url_not_allowed"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return "protocol_error"
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return "connection_lost"
    return "network_error"
