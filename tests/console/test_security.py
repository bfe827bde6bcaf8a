"""The console's locks, tried from outside over HTTP: no page without a session (and no Driver
key instead of one), no form without its CSRF token, cookies a script cannot read, a limit on
sign-in attempts, and no secret value in any page."""

from __future__ import annotations

import html
import re
from collections import deque
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select

from metagov import signing
from metagov.app import create_app
from metagov.console.routes import router
from metagov.db.models import AuditEntry, Delivery, Driver, PluginInstance
from metagov.jobs.sweeper import due_jobs, run_job
from metagov.runtime import Runtime
from tests.conftest import DriverKey, make_community, make_registry, make_settings
from tests.console.conftest import PASSWORD, create_operator, csrf_of, sign_in

PLUGIN_SECRET = "whsec_" + "c2VjcmV0LXBsdWdpbi12YWx1ZS0xMjM0NTY3ODkwYWI="
NEW_SIGNING_SECRET = "whsec_" + "bmV3LXNpZ25pbmctc2VjcmV0LTEyMzQ1Njc4OTBhYmNk"


def console_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with ids filled in) of every console page and form but signing in."""
    found = []
    for route in router.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/console"):
            continue
        if route.path == "/console/sign-in":
            continue
        path = re.sub(r"\{slug\}", "commons", route.path)
        path = re.sub(r"\{[^}]+\}", "1", path)
        found.extend((method, path) for method in sorted(route.methods))
    return found


async def test_the_console_has_the_pages_it_should(app: FastAPI) -> None:
    paths = {path for _, path in console_routes(app)}
    for page in ("/console", "/console/deliveries", "/console/inbox", "/console/processes"):
        assert page in paths


@pytest.mark.parametrize("credentials", ["none", "driver key", "forged cookie"])
async def test_every_console_route_redirects_to_sign_in_without_a_session(
    app: FastAPI, client: httpx.AsyncClient, alice: DriverKey, operator: str, credentials: str
) -> None:
    headers: dict[str, str] = {}
    if credentials == "driver key":
        headers = alice.headers
    elif credentials == "forged cookie":
        headers = {"Cookie": "metagov_console=abc.def"}
    routes = console_routes(app)
    assert len(routes) >= 12
    for method, path in routes:
        response = await client.request(method, path, headers=headers, data={"csrf_token": "x"})
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith("/console/sign-in"), (method, path)


async def test_a_signed_out_session_opens_nothing(
    client: httpx.AsyncClient, runtime: Runtime, csrf: str
) -> None:
    cookie = client.cookies.get("metagov_console")
    assert (await client.get("/console")).status_code == 200
    response = await client.post("/console/sign-out", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert (await client.get("/console")).status_code == 303
    # The cookie copied before signing out is dead too: its session row is gone.
    copied = await client.get("/console", headers={"Cookie": f"metagov_console={cookie}"})
    assert copied.status_code == 303


async def test_forms_without_their_csrf_token_are_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: DriverKey,
    csrf: str,
) -> None:
    async def audit_count() -> int:
        async with runtime.db.snapshot() as session:
            return len((await session.scalars(select(AuditEntry))).all())

    before = await audit_count()
    posts = [path for method, path in console_routes(app) if method == "POST"]
    assert "/console/deliveries/replay" in posts
    for path in posts:
        for data in ({}, {"csrf_token": "not-the-token"}, {"csrf_token": ""}):
            response = await client.post(path, data={**data, "enabled": "false", "only": "1"})
            assert response.status_code == 403, (path, data, response.status_code)
            assert "Form refused" in response.text
    # The same token sent as JSON is no form either.
    response = await client.post("/console/drivers/1/endpoint", json={"csrf_token": csrf})
    assert response.status_code == 403
    assert await audit_count() == before
    async with runtime.db.snapshot() as session:
        driver = (await session.scalars(select(Driver))).one()
    assert driver.endpoint_disabled_at is None
    # With the token, the same form works.
    response = await client.post(
        f"/console/drivers/{driver.id}/endpoint", data={"csrf_token": csrf, "enabled": "false"}
    )
    assert response.status_code == 303
    assert await audit_count() == before + 1


async def test_signing_in_needs_the_sign_in_pages_token(
    client: httpx.AsyncClient, operator: str
) -> None:
    response = await client.post("/console/sign-in", data={"name": "ops", "password": PASSWORD})
    assert response.status_code == 403
    assert "metagov_console=" not in response.headers.get("set-cookie", "")


async def test_wrong_password_and_unknown_name_are_refused_alike(
    client: httpx.AsyncClient, operator: str
) -> None:
    for name, password in (("ops", "wrong password!"), ("nobody", PASSWORD)):
        response = await sign_in(client, name, password)
        assert response.status_code == 401
        assert "Wrong name or password" in response.text
        assert "metagov_console=" not in response.headers.get("set-cookie", "")


async def test_session_cookie_is_http_only_same_site_and_signed(
    client: httpx.AsyncClient, operator: str
) -> None:
    response = await sign_in(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("metagov_console=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # development: plain http on localhost must work
    value = cookie.split(";")[0].split("=", 1)[1]
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    response = await client.get("/console", headers={"Cookie": f"metagov_console={tampered}"})
    assert response.status_code == 303


async def test_session_cookie_is_secure_in_production(database_url: str) -> None:
    settings = make_settings(database_url, environment="production")
    app = create_app(settings, make_registry())
    async with app.router.lifespan_context(app):
        await create_operator(app.state.runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://gateway") as client:
            response = await sign_in(client)
    assert response.status_code == 303
    cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("metagov_console=") and "Secure" in c for c in cookies)


async def test_sign_in_never_redirects_to_another_site(
    client: httpx.AsyncClient, operator: str
) -> None:
    for target in ("https://evil.example/", "//evil.example/console", "/api/internal/events"):
        client.cookies.clear()
        page = await client.get("/console/sign-in", params={"next": target})
        response = await client.post(
            "/console/sign-in",
            data={
                "csrf_token": csrf_of(page.text),
                "name": "ops",
                "password": PASSWORD,
                "next": target,
            },
        )
        assert response.headers["location"] == "/console"


async def test_sign_in_attempts_are_limited_per_address(
    client: httpx.AsyncClient, operator: str
) -> None:
    for _ in range(10):
        assert (await sign_in(client, "ops", "not the password")).status_code == 401
    # The eleventh attempt is refused before the password is looked at, even the right one.
    response = await sign_in(client)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "metagov_console=" not in response.headers.get("set-cookie", "")


async def _seed_secrets(client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey) -> None:
    """A community whose plugin has a secret, an event URL with deliveries (failing ones too),
    a process, and a webhook whose handling failed."""
    async with runtime.unit_of_work() as session:
        driver = (await session.scalars(select(Driver).where(Driver.name == "alice"))).one()
        driver.event_url = "http://127.0.0.1:9/events"  # nothing listens: attempts fail
    await make_community(
        client,
        alice,
        "commons",
        [
            {"name": "randomness", "config": {"default_low": 1, "default_high": 6}},
            {"name": "webhook", "config": {"secret": PLUGIN_SECRET, "event_type_field": "type"}},
        ],
    )
    response = await client.post(
        "/api/internal/action/randomness.set-lucky-number",
        json={"parameters": {"number": 7}},
        headers=alice.to("commons"),
    )
    assert response.status_code == 200, response.text
    response = await client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["a", "b"], "delay_seconds": 3600},
        headers=alice.to("commons"),
    )
    assert response.status_code == 202, response.text
    body = b"this is not json"
    response = await client.post(
        "/api/hooks/commons/webhook",
        content=body,
        headers=signing.standard_headers([PLUGIN_SECRET], "msg_1", body),
    )
    assert response.status_code == 200, response.text
    runtime.settings.inbox_max_attempts = 1
    jobs, _ = await due_jobs(runtime)
    for job in jobs:
        await run_job(runtime, job)


async def test_no_page_shows_a_secret_value(
    client: httpx.AsyncClient, runtime: Runtime, alice: DriverKey, csrf: str
) -> None:
    await _seed_secrets(client, runtime, alice)
    async with runtime.db.snapshot() as session:
        driver = (await session.scalars(select(Driver))).one()
        instance = (
            await session.scalars(select(PluginInstance).where(PluginInstance.name == "webhook"))
        ).one()
        assert (await session.scalars(select(Delivery))).all()
    response = await client.post(
        f"/console/drivers/{driver.id}/rotate-secret",
        data={"csrf_token": csrf, "secret": NEW_SIGNING_SECRET, "overlap_hours": "24"},
    )
    assert response.status_code == 303
    async with runtime.db.snapshot() as session:
        rotated = (await session.scalars(select(Driver))).one()
    assert runtime.secrets.decrypt_text(rotated.webhook_secret or "") == NEW_SIGNING_SECRET

    secrets: dict[str, Any] = {
        "driver api key": alice.key,
        "old signing secret": alice.webhook_secret,
        "new signing secret": NEW_SIGNING_SECRET,
        "plugin secret": PLUGIN_SECRET,
        "operator password": PASSWORD,
        "api key hash": driver.api_key_hash,
        "encrypted signing secret": rotated.webhook_secret,
        "encrypted previous secret": rotated.previous_webhook_secret,
        "encrypted plugin secrets": instance.secrets,
    }
    # Their base64 halves too, so that a secret shown re-encoded or cut short is still caught.
    for name, value in list(secrets.items()):
        secrets[f"{name} (core)"] = str(value).removeprefix("whsec_").removeprefix("mgk_")[:24]

    seen: dict[str, str] = {}
    waiting = deque(["/console"])
    while waiting and len(seen) < 300:
        path = waiting.popleft()
        if path in seen:
            continue
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        seen[path] = response.text
        for link in re.findall(r'href="(/console[^"]*)"', response.text):
            link = html.unescape(link)
            if not link.startswith("/console/static") and link not in seen:
                waiting.append(link)
    for page in (
        "/console",
        "/console/drivers",
        "/console/communities",
        "/console/communities/commons",
        "/console/deliveries",
        "/console/inbox",
        "/console/processes",
        "/console/audit",
    ):
        assert page in seen, f"the crawl did not reach {page}"
    assert any(p.startswith("/console/deliveries/") for p in seen)
    assert "not valid JSON" in seen["/console/inbox"] or "JSON" in seen["/console/inbox"]
    assert "secret: ••••••" in seen["/console/communities/commons"]
    for path, text in seen.items():
        for name, value in secrets.items():
            assert str(value) not in text, f"{path} shows the {name}"
