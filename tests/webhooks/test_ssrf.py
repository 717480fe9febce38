"""The SSRF guard: every class of address opstream must not call is refused."""

from __future__ import annotations

import ipaddress

import pytest

from opstream.app.runtime.settings import Settings
from opstream.app.runtime.ssrf import (
    AllowList,
    CallbackRefused,
    address_problem,
    check_callback_url,
    resolve_target,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "shared",
    "169.254.169.254": "metadata",
    "169.254.10.10": "link-local",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",  # broadcast
    "192.0.2.1": "private",  # documentation
    "198.18.0.1": "private",  # benchmarking
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd00:ec2::254": "metadata",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "IPv4-mapped",
    "::ffff:8.8.8.8": "IPv4-mapped",
    "::127.0.0.1": "IPv4-compatible",
    "2002:7f00:1::1": "6to4 address embedding a loopback",
    "2002:a00:1::1": "6to4 address embedding a private",
    "2002:a9fe:a9fe::1": "6to4 address embedding a cloud metadata",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "64:ff9b::7f00:1": "NAT64 address embedding a loopback",
    "64:ff9b::a9fe:a9fe": "NAT64 address embedding a cloud metadata",
    "2001:db8::1": "private",  # documentation
}
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
def test_every_non_global_class_is_refused(address: str, reason: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and reason in problem


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def _url(address: str) -> str:
    return f"http://[{address}]:8080/hook" if ":" in address else f"http://{address}:8080/hook"


@pytest.mark.parametrize("address", REFUSED)
async def test_literal_addresses_in_the_url_are_refused_without_dns(address: str) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("a literal address needs no DNS")

    with pytest.raises(CallbackRefused) as raised:
        await check_callback_url(_url(address), Settings(), resolver=no_dns)
    assert raised.value.permanent and "\n" not in str(raised.value)
    with pytest.raises(ValueError):  # the same without DNS at all
        await check_callback_url(_url(address), Settings(), resolve=False)


@pytest.mark.parametrize("address", REFUSED)
async def test_a_name_resolving_to_a_refused_address_is_refused(address: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return [address]

    with pytest.raises(CallbackRefused) as raised:
        await check_callback_url("https://hooks.example.com/x", Settings(), resolver=resolver)
    assert f"resolves to {ipaddress.ip_address(address)}" in str(raised.value)
    assert not raised.value.permanent  # DNS answers change: worth another attempt later


async def test_one_bad_address_among_good_ones_is_enough_to_refuse() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(CallbackRefused, match=r"10\.0\.0\.7, a private address"):
        await check_callback_url("https://hooks.example.com/", Settings(), resolver=resolver)


async def test_a_name_resolving_to_global_addresses_is_accepted_and_pinned() -> None:
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.215.14", "2606:4700:4700::1111"]

    await check_callback_url("https://Hooks.Example.com./x?y=1", Settings(), resolver=resolver)
    target = await resolve_target("https://hooks.example.com/x", AllowList(), resolver)
    assert (target.host, target.port, target.address) == ("hooks.example.com", 443, "93.184.215.14")
    assert calls == ["hooks.example.com", "hooks.example.com"]


async def test_localhost_is_refused() -> None:
    with pytest.raises(CallbackRefused, match="loopback"):
        await check_callback_url("http://localhost:9/", Settings(), resolve=False)
    with pytest.raises(CallbackRefused, match="loopback"):
        await check_callback_url("http://api.localhost/", Settings(), resolve=False)
    # and through the real system resolver, whatever it answers for localhost
    for host in ("localhost", "127.1", "2130706433", "0x7f000001"):
        with pytest.raises(CallbackRefused):
            await check_callback_url(f"http://{host}:9/", Settings())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("//example.com/x", "http or https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\r\nX-Injected: 1", "whitespace"),
        ("http:///path", "no host"),
        ("", "non-empty"),
        ("https://example.com/" + "a" * 3000, "longer than"),
    ],
)
async def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused) as raised:
        await check_callback_url(url, Settings(), resolve=False)
    assert reason in str(raised.value) and raised.value.permanent


async def test_an_unresolvable_host_is_refused_for_now() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(CallbackRefused, match="does not resolve") as raised:
        await check_callback_url("https://nowhere.invalid/", Settings(), resolver=nxdomain)
    assert not raised.value.permanent


async def test_the_allow_list_admits_hosts_wildcards_addresses_and_networks() -> None:
    settings = Settings(
        webhook_allow=("127.0.0.1", "10.20.0.0/16", "hooks.internal", "*.svc.local", "[::1]")
    )

    async def resolver(host: str, port: int) -> list[str]:
        known = {
            "hooks.internal": ["10.9.9.9"],
            "a.svc.local": ["192.168.0.4"],
            "in-range.example": ["10.20.3.4"],
        }
        return known.get(host, ["10.99.0.1"])

    for url in [
        "http://127.0.0.1:9000/",
        "http://[::1]:9000/",
        "http://10.20.1.1/",
        "http://hooks.internal/",
        "http://a.svc.local/",
        "http://in-range.example/",  # resolves into 10.20.0.0/16
    ]:
        await check_callback_url(url, settings, resolver=resolver)
    for url in [
        "http://127.0.0.2/",
        "http://10.21.0.1/",
        "http://svc.local.evil/",
        "http://[::2]/",
    ]:
        with pytest.raises(CallbackRefused):
            await check_callback_url(url, settings, resolver=resolver)


def test_the_allow_list_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        AllowList.parse(["not a host/x"])
    assert AllowList.parse(["", " HOOKS.Example. "]).allows_host("hooks.example")
