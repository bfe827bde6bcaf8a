"""Tenant isolation, checked for every route under ``/api/internal/``.

The routes are read from the app's own OpenAPI document, so a route added later (a new core route,
or a plugin's generated action, process or config route) is covered without touching this file.
Alice's community ``commons`` is fully set up: randomness and echo enabled, one process of each
pending, an event with a (dead) delivery to her event URL. For every route, with each path
parameter set to alice's real value (her slug, her instance, process and delivery ids):

a) a request without a Driver key, or with a key nobody was given, gets 401 with the standard
   error body ``{"detail", "code"}``;
b) Driver bob, naming ``commons`` in ``X-Metagov-Community``, gets 404 with a body that holds
   nothing of alice's (no platform id, secret, outcome...), except on the few routes listed in
   ``GLOBAL_ROUTES``: those are about no community and no single stored object, answer bob 2xx
   and still show nothing of alice's;
b') on routes that name an object by id, bob gets 404 also when he names a community of his own
   (with the same plugins): ids are looked up within the caller's community, not globally;
c) after those requests alice's data is exactly as before: the same rows in the database (her
   Driver, community, plugin instances with config, secrets and state, processes, events and
   deliveries), and through the API both plugins enabled and both processes pending.

A request body, where the operation takes one, is a plausible valid body (for example bob tries
to enable echo with alice's platform id, or to replace the community's plugins with none), so
that a missing ownership check shows up as a change to alice's data, not as a 422.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis.errors import NonInteractiveExampleWarning
from hypothesis.strategies import from_regex
from sqlalchemy import select, update

from metagov.db.models import Community, Delivery, Driver, Event, PluginInstance, Process
from metagov.runtime import Runtime
from tests.conftest import RANDOMNESS, DriverKey, make_community

COMMONS = "commons"
BOBS_OWN = "bobs-own"
# Never contacted: no job runs in the tests (`jobs_in_process` is off and there is no queue).
ALICE_EVENT_URL = "http://127.0.0.1:9/alice-events"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

# Routes about no community and no single stored object, which any Driver may call: catalogues
# of plugins, creating a community, and the caller's own deliveries (listed or replayed in bulk).
# Routes that create what they name when it does not exist.
CREATING_ROUTES = {("PUT", "/api/internal/community/{slug}")}
GLOBAL_ROUTES = {
    ("GET", "/api/internal/plugin-schemas"),
    ("GET", "/api/internal/plugin/{name}/metadata"),
    ("POST", "/api/internal/community"),
    ("GET", "/api/internal/deliveries"),
    ("POST", "/api/internal/deliveries/replay"),
}

# Bodies for operations where the smallest schema-valid body would not be a meaningful attempt.
# Keyed by operation id. Anything not listed gets a minimal body built from its JSON Schema.
BODIES: dict[str, Any] = {
    "community.create": {"slug": "bobs-place", "readable_name": "Bob's place"},
    # A broken ownership check would rename alice's community and disable all its plugins.
    "community.update": {"readable_name": "Taken over", "plugins": []},
    # Alice's own platform id: a broken lookup would re-configure alice's instance.
    "echo.enable": {"team_id": "TEAM-ALICE", "api_token": "tok-bob"},
    "echo.configure": {"team_id": "TEAM-ALICE", "greeting": "taken over"},
    "randomness.enable": {"default_low": 0, "default_high": 1},
    "randomness.configure": {"default_low": 0, "default_high": 1},
    "randomness.delayed-stochastic-vote": {"options": ["a", "b"], "delay_seconds": 600},
    "randomness.set-lucky-number": {"parameters": {"number": 13}},
    "echo.approval": {"question": "ok?"},
    "echo.say": {"parameters": {"text": "hi"}},
    "subscriptions.set": {"event_types": ["process.*"]},
    # Alice's community by name: a broken ownership check would add to it.
    "identity.create_id": {"community": COMMONS, "count": 1},
    "identity.link_account": {
        "id": "mgid_x",
        "community": COMMONS,
        "platform_type": "echo",
        "platform_identifier": "U1",
    },
    "identity.unlink_account": {
        "community": COMMONS,
        "platform_type": "echo",
        "platform_identifier": "U1",
    },
}

# Alice's data that must never reach bob, in any response: her platform id, her secret, her
# community's readable name, her event URL. ("commons" is bob's own input and may be echoed in a
# 404 detail.)
ALICE_DATA = ("TEAM-ALICE", "tok-123", "Commons", "alice-events")
# Fields of alice's records that have no business in an error body bob gets.
RECORD_FIELDS = ("outcome", "approvals", "closing_at", "secrets_set", "team_id", "plugins")


# --- the routes under test, read from the OpenAPI document ---------------------------------------


def internal_operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (METHOD, path template) under /api/internal/ in an OpenAPI document; reads first
    and deletes last, so that a route that wrongly destroys data is met as late as possible."""
    order = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}
    return sorted(
        (
            (method.upper(), path)
            for path, item in spec["paths"].items()
            if path.startswith("/api/internal/")
            for method in item
            if method in HTTP_METHODS
        ),
        key=lambda route: (order.get(route[0], 1), route[1], route[0]),
    )


