"""The Slack plugin against a mocked Slack (respx at https://slack.test/api): OAuth install,
signed Events API and interactivity requests, actions, and both votes end to end. Payloads follow
Slack's documented shapes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import text

from metagov.app import create_app
from metagov.jobs.queue import LocalQueue
from metagov.plugins.slack import SlackPlugin
from metagov.plugins.slack.schemas import SlackSettings
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from metagov.testing import start_install
from tests.conftest import (
    RANDOMNESS,
    DriverKey,
    PluggableQueue,
    make_community,
    make_driver,
    make_registry,
    make_settings,
    plug_queue,
    running_queue,
)

API = "https://slack.test/api"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
DRIVER_EVENTS = "https://driver.test/events"
DONE = "https://driver.test/slack/done"
TEAM = "T9TK3CUKW"
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SLACK_CONFIG = {
    "team_id": TEAM,
    "team_name": "Softball",
    "bot_token": BOT_TOKEN,
    "bot_user_id": "UBOT",
}


def slack_settings() -> SlackSettings:
    return SlackSettings(
        _env_file=None,  # type: ignore[call-arg]
        client_id="2141029472.691202649728",
        client_secret="client-secret-value",
        signing_secret=SIGNING,
        app_id="A0KRD7HC3",
        api_url=API,
        authorize_url="https://slack.test/oauth/v2/authorize",
    )


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[FastAPI]:
    registry = make_registry()
    registry.add(SlackPlugin, source="builtin:slack", settings=slack_settings())
    settings = make_settings(
        database_url, auth_redirect_allowlist=DONE, base_url="https://metagov.test"
    )
    app = create_app(settings, registry, queue=PluggableQueue())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        plug_queue(runtime, running_queue(runtime))
        yield app


@pytest.fixture
def runtime(gateway: FastAPI) -> Runtime:
    rt: Runtime = gateway.state.runtime
    return rt


@pytest.fixture
async def client(gateway: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="https://metagov.test") as c:
        yield c


@pytest.fixture
async def alice(runtime: Runtime, client: httpx.AsyncClient) -> DriverKey:
    driver = await make_driver(runtime, "alice")
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(
            session, await drivers.get_driver(session, "alice"), DRIVER_EVENTS
        )
    await make_community(client, driver, "commons", [RANDOMNESS])
    return driver


def mock_auth_test(respx_mock: respx.MockRouter, team: str = TEAM) -> respx.Route:
    """Slack's answer to ``auth.test`` for a bot token of ``team``."""
    return respx_mock.post(f"{API}/auth.test").respond(
        json={"ok": True, "team_id": team, "team": "Softball", "user_id": "UBOT", "bot_id": "B1"}
    )


@pytest.fixture
async def installed(
    client: httpx.AsyncClient, alice: DriverKey, respx_mock: respx.MockRouter
) -> dict[str, Any]:
    mock_auth_test(respx_mock)
    response = await client.post(
        "/api/internal/plugin/slack", json=SLACK_CONFIG, headers=alice.to("commons")
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def signed(body: bytes, content_type: str, ts: int | None = None, **extra: str) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(SIGNING.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": content_type,
        **extra,
    }


async def post_event(
    client: httpx.AsyncClient, event: dict[str, Any], event_id: str, **headers: str
) -> httpx.Response:
    body = json.dumps(
        {
            "token": "XXYYZZ",
            "team_id": TEAM,
            "api_app_id": "A0KRD7HC3",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1355517523,
        }
    ).encode()
    return await client.post(
        "/api/hooks/slack", content=body, headers=signed(body, "application/json", **headers)
    )


async def click(
    client: httpx.AsyncClient, user: str, ts: str, actions: list[dict[str, Any]], trigger: str
) -> httpx.Response:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0KRD7HC3",
        "token": "XXYYZZ",
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": "C123",
            "is_ephemeral": False,
        },
        "trigger_id": trigger,
        "team": {"id": TEAM, "domain": "softball"},
        "channel": {"id": "C123", "name": "general"},
        "response_url": "https://hooks.slack.test/actions/T/1/x",
        "actions": actions,
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return await client.post(
        "/api/hooks/slack", content=body, headers=signed(body, "application/x-www-form-urlencoded")
    )


