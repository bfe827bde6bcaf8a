"""Console fixtures: an operator, and an HTTP client signed in as them."""

from __future__ import annotations

import re

import httpx
import pytest

from metagov.console import service as console
from metagov.runtime import Runtime

OPERATOR = "ops"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def create_operator(runtime: Runtime, name: str = OPERATOR, password: str = PASSWORD) -> str:
    async with runtime.unit_of_work() as session:
        await console.create_operator(session, name, password)
    return name


async def sign_in(
    client: httpx.AsyncClient, name: str = OPERATOR, password: str = PASSWORD
) -> httpx.Response:
    """Sign in through the form, as a browser would."""
    page = await client.get("/console/sign-in")
    return await client.post(
        "/console/sign-in",
        data={"csrf_token": csrf_of(page.text), "name": name, "password": password},
    )


@pytest.fixture
async def operator(runtime: Runtime) -> str:
    return await create_operator(runtime)


@pytest.fixture
async def csrf(client: httpx.AsyncClient, operator: str) -> str:
    """Signs ``client`` in; the session's CSRF token."""
    response = await sign_in(client)
    assert response.status_code == 303, response.text
    return csrf_of((await client.get("/console")).text)
