"""TSC's four reads against a mocked TSC server (respx): the GET each one sends, the record passed
through, missing records named (404), refusals, rate limits and outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from metagov.config import Settings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

SERVER = "https://tsc.test"
READS = [
    ("get-user", "user_id", "user", {"id": "u1", "username": "ana", "contracts": ["c7"]}),
    ("get-contract", "contract_id", "contract", {"id": "c7", "name": "Pledge", "parties": 2}),
    ("get-execution", "execution_id", "execution", {"id": "e3", "contract": "c7", "step": 1}),
    ("get-agreement", "agreement_id", "agreement", {"id": "a9", "text": "We agree", "ok": True}),
]


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    async with open_gateway(settings, make_registry()) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway) -> DriverCredentials:
    driver = await gw.create_driver("alice")
    await gw.create_community(
        driver, "commons", [{"name": "tsc", "config": {"server_url": SERVER + "/"}}]
    )
    return driver


async def read(
    gw: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gw.client.post(
        f"/api/internal/action/tsc.{slug}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


async def test_each_read_gets_its_record_from_the_server(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    for slug, field, kind, record in READS:
        record_id = record["id"]
        route = respx_mock.get(f"{SERVER}/api/{kind}/{record_id}").respond(200, json=record)
        response = await read(gw, driver, slug, **{field: record_id})
        assert response.status_code == 200, response.text
        assert response.json() == record
        request = route.calls.last.request
        assert request.method == "GET"
        assert request.headers["accept"] == "application/json"
        assert request.url == f"{SERVER}/api/{kind}/{record_id}"


async def test_missing_records_are_404s_naming_what_was_asked(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    for slug, field, kind, _ in READS:
        respx_mock.get(f"{SERVER}/api/{kind}/nope").respond(404, json={"error": "Not found"})
        response = await read(gw, driver, slug, **{field: "nope"})
        assert response.status_code == 404, response.text
        assert response.json() == {
            "detail": f"the TSC server has no {kind} 'nope': Not found",
            "code": "tsc_not_found",
        }


async def test_refusals_rate_limits_and_outages(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    for slug, field, kind, record in READS:
        route = respx_mock.get(f"{SERVER}/api/{kind}/{record['id']}")
        route.respond(403, json={"message": f"This {kind} is private"})
        refused = await read(gw, driver, slug, **{field: record["id"]})
        assert refused.status_code == 400, (slug, refused.text)
        assert refused.json()["code"] == "tsc_error"
        assert f"This {kind} is private" in refused.json()["detail"]

        route.respond(429, headers={"Retry-After": "12"}, text="slow down")
        limited = await read(gw, driver, slug, **{field: record["id"]})
        assert limited.status_code == 429, slug
        assert limited.headers["retry-after"] == "12"

        route.respond(502, text="Bad Gateway")
        failing = await read(gw, driver, slug, **{field: record["id"]})
        assert failing.status_code == 502, slug
        assert failing.json()["code"] == "upstream_error"

        route.respond(200, json=["not", "an", "object"])
        odd = await read(gw, driver, slug, **{field: record["id"]})
        assert odd.status_code == 502, slug

        route.mock(side_effect=httpx.ConnectError("refused"))
        down = await read(gw, driver, slug, **{field: record["id"]})
        assert down.status_code == 502, slug
        assert down.json()["detail"] == "the TSC server could not be reached: ConnectError"


async def test_ids_cannot_leave_their_path_segment(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    for bad in ["../admin", "a/b", "..", "", "x?y=1"]:
        response = await read(gw, driver, "get-user", user_id=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0]["loc"][-1] == "user_id"
    missing = await read(gw, driver, "get-user")
    assert missing.status_code == 422
    assert not respx_mock.calls


async def test_the_server_url_must_be_http(gw: TestGateway) -> None:
    driver = await gw.create_driver("bob")
    await gw.create_community(driver, "garden")
    for url in ["ftp://tsc.test", "tsc.test", "https://tsc.test/?a=1", "https://"]:
        refused = await gw.client.post(
            "/api/internal/plugin/tsc", json={"server_url": url}, headers=driver.to("garden")
        )
        assert refused.status_code == 422, (url, refused.text)
        assert refused.json()["errors"][0]["loc"][-1] == "server_url"
