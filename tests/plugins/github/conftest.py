"""Fixtures: a gateway serving the GitHub plugin against the fake GitHub of ``fake.py``, with
the App's RSA key made at test time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from metagov.plugins.github import GitHubPlugin
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings
from tests.plugins.github.fake import (
    BASE,
    DONE,
    EVENTS,
    GITHUB_CONFIG,
    AppKey,
    FakeGitHub,
    github_settings,
)


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return AppKey(pem, key.public_key())


@pytest.fixture
def github_overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize this fixture)."""
    return {}


@pytest.fixture
async def gateway(
    database_url: str, app_key: AppKey, github_overrides: dict[str, Any]
) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(
        GitHubPlugin,
        source="builtin:github",
        settings=github_settings(app_key, **github_overrides),
    )
    settings = make_settings(database_url, auth_redirect_allowlist=DONE, base_url=BASE)
    async with open_gateway(settings, registry) as gw:
        yield gw


@pytest.fixture
def github(respx_mock: respx.MockRouter, app_key: AppKey) -> FakeGitHub:
    return FakeGitHub(respx_mock, app_key)


@pytest.fixture
async def driver(gateway: TestGateway) -> DriverCredentials:
    return await gateway.create_driver("alice", event_url=EVENTS)


@pytest.fixture
async def installed(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> dict[str, Any]:
    """The community ``commons`` with the App's installation enabled by hand."""
    return await gateway.create_community(
        driver, "commons", [{"name": "github", "config": GITHUB_CONFIG}]
    )
