"""Communities through the HTTP API: create, read, declarative update, delete."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from metagov.runtime import Runtime
from tests.conftest import RANDOMNESS, DriverKey, count_rows, make_community

ECHO = {"name": "echo", "config": {"team_id": "T1", "api_token": "xoxb-secret-1"}}


async def test_create_read_and_delete(client: httpx.AsyncClient, alice: DriverKey) -> None:
    created = await make_community(client, alice, "coop", [RANDOMNESS])
    assert created["slug"] == "coop"
    assert created["readable_name"] == "Coop"
    assert [p["name"] for p in created["plugins"]] == ["randomness"]
    assert created["plugins"][0]["config"] == {"default_low": 1, "default_high": 6}

    read = await client.get("/api/internal/community/coop", headers=alice.headers)
    assert read.status_code == 200
    assert read.json() == created

    deleted = await client.delete("/api/internal/community/coop", headers=alice.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await client.get("/api/internal/community/coop", headers=alice.headers)
    assert gone.status_code == 404
    assert gone.json()["code"] == "unknown_community"


async def test_slug_defaults_to_a_uuid(client: httpx.AsyncClient, alice: DriverKey) -> None:
    response = await client.post("/api/internal/community", json={}, headers=alice.headers)
    assert response.status_code == 201
    assert uuid.UUID(response.json()["slug"])


async def test_taken_slug_is_a_conflict(client: httpx.AsyncClient, alice: DriverKey) -> None:
    await make_community(client, alice, "coop")
    again = await client.post(
        "/api/internal/community", json={"slug": "coop"}, headers=alice.headers
    )
    assert again.status_code == 409
    assert again.json()["code"] == "slug_taken"


async def test_bad_plugin_in_body_names_the_field_and_creates_nothing(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    unknown = await client.post(
        "/api/internal/community",
        json={"slug": "coop", "plugins": [RANDOMNESS, {"name": "nope", "config": {}}]},
        headers=alice.headers,
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "plugins", 1, "name"]

    bad_config = await client.post(
        "/api/internal/community",
        json={"slug": "coop", "plugins": [{"name": "randomness", "config": {"default_low": "x"}}]},
        headers=alice.headers,
    )
    assert bad_config.status_code == 422
    assert bad_config.json()["errors"][0]["loc"] == ["body", "plugins", 0, "config", "default_low"]
    assert await count_rows(runtime, "communities") == 0
    assert await count_rows(runtime, "plugin_instances") == 0


async def test_bad_slug_is_rejected(client: httpx.AsyncClient, alice: DriverKey) -> None:
    response = await client.post(
        "/api/internal/community", json={"slug": "no spaces/allowed"}, headers=alice.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "slug"]


async def test_put_is_declarative_and_keeps_listed_plugins_state(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    created = await make_community(client, alice, "coop", [RANDOMNESS, ECHO])
    randomness_id = next(p["id"] for p in created["plugins"] if p["name"] == "randomness")
    headers = alice.to("coop")
    await client.post(
        "/api/internal/action/randomness.set-lucky-number",
        json={"parameters": {"number": 7}},
        headers=headers,
    )

    body: dict[str, Any] = {
        "readable_name": "The Coop",
        "plugins": [{"name": "randomness", "config": {"default_low": 2, "default_high": 3}}],
    }
    updated = await client.put("/api/internal/community/coop", json=body, headers=alice.headers)
    assert updated.status_code == 200, updated.text
    result = updated.json()
    assert result["readable_name"] == "The Coop"
    assert [(p["name"], p["id"]) for p in result["plugins"]] == [("randomness", randomness_id)]
    assert result["plugins"][0]["config"] == {"default_low": 2, "default_high": 3}

    lucky = await client.post("/api/internal/action/randomness.get-lucky-number", headers=headers)
    assert lucky.json() == {"number": 7}
    echo = await client.post(
        "/api/internal/action/echo.say", json={"parameters": {"text": "hi"}}, headers=headers
    )
    assert echo.status_code == 404
    assert echo.json()["code"] == "plugin_not_enabled"


async def test_put_can_rename_the_slug(client: httpx.AsyncClient, alice: DriverKey) -> None:
    await make_community(client, alice, "coop")
    await make_community(client, alice, "other")
    clash = await client.put(
        "/api/internal/community/coop", json={"slug": "other"}, headers=alice.headers
    )
    assert clash.status_code == 409
    renamed = await client.put(
        "/api/internal/community/coop", json={"slug": "coop-2"}, headers=alice.headers
    )
    assert renamed.status_code == 200
    assert (
        await client.get("/api/internal/community/coop-2", headers=alice.headers)
    ).status_code == 200
    assert (
        await client.get("/api/internal/community/coop", headers=alice.headers)
    ).status_code == 404


async def test_put_with_a_bad_config_changes_nothing(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    before = await make_community(client, alice, "coop", [RANDOMNESS, ECHO])
    response = await client.put(
        "/api/internal/community/coop",
        json={
            "readable_name": "Changed",
            "plugins": [{"name": "randomness", "config": {"default_low": 9, "default_high": 1}}],
        },
        headers=alice.headers,
    )
    assert response.status_code == 422
    after = await client.get("/api/internal/community/coop", headers=alice.headers)
    assert after.json() == before


async def test_unknown_fields_are_rejected(client: httpx.AsyncClient, alice: DriverKey) -> None:
    response = await client.post(
        "/api/internal/community", json={"slug": "coop", "owner": "me"}, headers=alice.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "owner"]


HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_put_with_a_platform_id_left_at_its_default(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    """The webhook plugin's platform id (``source_name``) has a default; listing the plugin
    without it enables it, and listing it again re-configures the same instance."""
    await make_community(client, alice, "coop")
    body = {"plugins": [{"name": "webhook", "config": {"secret": HOOK_SECRET}}]}
    first = await client.put("/api/internal/community/coop", json=body, headers=alice.headers)
    assert first.status_code == 200, first.text
    again = await client.put("/api/internal/community/coop", json=body, headers=alice.headers)
    assert again.status_code == 200, again.text
    assert [p["id"] for p in again.json()["plugins"]] == [p["id"] for p in first.json()["plugins"]]
    assert again.json()["plugins"][0]["community_platform_id"] == "webhook"


async def test_put_creates_a_community_that_does_not_exist(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey, runtime: Runtime
) -> None:
    body = {"readable_name": "New", "plugins": [RANDOMNESS]}
    created = await client.put("/api/internal/community/fresh", json=body, headers=alice.headers)
    assert created.status_code == 201, created.text
    assert created.json()["slug"] == "fresh"
    assert created.json()["readable_name"] == "New"
    assert [p["name"] for p in created.json()["plugins"]] == ["randomness"]
    same = await client.put("/api/internal/community/fresh", json=body, headers=alice.headers)
    assert same.status_code == 200
    assert same.json()["plugins"][0]["id"] == created.json()["plugins"][0]["id"]

    # Another Driver's slug is taken, as on create, and stays as it was.
    taken = await client.put("/api/internal/community/fresh", json={}, headers=bob.headers)
    assert taken.status_code == 409
    assert taken.json()["code"] == "slug_taken"
    bad = await client.put("/api/internal/community/no%20spaces", json={}, headers=alice.headers)
    assert bad.status_code == 422
    assert await count_rows(runtime, "communities") == 1
