"""Open Collective actions: the GraphQL operations and variables Open Collective receives, what
the Driver gets back, nothing done on another collective's conversations or expenses, and Open
Collective's refusals as clear errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.opencollective.conftest import (
    PERSONAL_TOKEN,
    WEBSITE,
    FakeOpenCollective,
    act,
    conversation,
    expense,
    refused,
)


async def test_list_members(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    oc.on(
        "Members",
        {
            "data": {
                "account": {
                    "members": {
                        "totalCount": 41,
                        "nodes": [
                            {
                                "id": "m3mb3r1",
                                "role": "ADMIN",
                                "since": "2021-01-05T16:10:21.149Z",
                                "account": {
                                    "id": "adm1n",
                                    "slug": "bo-admin",
                                    "name": "Bo",
                                    "type": "INDIVIDUAL",
                                },
                            }
                        ],
                    }
                }
            }
        },
    )
    response = await act(gateway, driver, "list-members", limit=1, offset=40)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "total_count": 41,
        "members": [
            {
                "id": "m3mb3r1",
                "role": "ADMIN",
                "since": "2021-01-05T16:10:21.149Z",
                "account": {"id": "adm1n", "slug": "bo-admin", "name": "Bo", "type": "INDIVIDUAL"},
            }
        ],
    }
    assert oc.variables("Members") == [{"slug": "metagov", "limit": 1, "offset": 40}]


async def test_create_conversation_and_comment(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    oc.on("CreateConversation", {"data": {"createConversation": conversation()}})
    oc.on("Conversation", {"data": {"conversation": conversation()}})
    oc.on(
        "CreateComment",
        {
            "data": {
                "createComment": {
                    "id": "c0mment2",
                    "createdAt": "2021-10-01T10:00:00.000Z",
                    "html": "<p>Agreed.</p>",
                }
            }
        },
    )
    started = await act(
        gateway,
        driver,
        "create-conversation",
        title="Should we pay for the server?",
        html="<p>Hosting is due.</p>",
        tags=["budget"],
    )
    commented = await act(
        gateway,
        driver,
        "create-comment",
        conversation_id="d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8",
        html="<p>Agreed.</p>",
    )

    assert started.status_code == 200, started.text
    assert started.json()["url"] == (
        f"{WEBSITE}/metagov/conversations/should-we-pay-for-the-server-"
        "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8"
    )
    assert oc.variables("CreateConversation") == [
        {
            "title": "Should we pay for the server?",
            "html": "<p>Hosting is due.</p>",
            "account": {"slug": "metagov"},
            "tags": ["budget"],
        }
    ]
    assert commented.status_code == 200, commented.text
    assert commented.json() == {
        "id": "c0mment2",
        "created_at": "2021-10-01T10:00:00.000Z",
        "html": "<p>Agreed.</p>",
    }
    assert oc.variables("CreateComment") == [
        {
            "comment": {
                "html": "<p>Agreed.</p>",
                "conversation": {"id": "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8"},
            }
        }
    ]


async def test_no_comment_in_another_collectives_conversation(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    foreign = {**conversation(), "account": {"id": "x", "slug": "someone-else"}}
    oc.on("Conversation", {"data": {"conversation": foreign}})
    response = await act(
        gateway, driver, "create-comment", conversation_id="d4yx5jen", html="<p>Hi</p>"
    )

    assert response.status_code == 404
    assert response.json()["detail"] == "conversation d4yx5jen is not one of this collective's"
    assert oc.operations() == ["Conversation"]


async def test_process_expense_by_number(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    oc.on("Expense", {"data": {"expense": expense(status="PENDING")}})
    oc.on("ProcessExpense", {"data": {"processExpense": expense(status="APPROVED")}})
    response = await act(
        gateway, driver, "process-expense", expense_id="51344", action="APPROVE", message="OK'd"
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "APPROVED"
    assert response.json()["url"] == f"{WEBSITE}/metagov/expenses/51344"
    assert oc.variables("Expense") == [{"expense": {"legacyId": 51344}}]
    assert oc.variables("ProcessExpense") == [
        {
            "expense": {"id": "x9ed7w0j-k3oqv4ak-o3e5kbmr-lzyxg8p7"},
            "action": "APPROVE",
            "message": "OK'd",
        }
    ]


async def test_no_decision_on_another_collectives_expense(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    other = {
        "id": "0ther",
        "legacyId": 999,
        "slug": "someone-else",
        "name": "X",
        "type": "COLLECTIVE",
    }
    oc.on("Expense", {"data": {"expense": expense(account=other)}})
    response = await act(
        gateway, driver, "process-expense", expense_id="x9ed7w0j-k3oqv4ak", action="REJECT"
    )

    assert response.status_code == 404
    assert oc.variables("Expense") == [{"expense": {"id": "x9ed7w0j-k3oqv4ak"}}]
    assert "ProcessExpense" not in oc.operations()


async def test_only_the_three_decisions_are_accepted(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    response = await act(gateway, driver, "process-expense", expense_id=51344, action="PAY")

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "action"
    assert oc.calls == []


@pytest.mark.parametrize(
    ("answer", "status", "code", "detail"),
    [
        (
            httpx.Response(
                200,
                json=refused(
                    "You need to be logged in as an admin of this collective",
                    "Forbidden",
                    "createConversation",
                ),
            ),
            400,
            "opencollective_error",
            "Open Collective refused the conversation: You need to be logged in as an admin",
        ),
        (
            httpx.Response(429, headers={"Retry-After": "12"}),
            429,
            "rate_limited",
            "Open Collective is rate limiting the conversation",
        ),
        (
            httpx.Response(502, text="Bad Gateway"),
            502,
            "upstream_error",
            "Open Collective answered 502 to the conversation",
        ),
    ],
)
async def test_open_collective_errors_are_clear(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    answer: httpx.Response,
    status: int,
    code: str,
    detail: str,
) -> None:
    oc.on("CreateConversation", answer)
    response = await act(gateway, driver, "create-conversation", title="x", html="<p>x</p>")

    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["detail"].startswith(detail)
    assert PERSONAL_TOKEN not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "12"
