"""Fixtures: one real gateway for the whole session (``metagov serve`` in a subprocess, SQLite in
a temporary directory, jobs in-process), and a real HTTP server on loopback that plays the
Driver's event URL, so deliveries cross a socket and are checked with the client's own verifier.

Nothing of the gateway's API is mocked; the retry tests inject faults in front of the real
gateway, and then reach it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import ThreadingHTTPServer

import pytest

from client_support import Receiver, receiver_handler
from metagov_client import AsyncMetagovClient, MetagovClient
from metagov_client.testing import Gateway, run_gateway


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver_handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def gateway(receiver: Receiver) -> Iterator[Gateway]:
    # One retry, 0.1 s after the first failure: a failing delivery is dead within a second.
    with run_gateway(
        event_url=receiver.url("/events"),
        env={"METAGOV_DELIVERY_RETRY_SCHEDULE": "0.1"},
    ) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: Gateway) -> Iterator[MetagovClient]:
    with MetagovClient(gateway.url, gateway.api_key) as client:
        yield client


@pytest.fixture
async def aclient(gateway: Gateway) -> AsyncIterator[AsyncMetagovClient]:
    async with AsyncMetagovClient(gateway.url, gateway.api_key) as client:
        yield client


@pytest.fixture
def slug() -> str:
    """A fresh community slug per test: tests share the gateway, never a community."""
    return f"c-{uuid.uuid4().hex[:12]}"
