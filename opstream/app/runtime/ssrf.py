"""The SSRF guard for webhooks: where opstream is willing to send a POST, and how it connects.

A ``callbackUrl`` is chosen by whoever creates an operation, so it must not become a way to
reach what only the server can reach (its loopback, the private network, a cloud metadata
service). The rules:

- ``http`` or ``https`` only, no credentials in the URL, a host present;
- the host is resolved and *every* address it resolves to must be globally routable: no
  loopback, private, shared (CGNAT), link-local, multicast, reserved or unspecified address,
  no cloud metadata address, no IPv4-mapped or IPv4-compatible IPv6 address, no 6to4 or NAT64
  address that embeds one of those, no Teredo;
- unless the host name or the address is in the allow-list (``OPSTREAM_WEBHOOK_ALLOW``:
  comma-separated host names, ``*.suffix`` wildcards, addresses or CIDR networks);
- the connection goes to the address that was checked (``PinnedTransport``), so a DNS answer
  that changes between the check and the connect (DNS rebinding) cannot redirect it; the
  ``Host`` header, TLS SNI and certificate check still use the URL's host name.

Redirects are never followed, and timeouts and the response-size cap live with the caller
(``opstream.app.runtime.webhooks``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpcore
import httpx

from opstream.app.runtime.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses the host name resolves to (as text)
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, …
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
SHARED = ipaddress.ip_network("100.64.0.0/10")


class CallbackRefused(ValueError):
    """A callback URL opstream will not call; ``str()`` is one line for a person.

    ``permanent`` when retrying cannot help (the URL itself is wrong), as opposed to a host
    name that resolves to a refused address (or not at all) today."""

    def __init__(self, reason: str, *, permanent: bool = True) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks that may be called even though they are not global."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # from ``*.example.internal``: ``.example.internal``
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("[") and entry.endswith("]"):
                entry = entry[1:-1]
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            elif "/" in entry or " " in entry:
                raise ValueError(f"webhook allow-list entry {raw!r} is not a host or network")
            else:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` may not be called (``"a private address"``), or ``None``."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if address in IPV4_COMPATIBLE and int(address) > 1:
            return "an IPv4-compatible IPv6 address"
        if address.teredo is not None:
            return "a Teredo address"
        if address.sixtofour is not None:
            inner = address_problem(address.sixtofour)
            if inner is not None:
                return f"a 6to4 address embedding {inner}"
        for network in NAT64:
            if address in network:
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                inner = address_problem(embedded)
                return None if inner is None else f"a NAT64 address embedding {inner}"
        if address.is_site_local:
            return "a site-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-global address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked callback: the URL to send (with its original host) and the address to
    connect to."""

    url: httpx.URL
    host: str
    port: int
    address: str


def parse_callback_url(url: str, allow: AllowList) -> tuple[httpx.URL, str, int]:
    """The URL's syntax rules (no DNS): scheme, credentials, host, port; literal addresses
    are checked here too. ``CallbackRefused`` (permanent) when broken."""
    if not isinstance(url, str) or not url:
        raise CallbackRefused("must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise CallbackRefused("must not contain whitespace or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise CallbackRefused(f"is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise CallbackRefused("must be an http or https URL")
    if parsed.userinfo:
        raise CallbackRefused("must not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")  # IDNA: the wire form
    if not host:
        raise CallbackRefused("has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _literal_address(host)
    if literal is not None:
        problem = address_problem(literal)
        if problem and not (allow.allows_host(host) or allow.allows_address(literal)):
            raise CallbackRefused(f"host {host} is {problem}")
    elif (host == "localhost" or host.endswith(".localhost")) and not allow.allows_host(host):
        raise CallbackRefused(f"host {host} is a loopback name")
    return parsed, host, port


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, from the system resolver (without blocking the event loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def resolve_target(
    url: str,
    allow: AllowList,
    resolver: Resolver | None = None,
    *,
    resolve_seconds: float = 5.0,
) -> Target:
    """Check ``url`` and pick the address to connect to; ``CallbackRefused`` if it may not be
    called (``permanent`` false when the answer may change: DNS failures, refused addresses
    from DNS)."""
    parsed, host, port = parse_callback_url(url, allow)
    literal = _literal_address(host)
    if literal is not None:
        return Target(parsed, host, port, str(literal))
    try:
        async with asyncio.timeout(resolve_seconds):
            answers = await (resolver or system_resolver)(host, port)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise CallbackRefused(f"host {host} does not resolve: {reason}", permanent=False) from None
    addresses = [_address(answer) for answer in answers]
    if not addresses:
        raise CallbackRefused(f"host {host} does not resolve", permanent=False)
    if not allow.allows_host(host):
        for address in addresses:
            problem = address_problem(address)
            if problem and not allow.allows_address(address):
                raise CallbackRefused(
                    f"host {host} resolves to {address}, {problem}",
                    permanent=False,
                )
    return Target(parsed, host, port, str(addresses[0]))


async def check_callback_url(
    url: str, settings: Settings, *, resolver: Resolver | None = None, resolve: bool = True
) -> None:
    """Raise ``ValueError`` (``CallbackRefused``) with a one-line reason if opstream would not
    call ``url``; for ``POST /operations`` to answer ``422`` at once. ``resolve=False``
    checks without DNS (scheme, credentials, literal addresses, ``localhost``)."""
    allow = AllowList.parse(settings.webhook_allow)
    if resolve:
        await resolve_target(url, allow, resolver, resolve_seconds=settings.webhook_connect_seconds)
    else:
        parse_callback_url(url, allow)


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked address whatever host httpcore asks for (the URL's)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host.lower().rstrip(".").strip("[]") != self.target.host.strip("[]"):
            raise httpcore.ConnectError(f"refusing to connect to {host}: not the checked host")
        return await self.inner.connect_tcp(
            self.target.address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed for webhooks")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that connects only to ``target.address`` (no proxies from the
    environment), sending the URL's own ``Host`` and TLS server name."""

    def __init__(self, target: Target, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=_PinnedBackend(target),
        )
