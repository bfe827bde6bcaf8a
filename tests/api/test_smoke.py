from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import DriverKey


async def test_random_int_uses_the_configured_bounds(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    seen = set()
    for _ in range(30):
        response = await client.post(
            "/api/internal/action/randomness.random-int", headers=alice.to("commons")
        )
        assert response.status_code == 200, response.text
        seen.add(response.json()["value"])
    assert seen <= set(range(1, 7))
