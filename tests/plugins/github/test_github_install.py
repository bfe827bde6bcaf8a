"""Installing the App into a community: through the browser (the App's installation page, then
the callback with ``installation_id`` and ``setup_action``), or by hand with an installation id;
both are checked against GitHub with the App's JWT."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.github.fake import (
    API,
    APP_ID,
    CLIENT_ID,
    DONE,
    GITHUB_CONFIG,
    INSTALLATION,
    OWNER,
    REPO,
    SLUG,
    WEB,
    FakeGitHub,
    installation_json,
    issue_json,
    user,
)

USER_TOKEN = "ghu_16C7e42F292c6912E7710c838347Ae178B4a"


async def start_install(gateway: TestGateway, driver: DriverCredentials, kind: str = "app") -> str:
    """Begin an install as the Driver would; returns the state GitHub will send back."""
    response = await gateway.start_install(
        driver, "github", "commons", redirect_uri=DONE, state="driver-state", kind=kind
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    if kind == "app":
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{WEB}/apps/{SLUG}/installations/new"
        )
    else:
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{WEB}/login/oauth/authorize"
        )
        query_sent = parse_qs(location.query)
        assert query_sent["client_id"] == [CLIENT_ID]
        assert query_sent["redirect_uri"] == ["https://metagov.test/auth/github/callback"]
    return parse_qs(location.query)["state"][0]


async def come_back(gateway: TestGateway, **params: str) -> dict[str, list[str]]:
    """GitHub sends the browser to the callback; returns the query the Driver gets back."""
    response = await gateway.client.get(f"/auth/github/callback?{urlencode(params)}")
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    return parse_qs(location.query)


def mock_user_authorization(
    github: FakeGitHub, *installations: dict[str, Any]
) -> tuple[respx.Route, respx.Route]:
    """GitHub's code exchange and the installations the user can access."""
    exchanged = github.router.post(f"{WEB}/login/oauth/access_token").respond(
        json={
            "access_token": USER_TOKEN,
            "expires_in": 28800,
            "refresh_token": "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C4681",
            "refresh_token_expires_in": 15811200,
            "scope": "",
            "token_type": "bearer",
        }
    )
    listed = github.router.get(f"{API}/user/installations").respond(
        json={"total_count": len(installations), "installations": list(installations)}
    )
    return exchanged, listed


async def plugins_of(gateway: TestGateway, driver: DriverCredentials) -> list[dict[str, Any]]:
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    assert community.status_code == 200, community.text
    return list(community.json()["plugins"])


