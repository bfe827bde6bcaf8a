"""RevShare: weighted payment pointers kept in the community's plugin state, edited by the
Driver, read and picked from by anyone who names the community (public actions)."""

from __future__ import annotations

import importlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from metagov.config import Settings
from metagov.plugins.revshare.plugin import RevSharePlugin
from metagov.plugins.revshare.schemas import KeyParams
from metagov.plugins.sdk import PluginContext, State
from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry

ALICE = "$wallet.example/alice"
BOB = "https://wallet.example/bob"


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[TestGateway]:
    async with open_gateway(settings, make_registry()) as gateway:
        yield gateway


@pytest.fixture
async def driver(gw: TestGateway) -> DriverCredentials:
    driver = await gw.create_driver("alice")
    await gw.create_community(driver, "commons", [{"name": "revshare", "config": {}}])
    return driver


async def act(
    gw: TestGateway, driver: DriverCredentials, slug: str, **parameters: Any
) -> httpx.Response:
    return await gw.client.post(
        f"/api/internal/action/revshare.{slug}",
        json={"parameters": parameters},
        headers=driver.to("commons"),
    )


async def public(gw: TestGateway, slug: str, **parameters: Any) -> httpx.Response:
    return await gw.client.post(
        f"/api/action/revshare.{slug}",
        json={"parameters": parameters},
        headers={"X-Metagov-Community": "commons"},
    )


async def test_pointers_are_added_updated_removed_and_read_publicly(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    added = await act(gw, driver, "add-pointer", pointer=ALICE, weight=1)
    assert added.status_code == 200, added.text
    assert added.json() == {"key": "_DEFAULT", "pointers": {ALICE: 1}}
    await act(gw, driver, "add-pointer", pointer=BOB, weight=3)
    updated = await act(gw, driver, "add-pointer", pointer=ALICE, weight=2)
    assert updated.json()["pointers"] == {ALICE: 2, BOB: 3}

    read = await public(gw, "get-config")
    assert read.status_code == 200, read.text
    assert read.json() == {"key": "_DEFAULT", "pointers": {ALICE: 2, BOB: 3}}

    removed = await act(gw, driver, "remove-pointer", pointer=ALICE)
    assert removed.json()["pointers"] == {BOB: 3}
    again = await act(gw, driver, "remove-pointer", pointer=ALICE)
    assert again.status_code == 200
    assert again.json()["pointers"] == {BOB: 3}
    assert (await public(gw, "pick-pointer")).json() == {"pointer": BOB}


async def test_keys_keep_separate_configs_and_replace_swaps_a_whole_one(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    await act(gw, driver, "add-pointer", pointer=ALICE, weight=5)
    replaced = await act(
        gw, driver, "replace-config", key="blog", pointers={BOB: 1, "$ilp.example": 4}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {"key": "blog", "pointers": {BOB: 1, "$ilp.example": 4}}
    assert (await public(gw, "get-config", key="blog")).json()["pointers"] == {
        BOB: 1,
        "$ilp.example": 4,
    }
    assert (await public(gw, "get-config")).json()["pointers"] == {ALICE: 5}

    emptied = await act(gw, driver, "replace-config", key="blog", pointers={})
    assert emptied.json() == {"key": "blog", "pointers": {}}
    empty = await public(gw, "pick-pointer", key="blog")
    assert empty.status_code == 404
    assert empty.json()["code"] == "revshare_empty"
    assert "blog" in empty.json()["detail"]


BAD_ADDITIONS: list[tuple[dict[str, Any], str]] = [
    ({"pointer": ALICE, "weight": 0}, "weight"),
    ({"pointer": ALICE, "weight": -2}, "weight"),
    ({"pointer": ALICE, "weight": 1.5}, "weight"),
    ({"pointer": ALICE, "weight": "3"}, "weight"),
    ({"pointer": "alice", "weight": 1}, "pointer"),
    ({"pointer": "http://wallet.example/alice", "weight": 1}, "pointer"),
    ({"pointer": "$wallet.example/alice?x=1", "weight": 1}, "pointer"),
    ({"pointer": "$", "weight": 1}, "pointer"),
    ({"pointer": ALICE, "weight": 1, "key": "no spaces"}, "key"),
]


async def test_bad_pointers_and_weights_are_refused_naming_the_field(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    for parameters, field in BAD_ADDITIONS:
        response = await act(gw, driver, "add-pointer", **parameters)
        assert response.status_code == 422, (parameters, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert [e["loc"][-1] for e in body["errors"]] == [field], parameters
    assert (await public(gw, "get-config")).json()["pointers"] == {}


async def test_replace_config_validates_every_pointer_and_weight(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    bad = await act(gw, driver, "replace-config", pointers={ALICE: 1, "nope": 2, BOB: 0})
    assert bad.status_code == 422
    assert len(bad.json()["errors"]) == 2
    too_many = {f"$wallet.example/u{i}": 1 for i in range(101)}
    refused = await act(gw, driver, "replace-config", pointers=too_many)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"][-1] == "pointers"


async def test_a_config_holds_at_most_a_hundred_pointers(
    gw: TestGateway, driver: DriverCredentials
) -> None:
    full = {f"$wallet.example/u{i}": 1 for i in range(100)}
    assert (await act(gw, driver, "replace-config", pointers=full)).status_code == 200
    refused = await act(gw, driver, "add-pointer", pointer=ALICE, weight=1)
    assert refused.status_code == 400
    assert refused.json()["code"] == "revshare_full"
    reweighed = await act(gw, driver, "add-pointer", pointer="$wallet.example/u7", weight=9)
    assert reweighed.status_code == 200


async def test_only_reads_are_public(gw: TestGateway, driver: DriverCredentials) -> None:
    sneaky = await public(gw, "add-pointer", pointer=ALICE, weight=1)
    assert sneaky.status_code in (404, 405)
    unknown = await gw.client.post(
        "/api/action/revshare.get-config", headers={"X-Metagov-Community": "elsewhere"}
    )
    assert unknown.status_code == 404
    no_key = await gw.client.post(
        "/api/internal/action/revshare.add-pointer",
        json={"parameters": {"pointer": ALICE, "weight": 1}},
        headers={"X-Metagov-Community": "commons"},
    )
    assert no_key.status_code == 401
    assert (await public(gw, "get-config")).json()["pointers"] == {}


async def test_picks_follow_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("metagov.plugins.revshare.plugin")
    monkeypatch.setattr(module, "_rng", random.Random(20240601))
    ctx: PluginContext[Any] = PluginContext(
        community="commons",
        plugin_name="revshare",
        instance_id=1,
        community_platform_id=None,
        config=None,  # type: ignore[arg-type]
        state=State({"pointers:_DEFAULT": {ALICE: 1, BOB: 3}}),
        http=None,  # type: ignore[arg-type]
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
    )
    plugin = RevSharePlugin()
    picks = Counter([(await plugin.pick_pointer(ctx, KeyParams())).pointer for _ in range(4000)])
    assert set(picks) == {ALICE, BOB}
    assert 0.7 < picks[BOB] / 4000 < 0.8  # weight 3 of 4
