"""A user's OAuth login links their platform account to a MetagovID: Slack's user login against
a mocked Slack (respx at https://slack.test/api), through the gateway's real routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import respx

from metagov.plugins.slack import SlackPlugin
from metagov.plugins.slack.schemas import SlackSettings
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

API = "https://slack.test/api"
EVENTS = "https://driver.test/events"
DONE = "https://driver.test/slack/done"
TEAM = "T9TK3CUKW"
USER = "U1234"
BASE = "/api/internal/identity"
SLACK_CONFIG = {
    "team_id": TEAM,
    "team_name": "Softball",
    "bot_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
    "bot_user_id": "UBOT",
}


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[TestGateway]:
    registry = make_registry()
    registry.add(
        SlackPlugin,
        source="builtin:slack",
        settings=SlackSettings(
            _env_file=None,  # type: ignore[call-arg]
            client_id="2141029472.691202649728",
            client_secret="client-secret-value",
            signing_secret="8f742231b10e8888abcd99yyyzzz85a5",
            app_id="A0KRD7HC3",
            api_url=API,
            authorize_url="https://slack.test/oauth/v2/authorize",
        ),
    )
    settings = make_settings(
        database_url, auth_redirect_allowlist=DONE, base_url="https://metagov.test"
    )
    async with open_gateway(settings, registry) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway, respx_mock: respx.MockRouter) -> DriverCredentials:
    # Slack confirms that the configured bot token is the team's.
    respx_mock.post(f"{API}/auth.test").respond(
        json={"ok": True, "team_id": TEAM, "team": "Softball", "user_id": "UBOT", "bot_id": "B1"}
    )
    credentials = await gw.create_driver("alice", event_url=EVENTS)
    await gw.create_community(credentials, "commons", [{"name": "slack", "config": SLACK_CONFIG}])
    return credentials


def mock_user_login(respx_mock: respx.MockRouter, user: str = USER) -> respx.Route:
    """Slack's answer to a user-scope code exchange."""
    return respx_mock.post(f"{API}/oauth.v2.access").respond(
        json={
            "ok": True,
            "app_id": "A0KRD7HC3",
            "authed_user": {
                "id": user,
                "scope": "identity.basic",
                "access_token": "xoxp-1234",
                "token_type": "user",
            },
            "team": {"id": TEAM},
            "enterprise": None,
            "is_enterprise_install": False,
        }
    )


async def start_login(
    gw: TestGateway, driver: DriverCredentials, *, type: str = "user", metagov_id: str | None = None
) -> Any:
    """The Driver asks for a login URL for a Slack user of ``commons``; a browser opens it."""
    return await gw.start_install(
        driver,
        "slack",
        "commons",
        redirect_uri=DONE,
        state="driver-state",
        kind=type,
        metagov_id=metagov_id,
    )


