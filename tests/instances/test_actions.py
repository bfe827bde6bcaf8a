"""Plugin actions through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx

from metagov.runtime import Runtime
from tests.conftest import DriverKey, count_rows

ACTION = "/api/internal/action"


async def test_random_int_with_and_without_bounds(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    fixed = await client.post(
        f"{ACTION}/randomness.random-int",
        json={"parameters": {"low": 5, "high": 5}},
        headers=headers,
    )
    assert fixed.status_code == 200
    assert fixed.json() == {"value": 5}
    default = await client.post(f"{ACTION}/randomness.random-int", json={}, headers=headers)
    assert 1 <= default.json()["value"] <= 6


async def test_plugin_errors_are_400_with_the_plugins_message(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    response = await client.post(
        f"{ACTION}/randomness.random-int",
        json={"parameters": {"low": 9, "high": 1}},
        headers=alice.to("commons"),
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "low (9) must not be greater than high (1)",
        "code": "plugin_error",
    }


async def test_lucky_number_lives_in_plugin_state_and_emits_an_event(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    headers = alice.to("commons")
    empty = await client.post(f"{ACTION}/randomness.get-lucky-number", headers=headers)
    assert empty.json() == {"number": None}
    stored = await client.post(
        f"{ACTION}/randomness.set-lucky-number",
        json={"parameters": {"number": 42}},
        headers=headers,
    )
    assert stored.json() == {"number": 42}
    read = await client.post(f"{ACTION}/randomness.get-lucky-number", headers=headers)
    assert read.json() == {"number": 42}
    assert await count_rows(runtime, "events") == 1


async def test_bad_parameters_name_the_field(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    missing = await client.post(f"{ACTION}/randomness.set-lucky-number", json={}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["body", "parameters"]
    wrong = await client.post(
        f"{ACTION}/randomness.set-lucky-number",
        json={"parameters": {"number": 1, "extra": True}},
        headers=headers,
    )
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["loc"] == ["body", "parameters", "extra"]
    not_json = await client.post(
        f"{ACTION}/randomness.set-lucky-number",
        content=b"{nope",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422


async def test_community_header_is_required_and_checked(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    missing = await client.post(f"{ACTION}/randomness.random-int", headers=alice.headers)
    assert missing.status_code == 400
    assert missing.json()["code"] == "missing_community"
    unknown = await client.post(f"{ACTION}/randomness.random-int", headers=alice.to("elsewhere"))
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_community"


async def test_plugin_not_enabled(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    response = await client.post(
        f"{ACTION}/echo.say", json={"parameters": {"text": "x"}}, headers=alice.to("commons")
    )
    assert response.status_code == 404
    assert response.json()["code"] == "plugin_not_enabled"


async def test_public_actions_need_no_key_and_others_are_not_public(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    await client.post(
        "/api/internal/plugin/echo",
        json={"team_id": "T1", "api_token": "t"},
        headers=alice.to("commons"),
    )
    public = await client.post(
        "/api/action/echo.say",
        json={"parameters": {"text": "hi"}},
        headers={"X-Metagov-Community": "commons"},
    )
    assert public.status_code == 200
    assert public.json()["text"] == "hello hi"
    internal_only = await client.post(
        "/api/action/echo.count", headers={"X-Metagov-Community": "commons"}
    )
    assert internal_only.status_code == 404
    assert internal_only.json()["detail"] == "action 'echo.count' is not public"
    no_header = await client.post("/api/action/echo.say", json={"parameters": {"text": "hi"}})
    assert no_header.status_code == 400


async def test_action_without_output_answers_204(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    headers = alice.to("commons")
    await client.post(
        "/api/internal/plugin/echo", json={"team_id": "T1", "api_token": "t"}, headers=headers
    )
    await client.post(f"{ACTION}/echo.count", headers=headers)
    forgot = await client.post(f"{ACTION}/echo.forget", headers=headers)
    assert forgot.status_code == 204
    assert forgot.content == b""
    assert (await client.post(f"{ACTION}/echo.count", headers=headers)).json() == {"count": 1}
