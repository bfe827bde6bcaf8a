"""Plugin instances: enabling, re-configuring, several instances, secrets, disabling, metadata."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from metagov.crypto import SecretBox, generate_key
from metagov.instances.service import rotate_secrets
from metagov.runtime import Runtime
from tests.conftest import TEST_SECRET_KEY, DriverKey, count_rows

# Every platform the gateway ships a plugin for (``/docs`` lists each one's routes).
BUILT_IN = {
    "discord",
    "discourse",
    "github",
    "loomio",
    "mailgun",
    "near",
    "opencollective",
    "randomness",
    "revshare",
    "sendgrid",
    "slack",
    "sourcecred",
    "tsc",
    "twitter",
    "webhook",
    "x",
}
TOKEN = "xoxb-very-secret-token"


async def enable_echo(
    client: httpx.AsyncClient, driver: DriverKey, team: str = "T1", **extra: Any
) -> httpx.Response:
    return await client.post(
        "/api/internal/plugin/echo",
        json={"team_id": team, "api_token": TOKEN, **extra},
        headers=driver.to("commons"),
    )


async def test_enable_validates_and_hides_secrets(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    response = await enable_echo(client, alice)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "echo"
    assert body["community"] == "commons"
    assert body["community_platform_id"] == "T1"
    assert body["auth_type"] == "api_key"
    assert body["config"] == {"team_id": "T1", "greeting": "hello"}
    assert body["secrets_set"] == ["api_token"]
    assert TOKEN not in response.text

    said = await client.post(
        "/api/internal/action/echo.say",
        json={"parameters": {"text": "x"}},
        headers=alice.to("commons"),
    )
    assert said.json() == {"text": "hello x", "team_id": "T1", "token_length": len(TOKEN)}


async def test_bad_config_names_the_field(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    response = await client.post(
        "/api/internal/plugin/echo", json={"team_id": "T1"}, headers=alice.to("commons")
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["loc"] == ["body", "api_token"]
    assert "api_token" in response.json()["detail"]


async def test_initialize_can_refuse_a_config(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    response = await enable_echo(client, alice, greeting="refuse")
    assert response.status_code == 400
    assert response.json() == {"detail": "the platform rejected this token", "code": "plugin_error"}
    community_out = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert [p["name"] for p in community_out.json()["plugins"]] == ["randomness"]


async def test_secrets_are_encrypted_at_rest_and_never_logged(
    client: httpx.AsyncClient,
    alice: DriverKey,
    community: dict[str, Any],
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await enable_echo(client, alice)
    await client.post(
        "/api/internal/action/echo.say",
        json={"parameters": {"text": "x"}},
        headers=alice.to("commons"),
    )
    async with runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT config, secrets, state FROM plugin_instances"))
        ).all()
    dump = repr(rows)
    assert TOKEN not in dump
    assert "api_token" not in dump  # even the field name lives only inside the ciphertext
    assert TOKEN not in caplog.text
    everything = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert TOKEN not in everything.text


async def test_reconfigure_keeps_state_processes_and_omitted_secrets(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    instance = (await enable_echo(client, alice)).json()
    await client.post("/api/internal/action/echo.count", headers=headers)
    started = await client.post(
        "/api/internal/process/echo.approval", json={"question": "ok?"}, headers=headers
    )
    assert started.status_code == 202

    changed = await client.put(
        f"/api/internal/plugin/echo/{instance['id']}",
        json={"team_id": "T1", "greeting": "hey"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["id"] == instance["id"]
    assert changed.json()["secrets_set"] == ["api_token"]

    said = await client.post(
        "/api/internal/action/echo.say", json={"parameters": {"text": "x"}}, headers=headers
    )
    assert said.json()["text"] == "hey x"
    assert said.json()["token_length"] == len(TOKEN)
    count = await client.post("/api/internal/action/echo.count", headers=headers)
    assert count.json() == {"count": 2}
    process = await client.get(started.headers["Location"], headers=headers)
    assert process.json()["status"] == "pending"


async def test_enable_again_reconfigures_the_same_instance(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    first = await enable_echo(client, alice)
    second = await enable_echo(client, alice, greeting="hi")
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["config"]["greeting"] == "hi"


async def test_several_instances_need_a_platform_id(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    one = (await enable_echo(client, alice, "T1")).json()
    two = (await enable_echo(client, alice, "T2")).json()
    assert one["id"] != two["id"]

    ambiguous = await client.post(
        "/api/internal/action/echo.say", json={"parameters": {"text": "x"}}, headers=headers
    )
    assert ambiguous.status_code == 409
    assert ambiguous.json()["code"] == "ambiguous_plugin"
    assert ambiguous.json()["choices"] == [
        {"id": one["id"], "community_platform_id": "T1"},
        {"id": two["id"], "community_platform_id": "T2"},
    ]

    picked = await client.post(
        "/api/internal/action/echo.say?community_platform_id=T2",
        json={"parameters": {"text": "x"}},
        headers=headers,
    )
    assert picked.json()["team_id"] == "T2"
    missing = await client.post(
        "/api/internal/action/echo.say?community_platform_id=T9",
        json={"parameters": {"text": "x"}},
        headers=headers,
    )
    assert missing.status_code == 404

    clash = await client.put(
        f"/api/internal/plugin/echo/{two['id']}", json={"team_id": "T1"}, headers=headers
    )
    assert clash.status_code == 409


async def test_a_blank_platform_id_is_refused(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    """Any plugin's platform id names its instance: blank is not a name."""
    for team in ("", "   "):
        refused = await enable_echo(client, alice, team)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["body", "team_id"]
    assert await count_rows(runtime, "plugin_instances") == 1  # randomness only


