"""Installing X through OAuth 2.0 with PKCE: the authorize URL, the code exchange X receives
(whose verifier matches the challenge), the stored instance, user logins, refusals, and tokens
renewed before they expire."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import respx

from metagov.plugins.x.schemas import XSettings
from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.x.conftest import (
    ACCESS,
    ACCOUNT,
    API,
    AUTHORIZE,
    BASE,
    CLIENT_ID,
    CLIENT_SECRET,
    DONE,
    REFRESH,
    act,
    granted,
    x_settings,
)


async def authorize(
    gw: TestGateway, driver: DriverCredentials, plugin: str = "x", kind: str = "app"
) -> dict[str, str]:
    response = await gw.start_install(
        driver, plugin, "commons", redirect_uri=DONE, state="driver-1", kind=kind
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTHORIZE
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


async def test_install_exchanges_the_code_with_the_matching_verifier(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    sent = await authorize(gw, driver)
    assert sent["response_type"] == "code"
    assert sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == f"{BASE}/auth/x/callback"
    assert sent["scope"].split() == [
        "tweet.read",
        "tweet.write",
        "users.read",
        "dm.read",
        "dm.write",
        "offline.access",
    ]
    assert sent["code_challenge_method"] == "S256"
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted(ACCESS, REFRESH))
    me = respx_mock.get(f"{API}/2/users/me").respond(200, json={"data": ACCOUNT})

    done = await gw.client.get(
        f"/auth/x/callback?{urlencode({'state': sent['state'], 'code': 'VGNibzFWSWREZm01'})}"
    )

    assert done.status_code == 302, done.text
    assert done.headers["location"] == f"{DONE}?community=commons&state=driver-1"
    request = token.calls.last.request
    assert (
        request.headers["authorization"] == httpx.BasicAuth(CLIENT_ID, CLIENT_SECRET)._auth_header
    )
    exchanged = form(request)
    assert {k: v for k, v in exchanged.items() if k != "code_verifier"} == {
        "code": "VGNibzFWSWREZm01",
        "grant_type": "authorization_code",
        "redirect_uri": f"{BASE}/auth/x/callback",
        "client_id": CLIENT_ID,
    }
    assert 43 <= len(exchanged["code_verifier"]) <= 128
    assert s256(exchanged["code_verifier"]) == sent["code_challenge"]
    assert exchanged["code_verifier"] not in done.headers["location"]
    assert me.calls.last.request.headers["authorization"] == f"Bearer {ACCESS}"

    community = await gw.client.get("/api/internal/community/commons", headers=driver.headers)
    [x] = [p for p in community.json()["plugins"] if p["name"] == "x"]
    assert x["community_platform_id"] == ACCOUNT["id"]
    assert x["auth_type"] == "oauth"
    assert x["secrets_set"] == ["access_token", "refresh_token"]
    assert x["config"]["username"] == "TwitterDev"
    assert x["config"]["allow_posting"] is False
    assert ACCESS not in community.text
    assert REFRESH not in community.text


async def test_a_user_login_names_the_user_and_gives_the_token_back(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await gw.client.post(
        "/api/internal/plugin/x",
        json={"user_id": "1", "username": "community", "access_token": "t"},
        headers=driver.to("commons"),
    )
    sent = await authorize(gw, driver, kind="user")
    assert sent["scope"] == "tweet.read users.read"
    respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted(ACCESS, REFRESH))
    respx_mock.get(f"{API}/2/users/me").respond(200, json={"data": ACCOUNT})
    revoked = respx_mock.post(f"{API}/2/oauth2/revoke").respond(200, json={"revoked": True})

    done = await gw.client.get(
        f"/auth/x/callback?{urlencode({'state': sent['state'], 'code': 'c'})}"
    )

    location = urlsplit(done.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DONE
    back = parse_qs(location.query)
    [person] = back.pop("metagov_id")  # the login linked the account to a new MetagovID
    assert person.startswith("mgid_")
    assert back == {"community": ["commons"], "user_id": [ACCOUNT["id"]], "state": ["driver-1"]}
    assert form(revoked.calls.last.request)["token"] == ACCESS


async def test_refusals_go_back_to_the_driver(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    sent = await authorize(gw, driver)
    respx_mock.post(f"{API}/2/oauth2/token").respond(
        400,
        json={
            "error": "invalid_request",
            "error_description": "Value passed for the authorization code was invalid.",
        },
    )
    done = await gw.client.get(
        f"/auth/x/callback?{urlencode({'state': sent['state'], 'code': 'stale'})}"
    )
    back = parse_qs(urlsplit(done.headers["location"]).query)
    assert back["error"] == ["invalid_request"]
    assert back["error_description"] == ["Value passed for the authorization code was invalid."]

    declined = await authorize(gw, driver)
    done = await gw.client.get(
        f"/auth/x/callback?{urlencode({'state': declined['state'], 'error': 'access_denied'})}"
    )
    assert parse_qs(urlsplit(done.headers["location"]).query)["error"] == ["access_denied"]
    community = await gw.client.get("/api/internal/community/commons", headers=driver.headers)
    assert community.json()["plugins"] == []


@pytest.mark.parametrize("app_settings", [XSettings(api_url=API)])
async def test_without_an_app_the_install_is_refused(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    refused = await gw.start_install(driver, "x", "commons", redirect_uri=DONE)
    assert refused.status_code == 400
    assert "METAGOV_X__CLIENT_ID" in refused.json()["detail"]


@pytest.mark.parametrize(
    "app_settings", [x_settings(client_secret=None, pkce_secret="a-long-random-pkce-key")]
)
async def test_a_public_client_sends_its_id_and_no_basic_auth(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    sent = await authorize(gw, driver)
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted(ACCESS, REFRESH))
    respx_mock.get(f"{API}/2/users/me").respond(200, json={"data": ACCOUNT})
    await gw.client.get(f"/auth/x/callback?{urlencode({'state': sent['state'], 'code': 'c'})}")
    request = token.calls.last.request
    assert "authorization" not in request.headers
    assert form(request)["client_id"] == CLIENT_ID
    assert s256(form(request)["code_verifier"]) == sent["code_challenge"]


async def test_tokens_about_to_expire_are_renewed_before_the_call(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    sent = await authorize(gw, driver)
    token = respx_mock.post(f"{API}/2/oauth2/token")
    token.side_effect = [granted(ACCESS, REFRESH, expires_in=60), granted("AT2", "RT2")]
    respx_mock.get(f"{API}/2/users/me").respond(200, json={"data": ACCOUNT})
    await gw.client.get(f"/auth/x/callback?{urlencode({'state': sent['state'], 'code': 'c'})}")
    lookup = respx_mock.get(f"{API}/2/users/by/username/XDevelopers").respond(
        200, json={"data": {"id": "2244994945", "name": "Developers", "username": "XDevelopers"}}
    )

    first = await act(gw, driver, "x.get-user", username="XDevelopers")
    second = await act(gw, driver, "x.get-user", username="XDevelopers")

    assert first.status_code == second.status_code == 200, first.text
    assert token.call_count == 2  # the code exchange, then one renewal
    renewal = form(token.calls[1].request)
    assert renewal == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": CLIENT_ID,
    }
    assert [c.request.headers["authorization"] for c in lookup.calls] == ["Bearer AT2"] * 2
