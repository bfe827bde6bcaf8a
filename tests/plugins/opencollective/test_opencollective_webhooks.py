"""Open Collective's unsigned webhooks: refused without the URL token, stored once per activity,
and the expense they name read again and checked to be the collective's before the Driver hears
of it. Bodies are shaped as Open Collective's sanitized activities
(``{createdAt, id, type, CollectiveId, data: {expense, fromCollective, collective}}``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from metagov.testing import TestGateway
from tests.plugins.opencollective.conftest import (
    COLLECTIVE,
    PROJECT,
    TOKEN,
    WEBSITE,
    FakeOpenCollective,
    events,
    expense,
)


def activity(
    kind: str = "collective.expense.approved",
    *,
    activity_id: int = 4417734,
    expense_id: int = 51344,
    created_at: str = "2021-09-28T19:02:11.512Z",
    collective_id: int = 11004,
) -> dict[str, Any]:
    return {
        "createdAt": created_at,
        "id": activity_id,
        "type": kind,
        "CollectiveId": collective_id,
        "data": {
            "expense": {
                "idV2": "x9ed7w0j-k3oqv4ak-o3e5kbmr-lzyxg8p7",
                "id": expense_id,
                "description": "Server hosting for March",
                "amount": 12000,
                "currency": "USD",
                "formattedAmount": "$120.00",
                "formattedAmountWithInterval": "$120.00",
            },
            "fromCollective": {
                "idV2": "p0yee1d",
                "id": 802,
                "type": "USER",
                "slug": "ana-lima",
                "name": "Ana Lima",
            },
            "collective": {
                "idV2": COLLECTIVE["id"],
                "id": 11004,
                "type": "COLLECTIVE",
                "slug": "metagov",
                "name": "Metagov",
            },
        },
    }


async def post_hook(
    gateway: TestGateway, body: dict[str, Any], *, token: str | None = TOKEN
) -> httpx.Response:
    query = "?community_platform_id=metagov" + (f"&token={token}" if token else "")
    return await gateway.client.post(
        f"/api/hooks/commons/opencollective{query}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize("token", [None, "not-the-token-0123456789"])
async def test_a_webhook_without_the_token_is_refused_and_not_kept(
    gateway: TestGateway,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
    token: str | None,
) -> None:
    response = await post_hook(gateway, activity(), token=token)

    assert response.status_code == 401
    assert await gateway.drain() == 0
    assert not driver_events.called
    assert oc.calls == []


async def test_an_approval_reaches_the_driver_once_with_the_expense_read_again(
    gateway: TestGateway,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    oc.on("Expense", {"data": {"expense": expense()}})
    body = activity()
    body["data"]["expense"]["description"] = "Forged description"  # not trusted

    first = await post_hook(gateway, body)
    again = await post_hook(gateway, body)
    assert first.status_code == again.status_code == 200
    await gateway.drain()

    [event] = events(driver_events)
    assert event["source"] == "opencollective"
    assert event["event_type"] == "expense_approved"
    assert event["data"] == {
        "id": "x9ed7w0j-k3oqv4ak-o3e5kbmr-lzyxg8p7",
        "legacy_id": 51344,
        "description": "Server hosting for March",
        "amount": 12000,
        "currency": "USD",
        "type": "INVOICE",
        "status": "APPROVED",
        "created_at": "2021-09-28T18:40:00.000Z",
        "tags": ["hosting"],
        "account": {
            "id": COLLECTIVE["id"],
            "slug": "metagov",
            "name": "Metagov",
            "type": "COLLECTIVE",
        },
        "payee": {"id": "p0yee1d", "slug": "ana-lima", "name": "Ana Lima", "type": None},
        "created_by": {"id": "p0yee1d", "slug": "ana-lima", "name": "Ana Lima", "type": None},
        "url": f"{WEBSITE}/metagov/expenses/51344",
    }
    assert event["initiator"] == {
        "user_id": "bo-admin",
        "provider": "opencollective",
        "is_metagov_bot": False,
    }
    assert oc.variables("Expense") == [{"expense": {"legacyId": 51344}}]


async def test_expense_events_are_named_after_the_activity(
    gateway: TestGateway,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    project = {**PROJECT, "parent": {"id": COLLECTIVE["id"], "legacyId": 11004, "slug": "metagov"}}
    oc.on("Expense", {"data": {"expense": expense(account=project, status="PENDING")}})
    kinds = [
        ("collective.expense.created", "2021-09-28T18:40:00.000Z"),
        ("collective.expense.scheduledForPayment", "2021-09-30T08:00:00.000Z"),
        ("collective.transaction.created", "2021-09-30T08:00:01.000Z"),  # not an expense
    ]
    for number, (kind, when) in enumerate(kinds):
        await post_hook(gateway, activity(kind, activity_id=100 + number, created_at=when))
    await gateway.drain()

    created, scheduled = events(driver_events)
    assert created["event_type"] == "expense_created"
    assert created["initiator"]["user_id"] == "ana-lima"  # the expense's author
    assert created["data"]["url"] == f"{WEBSITE}/metagov-research/expenses/51344"
    assert scheduled["event_type"] == "expense_scheduled_for_payment"
    assert scheduled["initiator"] is None  # no activity of the expense at that time


async def test_another_collectives_expense_is_ignored(
    gateway: TestGateway,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    other = {
        "id": "0ther",
        "legacyId": 999,
        "slug": "someone-else",
        "name": "X",
        "type": "COLLECTIVE",
    }
    oc.on("Expense", {"data": {"expense": expense(account=other)}})
    await post_hook(gateway, activity(collective_id=11004))  # the body claims it is ours
    await gateway.drain()

    assert not driver_events.called
    assert oc.operations() == ["Expense"]


async def test_a_deleted_expense_is_reported_by_number(
    gateway: TestGateway,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    oc.on("Expense", {"data": {"expense": None}})
    await post_hook(gateway, activity("collective.expense.deleted", activity_id=7))
    await post_hook(gateway, activity("collective.expense.deleted", activity_id=8, collective_id=1))
    await gateway.drain()

    [event] = events(driver_events)
    assert (event["event_type"], event["data"]) == ("expense_deleted", {"legacy_id": 51344})
