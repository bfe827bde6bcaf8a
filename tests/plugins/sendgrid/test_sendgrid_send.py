"""SendGrid's send-mail against a mocked SendGrid (respx): the JSON SendGrid receives with the
community's own key, SendGrid's refusals named, rate limits and outages, the key never shown, and
parameters identical to Mailgun's so a Driver can switch providers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from metagov.config import Settings
from metagov.plugins.sendgrid import SendGridPlugin
from metagov.plugins.sendgrid.schemas import SendGridSettings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

API = "https://sendgrid.test"
SENT = f"{API}/v3/mail/send"
KEY = "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"
OTHER_KEY = "SG.second-community-key.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
CONFIG = {"api_key": KEY, "default_from": "Commons <vote@example.org>"}
ACCEPTED = httpx.Response(202, headers={"X-Message-Id": "HzUiMrX3Tb2d1ujz3cbW3g"})


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(SendGridPlugin, source="builtin:sendgrid", settings=SendGridSettings(api_url=API))
    async with open_gateway(settings, registry) as gateway:
        yield gateway


async def enable(
    gw: TestGateway, config: dict[str, Any] | None = None, community: str = "commons"
) -> tuple[DriverCredentials, dict[str, Any]]:
    driver = await gw.create_driver(f"driver-{community}")
    await gw.create_community(driver, community)
    enabled = await gw.client.post(
        "/api/internal/plugin/sendgrid", json=config or CONFIG, headers=driver.to(community)
    )
    assert enabled.status_code == 201, enabled.text
    return driver, enabled.json()


async def send(
    gw: TestGateway, driver: DriverCredentials, community: str = "commons", **parameters: Any
) -> httpx.Response:
    return await gw.client.post(
        "/api/internal/action/sendgrid.send-mail",
        json={"parameters": parameters},
        headers=driver.to(community),
    )


async def test_send_mail_posts_the_v3_message_with_the_communitys_key(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, instance = await enable(gw)
    assert instance["secrets_set"] == ["api_key"]
    assert KEY not in str(instance)
    assert not respx_mock.calls  # nothing is checked remotely when enabling
    route = respx_mock.post(SENT).mock(return_value=ACCEPTED)

    response = await send(
        gw,
        driver,
        **{
            "from": "Ana <ana@example.org>",
            "to": ["bo@example.net", "Cy <cy@example.com>"],
            "subject": "The vote is open",
            "text": "Vote before Friday.",
            "html": "<p>Vote before <b>Friday</b>.</p>",
            "reply_to": "council@example.org",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"id": "HzUiMrX3Tb2d1ujz3cbW3g", "message": "Accepted"}
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "personalizations": [
            {"to": [{"email": "bo@example.net"}, {"email": "cy@example.com", "name": "Cy"}]}
        ],
        "from": {"email": "ana@example.org", "name": "Ana"},
        "reply_to": {"email": "council@example.org"},
        "subject": "The vote is open",
        "content": [
            {"type": "text/plain", "value": "Vote before Friday."},
            {"type": "text/html", "value": "<p>Vote before <b>Friday</b>.</p>"},
        ],
    }


async def test_each_community_sends_with_its_own_key_and_sender(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    first, _ = await enable(gw)
    second, _ = await enable(
        gw,
        {"api_key": OTHER_KEY, "default_from": "gardeners@example.net", "sandbox_mode": True},
        community="garden",
    )
    route = respx_mock.post(SENT).mock(return_value=ACCEPTED)
    assert (await send(gw, first, to="bo@example.net", subject="Hi", text="x")).is_success
    assert (
        await send(gw, second, "garden", to="bo@example.net", subject="Hi", html="<i>x</i>")
    ).is_success
    [one, two] = [call.request for call in route.calls]
    assert one.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(one.content)["from"] == {"email": "vote@example.org", "name": "Commons"}
    assert "mail_settings" not in json.loads(one.content)
    assert two.headers["authorization"] == f"Bearer {OTHER_KEY}"
    body = json.loads(two.content)
    assert body["from"] == {"email": "gardeners@example.net"}
    assert body["content"] == [{"type": "text/html", "value": "<i>x</i>"}]
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}


REFUSALS: list[tuple[httpx.Response, int, str, str]] = [
    (
        httpx.Response(
            401,
            json={
                "errors": [
                    {
                        "message": "The provided authorization grant is invalid, expired, "
                        "or revoked",
                        "field": None,
                        "help": None,
                    }
                ]
            },
        ),
        400,
        "sendgrid_unauthorized",
        "The provided authorization grant is invalid, expired, or revoked",
    ),
    (
        httpx.Response(
            403,
            json={
                "errors": [
                    {
                        "message": "The from address does not match a verified Sender Identity. "
                        "Mail cannot be sent until this error is resolved.",
                        "field": "from",
                        "help": "https://sendgrid.com/docs/for-developers/sending-email/"
                        "sender-identity/",
                    }
                ]
            },
        ),
        400,
        "sendgrid_unauthorized",
        "from: The from address does not match a verified Sender Identity",
    ),
    (
        httpx.Response(
            400,
            json={
                "errors": [
                    {
                        "message": "Does not contain a valid address.",
                        "field": "personalizations.0.to.0.email",
                        "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/"
                        "errors.html#message.personalizations.to",
                    }
                ]
            },
        ),
        400,
        "sendgrid_error",
        "personalizations.0.to.0.email: Does not contain a valid address.",
    ),
    (httpx.Response(500, text=""), 502, "upstream_error", "500"),
]


async def test_sendgrid_refusals_are_named_for_the_driver(
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
    reset = int(time.time()) + 42
    route.mock(
        return_value=httpx.Response(
            429,
            headers={
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
            json={"errors": [{"field": None, "message": "too many requests"}]},
        )
    )
    limited = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
    assert limited.status_code == 429
    assert 40 <= int(limited.headers["retry-after"]) <= 42
    assert "too many requests" in limited.json()["detail"]

    route.mock(side_effect=httpx.ReadTimeout("slow"))
    down = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
    assert down.status_code == 502
    assert down.json()["detail"] == "SendGrid could not be reached: ReadTimeout"


async def test_missing_sender_and_bad_messages_send_nothing(
    gw: TestGateway, respx_mock: respx.MockRouter
) -> None:
    driver, _ = await enable(gw, {"api_key": KEY})
    no_sender = await send(gw, driver, to="bo@example.net", subject="Hi", text="x")
    assert no_sender.status_code == 400
    assert no_sender.json()["code"] == "sendgrid_no_sender"
    for parameters, field in [
        ({"to": "bo@example.net", "subject": "Hi"}, "parameters"),
        ({"to": ["ok@example.org", "nope"], "subject": "Hi", "text": "x"}, "to"),
        ({"to": "bo@example.net", "subject": "a\nb", "text": "x"}, "subject"),
    ]:
        response = await send(gw, driver, **parameters)
        assert response.status_code == 422, (parameters, response.text)
        assert field in {str(part) for e in response.json()["errors"] for part in e["loc"]}
    assert not respx_mock.calls


async def test_send_mail_takes_the_same_parameters_as_mailgun(gw: TestGateway) -> None:
    driver = await gw.create_driver("alice")
    schemas = {}
    for name in ("sendgrid", "mailgun"):
        metadata = await gw.client.get(
            f"/api/internal/plugin/{name}/metadata", headers=driver.headers
        )
        assert metadata.status_code == 200, metadata.text
        [send_mail] = [
            a for a in metadata.json()["schemas"]["actions"] if a["id"].endswith("send-mail")
        ]
        schemas[name] = (send_mail["parameters_schema"], send_mail["response_schema"])
    assert schemas["sendgrid"] == schemas["mailgun"]
