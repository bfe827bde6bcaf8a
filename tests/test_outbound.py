"""The outbound URL guard: registration-time URL checks, which addresses are refused, the
allowlist, and connections that go to the address that was checked. Names are resolved by a fake
resolver; the only sockets opened are to a server on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from metagov.config import Settings
from metagov.outbound import (
    Allowlist,
    GuardedBackend,
    OutboundPolicy,
    URLNotAllowed,
    check_url,
    error_code,
    guarded_client,
    refusal,
)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "not a url",
        "ftp://files.example/x",
        "http://",
        "https:///path-only",
        "http://user:password@driver.example/",
        "http://driver.example:99999/",
        "http://driver.example/with space",
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ],
)
def test_only_http_urls_with_a_host_are_registered(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https:// URL with a host"):
        check_url(url)


@pytest.mark.parametrize(
    "url", ["https://driver.example/events", "http://127.0.0.1:9000/x?y=1", "http://[::1]:8/"]
)
def test_http_urls_pass_registration(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:10.1.2.3", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link_local"),
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not_public"),
    ],
)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    ip = ipaddress.ip_address(address)
    found = refusal(ip, allow_loopback=False)
    assert found is not None
    # Python's tables overlap (240/4 is both reserved and private): the kind is informative.
    assert found == reason or {found, reason} <= {"private", "reserved", "not_public"}
    if reason == "loopback":
        assert refusal(ip, allow_loopback=True) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_loopback=False) is None


def test_allowlist_entries() -> None:
    allow = Allowlist.parse(
        ["driver.internal", "10.0.0.0/8", "127.0.0.1:9000", "[::1]:9001", "Other.Host:443"]
    )
    policy = OutboundPolicy(allow)
    assert policy.check("driver.internal", 80, ["192.168.7.7"]) == ["192.168.7.7"]
    assert policy.check("anything", 80, ["10.9.8.7"]) == ["10.9.8.7"]
    assert policy.check("local", 9000, ["127.0.0.1"]) == ["127.0.0.1"]
    assert policy.check("local6", 9001, ["::1"]) == ["::1"]
    assert policy.check("other.host", 443, ["192.168.0.1"]) == ["192.168.0.1"]
    for host, port, addresses in [
        ("local", 9002, ["127.0.0.1"]),
        ("other.host", 80, ["192.168.0.1"]),
        ("anything", 80, ["172.16.0.1"]),
    ]:
        with pytest.raises(URLNotAllowed):
            policy.check(host, port, addresses)
    for bad in ["http://x", "a b", "host:99999"]:
        with pytest.raises(ValueError, match=repr(bad)):
            Allowlist.parse([bad])


def test_a_name_that_also_resolves_inside_is_refused() -> None:
    policy = OutboundPolicy()
    with pytest.raises(URLNotAllowed) as refused:
        policy.check("mixed.example", 443, ["93.184.216.34", "10.0.0.1"])
    assert refused.value.reason == "private"
    with pytest.raises(URLNotAllowed, match="unresolvable"):
        policy.check("nowhere.example", 443, [])


def test_settings_check_the_event_url_and_the_allowlist() -> None:
    with pytest.raises(ValidationError, match="driver_event_url"):
        Settings(_env_file=None, driver_event_url="file:///etc/passwd")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="outbound_allowlist"):
        Settings(_env_file=None, outbound_allowlist="http://nope")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, outbound_allowlist="10.0.0.0/8, driver.lan:8080")  # type: ignore[call-arg]
    assert ok.outbound_allowlist == ["10.0.0.0/8", "driver.lan:8080"]


class FakeResolver:
    """Answers from a table, and counts how often each name is asked (a changing answer is how
    DNS rebinding works: the answers are handed out in turn)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.asked: dict[str, int] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        turn = self.asked.get(host, 0)
        self.asked[host] = turn + 1
        answers = self.table.get(host, [[]])
        return answers[min(turn, len(answers) - 1)]


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where connections were asked to go; connects nowhere."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        raise httpcore.ConnectError("recorded")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_the_connection_goes_to_the_checked_address_resolved_once() -> None:
    resolver = FakeResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    inner = RecordingBackend()
    backend = GuardedBackend(OutboundPolicy(), resolver, inner)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("rebind.example", 443)
    assert resolver.asked == {"rebind.example": 1}
    assert inner.hosts == ["93.184.216.34"]  # the checked address, not the name
    # The next connection resolves again and meets the rebound answer: refused, not connected.
    with pytest.raises(URLNotAllowed):
        await backend.connect_tcp("rebind.example", 443)
    assert inner.hosts == ["93.184.216.34"]
    with pytest.raises(URLNotAllowed):
        await backend.connect_unix_socket("/var/run/docker.sock")


@pytest.fixture
async def loopback_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A tiny HTTP server on 127.0.0.1 that records each request's head and answers 200."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, heads


async def test_a_guarded_client_keeps_the_host_header_and_refuses_what_it_must(
    loopback_server: tuple[int, list[bytes]],
) -> None:
    port, heads = loopback_server
    resolver = FakeResolver({"driver.test": [["127.0.0.1"]]})
    allowed = OutboundPolicy(Allowlist.parse([f"127.0.0.1:{port}"]))
    async with guarded_client(allowed, timeout=5, resolver=resolver) as client:
        answer = await client.post(f"http://driver.test:{port}/events", content=b"{}")
    assert answer.status_code == 200
    assert f"host: driver.test:{port}".encode() in heads[0].lower()

    async with guarded_client(OutboundPolicy(), timeout=5, resolver=resolver) as client:
        for url in (f"http://driver.test:{port}/", f"http://127.0.0.1:{port}/"):
            with pytest.raises(URLNotAllowed) as refused:
                await client.post(url, content=b"{}")
            assert error_code(refused.value) == "url_not_allowed"
    assert len(heads) == 1  # nothing reached the server


async def test_failures_become_short_codes() -> None:
    assert error_code(httpx.ConnectError("[Errno 111] Connection refused")) == "connect_error"
    assert error_code(httpx.ReadTimeout("timed out")) == "timeout"
    assert error_code(httpx.RemoteProtocolError("illegal header")) == "protocol_error"
    assert error_code(httpx.ReadError("reset by peer")) == "connection_lost"