# --- building a request from the OpenAPI operation ------------------------------------------------


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def minimal_instance(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """The smallest value valid for a (pydantic-generated) JSON Schema: required fields only."""
    schema = _resolve(schema, spec)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [_resolve(s, spec) for s in schema[key]]
            usable = [s for s in options if s.get("type") != "null"] or options
            return minimal_instance(usable[0], spec)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: minimal_instance(properties[name], spec) for name in schema.get("required", [])
        }
    if kind == "array":
        item = minimal_instance(schema.get("items", {}), spec)
        return [item] * int(schema.get("minItems", 0))
    if kind == "string":
        return _minimal_string(schema)
    if kind in ("integer", "number"):
        return max(0, int(schema.get("minimum", 0)))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def _minimal_string(schema: dict[str, Any]) -> str:
    """A short string the schema accepts: its length bounds, and its pattern if it has one."""
    length = max(1, int(schema.get("minLength", 1)))
    pattern = schema.get("pattern")
    if pattern is None:
        return "x" * length
    if re.search(pattern, "x" * length):
        return "x" * length
    longest = int(schema.get("maxLength", 1000))
    strings = from_regex(pattern).filter(lambda v: length <= len(v) <= longest and "\x00" not in v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        return strings.example()


def _pick(ids: dict[str, int], key: str) -> int:
    """Alice's id for exactly ``key``; else one of the same plugin; else any of hers. (A route
    about a kind she has none of, such as echo.platform-poll, must not reach her others.)"""
    plugin = key.partition(".")[0]
    candidates = [ids[key]] if key in ids else []
    candidates += [i for name, i in ids.items() if name.partition(".")[0] == plugin]
    candidates += ids.values()
    return candidates[0]


class AliceWorld:
    """Alice's community and the ids of what is in it."""

    def __init__(
        self,
        spec: dict[str, Any],
        instances: dict[str, int],
        processes: dict[str, int],
        delivery_id: int,
    ) -> None:
        self.spec = spec  # the app's OpenAPI document
        self.instances = instances  # plugin name -> instance id
        self.processes = processes  # "{plugin}.{process}" -> process id
        self.delivery_id = delivery_id

    def operation(self, method: str, path: str) -> dict[str, Any]:
        op: dict[str, Any] = self.spec["paths"][path][method.lower()]
        return op

    def url(self, method: str, path: str) -> str:
        """The path with every parameter set to alice's value for it."""
        named = re.match(r"^/api/internal/(?:plugin|process|action)/([^/{]+)", path)
        full_name = named.group(1) if named else "randomness"
        plugin = full_name.partition(".")[0]
        values = {
            "slug": COMMONS,
            "name": plugin,
            "instance_id": _pick(self.instances, plugin),
            "process_id": _pick(self.processes, full_name),
            "delivery_id": self.delivery_id,
            "plugin": "slack",  # an OAuth plugin: install URLs are per community
        }
        names = re.findall(r"\{([^}]+)\}", path)
        unknown = [n for n in names if n not in values]
        assert not unknown, f"{method} {path}: teach url() a value for path parameter(s) {unknown}"
        return path.format(**{n: values[n] for n in names})

    def params(self, method: str, path: str) -> dict[str, Any]:
        """Required query parameters, with minimal valid values."""
        return {
            p["name"]: minimal_instance(p.get("schema", {}), self.spec)
            for p in self.operation(method, path).get("parameters", [])
            if p["in"] == "query" and p.get("required")
        }

    def body(self, method: str, path: str) -> Any | None:
        op = self.operation(method, path)
        if "requestBody" not in op:
            return None
        if op["operationId"] in BODIES:
            return BODIES[op["operationId"]]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        return minimal_instance(schema, self.spec)

    async def send(
        self, client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
    ) -> httpx.Response:
        return await client.request(
            method,
            self.url(method, path),
            params=self.params(method, path),
            json=self.body(method, path),
            headers=headers,
        )


async def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
async def world(
    app: FastAPI,
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    community: dict[str, Any],
) -> AliceWorld:
    """Alice's ``commons``: randomness (from ``community``) and echo, one process of each, and
    one event whose delivery to her event URL is dead."""
    headers = alice.to(COMMONS)
    echo = await _ok(
        await client.post(
            "/api/internal/plugin/echo",
            json={"team_id": "TEAM-ALICE", "api_token": "tok-123"},
            headers=headers,
        ),
        201,
    )
    vote = await _ok(
        await client.post(
            "/api/internal/process/randomness.delayed-stochastic-vote",
            json={"options": ["a", "b"], "delay_seconds": 600},
            headers=headers,
        ),
        202,
    )
    approval = await _ok(
        await client.post(
            "/api/internal/process/echo.approval", json={"question": "ok?"}, headers=headers
        ),
        202,
    )
    # An event with a delivery: alice gets an event URL (Drivers have no route to set it), sets
    # a lucky number, and the delivery is marked dead as if its retries had run out, so that a
    # leaking bulk replay would show as a change.
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(Driver).where(Driver.name == alice.name).values(event_url=ALICE_EVENT_URL)
        )
    await _ok(
        await client.post(
            "/api/internal/action/randomness.set-lucky-number",
            json={"parameters": {"number": 7}},
            headers=headers,
        )
    )
    async with runtime.unit_of_work() as session:
        (delivery,) = (await session.scalars(select(Delivery))).all()
        delivery.status = "dead"
    (randomness,) = (p for p in community["plugins"] if p["name"] == "randomness")
    return AliceWorld(
        app.openapi(),
        instances={"randomness": randomness["id"], "echo": echo["id"]},
        processes={vote["name"]: vote["id"], approval["name"]: approval["id"]},
        delivery_id=delivery.id,
    )


