"""Actions on the installation's repositories: what GitHub receives, what the Driver gets back,
the allow-listed ``method``, and GitHub's errors as the Driver sees them."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.github.fake import (
    API,
    APP_ID,
    INSTALLATION,
    OWNER,
    REPO,
    FakeGitHub,
    issue_json,
    user,
)

ACTION = "/api/internal/action/github."


async def act(
    gateway: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gateway.client.post(
        f"{ACTION}{slug}", json={"parameters": parameters}, headers=driver.to("commons")
    )


def label(name: str) -> dict[str, Any]:
    return {
        "id": 208045946,
        "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=",
        "url": f"{API}/repos/{OWNER}/{REPO}/labels/{name}",
        "name": name,
        "description": None,
        "color": "f29513",
        "default": False,
    }


def sent(route: Any) -> tuple[str, str, Any]:
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer ghs_token001"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    body = json.loads(request.content) if request.content else None
    return request.method, request.url.path, body


async def test_issue_and_pull_request_actions(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    created = github.router.post(github.repo("/issues")).respond(201, json=issue_json(42))
    commented = github.router.post(github.repo("/issues/42/comments")).respond(
        201,
        json={
            "id": 1081119451,
            "node_id": "IC_kwDOF9hP9c5Ab7Tb",
            "url": f"{API}/repos/{OWNER}/{REPO}/issues/comments/1081119451",
            "html_url": f"https://github.test/{OWNER}/{REPO}/issues/42#issuecomment-1081119451",
            "body": "Decided.",
            "user": user("metagov-governance[bot]", 98765, "Bot"),
        },
    )
    closed = github.router.patch(github.repo("/issues/42")).respond(
        json=issue_json(42, state="closed")
    )
    labelled = github.router.post(github.repo("/issues/42/labels")).respond(
        json=[label("governance"), label("needs review")]
    )
    unlabelled = github.router.delete(github.repo("/issues/42/labels/needs%20review")).respond(
        json=[label("governance")]
    )
    merged = github.router.put(github.repo("/pulls/43/merge")).respond(
        json={
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "merged": True,
            "message": "Pull Request successfully merged",
        }
    )

    answer = await act(
        gateway,
        driver,
        "create-issue",
        repo=REPO,
        title="Adopt a code of conduct",
        body="See the draft.",
        labels=["governance"],
        assignees=["octocat"],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "number": 42,
        "url": f"https://github.test/{OWNER}/{REPO}/issues/42",
        "state": "open",
    }
    assert sent(created) == (
        "POST",
        f"/repos/{OWNER}/{REPO}/issues",
        {
            "title": "Adopt a code of conduct",
            "body": "See the draft.",
            "labels": ["governance"],
            "assignees": ["octocat"],
        },
    )

    answer = await act(gateway, driver, "comment", repo=REPO, issue_number=42, body="Decided.")
    assert answer.json() == {
        "id": 1081119451,
        "url": f"https://github.test/{OWNER}/{REPO}/issues/42#issuecomment-1081119451",
    }
    assert sent(commented)[2] == {"body": "Decided."}

    answer = await act(
        gateway, driver, "close-issue", repo=REPO, issue_number=42, reason="not_planned"
    )
    assert answer.json()["state"] == "closed"
    assert sent(closed)[2] == {"state": "closed", "state_reason": "not_planned"}

    answer = await act(
        gateway, driver, "add-labels", repo=REPO, issue_number=42, labels=["needs review"]
    )
    assert answer.json() == {"labels": ["governance", "needs review"]}
    assert sent(labelled)[2] == {"labels": ["needs review"]}

    answer = await act(
        gateway, driver, "remove-label", repo=REPO, issue_number=42, label="needs review"
    )
    assert answer.json() == {"labels": ["governance"]}
    assert sent(unlabelled)[0] == "DELETE"

    answer = await act(
        gateway, driver, "merge-pull-request", repo=REPO, number=43, merge_method="squash"
    )
    assert answer.json() == {
        "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "merged": True,
        "message": "Pull Request successfully merged",
    }
    assert sent(merged)[2] == {"merge_method": "squash"}
    assert github.tokens == ["ghs_token001"]


async def test_get_installation_reads_it_as_the_app(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    answer = await act(gateway, driver, "get-installation")

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "id": INSTALLATION,
        "owner": OWNER,
        "owner_type": "Organization",
        "repository_selection": "selected",
        "permissions": {"issues": "write", "metadata": "read", "pull_requests": "write"},
        "events": ["issues", "issue_comment", "pull_request"],
        "html_url": f"https://github.test/organizations/{OWNER}/settings/installations/{INSTALLATION}",
        "suspended_at": None,
    }
    assert github.claims(github.installation.calls.last.request)["iss"] == APP_ID


@pytest.mark.parametrize(
    "github_overrides", [{"extra_methods": "PUT /repos/{owner}/{repo}/topics"}]
)
async def test_method_calls_only_allowed_routes_as_the_installation(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    listed = github.router.get(github.repo("/issues")).respond(json=[issue_json(1)])
    topics = github.router.put(github.repo("/topics")).respond(json={"names": ["governance"]})

    answer = await act(
        gateway,
        driver,
        "method",
        route="/repos/{owner}/hello-world/issues",
        params={"state": "open", "labels": "vote"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": 200, "response": [issue_json(1)]}
    request = listed.calls.last.request
    assert request.headers["authorization"] == "Bearer ghs_token001"
    assert dict(request.url.params) == {"state": "open", "labels": "vote"}

    # The operator's extra routes are allowed too; a body goes as JSON.
    answer = await act(
        gateway,
        driver,
        "method",
        method="PUT",
        route=f"/repos/{OWNER}/hello-world/topics",
        params={"names": ["governance"]},
    )
    assert answer.json() == {"status": 200, "response": {"names": ["governance"]}}
    assert json.loads(topics.calls.last.request.content) == {"names": ["governance"]}

    for route, method in [
        ("/repos/{owner}/hello-world", "DELETE"),  # not on the allow-list
        ("/repos/someone-else/hello-world/issues", "GET"),  # another account's repository
        ("/repos/{owner}/{repo}/issues", "GET"),  # a placeholder left unfilled
        ("/admin/users", "POST"),
    ]:
        refused = await act(gateway, driver, "method", route=route, method=method)
        assert refused.status_code == 400, (route, refused.text)
        assert refused.json()["code"] == "github_route_not_allowed"

    for params in [
        {"route": "/repos/{owner}/hello-world/issues", "params": {"access_token": "ghp_x"}},
        {"route": "https://evil.test/steal"},
        {"route": "/repos/{owner}/../../user"},
        {"route": "/repos/{owner}/hello-world%2F..%2F..%2Fuser/issues"},
    ]:
        invalid = await act(gateway, driver, "method", **params)
        assert invalid.status_code == 422, (params, invalid.text)
    assert len(listed.calls) == 1 and github.tokens == ["ghs_token001"]


async def test_bad_parameters_name_the_field(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    answer = await act(gateway, driver, "create-issue", repo="octo-org/hello-world", title="x")

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "parameters", "repo"]


def secondary_limit() -> dict[str, Any]:
    return {
        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before "
        "you try again.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        "status": "403",
    }


async def test_github_errors_reach_the_driver_clearly(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    reset = int(time.time()) + 120
    cases: list[tuple[httpx.Response | Exception, int, str, str | None]] = [
        (
            httpx.Response(404, json={"message": "Not Found", "status": "404"}),
            404,
            "github_error",
            "Not Found",
        ),
        (
            httpx.Response(
                422,
                json={
                    "message": "Validation Failed",
                    "errors": [{"resource": "Issue", "code": "invalid", "field": "assignees"}],
                    "status": "422",
                },
            ),
            422,
            "github_error",
            "Validation Failed (Issue assignees invalid)",
        ),
        (
            httpx.Response(
                403, json={"message": "Resource not accessible by integration", "status": "403"}
            ),
            403,
            "github_error",
            "Resource not accessible by integration",
        ),
        (
            httpx.Response(
                410, json={"message": "Issues are disabled for this repo", "status": "410"}
            ),
            400,
            "github_error",
            "Issues are disabled for this repo",
        ),
        (httpx.Response(403, json=secondary_limit(), headers={"retry-after": "30"}), 429, "", "30"),
        (httpx.Response(403, json=secondary_limit()), 429, "rate_limited", "60"),
        (
            httpx.Response(
                403,
                json={"message": f"API rate limit exceeded for installation ID {INSTALLATION}."},
                headers={
                    "x-ratelimit-limit": "5000",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-used": "5000",
                    "x-ratelimit-reset": str(reset),
                },
            ),
            429,
            "rate_limited",
            None,
        ),
        (httpx.Response(429, json={"message": "Too Many Requests"}), 429, "rate_limited", "60"),
        (httpx.Response(502, text="<html>Bad gateway</html>"), 502, "upstream_error", None),
        (httpx.ConnectError("refused"), 502, "upstream_error", None),
    ]
    route = github.router.post(github.repo("/issues"))
    for answer, status, code, words in cases:
        if isinstance(answer, Exception):
            route.mock(side_effect=answer)
        else:
            route.mock(side_effect=None, return_value=answer)

        response = await act(gateway, driver, "create-issue", repo=REPO, title="x")

        assert response.status_code == status, (answer, response.text)
        body = response.json()
        assert "ghs_" not in response.text
        if status == 429:
            assert body["code"] == "rate_limited"
            expected = words or str(reset - int(time.time()))
            assert abs(int(response.headers["retry-after"]) - int(expected)) <= 2
        else:
            assert body["code"] == code
            if words:
                assert words in body["detail"], body
                assert f"POST /repos/{OWNER}/{REPO}/issues" in body["detail"]
