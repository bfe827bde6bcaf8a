"""A minimal Metagov Driver: proposals made on a platform are put to a vote, and each decision is
acted on.

1. On start it declares its community: ``randomness`` (for a pretend vote) and ``webhook`` (the
   platform, here a forum, posts its proposals to the gateway as signed webhooks).
2. The gateway delivers every event to ``POST /events``, signed; unsigned ones get 401.
3. A ``proposal.created`` webhook event starts a ``randomness.delayed-stochastic-vote``.
4. Its ``process.completed`` event carries the outcome: the Driver records the decision and acts
   on it with ``randomness.set-lucky-number`` (the winning option's vote count).

``GET /decisions`` lists the decisions. ``python driver.py`` runs the Driver;
``python driver.py propose "Title"`` plays the forum and posts a proposal to the gateway.
State is kept in memory to stay short: a real Driver stores it, and the ids of the events it
has handled, in its database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from metagov_client import (
    AsyncMetagovClient,
    Event,
    WebhookVerificationError,
    sign_headers,
    verify_event,
)

VOTE = "randomness.delayed-stochastic-vote"
log = logging.getLogger("driver")


@dataclass(frozen=True)
class Settings:
    """Read from the environment; the defaults match the gateway command in the README."""

    metagov_url: str = "http://127.0.0.1:8000"
    api_key: str = "demo-key"
    # The gateway's event signing secret for this Driver (METAGOV_DRIVER_WEBHOOK_SECRET).
    event_secret: str = "whsec_ZGVtby1ldmVudC1zaWduaW5nLXNlY3JldA=="  # noqa: S105
    community: str = "demo"
    # Shared between the forum and the gateway's webhook plugin, which checks its signatures.
    forum_secret: str = "whsec_ZGVtby1mb3J1bS13ZWJob29rLXNlY3JldA=="  # noqa: S105
    vote_seconds: float = 2.0
    port: int = 8001

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        defaults = cls()
        return cls(
            metagov_url=env("DRIVER_METAGOV_URL", defaults.metagov_url),
            api_key=env("DRIVER_API_KEY", defaults.api_key),
            event_secret=env("DRIVER_EVENT_SECRET", defaults.event_secret),
            community=env("DRIVER_COMMUNITY", defaults.community),
            forum_secret=env("DRIVER_FORUM_SECRET", defaults.forum_secret),
            vote_seconds=float(env("DRIVER_VOTE_SECONDS", str(defaults.vote_seconds))),
            port=int(env("DRIVER_PORT", str(defaults.port))),
        )


@dataclass
class Decision:
    proposal: str
    process_id: int
    status: str
    winner: str | None
    votes: dict[str, int]
    lucky_number: int | None


@dataclass
class Ledger:
    """What the Driver remembers: events handled, votes running, decisions made."""

    handled: set[str] = field(default_factory=set)
    proposals: dict[int, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    ready: bool = False


async def declare_community(mg: AsyncMetagovClient, settings: Settings) -> None:
    """Declare the community as it must be, on every start (the gateway may still be starting)."""
    plugins = {
        "randomness": {},
        # `source_name` names the sender (and is the instance's platform id): the forum.
        "webhook": {
            "secret": settings.forum_secret,
            "event_type_field": "type",
            "source_name": "forum",
        },
    }
    deadline = time.monotonic() + 60
    while True:
        try:
            await mg.declare_community(settings.community, readable_name="Demo", plugins=plugins)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def handle(event: Event, mg: AsyncMetagovClient, ledger: Ledger, settings: Settings) -> None:
    """Act on one event. The gateway sends a community's events one at a time, in order, so
    this never runs twice at once for the community."""
    if event.source == "webhook" and event.event_type == "proposal.created":
        title = str(event.data.get("title") or "untitled")
        vote = {"options": ["yes", "no"], "delay_seconds": settings.vote_seconds}
        started = await mg.start_process(event.community, VOTE, vote)
        ledger.proposals[started.id] = title
        log.info("proposal %r: vote %s started", title, started.id)
        return
    process = event.process
    if process is None or process.name != VOTE or process.is_open:
        return
    if process.id not in ledger.proposals:
        return  # not a vote this Driver started
    title = ledger.proposals.pop(process.id)
    outcome: dict[str, Any] = process.outcome or {}
    winner = outcome.get("winner") if process.status == "completed" else None
    votes: dict[str, int] = outcome.get("votes") or {}
    lucky = None
    if winner is not None:
        result = await mg.perform_action(
            event.community, "randomness.set-lucky-number", {"number": votes.get(winner, 0)}
        )
        lucky = result["number"]
    ledger.decisions.append(Decision(title, process.id, process.status, winner, votes, lucky))
    log.info("proposal %r decided: %s %s", title, winner, votes)


def create_app(settings: Settings) -> FastAPI:
    ledger = Ledger()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncMetagovClient(settings.metagov_url, settings.api_key) as mg:
            app.state.mg = mg
            await declare_community(mg, settings)
            ledger.ready = True
            yield

    app = FastAPI(title="Example Metagov Driver", lifespan=lifespan)

    @app.post("/events", status_code=204)
    async def events(request: Request) -> Response:
        try:
            event = verify_event(settings.event_secret, request.headers, await request.body())
        except WebhookVerificationError as err:
            return JSONResponse({"detail": str(err), "reason": err.reason}, status_code=401)
        # Delivery is at least once: a repeat is acknowledged and skipped. An event is marked
        # handled only once handled, so a failure (answered 500) is delivered again later.
        if event.id not in ledger.handled:
            await handle(event, request.app.state.mg, ledger, settings)
            ledger.handled.add(event.id)
        return Response(status_code=204)

    @app.get("/decisions")
    async def decisions() -> list[dict[str, Any]]:
        return [asdict(d) for d in ledger.decisions]

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ready": ledger.ready}, status_code=200 if ledger.ready else 503)

    return app


def propose(settings: Settings, title: str) -> None:
    """Play the forum: post a signed ``proposal.created`` webhook to the gateway."""
    body = json.dumps({"type": "proposal.created", "title": title}).encode()
    headers = sign_headers(settings.forum_secret, f"msg_{uuid.uuid4().hex}", body)
    headers["content-type"] = "application/json"
    url = f"{settings.metagov_url}/api/hooks/{settings.community}/webhook"
    response = httpx.post(url, content=body, headers=headers)
    print(response.status_code, response.text)


def main(argv: list[str]) -> None:
    settings = Settings.from_env()
    if argv[:1] == ["propose"]:
        propose(settings, " ".join(argv[1:]) or "Adopt a code of conduct")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is too much
    uvicorn.run(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
