"""Loomio actions: what Loomio receives (the subgroup's key when a subgroup is named), what the
Driver gets back, and Loomio's refusals as clear errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.loomio.conftest import (
    API,
    LOOMIO,
    MAIN_KEY,
    SUB_KEY,
    FakeLoomio,
    poll_record,
)


async def act(
    gateway: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gateway.client.post(
        f"/api/internal/action/loomio.{slug}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


async def test_list_members_of_the_group_and_of_a_subgroup(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    loomio.memberships.reset()
    main = await act(gateway, driver, "list-members")
    sub = await act(gateway, driver, "list-members", subgroup="Xy12AbCd")

    assert main.status_code == sub.status_code == 200, main.text
    assert main.json()["group"] == {
        "id": 710495,
        "key": "ZrSTqeyG",
        "handle": "metagov",
        "name": "Metagovernance Project",
    }
    assert main.json()["members"] == [
        {
            "user_id": 4759171,
            "name": "policykit.org",
            "username": "policykitorg",
            "email": "bot@policykit.test",
            "admin": False,
        },
        {
            "user_id": 879750,
            "name": "Ana Lima",
            "username": "analima",
            "email": "ana@example.test",
            "admin": True,
        },
    ]
    assert sub.json()["group"]["name"] == "Finance"
    queries = [dict(call.request.url.params) for call in loomio.memberships.calls]
    assert queries == [
        {"from": "0", "per": "100", "api_key": MAIN_KEY},
        {"from": "0", "per": "100", "api_key": SUB_KEY},
    ]


async def test_an_unknown_subgroup_is_named(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    response = await act(gateway, driver, "list-members", subgroup="nowhere")

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_subgroup"
    assert "'nowhere'" in response.json()["detail"]
    assert "Xy12AbCd" in response.json()["detail"]


async def test_create_discussion_sends_the_fields_and_the_key_in_the_body(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    response = await act(
        gateway,
        driver,
        "create-discussion",
        title="Next quarter's budget",
        description="Let's talk.",
        description_format="md",
        recipient_audience="group",
        subgroup="xy12abcd",
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": 55502,
        "key": "nEwD1scs",
        "title": "Next quarter's budget",
        "url": f"{LOOMIO}/d/nEwD1scs",
        "group_id": 710495,
        "author_id": 879750,
        "created_at": "2021-09-28T18:00:00.000Z",
    }
    [call] = loomio.discussion_creates.calls
    assert call.request.url == f"{API}/discussions"
    assert call.request.headers["content-type"] == "application/json"
    assert json.loads(call.request.content) == {
        "title": "Next quarter's budget",
        "description": "Let's talk.",
        "description_format": "md",
        "recipient_audience": "group",
        "api_key": SUB_KEY,
    }


async def test_get_poll_by_key_or_id(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    loomio.polls["m20ZprvH"] = poll_record(
        poll_type="poll", voters={"Tacos": [879750, 4759171], "Pizza": []}
    )
    by_key = await act(gateway, driver, "get-poll", poll="m20ZprvH")
    by_id = await act(gateway, driver, "get-poll", poll="234203")

    assert by_key.status_code == 200, by_key.text
    assert by_key.json() == by_id.json()
    assert by_key.json() == {
        "id": 234203,
        "key": "m20ZprvH",
        "title": "Adopt the budget",
        "poll_type": "poll",
        "closing_at": "2030-10-01T00:00:00.000Z",
        "closed_at": None,
        "group_id": 710495,
        "author_id": 4759171,
        "votes": {
            "Tacos": {"count": 2, "users": ["879750", "4759171"], "score": 2},
            "Pizza": {"count": 0, "users": [], "score": 0},
        },
        "voters_count": 3,
        "undecided_voters_count": 1,
        "cast_stances_pct": 67,
        "url": f"{LOOMIO}/p/m20ZprvH",
    }
    missing = await act(gateway, driver, "get-poll", poll="NoSuchP0")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Loomio found no poll NoSuchP0", "code": "loomio_error"}


async def test_a_public_poll_of_another_group_is_not_ours(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    loomio.poll_answers["PubL1cPo"] = {"polls": [poll_record(key="PubL1cPo", group_id=99)]}
    response = await act(gateway, driver, "get-poll", poll="PubL1cPo")
    assert response.status_code == 404
    assert "not a poll of this group" in response.json()["detail"]


@pytest.mark.parametrize(
    ("answer", "status", "code", "detail"),
    [
        (
            httpx.Response(422, json={"errors": {"title": ["can't be blank"]}}),
            400,
            "loomio_error",
            "Loomio refused the discussion: title can't be blank",
        ),
        (
            httpx.Response(403, json={"exception": "CanCan::AccessDenied"}),
            400,
            "loomio_error",
            "Loomio refused the API key for the discussion (CanCan::AccessDenied)",
        ),
        (
            httpx.Response(429, headers={"Retry-After": "30"}),
            429,
            "rate_limited",
            "Loomio is rate limiting the discussion",
        ),
        (httpx.Response(503), 502, "upstream_error", "Loomio answered 503 to the discussion"),
        (
            httpx.ConnectError("boom"),
            502,
            "upstream_error",
            "Loomio could not be reached: ConnectError",
        ),
    ],
)
async def test_loomio_errors_are_clear(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    loomio: FakeLoomio,
    answer: httpx.Response | Exception,
    status: int,
    code: str,
    detail: str,
) -> None:
    if isinstance(answer, Exception):
        loomio.discussion_creates.mock(side_effect=answer)
    else:
        loomio.discussion_creates.mock(return_value=answer)
    response = await act(gateway, driver, "create-discussion", title="x")

    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["detail"].startswith(detail)
    assert MAIN_KEY not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "30"


async def test_parameters_are_checked_before_loomio_is_asked(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    respx_mock: respx.MockRouter,
    loomio: FakeLoomio,
) -> None:
    response = await act(gateway, driver, "get-poll", poll="../memberships")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "poll"
    assert not loomio.poll_reads.called
