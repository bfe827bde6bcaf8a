"""Routes for what Drivers hear: the event log, event subscriptions, and deliveries (including
dead ones, and replaying them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from metagov.api.deps import (
    COMMUNITY_HEADER,
    MAX_ID,
    CurrentCommunity,
    CurrentDriver,
    ReaderDep,
    RowId,
    SessionDep,
)
from metagov.db.models import Community
from metagov.errors import ERROR_RESPONSES
from metagov.outbox import service as outbox
from metagov.outbox.schemas import (
    DeliveryOut,
    EventOut,
    ReplayRequest,
    ReplayResult,
    Subscriptions,
)
from metagov.tenancy import service as tenancy

router = APIRouter(prefix="/api/internal", tags=["events"], responses=ERROR_RESPONSES)


async def optional_community(
    session: ReaderDep,
    driver: CurrentDriver,
    slug: Annotated[str | None, Header(alias=COMMUNITY_HEADER, max_length=64)] = None,
) -> Community | None:
    return await tenancy.get_community(session, driver, slug) if slug else None


@router.get("/events", operation_id="events.list")
async def list_events(
    session: ReaderDep,
    driver: CurrentDriver,
    community: Annotated[Community | None, Depends(optional_community)],
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Only events with a greater event_id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventOut]:
    """The Driver's events, oldest first; with the community header, that community's only."""
    found = await outbox.list_events(session, driver, community=community, after=after, limit=limit)
    return [EventOut.model_validate(e) for e in found]


@router.get("/subscriptions", operation_id="subscriptions.get")
async def get_subscriptions(community: CurrentCommunity) -> Subscriptions:
    return Subscriptions(event_types=community.subscribed_event_types)


@router.put("/subscriptions", operation_id="subscriptions.set")
async def set_subscriptions(
    body: Subscriptions, session: SessionDep, community: CurrentCommunity
) -> Subscriptions:
    """Choose which event types of this community are delivered to the Driver's event URL.
    (Process callbacks are always delivered; every event stays readable at /events.)"""
    await outbox.set_subscriptions(session, community, body.event_types)
    return body


@router.get("/deliveries", operation_id="deliveries.list")
async def list_deliveries(
    session: ReaderDep,
    driver: CurrentDriver,
    status: Annotated[str | None, Query(pattern="^(pending|succeeded|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """The Driver's deliveries, newest first; `status=dead` lists those given up."""
    found = await outbox.list_deliveries(session, driver=driver, status=status, limit=limit)
    return [DeliveryOut.build(d) for d in found]


@router.post("/deliveries/{delivery_id}/replay", operation_id="deliveries.replay")
async def replay_delivery(
    delivery_id: RowId, session: SessionDep, driver: CurrentDriver
) -> DeliveryOut:
    """Deliver again, with the original `webhook-id`."""
    [delivery] = await outbox.replay(session, driver=driver, delivery_id=delivery_id)
    return DeliveryOut.build(delivery)


@router.post("/deliveries/replay", operation_id="deliveries.replay_dead")
async def replay_dead(
    body: ReplayRequest, session: SessionDep, driver: CurrentDriver
) -> ReplayResult:
    """Deliver every dead delivery again (or those since a time)."""
    found = await outbox.replay(session, driver=driver, since=body.since)
    return ReplayResult(replayed=len(found))
