"""Enabling Open Collective by hand with a personal token: the collective is checked, the hook URL
is registered as an Open Collective webhook once per URL, and the Driver is told when it could
not be."""

from __future__ import annotations

from typing import Any

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.opencollective.conftest import (
    HOOK_URL,
    PERSONAL_TOKEN,
    FakeOpenCollective,
    enable,
    refused,
)


async def test_enable_checks_the_collective_and_registers_the_hook(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    response = await enable(gateway, driver)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["community_platform_id"] == "metagov"
    assert body["config"] == {"collective_slug": "metagov", "token_type": "personal"}
    assert body["secrets_set"] == ["access_token", "webhook_token"]
    assert body["notices"] == {"webhook_registered": True, "webhook_id": "wh-1"}
    assert PERSONAL_TOKEN not in response.text
    assert oc.operations() == ["Account", "CreateWebhook"]
    assert oc.variables("Account") == [{"slug": "metagov"}]
    assert oc.variables("CreateWebhook") == [
        {"webhook": {"account": {"slug": "metagov"}, "webhookUrl": HOOK_URL}}
    ]
    for _, _, headers in oc.calls:
        assert headers["personal-token"] == PERSONAL_TOKEN
        assert "authorization" not in headers


async def test_the_hook_is_registered_once_per_url(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    same = await gateway.client.put(
        f"/api/internal/plugin/opencollective/{enabled['id']}",
        json={"collective_slug": "metagov"},
        headers=driver.to("commons"),
    )
    assert same.status_code == 200, same.text
    assert same.json()["notices"] is None
    assert oc.operations() == ["Account"]

    new_token = "another-hook-token-0123456789"
    moved = await gateway.client.put(
        f"/api/internal/plugin/opencollective/{enabled['id']}",
        json={"collective_slug": "metagov", "webhook_token": new_token},
        headers=driver.to("commons"),
    )
    assert moved.status_code == 200, moved.text
    assert oc.operations() == ["Account", "Account", "UpdateWebhook"]
    assert oc.variables("UpdateWebhook") == [
        {
            "webhook": {
                "id": "wh-1",
                "webhookUrl": HOOK_URL.replace("oc-hook-token-0123456789abcdef", new_token),
            }
        }
    ]


async def test_when_the_token_may_not_add_webhooks_the_driver_gets_the_url(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    oc.on(
        "CreateWebhook",
        refused(
            'The User Token is not allowed for operations in scope "webhooks".',
            "Forbidden",
            "createWebhook",
        ),
    )
    response = await enable(gateway, driver)

    assert response.status_code == 201, response.text
    notices = response.json()["notices"]
    assert notices["webhook_registered"] is False
    assert notices["hook_url"] == HOOK_URL
    assert 'not allowed for operations in scope "webhooks"' in notices["webhook_error"]
    assert "Webhooks" in notices["next_step"]


async def test_an_unknown_collective_is_refused(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    oc.on("Account", refused("Account Not Found", "NotFound", "account"))
    response = await enable(gateway, driver, collective_slug="nobody-here")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "collective_slug: Open Collective has no account 'nobody-here'",
        "code": "unknown_collective",
    }
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    assert community.json()["plugins"] == []
    assert oc.operations() == ["Account"]


async def test_a_rejected_personal_token_is_refused(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    oc.on(
        "Account",
        {
            "errors": [
                {
                    "message": "Invalid Personal Token (Api Key)",
                    "extensions": {"code": "Unauthorized"},
                }
            ]
        },
    )
    response = await enable(gateway, driver)

    assert response.status_code == 400
    assert response.json()["code"] == "opencollective_error"
    assert "rejected the personal token" in response.json()["detail"]
    assert PERSONAL_TOKEN not in response.text


async def test_tokens_must_fit_in_a_header(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    response = await enable(gateway, driver, access_token="jeton secret é")

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "access_token"
    assert "jeton" not in response.text
    assert oc.calls == []
