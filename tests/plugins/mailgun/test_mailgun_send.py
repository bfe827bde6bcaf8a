"""Mailgun's send-mail against a mocked Mailgun (respx): the form Mailgun receives, the regions,
Mailgun's refusals named for the Driver, rate limits and outages; the API key is never shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from metagov.config import Settings
from metagov.plugins.mailgun import MailgunPlugin
from metagov.plugins.mailgun.schemas import MailgunSettings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

API = "https://mailgun.test"
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.org"
SENT = API + f"/v3/{DOMAIN}/messages"
QUEUED = {
    "id": "<20111114174239.25659.5817@mg.example.org>",
    "message": "Queued. Thank you.",
}
CONFIG = {"domain": DOMAIN, "api_key": KEY, "default_from": "Commons <vote@mg.example.org>"}


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(MailgunPlugin, source="builtin:mailgun", settings=MailgunSettings(api_url=API))
    async with open_gateway(settings, registry) as gateway:
        yield gateway


async def enable(
    gw: TestGateway, config: dict[str, Any] | None = None
) -> tuple[DriverCredentials, dict[str, Any]]:
    driver = await gw.create_driver("alice")
    await gw.create_community(driver, "commons")
    enabled = await gw.client.post(
        "/api/internal/plugin/mailgun", json=config or CONFIG, headers=driver.to("commons")
    )
    assert enabled.status_code == 201, enabled.text
    return driver, enabled.json()


async def send(gw: TestGateway, driver: DriverCredentials, **parameters: Any) -> httpx.Response:
    return await gw.client.post(
        "/api/internal/action/mailgun.send-mail",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


def form(route: respx.Route) -> dict[str, list[str]]:
    return parse_qs(route.calls.last.request.content.decode())


async def test_enabling_checks_nothing_remotely_and_hides_the_key(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    _, instance = await enable(gw)
    assert instance["secrets_set"] == ["api_key"]
    assert instance["config"]["domain"] == DOMAIN
    assert instance["config"]["region"] == "us"
    assert KEY not in str(instance)
    assert not respx_mock.calls


async def test_send_mail_posts_the_message_form_with_the_key(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw)
    route = respx_mock.post(SENT).respond(200, json=QUEUED)

    response = await send(
        gw,
        driver,
        **{
            "from": "Ana <ana@mg.example.org>",
            "to": ["bo@example.net", "Cy <cy@example.com>"],
            "subject": "The vote is open",
            "text": "Vote before Friday.",
            "html": "<p>Vote before <b>Friday</b>.</p>",
            "reply_to": "council@example.org",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json() == QUEUED
    request = route.calls.last.request
    assert request.headers["authorization"] == httpx.BasicAuth("api", KEY)._auth_header
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(route) == {
        "from": ["Ana <ana@mg.example.org>"],
        "to": ["bo@example.net", "Cy <cy@example.com>"],
        "subject": ["The vote is open"],
        "text": ["Vote before Friday."],
        "html": ["<p>Vote before <b>Friday</b>.</p>"],
        "h:Reply-To": ["council@example.org"],
    }


async def test_the_default_sender_and_test_mode_come_from_the_config(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw, {**CONFIG, "test_mode": True})
    route = respx_mock.post(SENT).respond(200, json=QUEUED)
    response = await send(gw, driver, to="bo@example.net", subject="Hi", html="<p>hi</p>")
    assert response.status_code == 200, response.text
    assert form(route) == {
        "from": ["Commons <vote@mg.example.org>"],
        "to": ["bo@example.net"],
        "subject": ["Hi"],
        "html": ["<p>hi</p>"],
        "o:testmode": ["yes"],
    }


async def test_without_any_sender_nothing_is_sent(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw, {"domain": DOMAIN, "api_key": KEY})
    response = await send(gw, driver, to="bo@example.net", subject="Hi", text="hi")
    assert response.status_code == 400
    assert response.json()["code"] == "mailgun_no_sender"
    assert not respx_mock.calls


async def test_each_region_has_its_api_unless_a_url_is_set(
    settings: Settings, respx_mock: respx.MockRouter
) -> None:
    registry = make_registry()
    registry.add(MailgunPlugin, source="builtin:mailgun", settings=MailgunSettings(api_url=None))
    eu = respx_mock.post(f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages").respond(json=QUEUED)
    us = respx_mock.post(f"https://api.mailgun.net/v3/{DOMAIN}/messages").respond(json=QUEUED)
    async with open_gateway(settings, registry) as gw:
        driver, _ = await enable(gw, {**CONFIG, "region": "eu"})
        assert (await send(gw, driver, to="bo@example.net", subject="Hi", text="x")).is_success
        assert eu.call_count == 1
        assert us.call_count == 0


REFUSALS: list[tuple[httpx.Response, int, str, str]] = [
    (httpx.Response(401, text="Forbidden"), 400, "mailgun_unauthorized", "Forbidden"),
    (
        httpx.Response(404, json={"message": f"Domain not found: {DOMAIN}"}),
        400,
        "mailgun_error",
        f"Domain not found: {DOMAIN}",
    ),
    (
        httpx.Response(
            400, json={"message": "to parameter is not a valid address. please check documentation"}
        ),
        400,
        "mailgun_error",
        "to parameter is not a valid address",
    ),
    (httpx.Response(503, text="Service Unavailable"), 502, "upstream_error", "503"),
]


async def test_mailgun_refusals_are_named_for_the_driver(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw)
    route = respx_mock.post(SENT)
    for answer, status, code, named in REFUSALS:
        route.mock(return_value=answer)
        response = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert named in response.json()["detail"]
        assert KEY not in response.text


async def test_rate_limits_and_outages(gw: TestGateway, respx_mock: respx.MockRouter) -> None:
    driver, _ = await enable(gw)
    route = respx_mock.post(SENT)
    route.mock(
        return_value=httpx.Response(
            429, headers={"Retry-After": "30"}, json={"message": "Too many requests"}
        )
    )
    limited = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"
    assert limited.json()["code"] == "rate_limited"

    route.mock(side_effect=httpx.ConnectError("boom"))
    down = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
    assert down.status_code == 502
    assert down.json() == {
        "detail": "Mailgun could not be reached: ConnectError",
        "code": "upstream_error",
    }


async def test_bad_messages_are_refused_before_mailgun(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"to": "bo@example.net", "subject": "Hi"}, "parameters"),
        ({"to": "not-an-address", "subject": "Hi", "text": "x"}, "to"),
        ({"to": [], "subject": "Hi", "text": "x"}, "to"),
        ({"to": "bo@example.net", "subject": "Hi\r\nBcc: x@evil.test", "text": "x"}, "subject"),
        ({"to": "bo@example.net", "subject": "Hi", "text": "x", "from": "a@b"}, "from"),
        ({"to": "bo@example.net", "subject": "Hi", "text": "x", "cc": "c@d.org"}, "cc"),
    ]
    for parameters, field in cases:
        response = await send(gw, driver, **parameters)
        assert response.status_code == 422, (parameters, response.text)
        assert field in {str(part) for e in response.json()["errors"] for part in e["loc"]}
    assert not respx_mock.calls


async def test_bad_configs_are_refused_naming_the_field(gw: TestGateway) -> None:
    driver = await gw.create_driver("alice")
    await gw.create_community(driver, "commons")
    for config, field in [
        ({"domain": "not a domain", "api_key": KEY}, "domain"),
        ({"domain": DOMAIN, "api_key": KEY, "region": "asia"}, "region"),
        ({"domain": DOMAIN}, "api_key"),
        ({"domain": DOMAIN, "api_key": KEY, "default_from": "nobody"}, "default_from"),
    ]:
        refused = await gw.client.post(
            "/api/internal/plugin/mailgun", json=config, headers=driver.to("commons")
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"][-1] == field
        assert KEY not in refused.text
