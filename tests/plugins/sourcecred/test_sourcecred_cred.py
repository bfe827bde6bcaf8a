"""The SourceCred plugin against a fake published instance (respx at https://cred.test): the
public actions without a Driver key, both output formats SourceCred documents, the cache, a
clear 404 for an unknown user, and the config refused when the URL publishes no output."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

SITE = "https://cred.test/instance"
DISCORD = "N\u0000sourcecred\u0000discord\u0000MEMBER\u0000user\u0000140750062325202944\u0000"
GITHUB = "N\u0000sourcecred\u0000github\u0000USERLIKE\u0000USER\u0000bob-gh\u0000"
UNCLAIMED = "N\u0000sourcecred\u0000discourse\u0000user\u0000https://forum.test\u0000carol\u0000"
INTERVALS = [
    {"startTimeMs": 1_700_000_000_000, "endTimeMs": 1_700_604_800_000},
    {"startTimeMs": 1_700_604_800_000, "endTimeMs": 1_701_209_600_000},
]


def identity(name: str, *aliases: str) -> dict[str, Any]:
    ident = f"{name}-id-0000000000000"
    return {
        "id": ident,
        "subtype": "USER",
        "address": f"N\u0000sourcecred\u0000core\u0000IDENTITY\u0000{ident}\u0000",
        "name": name,
        "aliases": [{"address": a, "description": f"alias of {name}"} for a in aliases],
    }


def grain_view() -> bytes:
    """``output/credGrainView`` as `sourcecred go` writes it: deflated JSON."""
    document = {
        "participants": [
            {
                "active": True,
                "identity": identity("alice", DISCORD),
                "cred": 12.5,
                "credPerInterval": [5.0, 7.5],
                "grainEarned": "1500000000000000000",
                "grainEarnedPerInterval": ["500000000000000000", "1000000000000000000"],
            },
            {
                "active": True,
                "identity": identity("bob", GITHUB),
                "cred": 7.5,
                "credPerInterval": [2.5, 5.0],
                "grainEarned": "0",
                "grainEarnedPerInterval": ["0", "0"],
            },
        ],
        "intervals": INTERVALS,
    }
    return zlib.compress(json.dumps(document).encode())


def accounts() -> dict[str, Any]:
    """``output/accounts.json`` as `sourcecred analysis` writes it."""
    return {
        "accounts": [
            {
                "account": {
                    "identity": identity("alice", DISCORD),
                    "balance": "0",
                    "paid": "0",
                    "active": True,
                },
                "cred": [1.0, 2.0],
                "totalCred": 3.0,
            },
            {
                "account": {
                    "identity": identity("bob", GITHUB),
                    "balance": "0",
                    "paid": "0",
                    "active": True,
                },
                "cred": [0.5, 0.5],
                "totalCred": 1.0,
            },
        ],
        "unclaimedAliases": [
            {
                "alias": {"address": UNCLAIMED, "description": "carol on the forum"},
                "cred": [0.25, 0.5],
                "totalCred": 0.75,
            }
        ],
        "intervals": INTERVALS,
    }


@dataclass
class Setup:
    gw: TestGateway
    driver: DriverCredentials

    async def enable(self, **config: Any) -> httpx.Response:
        return await self.gw.client.post(
            "/api/internal/plugin/sourcecred",
            json={"server_url": SITE, **config},
            headers=self.driver.to("commons"),
        )

    async def public(self, slug: str, parameters: dict[str, Any] | None = None) -> httpx.Response:
        """A call without a Driver key, as a bot or a web page makes it."""
        return await self.gw.client.post(
            f"/api/action/sourcecred.{slug}",
            json={"parameters": parameters or {}},
            headers={"X-Metagov-Community": "commons"},
        )


@pytest.fixture
async def setup(database_url: str) -> AsyncIterator[Setup]:
    async with open_gateway(make_settings(database_url), make_registry()) as gw:
        driver = await gw.create_driver("alice")
        await gw.create_community(driver, "commons")
        yield Setup(gw, driver)


async def test_cred_from_the_current_output_without_a_driver_key(
    setup: Setup, respx_mock: respx.MockRouter
) -> None:
    view = respx_mock.get(f"{SITE}/output/credGrainView").respond(content=grain_view())
    enabled = await setup.enable(server_url=SITE + "/")
    assert enabled.status_code == 201, enabled.text
    assert enabled.json()["community_platform_id"] == SITE

    by_name = await setup.public("user-cred", {"username": "alice"})
    by_id = await setup.public("user-cred", {"id": "bob-gh"})
    by_alias = await setup.public(
        "user-cred", {"alias": ["sourcecred", "discord", "MEMBER", "user", "140750062325202944"]}
    )
    any_case = await setup.public("user-cred", {"username": "Bob"})
    total = await setup.public("total-cred")

    assert [r.json() for r in (by_name, by_id, by_alias, any_case, total)] == [
        {"value": 12.5},
        {"value": 7.5},
        {"value": 12.5},
        {"value": 7.5},
        {"value": 20.0},
    ]
    # The read made when the instance was enabled served every call (cache_seconds: 300).
    assert view.call_count == 1
    assert "authorization" not in view.calls.last.request.headers

    unknown = await setup.public("user-cred", {"username": "mallory"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": f"no identity named 'mallory' in the SourceCred instance at {SITE}",
        "code": "unknown_user",
    }
    neither = await setup.public("user-cred", {})
    assert neither.status_code == 422
    assert "exactly one of username, id and alias" in neither.json()["detail"]


async def test_older_instances_publish_accounts_json(
    setup: Setup, respx_mock: respx.MockRouter
) -> None:
    missing = respx_mock.get(url__startswith=f"{SITE}/output/credGrainView").respond(404)
    listed = respx_mock.get(f"{SITE}/output/accounts.json").respond(json=accounts())
    assert (await setup.enable(cache_seconds=0)).status_code == 201
    assert missing.call_count == 2  # output/credGrainView, then output/credGrainView.json

    alice = await setup.public("user-cred", {"id": "140750062325202944"})
    carol = await setup.public(
        "user-cred", {"alias": ["sourcecred", "discourse", "user", "https://forum.test", "carol"]}
    )
    total = await setup.public("total-cred")

    assert [r.json() for r in (alice, carol, total)] == [
        {"value": 3.0},
        {"value": 0.75},
        {"value": 4.0},  # identities only: unclaimed aliases are nobody's yet
    ]
    # Nothing is kept with cache_seconds 0, and later reads go straight to accounts.json.
    assert listed.call_count == 4
    assert missing.call_count == 2


async def test_a_burst_of_calls_is_served_from_one_read(
    setup: Setup, respx_mock: respx.MockRouter
) -> None:
    view = respx_mock.get(f"{SITE}/output/credGrainView").respond(content=grain_view())
    assert (await setup.enable(cache_seconds=60)).status_code == 201
    calls = [setup.public("user-cred", {"username": "alice"}) for _ in range(10)]
    calls += [setup.public("total-cred") for _ in range(10)]

    answers = await asyncio.gather(*calls)

    assert {a.status_code for a in answers} == {200}
    assert view.call_count == 1


async def test_a_url_without_sourcecred_output_is_refused(
    setup: Setup, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(url__startswith=f"{SITE}/output/").respond(404)
    missing = await setup.enable()
    assert missing.status_code == 400
    assert missing.json()["code"] == "sourcecred_output_missing"
    assert "output/accounts.json" in missing.json()["detail"]

    respx_mock.get(url__startswith="https://broken.test/").respond(500)
    broken = await setup.enable(server_url="https://broken.test")
    assert broken.status_code == 502

    respx_mock.get(url__startswith="https://html.test/").respond(
        200, html="<html>Not a cred file</html>"
    )
    html = await setup.enable(server_url="https://html.test")
    assert html.status_code == 502
    assert "is not JSON" in html.json()["detail"]

    for url in ("http://cred.test", "https://10.0.0.8/cred"):
        refused = await setup.enable(server_url=url)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "server_url_not_allowed"
    community = await setup.gw.client.get(
        "/api/internal/community/commons", headers=setup.driver.headers
    )
    assert community.json()["plugins"] == []
