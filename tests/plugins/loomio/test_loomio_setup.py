"""Enabling Loomio: every key is checked against Loomio, the instance is named by the group's
handle, secrets stay secret, and the generated hook token is shown once as the hook URL."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import respx

from metagov.plugins.loomio import LoomioPlugin
from metagov.plugins.loomio.schemas import LoomioConfig, LoomioSettings
from metagov.plugins.sdk import PluginContext, State
from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.loomio.conftest import (
    BASE,
    LOOMIO,
    MAIN_KEY,
    OTHER_KEY,
    SUB_KEY,
    TOKEN,
    FakeLoomio,
    enable,
    events,
    legacy_message,
    poll_record,
)


async def plugins_of(gateway: TestGateway, driver: DriverCredentials) -> list[dict[str, Any]]:
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    return list(community.json()["plugins"])


async def test_enable_checks_each_key_and_names_the_instance_by_handle(
    gateway: TestGateway, driver: DriverCredentials, loomio: FakeLoomio
) -> None:
    response = await enable(gateway, driver, subgroup_api_keys=[SUB_KEY])

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["community_platform_id"] == "metagov"
    assert body["config"] == {"group_handle": "metagov", "server_url": LOOMIO}
    assert body["secrets_set"] == ["api_key", "subgroup_api_keys", "webhook_token"]
    assert MAIN_KEY not in response.text and SUB_KEY not in response.text
    asked = [dict(call.request.url.params) for call in loomio.memberships.calls]
    assert [q["api_key"] for q in asked] == [MAIN_KEY, SUB_KEY]
    assert all(call.request.url.path == "/api/b1/memberships" for call in loomio.memberships.calls)
    [instance] = await plugins_of(gateway, driver)
    assert MAIN_KEY not in str(instance)


async def test_group_handle_must_be_the_group_of_the_key(
    gateway: TestGateway, driver: DriverCredentials, loomio: FakeLoomio
) -> None:
    response = await enable(gateway, driver, group_handle="someone-else")

    assert response.status_code == 400
    assert response.json()["code"] == "group_mismatch"
    assert "'someone-else'" in response.json()["detail"]
    assert "'metagov'" in response.json()["detail"]
    assert await plugins_of(gateway, driver) == []


async def test_a_refused_key_is_named(
    gateway: TestGateway, driver: DriverCredentials, loomio: FakeLoomio
) -> None:
    refused = await enable(gateway, driver, api_key="not-a-key-of-any-group")
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("api_key: Loomio refused the API key")
    assert "not-a-key-of-any-group" not in refused.text

    not_a_subgroup = await enable(gateway, driver, subgroup_api_keys=[SUB_KEY, OTHER_KEY])
    assert not_a_subgroup.status_code == 400
    assert not_a_subgroup.json()["code"] == "not_a_subgroup"
    assert not_a_subgroup.json()["detail"].startswith("subgroup_api_keys[1] opens the group")
    assert await plugins_of(gateway, driver) == []


async def test_config_is_validated_field_by_field(
    gateway: TestGateway, driver: DriverCredentials, loomio: FakeLoomio
) -> None:
    plain_http = await enable(gateway, driver, server_url="http://loomio.test")
    assert plain_http.status_code == 422
    assert plain_http.json()["errors"][0]["loc"][-1] == "server_url"

    short_token = await enable(gateway, driver, webhook_token="short")
    assert short_token.status_code == 422
    assert short_token.json()["errors"][0]["loc"][-1] == "webhook_token"

    for internal in ("https://127.0.0.1:3000", "https://[fd00::1]", "https://localhost"):
        inside = await enable(gateway, driver, server_url=internal)
        assert inside.status_code == 400
        assert inside.json()["code"] == "server_url_not_allowed"

    not_ascii = await enable(gateway, driver, api_key="clé-secrète")
    assert not_ascii.status_code == 422
    assert not_ascii.json()["errors"][0]["loc"][-1] == "api_key"
    assert "secrète" not in not_ascii.text
    assert not loomio.memberships.called


async def test_reconfiguring_keeps_the_secrets_left_out(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("https://driver.test/events").respond(204)
    changed = await gateway.client.put(
        f"/api/internal/plugin/loomio/{enabled['id']}",
        json={"group_handle": "metagov", "server_url": LOOMIO},
        headers=driver.to("commons"),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["secrets_set"] == ["api_key", "subgroup_api_keys", "webhook_token"]

    still = await gateway.client.post(
        f"/api/hooks/commons/loomio?token={TOKEN}", json={"text": "nothing to see"}
    )
    assert still.status_code == 200


def context(config: LoomioConfig, state: State, http: httpx.AsyncClient) -> PluginContext[Any]:
    return PluginContext(
        community="commons",
        plugin_name="loomio",
        instance_id=1,
        community_platform_id="metagov",
        config=config,
        state=state,
        http=http,
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        base_url=BASE,
        secret_fields=frozenset({"api_key", "subgroup_api_keys", "webhook_token"}),
    )


async def test_a_generated_token_is_told_once_as_the_full_hook_url(loomio: FakeLoomio) -> None:
    plugin = LoomioPlugin()
    plugin.settings = LoomioSettings()
    raw = {"group_handle": "metagov", "api_key": MAIN_KEY, "server_url": LOOMIO}
    config = LoomioConfig.model_validate(raw)
    token = config.webhook_token.get_secret_value()
    assert len(token) >= 40
    assert LoomioConfig.model_validate(raw).webhook_token.get_secret_value() != token

    state = State()
    async with httpx.AsyncClient() as http:
        first = context(config, state, http)
        await plugin.initialize(first)
        again = context(config, state, http)
        await plugin.initialize(again)
        rotated = context(
            config.model_copy(update={"webhook_token": config.webhook_token}), state, http
        )
        rotated.config = LoomioConfig.model_validate({**raw, "webhook_token": "x" * 20})
        await plugin.initialize(rotated)

    assert first.notices == {
        "hook_url": f"{BASE}/api/hooks/commons/loomio?community_platform_id=metagov&token={token}"
    }
    assert again.notices == {}
    assert rotated.notices["hook_url"].endswith("&token=" + "x" * 20)
    assert token not in str(state.to_dict())


async def test_the_enable_answer_shows_the_generated_hook_url_once(
    gateway: TestGateway,
    driver: DriverCredentials,
    loomio: FakeLoomio,
    driver_events: respx.Route,
) -> None:
    config = {"group_handle": "metagov", "api_key": MAIN_KEY, "server_url": LOOMIO}
    enabled = await gateway.client.post(
        "/api/internal/plugin/loomio", json=config, headers=driver.to("commons")
    )
    assert enabled.status_code == 201, enabled.text
    hook_url = enabled.json()["notices"]["hook_url"]
    assert hook_url.startswith(
        f"{BASE}/api/hooks/commons/loomio?community_platform_id=metagov&token="
    )

    loomio.polls["m20ZprvH"] = poll_record()
    posted = await gateway.client.post(
        hook_url.removeprefix(BASE), json=legacy_message("poll_created", f"{LOOMIO}/p/m20ZprvH")
    )
    assert posted.status_code == 200
    await gateway.drain()
    assert [e["event_type"] for e in events(driver_events)] == ["poll_created"]

    changed = await gateway.client.put(
        f"/api/internal/plugin/loomio/{enabled.json()['id']}",
        json={"group_handle": "metagov", "server_url": LOOMIO},
        headers=driver.to("commons"),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["notices"] is None  # the token did not change: nothing to show