# --- what "nothing changed" means ----------------------------------------------------------------


async def alice_rows(runtime: Runtime, alice: DriverKey) -> dict[str, list[dict[str, Any]]]:
    """Every row of alice's, as stored (config, encrypted secrets, state included)."""
    drivers, communities = Driver.__table__, Community.__table__
    async with runtime.db.engine.connect() as conn:

        async def rows_of(query: Any) -> list[dict[str, Any]]:
            return [dict(row) for row in (await conn.execute(query)).mappings()]

        rows = {
            "drivers": await rows_of(select(drivers).where(drivers.c.name == alice.name)),
            "communities": await rows_of(select(communities).where(communities.c.slug == COMMONS)),
        }
        ids = [row["id"] for row in rows["communities"]]
        for model in (PluginInstance, Process, Event, Delivery):
            table = model.__table__
            query = select(table).where(table.c.community_id.in_(ids)).order_by(table.c.id)
            rows[model.__tablename__] = await rows_of(query)
    return rows


async def assert_alice_untouched(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    world: AliceWorld,
    before: dict[str, list[dict[str, Any]]],
    what: str,
) -> None:
    assert await alice_rows(runtime, alice) == before, f"{what} changed alice's stored data"
    got = await _ok(await client.get(f"/api/internal/community/{COMMONS}", headers=alice.headers))
    assert {p["name"]: p["id"] for p in got["plugins"]} == world.instances, what
    listed = await _ok(await client.get("/api/internal/process", headers=alice.to(COMMONS)))
    assert {p["name"]: (p["id"], p["status"]) for p in listed} == {
        name: (pid, "pending") for name, pid in world.processes.items()
    }, what


def assert_error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert {"detail", "code"} <= body.keys(), body
    assert isinstance(body["detail"], str)
    assert isinstance(body["code"], str)
    return body


def assert_nothing_of_alice(response: httpx.Response, *markers: str) -> None:
    leaked = [marker for marker in (*ALICE_DATA, *markers) if marker in response.text]
    assert not leaked, f"response shows alice's data {leaked}: {response.text}"


# --- the tests ------------------------------------------------------------------------------------