async def test_an_anonymous_caller_is_not_shown_instance_ids(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    """A public action needs no key, so its 409 says how to choose but names no instance."""
    await enable_echo(client, alice, "T1")
    await enable_echo(client, alice, "T2")
    ambiguous = await client.post(
        "/api/action/echo.say",
        json={"parameters": {"text": "x"}},
        headers={"X-Metagov-Community": "commons"},
    )
    assert ambiguous.status_code == 409
    body = ambiguous.json()
    assert body["code"] == "ambiguous_plugin"
    assert "choices" not in body
    assert "community_platform_id" in body["detail"]
    picked = await client.post(
        "/api/action/echo.say?community_platform_id=T1",
        json={"parameters": {"text": "x"}},
        headers={"X-Metagov-Community": "commons"},
    )
    assert picked.json()["team_id"] == "T1"


async def test_disable_cancels_open_processes(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    instance = (await enable_echo(client, alice)).json()
    started = await client.post(
        "/api/internal/process/echo.approval", json={"question": "ok?"}, headers=headers
    )
    deleted = await client.delete(f"/api/internal/plugin/echo/{instance['id']}", headers=headers)
    assert deleted.status_code == 204
    process = (await client.get(started.headers["Location"], headers=headers)).json()
    assert process["status"] == "cancelled"
    assert process["errors"] == [{"message": "the plugin was disabled"}]
    again = await client.delete(f"/api/internal/plugin/echo/{instance['id']}", headers=headers)
    assert again.status_code == 404


async def test_unknown_plugin_is_a_clear_404(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    for method, path in [
        ("POST", "/api/internal/plugin/nope"),
        ("GET", "/api/internal/plugin/nope/metadata"),
        ("POST", "/api/internal/action/nope.act"),
        ("POST", "/api/internal/process/nope.vote"),
        ("POST", "/api/internal/action/randomness.nope"),
        ("GET", "/api/internal/process/randomness.nope/1"),
    ]:
        response = await client.request(method, path, json={}, headers=alice.to("commons"))
        assert response.status_code == 404, (method, path, response.text)
        assert "nope" in response.json()["detail"]


async def test_metadata_and_schemas(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    meta = await client.get("/api/internal/plugin/echo/metadata", headers=alice.headers)
    assert meta.status_code == 200
    body = meta.json()
    assert body["name"] == "echo"
    assert body["secret_fields"] == ["api_token"]
    assert body["community_platform_id_field"] == "team_id"
    assert {a["id"] for a in body["schemas"]["actions"]} == {
        "echo.say",
        "echo.count",
        "echo.forget",
    }
    assert {p["id"] for p in body["schemas"]["processes"]} == {
        "echo.approval",
        "echo.platform-poll",
    }
    assert body["schemas"]["config"]["required"] == ["team_id", "api_token"]

    schemas = await client.get("/api/internal/plugin-schemas", headers=alice.headers)
    assert set(schemas.json()) == {"echo", *BUILT_IN}
    assert "default_low" in schemas.json()["randomness"]["properties"]


async def test_key_rotation_re_encrypts_under_the_new_key(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    await enable_echo(client, alice)
    new_key = generate_key()
    async with runtime.unit_of_work() as session:
        # the echo instance, and the Driver's event signing secret
        assert await rotate_secrets(session, SecretBox([new_key, TEST_SECRET_KEY])) == 2
    async with runtime.db.engine.connect() as conn:
        token = (
            await conn.execute(
                text("SELECT secrets FROM plugin_instances WHERE secrets IS NOT NULL")
            )
        ).scalar_one()
        signing = (await conn.execute(text("SELECT webhook_secret FROM drivers"))).scalar_one()
    only_new = SecretBox([new_key])
    assert only_new.decrypt(token) == {"api_token": TOKEN}
    assert only_new.decrypt_text(signing) == alice.webhook_secret
