"""Installing Open Collective through OAuth: the account that authorizes must administer exactly
one collective, which becomes the instance; refusals go back to the Driver; a rejected OAuth
token is refreshed once and the call retried."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.opencollective.conftest import (
    BASE,
    COLLECTIVE,
    DONE,
    WEBSITE,
    FakeOpenCollective,
    act,
    enable,
)

OAUTH_TOKEN = "eyJhbGciOiJIUzI1NiJ9.oauth-access-token.signature"


def logged_in(*slugs: str) -> dict[str, Any]:
    """``loggedInAccount`` of an account administering ``slugs``."""
    return {
        "data": {
            "loggedInAccount": {
                "id": "b0t4cc0unt",
                "slug": "metagov-governance-bot",
                "name": "Metagov governance bot",
                "memberOf": {
                    "totalCount": len(slugs),
                    "nodes": [
                        {"account": {"id": f"id-{s}", "slug": s, "name": s, "type": "COLLECTIVE"}}
                        for s in slugs
                    ],
                },
            }
        }
    }


async def authorize(gateway: TestGateway, driver: DriverCredentials, kind: str = "app") -> str:
    response = await gateway.start_install(
        driver, "opencollective", "commons", redirect_uri=DONE, state="driver-state-1", kind=kind
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{WEBSITE}/oauth/authorize"
    params = parse_qs(location.query)
    assert params["client_id"] == ["b9f8a33b1d7e2c5a"]
    assert params["response_type"] == ["code"]
    assert params["redirect_uri"] == [f"{BASE}/auth/opencollective/callback"]
    scope = "account,expenses,conversations,webhooks" if kind == "app" else "account"
    assert params["scope"] == [scope]
    return params["state"][0]


async def callback(gateway: TestGateway, state: str) -> dict[str, list[str]]:
    done = await gateway.client.get(
        f"/auth/opencollective/callback?{urlencode({'code': 'the-code', 'state': state})}"
    )
    assert done.status_code == 302, done.text
    location = urlsplit(done.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    return parse_qs(location.query)


async def test_install_by_the_admin_of_one_collective(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    state = await authorize(gateway, driver)
    oc.token.respond(
        200,
        json={
            "access_token": OAUTH_TOKEN,
            "token_type": "Bearer",
            "expires_in": 7776000,
            "refresh_token": "refresh-token-1",
        },
    )
    oc.on("LoggedInAccount", logged_in("metagov"))

    back = await callback(gateway, state)

    assert back == {"community": ["commons"], "state": ["driver-state-1"]}
    granted = parse_qs(oc.token.calls[0].request.content.decode())
    assert granted == {
        "grant_type": ["authorization_code"],
        "code": ["the-code"],
        "redirect_uri": [f"{BASE}/auth/opencollective/callback"],
        "client_id": ["b9f8a33b1d7e2c5a"],
        "client_secret": ["client-secret-value"],
    }
    assert oc.operations() == ["LoggedInAccount", "Account", "CreateWebhook"]
    assert all(h["authorization"] == f"Bearer {OAUTH_TOKEN}" for _, _, h in oc.calls)
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    [instance] = community.json()["plugins"]
    assert instance["community_platform_id"] == COLLECTIVE["slug"]
    assert instance["config"] == {"collective_slug": "metagov", "token_type": "oauth"}
    assert instance["secrets_set"] == ["access_token", "refresh_token", "webhook_token"]


@pytest.mark.parametrize("admin_of", [(), ("metagov", "another-collective")])
async def test_install_needs_exactly_one_administered_collective(
    gateway: TestGateway,
    driver: DriverCredentials,
    oc: FakeOpenCollective,
    admin_of: tuple[str, ...],
) -> None:
    state = await authorize(gateway, driver)
    oc.token.respond(200, json={"access_token": OAUTH_TOKEN, "token_type": "Bearer"})
    oc.on("LoggedInAccount", logged_in(*admin_of))

    back = await callback(gateway, state)

    assert back["error"] == ["not_one_collective"]
    assert f"administers {len(admin_of)} collectives" in back["error_description"][0]
    assert back["state"] == ["driver-state-1"]
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    assert community.json()["plugins"] == []


async def test_a_refused_code_goes_back_to_the_driver(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    state = await authorize(gateway, driver)
    oc.token.respond(400, json={"error": "invalid_grant", "error_description": "Invalid code"})

    back = await callback(gateway, state)

    assert back["error"] == ["invalid_grant"]
    assert not oc.calls


async def test_user_login_names_the_account(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    assert (await enable(gateway, driver)).status_code == 201
    state = await authorize(gateway, driver, kind="user")
    oc.token.respond(200, json={"access_token": OAUTH_TOKEN})
    oc.on("LoggedInAccount", logged_in("metagov", "another-collective"))

    back = await callback(gateway, state)

    [person] = back.pop("metagov_id")  # the login linked the account to a new MetagovID
    assert person.startswith("mgid_")
    assert back == {
        "community": ["commons"],
        "user_id": ["metagov-governance-bot"],
        "state": ["driver-state-1"],
    }


async def test_a_rejected_oauth_token_is_refreshed_once_and_the_call_retried(
    gateway: TestGateway, driver: DriverCredentials, oc: FakeOpenCollective
) -> None:
    enabled = await enable(
        gateway, driver, access_token="old-token", token_type="oauth", refresh_token="refresh-1"
    )
    assert enabled.status_code == 201, enabled.text
    oc.token.respond(
        200, json={"access_token": "new-token", "refresh_token": "refresh-2", "expires_in": 3600}
    )

    def members(variables: dict[str, Any], request: httpx.Request) -> Any:
        if request.headers["authorization"] == "Bearer old-token":
            return httpx.Response(401, json={"errors": [{"message": "Invalid token"}]})
        return {"data": {"account": {"members": {"totalCount": 0, "nodes": []}}}}

    oc.on("Members", members)
    first = await act(gateway, driver, "list-members")
    second = await act(gateway, driver, "list-members")

    assert first.status_code == second.status_code == 200, first.text
    [refreshed] = oc.token.calls
    assert parse_qs(refreshed.request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-1"],
        "client_id": ["b9f8a33b1d7e2c5a"],
        "client_secret": ["client-secret-value"],
    }
    used = [h["authorization"] for name, _, h in oc.calls if name == "Members"]
    assert used == ["Bearer old-token", "Bearer new-token", "Bearer new-token"]