async def login(
    gw: TestGateway, driver: DriverCredentials, metagov_id: str | None = None
) -> dict[str, list[str]]:
    """Log in through Slack; returns the query string the Driver gets back."""
    started = await start_login(gw, driver, metagov_id=metagov_id)
    assert started.status_code == 302, started.text
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    done = await gw.client.get(
        f"/auth/slack/callback?{urlencode({'code': 'c0de', 'state': state})}"
    )
    assert done.status_code == 302, done.text
    location = urlsplit(done.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    return parse_qs(location.query)


async def get_user(gw: TestGateway, driver: DriverCredentials, metagov_id: str) -> Any:
    response = await gw.client.get(
        f"{BASE}/get_user", params={"id": metagov_id}, headers=driver.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def new_id(gw: TestGateway, driver: DriverCredentials) -> str:
    response = await gw.client.post(
        f"{BASE}/create_id", json={"community": "commons"}, headers=driver.headers
    )
    assert response.status_code == 201, response.text
    created: str = response.json()[0]
    return created


async def test_a_login_links_the_account_to_a_new_id_and_tells_the_driver(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mock_user_login(respx_mock)
    received = respx_mock.post(EVENTS).respond(200)

    back = await login(gw, driver)

    [person] = back.pop("metagov_id")
    assert back == {"community": ["commons"], "user_id": [USER], "state": ["driver-state"]}
    body = await get_user(gw, driver, person)
    assert body["primary_id"] == person
    [account] = body["linked_accounts"]
    assert account["platform_type"] == "slack"
    assert account["platform_identifier"] == USER
    assert account["community_platform_id"] == TEAM
    assert (account["link_type"], account["link_quality"]) == ("oauth", "confirmed")

    await gw.drain()
    [event] = [json.loads(call.request.content) for call in received.calls]
    assert event["event_type"] == "identity.linked"
    assert event["data"] == account
    assert event["initiator"] == {"user_id": USER, "provider": "slack"}

    # Logging in again finds the same person; nothing new is made or recorded.
    again = await login(gw, driver)
    assert again["metagov_id"] == [person]
    await gw.drain()
    assert len(received.calls) == 1
    page = await gw.client.get(
        f"{BASE}/get_users", params={"community": "commons"}, headers=driver.headers
    )
    assert [u["id"] for u in page.json()["users"]] == [person]


async def test_a_login_links_to_the_id_the_driver_named(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mock_user_login(respx_mock)
    respx_mock.post(EVENTS).respond(200)
    named, merged_into = await new_id(gw, driver), await new_id(gw, driver)
    # The Driver knew the account by hand, weakly; the login confirms it.
    linked = await gw.client.post(
        f"{BASE}/link_account",
        json={
            "id": named,
            "community": "commons",
            "platform_type": "slack",
            "platform_identifier": USER,
            "community_platform_id": TEAM,
            "custom_data": {"display_name": "spengler"},
            "link_quality": "weak_confirm",
        },
        headers=driver.headers,
    )
    assert linked.status_code == 201, linked.text

    back = await login(gw, driver, metagov_id=named)

    assert back["metagov_id"] == [named]
    [account] = (await get_user(gw, driver, named))["linked_accounts"]
    assert (account["link_type"], account["link_quality"]) == ("oauth", "confirmed")
    assert account["custom_data"] == {"display_name": "spengler"}

    # A merged id: the login answers the id it resolves to.
    merged = await gw.client.post(
        f"{BASE}/merge_ids",
        json={"primary_id": merged_into, "secondary_id": named},
        headers=driver.headers,
    )
    assert merged.status_code == 200, merged.text
    assert (await login(gw, driver, metagov_id=named))["metagov_id"] == [merged_into]


async def test_an_account_linked_elsewhere_is_not_moved(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    mock_user_login(respx_mock)
    respx_mock.post(EVENTS).respond(200)
    first = (await login(gw, driver))["metagov_id"][0]
    other = await new_id(gw, driver)

    back = await login(gw, driver, metagov_id=other)

    assert back["error"] == ["account_linked_elsewhere"]
    [description] = back["error_description"]
    assert first in description
    assert "unlink" in description and "merge" in description
    assert back["user_id"] == [USER]
    assert back["state"] == ["driver-state"]
    assert "metagov_id" not in back
    assert len((await get_user(gw, driver, first))["linked_accounts"]) == 1
    assert (await get_user(gw, driver, other))["linked_accounts"] == []


async def test_a_login_names_an_id_of_the_community_or_none(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    unknown = await start_login(gw, driver, metagov_id="mgid_nope")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    install = await start_login(gw, driver, type="app", metagov_id=await new_id(gw, driver))
    assert install.status_code == 400
    assert "type=user" in install.json()["detail"]
    # An id of another community of the same Driver is not this community's.
    await gw.create_community(driver, "other")
    response = await gw.client.post(
        f"{BASE}/create_id", json={"community": "other"}, headers=driver.headers
    )
    [elsewhere] = response.json()
    assert (await start_login(gw, driver, metagov_id=elsewhere)).status_code == 404
    # Refused before anything reached Slack (its only call was checking the token at install).
    assert [call.request.url.path for call in respx_mock.calls] == ["/api/auth.test"]