def form(call: respx.models.Call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.content.decode()).items()}


async def settle(runtime: Runtime) -> None:
    assert isinstance(runtime.queue, PluggableQueue)
    assert isinstance(runtime.queue.inner, LocalQueue)
    await runtime.queue.inner.join()


# --- OAuth -----------------------------------------------------------------------------------


async def authorize(
    client: httpx.AsyncClient,
    driver: DriverKey,
    community: str = "commons",
    redirect_uri: str = DONE,
    kind: str = "app",
) -> httpx.Response:
    return await start_install(
        client,
        driver.to(community),
        "slack",
        redirect_uri=redirect_uri,
        state="driver-state-1",
        kind=kind,
    )


def our_state(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert (
        f"{location.scheme}://{location.netloc}{location.path}"
        == "https://slack.test/oauth/v2/authorize"
    )
    query = parse_qs(location.query)
    assert query["client_id"] == ["2141029472.691202649728"]
    assert "chat:write" in query["scope"][0].split(",")
    assert query["redirect_uri"] == ["https://metagov.test/auth/slack/callback"]
    return query["state"][0]


def mock_oauth(
    respx_mock: respx.MockRouter, *, admin: bool = True, team: str = TEAM
) -> respx.Route:
    granted = respx_mock.post(f"{API}/oauth.v2.access").respond(
        json={
            "ok": True,
            "access_token": BOT_TOKEN,
            "token_type": "bot",
            "scope": "commands,incoming-webhook",
            "bot_user_id": "U0KRQLJ9H",
            "app_id": "A0KRD7HC3",
            "team": {"name": "Slack Softball Team", "id": team},
            "enterprise": None,
            "authed_user": {
                "id": "U1234",
                "scope": "chat:write",
                "access_token": "xoxp-1234",
                "token_type": "user",
            },
        }
    )
    respx_mock.post(f"{API}/users.info").respond(
        json={
            "ok": True,
            "user": {
                "id": "U1234",
                "team_id": team,
                "name": "spengler",
                "is_admin": admin,
                "is_owner": False,
            },
        }
    )
    mock_auth_test(respx_mock, team)
    return granted


async def test_install_happy_path(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime, respx_mock: respx.MockRouter
) -> None:
    state = our_state(await authorize(client, alice))
    granted = mock_oauth(respx_mock)
    done = await client.get(
        f"/auth/slack/callback?{urlencode({'code': 'the-code', 'state': state})}"
    )
    assert done.status_code == 302
    assert done.headers["location"] == f"{DONE}?community=commons&state=driver-state-1"
    assert "xox" not in done.headers["location"]
    replayed = await client.get(
        f"/auth/slack/callback?{urlencode({'code': 'the-code', 'state': state})}"
    )
    assert replayed.status_code == 400
    assert replayed.json()["code"] == "invalid_state"
    assert len(granted.calls) == 1

    sent = granted.calls[0].request
    assert sent.headers["authorization"].startswith("Basic ")
    assert form(granted.calls[0])["code"] == "the-code"
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    slack = next(p for p in community.json()["plugins"] if p["name"] == "slack")
    assert slack["community_platform_id"] == TEAM
    assert slack["config"]["bot_user_id"] == "U0KRQLJ9H"
    assert slack["secrets_set"] == ["bot_token"]
    assert BOT_TOKEN not in community.text
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT config, secrets FROM plugin_instances"))).all()
    assert BOT_TOKEN not in repr(rows)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("denied", "access_denied"),
        ("not_admin", "not_admin"),
        ("elsewhere", "already_installed"),
        ("bad_code", "invalid_code"),
    ],
)
async def test_install_errors_go_back_to_the_driver(
    client: httpx.AsyncClient, alice: DriverKey, respx_mock: respx.MockRouter, case: str, error: str
) -> None:
    state = our_state(await authorize(client, alice))
    query = {"code": "the-code", "state": state}
    if case == "denied":
        query = {"error": "access_denied", "state": state}
    elif case == "not_admin":
        mock_oauth(respx_mock, admin=False)
        revoked = respx_mock.post(f"{API}/auth.revoke").respond(json={"ok": True, "revoked": True})
    elif case == "elsewhere":
        mock_auth_test(respx_mock)
        revoked = respx_mock.post(f"{API}/auth.revoke").respond(json={"ok": True, "revoked": True})
        await make_community(client, alice, "other")
        other = {**alice.to("other")}
        assert (
            await client.post("/api/internal/plugin/slack", json=SLACK_CONFIG, headers=other)
        ).status_code == 201
        mock_oauth(respx_mock)
    else:
        respx_mock.post(f"{API}/oauth.v2.access").respond(
            json={"ok": False, "error": "invalid_code"}
        )
    done = await client.get(f"/auth/slack/callback?{urlencode(query)}")
    assert done.status_code == 302
    location = urlsplit(done.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    params = parse_qs(location.query)
    assert params["error"] == [error]
    assert params["error_description"][0]
    assert params["state"] == ["driver-state-1"]
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert [p["name"] for p in community.json()["plugins"]] == ["randomness"]
    if case in ("not_admin", "elsewhere"):  # the token Slack granted is given back
        assert revoked.calls[0].request.headers["authorization"] == f"Bearer {BOT_TOKEN}"


async def test_install_refuses_unknown_redirects_and_forged_state(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    refused = await authorize(client, alice, redirect_uri="https://evil.test/steal")
    assert refused.status_code == 400
    assert refused.json()["code"] == "redirect_not_allowed"
    unknown = await authorize(client, alice, community="nowhere")
    assert unknown.status_code == 404

    state = our_state(await authorize(client, alice))
    payload, _, mac = state.partition(".")
    forged = await client.get(
        f"/auth/slack/callback?{urlencode({'code': 'c', 'state': payload + 'x.' + mac})}"
    )
    assert forged.status_code == 400
    assert forged.json()["code"] == "invalid_state"
    assert "location" not in forged.headers


# --- Events API ------------------------------------------------------------------------------


async def test_url_verification_is_answered_with_the_challenge(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    response = await client.post(
        "/api/hooks/slack", content=body, headers=signed(body, "application/json")
    )
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


async def test_signed_event_becomes_a_signed_driver_event_once(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    driver = respx_mock.post(DRIVER_EVENTS).respond(200)
    message = {
        "type": "message",
        "channel": "C2147483705",
        "user": "U2147483697",
        "text": "Hello world",
        "ts": "1355517523.000005",
        "event_ts": "1355517523.000005",
        "channel_type": "channel",
    }
    first = await post_event(client, message, "Ev0PV52K21")
    retry = await post_event(
        client,
        message,
        "Ev0PV52K21",
        **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert first.status_code == retry.status_code == 200
    await settle(runtime)

    [call] = driver.calls
    event = json.loads(call.request.content)
    assert event["source"] == "slack"
    assert event["event_type"] == "message"
    assert event["data"]["text"] == "Hello world"
    assert event["initiator"] == {
        "user_id": "U2147483697",
        "provider": "slack",
        "is_metagov_bot": False,
    }
    assert call.request.headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize("tamper", ["signature", "stale", "missing"])
async def test_forged_slack_requests_get_401(
    client: httpx.AsyncClient, installed: dict[str, Any], runtime: Runtime, tamper: str
) -> None:
    body = json.dumps(
        {"type": "event_callback", "team_id": TEAM, "event_id": "Ev1", "event": {"type": "message"}}
    ).encode()
    headers = signed(
        body, "application/json", ts=int(time.time()) - 301 if tamper == "stale" else None
    )
    if tamper == "signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif tamper == "missing":
        del headers["X-Slack-Signature"]
    response = await client.post("/api/hooks/slack", content=body, headers=headers)
    assert response.status_code == 401
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM inbound_webhooks"))).scalar_one() == 0


async def test_uninstall_disables_the_instance_and_tells_the_driver(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    driver = respx_mock.post(DRIVER_EVENTS).respond(200)
    await post_event(client, {"type": "app_uninstalled"}, "Ev0UNINSTALL")
    await settle(runtime)
    types = [json.loads(c.request.content)["event_type"] for c in driver.calls]
    assert types == ["app_uninstalled", "plugin.disabled"]
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert [p["name"] for p in community.json()["plugins"]] == ["randomness"]


# --- actions ---------------------------------------------------------------------------------


async def test_post_message_to_users_opens_a_dm(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    respx_mock: respx.MockRouter,
) -> None:
    opened = respx_mock.post(f"{API}/conversations.open").respond(
        json={"ok": True, "channel": {"id": "D069C7QFK"}}
    )
    posted = respx_mock.post(f"{API}/chat.postMessage").respond(
        json={
            "ok": True,
            "channel": "D069C7QFK",
            "ts": "1503435956.000247",
            "message": {"text": "hi"},
        }
    )
    respx_mock.post(f"{API}/chat.getPermalink").respond(
        json={
            "ok": True,
            "channel": "D069C7QFK",
            "permalink": "https://softball.slack.test/archives/D069C7QFK/p1503435956000247",
        }
    )
    response = await client.post(
        "/api/internal/action/slack.post-message",
        json={"parameters": {"users": ["U1", "U2"], "text": "hi"}},
        headers=alice.to("commons"),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "channel": "D069C7QFK",
        "ts": "1503435956.000247",
        "permalink": "https://softball.slack.test/archives/D069C7QFK/p1503435956000247",
    }
    assert form(opened.calls[0]) == {"users": "U1,U2"}
    assert form(posted.calls[0]) == {"channel": "D069C7QFK", "text": "hi"}
    assert posted.calls[0].request.headers["authorization"] == f"Bearer {BOT_TOKEN}"


async def test_method_is_allow_listed_and_cannot_override_the_token(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(f"{API}/conversations.info").respond(json={"ok": True, "channel": {"id": "C1"}})
    headers = alice.to("commons")
    ok = await client.post(
        "/api/internal/action/slack.method",
        json={"parameters": {"method": "conversations.info", "params": {"channel": "C1"}}},
        headers=headers,
    )
    assert ok.json() == {"response": {"ok": True, "channel": {"id": "C1"}}}
    refused = await client.post(
        "/api/internal/action/slack.method",
        json={"parameters": {"method": "admin.users.remove", "params": {}}},
        headers=headers,
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "slack_method_not_allowed"
    token = await client.post(
        "/api/internal/action/slack.method",
        json={"parameters": {"method": "users.info", "params": {"token": "xoxp-other"}}},
        headers=headers,
    )
    assert token.status_code == 422


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (httpx.Response(200, json={"ok": False, "error": "channel_not_found"}), 400, "slack_error"),
        (httpx.Response(429, headers={"Retry-After": "30"}), 429, "rate_limited"),
        (httpx.Response(500), 502, "upstream_error"),
    ],
)
async def test_slack_errors_are_clear(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    respx_mock: respx.MockRouter,
    answer: httpx.Response,
    status: int,
    code: str,
) -> None:
    respx_mock.post(f"{API}/chat.postMessage").mock(return_value=answer)
    response = await client.post(
        "/api/internal/action/slack.post-message",
        json={"parameters": {"channel": "C404", "text": "x"}},
        headers=alice.to("commons"),
    )
    assert response.status_code == status
    assert response.json()["code"] == code
    if status == 400:
        assert "channel_not_found" in response.json()["detail"]
    if status == 429:
        assert response.headers["retry-after"] == "30"


# --- votes -----------------------------------------------------------------------------------


def mock_vote_message(respx_mock: respx.MockRouter) -> tuple[respx.Route, respx.Route, respx.Route]:
    posted = respx_mock.post(f"{API}/chat.postMessage").respond(
        json={"ok": True, "channel": "C123", "ts": "1700000000.000100", "message": {}}
    )
    respx_mock.post(f"{API}/chat.getPermalink").respond(
        json={
            "ok": True,
            "channel": "C123",
            "permalink": "https://softball.slack.test/archives/C123/p1700000000000100",
        }
    )
    updated = respx_mock.post(f"{API}/chat.update").respond(
        json={"ok": True, "channel": "C123", "ts": "1700000000.000100"}
    )
    ephemeral = respx_mock.post(f"{API}/chat.postEphemeral").respond(
        json={"ok": True, "message_ts": "1700000001.000200"}
    )
    return posted, updated, ephemeral


def button_labels(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_emoji_vote_from_start_to_close(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    posted, updated, ephemeral = mock_vote_message(respx_mock)
    respx_mock.post(DRIVER_EVENTS).respond(200)
    headers = alice.to("commons")
    started = await client.post(
        "/api/internal/process/slack.emoji-vote",
        json={
            "title": "Lunch?",
            "poll_type": "choice",
            "options": ["Tacos", "Pizza"],
            "channel": "C123",
            "ineligible_voters": ["U9"],
        },
        headers=headers,
    )
    assert started.status_code == 202, started.text
    record = started.json()
    assert record["url"] == "https://softball.slack.test/archives/C123/p1700000000000100"
    sent = form(posted.calls[0])
    assert sent["channel"] == "C123"
    assert button_labels(json.loads(sent["blocks"])) == [":one: Tacos (0)", ":two: Pizza (0)"]

    ts = "1700000000.000100"
    await click(
        client,
        "U2",
        ts,
        [
            {
                "action_id": "vote:1",
                "block_id": "metagov_vote",
                "value": "1",
                "type": "button",
                "action_ts": "1700000010.1",
            }
        ],
        "t1",
    )
    await click(
        client,
        "U3",
        ts,
        [
            {
                "action_id": "vote:1",
                "block_id": "metagov_vote",
                "value": "1",
                "type": "button",
                "action_ts": "1700000011.1",
            }
        ],
        "t2",
    )
    await click(
        client,
        "U2",
        ts,
        [
            {
                "action_id": "vote:0",
                "block_id": "metagov_vote",
                "value": "0",
                "type": "button",
                "action_ts": "1700000012.1",
            }
        ],
        "t3",
    )
    await click(
        client,
        "U9",
        ts,
        [
            {
                "action_id": "vote:0",
                "block_id": "metagov_vote",
                "value": "0",
                "type": "button",
                "action_ts": "1700000013.1",
            }
        ],
        "t4",
    )
    await settle(runtime)

    last = json.loads(form(updated.calls[-1])["blocks"])
    assert button_labels(last) == [":one: Tacos (1)", ":two: Pizza (1)"]
    assert form(ephemeral.calls[0]) == {
        "channel": "C123",
        "user": "U9",
        "text": "You are not eligible to vote in this poll.",
    }

    closed = await client.delete(started.headers["Location"], headers=headers)
    assert closed.status_code == 200
    final = closed.json()
    assert final["status"] == "completed"
    assert final["outcome"] == {
        "votes": {"Tacos": {"count": 1, "users": ["U2"]}, "Pizza": {"count": 1, "users": ["U3"]}},
        "channel": "C123",
        "message_ts": ts,
    }
    closing = json.loads(form(updated.calls[-1])["blocks"])
    assert button_labels(closing) == []
    assert "Voting has closed." in json.dumps(closing)


async def test_advanced_vote_records_a_choice_per_candidate(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    posted, updated, _ = mock_vote_message(respx_mock)
    respx_mock.post(DRIVER_EVENTS).respond(200)
    headers = alice.to("commons")
    started = await client.post(
        "/api/internal/process/slack.advanced-vote",
        json={
            "title": "Board",
            "candidates": ["Ana", "Bo"],
            "options": ["yes", "no", "abstain"],
            "channel": "C123",
        },
        headers=headers,
    )
    assert started.status_code == 202, started.text
    selects = [
        b["accessory"] for b in json.loads(form(posted.calls[0])["blocks"]) if "accessory" in b
    ]
    assert [s["action_id"] for s in selects] == ["candidate:0", "candidate:1"]

    ts = "1700000000.000100"

    def select(candidate: int, option: int) -> dict[str, Any]:
        return {
            "action_id": f"candidate:{candidate}",
            "block_id": f"candidate:{candidate}",
            "type": "static_select",
            "selected_option": {"text": {"type": "plain_text", "text": "x"}, "value": str(option)},
            "action_ts": f"17000000{candidate}{option}.1",
        }

    await click(client, "U2", ts, [select(0, 0)], "a1")
    await click(client, "U2", ts, [select(1, 2)], "a2")
    await click(client, "U3", ts, [select(0, 1)], "a3")
    await settle(runtime)
    closed = await client.delete(started.headers["Location"], headers=headers)
    assert closed.json()["outcome"]["votes"] == {
        "U2": {"Ana": "yes", "Bo": "abstain"},
        "U3": {"Ana": "no"},
    }
    final_blocks = json.loads(form(updated.calls[-1])["blocks"])
    assert not any("accessory" in b for b in final_blocks)


async def test_emoji_vote_needs_an_audience(
    client: httpx.AsyncClient, alice: DriverKey, installed: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/internal/process/slack.emoji-vote",
        json={"title": "x", "poll_type": "choice", "options": ["a"]},
        headers=alice.to("commons"),
    )
    assert response.status_code == 422
    assert "channel or eligible_voters" in response.json()["detail"]


async def test_only_bot_token_revocation_disables(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(DRIVER_EVENTS).respond(200)
    users_only = {"type": "tokens_revoked", "tokens": {"oauth": ["U1234"], "bot": []}}
    await post_event(client, users_only, "Ev0USERS")
    await settle(runtime)
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert "slack" in [p["name"] for p in community.json()["plugins"]]
    bot = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT"]}}
    await post_event(client, bot, "Ev0BOT")
    await settle(runtime)
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert [p["name"] for p in community.json()["plugins"]] == ["randomness"]


async def test_slack_outage_during_install_goes_back_to_the_driver(
    client: httpx.AsyncClient, alice: DriverKey, respx_mock: respx.MockRouter
) -> None:
    state = our_state(await authorize(client, alice))
    respx_mock.post(f"{API}/oauth.v2.access").respond(503)
    done = await client.get(f"/auth/slack/callback?{urlencode({'code': 'c', 'state': state})}")
    assert done.status_code == 302
    assert parse_qs(urlsplit(done.headers["location"]).query)["error"] == ["upstream_error"]


async def test_closing_at_needs_a_time_zone(
    client: httpx.AsyncClient, alice: DriverKey, installed: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/internal/process/slack.emoji-vote",
        json={
            "title": "x",
            "poll_type": "boolean",
            "channel": "C1",
            "closing_at": "2030-01-01T00:00:00",
        },
        headers=alice.to("commons"),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "closing_at"]


# --- who may install, and one owner per workspace ---------------------------------------------


async def test_installs_start_only_from_a_drivers_single_use_url(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    # The old form, which anyone knowing a slug could use, is refused and says what to do.
    old = {"community": "commons", "redirect_uri": DONE}
    refused = await client.get(f"/auth/slack/authorize?{urlencode(old)}")
    assert refused.status_code == 400
    assert refused.json()["code"] == "install_url_required"
    assert "/api/internal/oauth/slack/authorize" in refused.json()["detail"]

    # Another Driver cannot have a URL made for alice's community, nor can a caller without key.
    bob = await make_driver(runtime, "bob")
    body = {"redirect_uri": DONE}
    for headers in (bob.to("commons"), {"X-Metagov-Community": "commons"}):
        made = await client.post("/api/internal/oauth/slack/authorize", json=body, headers=headers)
        assert made.status_code in (401, 404)

    made = await client.post(
        "/api/internal/oauth/slack/authorize", json=body, headers=alice.to("commons")
    )
    assert made.status_code == 200, made.text
    url = httpx.URL(made.json()["url"])
    assert str(url).startswith("https://metagov.test/auth/slack/authorize?install=")
    path = url.raw_path.decode()
    our_state(await client.get(path))
    again = await client.get(path)
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_install"
    token = url.params["install"]
    forged = await client.get(f"/auth/slack/authorize?install={token[:-2]}xx")
    assert forged.json()["code"] == "invalid_install"


async def test_a_workspace_belongs_to_one_community_across_drivers(
    client: httpx.AsyncClient,
    alice: DriverKey,
    installed: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    """Bob configures Slack by hand with the team id alice's community installed (even with a
    token Slack accepts for it): refused, and the workspace's events keep reaching alice only."""
    bob = await make_driver(runtime, "bob")
    await make_community(client, bob, "bobs")
    taken = await client.post(
        "/api/internal/plugin/slack", json=SLACK_CONFIG, headers=bob.to("bobs")
    )
    assert taken.status_code == 409
    assert taken.json()["code"] == "platform_tenant_taken"
    declared = await client.put(
        "/api/internal/community/bobs",
        json={"plugins": [{"name": "slack", "config": SLACK_CONFIG}]},
        headers=bob.headers,
    )
    assert declared.status_code == 409
    assert declared.json()["code"] == "platform_tenant_taken"
    # A second community of the same Driver cannot take it either.
    await make_community(client, alice, "second")
    again = await client.post(
        "/api/internal/plugin/slack", json=SLACK_CONFIG, headers=alice.to("second")
    )
    assert again.json()["code"] == "platform_tenant_taken"
    # Re-configuring the owner itself is fine.
    same = await client.put(
        f"/api/internal/plugin/slack/{installed['id']}",
        json={**SLACK_CONFIG, "team_name": "Renamed"},
        headers=alice.to("commons"),
    )
    assert same.status_code == 200, same.text

    driver = respx_mock.post(DRIVER_EVENTS).respond(200)
    assert (await post_event(client, {"type": "message", "text": "hi"}, "Ev1")).status_code == 200
    await settle(runtime)
    communities = {json.loads(c.request.content)["community"] for c in driver.calls}
    assert communities == {"commons"}
    bobs = await client.get("/api/internal/events", headers=bob.headers)
    assert bobs.json() == []


async def test_a_bot_token_of_another_workspace_is_refused(
    client: httpx.AsyncClient, alice: DriverKey, respx_mock: respx.MockRouter
) -> None:
    mock_auth_test(respx_mock, team="TOTHER")
    refused = await client.post(
        "/api/internal/plugin/slack", json=SLACK_CONFIG, headers=alice.to("commons")
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "slack_wrong_team"
    respx_mock.post(f"{API}/auth.test").respond(json={"ok": False, "error": "invalid_auth"})
    invalid = await client.post(
        "/api/internal/plugin/slack", json=SLACK_CONFIG, headers=alice.to("commons")
    )
    assert invalid.status_code == 400
    assert invalid.json()["code"] == "slack_error"
    community = await client.get("/api/internal/community/commons", headers=alice.headers)
    assert [p["name"] for p in community.json()["plugins"]] == ["randomness"]
