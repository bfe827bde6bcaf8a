"""The OpenAPI document is exact and stable: it validates, it marks the headers the server
requires as required, and its operation ids (which generated clients in other languages are named
after) change only on purpose: ``operation_ids.txt`` pins them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from openapi_spec_validator import validate

from tests.conftest import DriverKey

PINNED = Path(__file__).with_name("operation_ids.txt")


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


async def test_the_document_validates(client: httpx.AsyncClient) -> None:
    validate(await document(client))


async def test_operation_ids_are_pinned(client: httpx.AsyncClient) -> None:
    found = sorted(operations(await document(client)))
    pinned = PINNED.read_text().split()
    assert found == pinned, (
        "operation ids changed; generated clients would break. If on purpose, update "
        f"{PINNED.name}: added {sorted(set(found) - set(pinned))}, "
        f"removed {sorted(set(pinned) - set(found))}"
    )


async def test_the_community_header_is_required_where_the_server_requires_it(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    spec = await document(client)
    header = "X-Metagov-Community"
    declared = {
        op_id: next((p["required"] for p in op.get("parameters", []) if p["name"] == header), None)
        for op_id, op in operations(spec).items()
    }
    assert declared["randomness.random-int"] is True
    assert declared["processes.list"] is True
    assert declared["events.list"] is False  # it only narrows the list
    # And the server indeed refuses a request without it.
    missing = await client.post("/api/internal/action/randomness.random-int", headers=alice.headers)
    assert missing.status_code == 400
    assert missing.json()["code"] == "missing_community"