async def test_every_internal_route_is_isolated(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    bob: DriverKey,
    world: AliceWorld,
    subtests: pytest.Subtests,
) -> None:
    routes = internal_operations(world.spec)
    assert len(routes) >= 20  # guard against an empty or truncated spec passing vacuously
    # Bob's own community, with the same plugins as alice's, for b').
    await make_community(client, bob, BOBS_OWN, [RANDOMNESS])
    await _ok(
        await client.post(
            "/api/internal/plugin/echo",
            json={"team_id": "T-bob", "api_token": "tok-bob"},
            headers=bob.to(BOBS_OWN),
        ),
        201,
    )
    before = await alice_rows(runtime, alice)
    assert len(before["plugin_instances"]) == 2 and len(before["processes"]) == 2
    assert len(before["deliveries"]) == 1

    for method, path in routes:
        with subtests.test(msg=f"{method} {path}"):
            await check_route(method, path, client, runtime, alice, bob, world, before)
        # Every route leaves alice's data as it found it, so each starts from the same state;
        # after one that did not, the others could not be judged.
        if await alice_rows(runtime, alice) != before:
            pytest.fail(f"{method} {path} changed alice's data; the routes after it were not run")


async def check_route(
    method: str,
    path: str,
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    bob: DriverKey,
    world: AliceWorld,
    before: dict[str, list[dict[str, Any]]],
) -> None:
    # a) No key, or a key that was never issued: 401 before anything else happens.
    for headers in (
        {"X-Metagov-Community": COMMONS},
        {"X-Metagov-Community": COMMONS, "Authorization": "Bearer not-a-driver-key"},
    ):
        response = await world.send(client, method, path, headers)
        body = assert_error_body(response, 401)
        assert body["code"] == "unauthorized", body
        assert_nothing_of_alice(response, *RECORD_FIELDS)
    assert await alice_rows(runtime, alice) == before, "an anonymous request changed alice's data"

    # b) Another Driver naming alice's community (and alice's ids in the path).
    response = await world.send(client, method, path, bob.to(COMMONS))
    if (method, path) in CREATING_ROUTES:
        # PUT creates a community that does not exist; a slug another Driver holds is taken,
        # exactly as on POST (test_bob_cannot_take_alices_slug), and shows nothing of it.
        body = assert_error_body(response, 409)
        assert body["code"] == "slug_taken", body
        assert_nothing_of_alice(response, *RECORD_FIELDS)
    elif (method, path) in GLOBAL_ROUTES:
        assert 200 <= response.status_code < 300, response.text
        assert_nothing_of_alice(response, COMMONS)
    else:
        body = assert_error_body(response, 404)
        assert body["code"] in {"unknown_community", "not_found"}, body
        assert_nothing_of_alice(response, *RECORD_FIELDS)

    # b') Bob in his own community, pointing at alice's objects by id: ids must be looked up
    # within the caller's community (or, for deliveries, among the caller's), not globally.
    if re.search(r"\{(instance_id|process_id|delivery_id)\}", path):
        response = await world.send(client, method, path, bob.to(BOBS_OWN))
        if response.status_code == 422:
            # A body its plugin's validators refuse is refused before any lookup, whoever asks:
            # that says nothing about alice's objects either.
            body = assert_error_body(response, 422)
            assert all(error["loc"][0] == "body" for error in body["errors"]), body
        else:
            assert_error_body(response, 404)
        assert_nothing_of_alice(response, *RECORD_FIELDS)

    # c) Alice's data is exactly as it was.
    await assert_alice_untouched(client, runtime, alice, world, before, f"bob's {method} {path}")


async def test_bob_cannot_take_alices_slug(
    client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey, bob: DriverKey, world: AliceWorld
) -> None:
    before = await alice_rows(runtime, alice)
    response = await client.post(
        "/api/internal/community",
        json={"slug": COMMONS, "readable_name": "Mine now", "plugins": []},
        headers=bob.headers,
    )
    body = assert_error_body(response, 409)
    assert body["code"] == "slug_taken", body
    assert_nothing_of_alice(response, *RECORD_FIELDS)
    await assert_alice_untouched(client, runtime, alice, world, before, "bob's slug grab")


async def test_bob_cannot_list_alices_processes(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey, world: AliceWorld
) -> None:
    response = await client.get("/api/internal/process", headers=bob.to(COMMONS))
    body = assert_error_body(response, 404)
    assert body["code"] == "unknown_community", body
    assert_nothing_of_alice(response, *RECORD_FIELDS)
    # Alice sees both of hers through the same route, so the 404 is about bob, not the route.
    mine = await _ok(await client.get("/api/internal/process", headers=alice.to(COMMONS)))
    assert sorted(p["id"] for p in mine) == sorted(world.processes.values())