async def test_install_round_trip(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    await gateway.create_community(driver, "commons")
    state = await start_install(gateway, driver)
    exchanged, listed = mock_user_authorization(github, installation_json())

    back = await come_back(
        gateway,
        code="a1b2c3",
        installation_id=str(INSTALLATION),
        setup_action="install",
        state=state,
    )

    assert back == {"community": ["commons"], "state": ["driver-state"]}
    exchange = parse_qs(exchanged.calls.last.request.content.decode())
    assert exchange == {
        "client_id": [CLIENT_ID],
        "client_secret": ["client-secret-value"],
        "code": ["a1b2c3"],
    }
    assert listed.calls.last.request.headers["authorization"] == f"Bearer {USER_TOKEN}"
    # The installation is read and its token minted as the App, with a JWT signed by its key.
    for route in (github.installation, github.minted):
        claims = github.claims(route.calls.last.request)
        assert claims["iss"] == APP_ID
        assert claims["iat"] <= time.time() < claims["exp"] <= claims["iat"] + 600
    [github_plugin] = await plugins_of(gateway, driver)
    assert github_plugin["community_platform_id"] == str(INSTALLATION)
    assert github_plugin["config"] == {
        "installation_id": str(INSTALLATION),
        "owner": OWNER,
        "owner_type": "Organization",
    }
    assert github_plugin["secrets_set"] == ["installation_token"]
    assert "ghs_" not in str(github_plugin) and USER_TOKEN not in str(github_plugin)

    # The minted token is what acts on the repositories, without minting another.
    created = github.router.post(github.repo("/issues")).respond(201, json=issue_json(7))
    response = await gateway.client.post(
        "/api/internal/action/github.create-issue",
        json={"parameters": {"repo": REPO, "title": "Hello"}},
        headers=driver.to("commons"),
    )
    assert response.status_code == 200, response.text
    assert created.calls.last.request.headers["authorization"] == "Bearer ghs_token001"
    assert github.tokens == ["ghs_token001"]


async def test_a_spoofed_installation_id_is_refused(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    await gateway.create_community(driver, "commons")
    state = await start_install(gateway, driver)
    mock_user_authorization(github, installation_json(installation_id=1111, account="mine"))

    back = await come_back(
        gateway, code="c0de", installation_id=str(INSTALLATION), setup_action="install", state=state
    )

    assert back["error"] == ["not_your_installation"]
    assert back["state"] == ["driver-state"]
    assert not github.installation.called and not github.minted.called
    assert await plugins_of(gateway, driver) == []


async def test_installs_that_cannot_finish_go_back_to_the_driver(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    await gateway.create_community(driver, "commons")
    mock_user_authorization(github, installation_json())
    cases = [
        ({"setup_action": "request", "code": "c0de"}, "install_requested"),
        ({"setup_action": "install", "code": "c0de"}, "missing_installation"),
        ({"setup_action": "install", "installation_id": str(INSTALLATION)}, "missing_code"),
        ({"error": "access_denied"}, "access_denied"),
    ]
    for params, error in cases:
        state = await start_install(gateway, driver)

        back = await come_back(gateway, **params, state=state)

        assert back["error"] == [error], params
        assert back["error_description"][0]
    assert await plugins_of(gateway, driver) == []
    assert github.tokens == []


@pytest.mark.parametrize("github_overrides", [{"client_id": None, "client_secret": None}])
async def test_without_client_credentials_the_installation_is_read_as_the_app(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    await gateway.create_community(driver, "commons")
    state = await start_install(gateway, driver)

    back = await come_back(
        gateway, installation_id=str(INSTALLATION), setup_action="install", state=state
    )

    assert back == {"community": ["commons"], "state": ["driver-state"]}
    assert github.installation.called and github.tokens == ["ghs_token001"]
    [github_plugin] = await plugins_of(gateway, driver)
    assert github_plugin["config"]["owner"] == OWNER
    # No client id: users cannot log in.
    login = await gateway.start_install(driver, "github", "commons", redirect_uri=DONE, kind="user")
    assert login.status_code == 400
    assert login.json()["code"] == "github_not_configured"


async def test_a_user_logs_in(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    state = await start_install(gateway, driver, kind="user")
    exchanged, _ = mock_user_authorization(github)
    me = github.router.get(f"{API}/user").respond(json=user("octocat", 583231))

    back = await come_back(gateway, code="u5er", state=state)

    [person] = back.pop("metagov_id")  # the login linked the account to a new MetagovID
    assert person.startswith("mgid_")
    assert back == {"community": ["commons"], "user_id": ["octocat"], "state": ["driver-state"]}
    exchange = parse_qs(exchanged.calls.last.request.content.decode())
    assert exchange["redirect_uri"] == ["https://metagov.test/auth/github/callback"]
    assert me.calls.last.request.headers["authorization"] == f"Bearer {USER_TOKEN}"


async def test_enabling_by_hand_mints_a_token(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    body = await gateway.create_community(
        driver,
        "commons",
        [{"name": "github", "config": {**GITHUB_CONFIG, "installation_id": INSTALLATION}}],
    )
    [github_plugin] = body["plugins"]
    assert github_plugin["community_platform_id"] == str(INSTALLATION)
    assert github.tokens == ["ghs_token001"]
    assert github.claims(github.installation.calls.last.request)["iss"] == APP_ID


async def test_enabling_by_hand_is_checked_against_github(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    await gateway.create_community(driver, "commons")
    not_found = {
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest/apps/apps#get-an-installation-for-the-authenticated-app",
        "status": "404",
    }
    found = httpx.Response(200, json=installation_json())
    suspended = httpx.Response(200, json=installation_json(suspended_at="2024-03-02T10:00:00Z"))
    cases: list[tuple[dict[str, str], httpx.Response, int, str, str]] = [
        ({"owner": "someone-else"}, found, 400, "github_owner_mismatch", "'octo-org'"),
        ({"owner_type": "User"}, found, 400, "github_owner_mismatch", "Organization"),
        ({}, suspended, 400, "github_installation_suspended", "suspended"),
        (
            {},
            httpx.Response(404, json=not_found),
            404,
            "github_error",
            f"no installation {INSTALLATION}",
        ),
    ]
    for config, answer, status, code, words in cases:
        github.installation.mock(return_value=answer)

        response = await gateway.client.post(
            "/api/internal/plugin/github",
            json={**GITHUB_CONFIG, **config},
            headers=driver.to("commons"),
        )

        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert words in response.json()["detail"]
    assert github.tokens == []
    assert await plugins_of(gateway, driver) == []
