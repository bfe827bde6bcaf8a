"""Routes for what Drivers hear: the event log, event subscriptions, and deliveries (including
dead ones, and replaying them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import AwareDatetime, BaseModel, Field

from metagov.api.deps import (
    COMMUNITY_HEADER,
    MAX_ID,
    CurrentCommunity,
    CurrentDriver,
    RowId,
    SessionDep,
)
from metagov.db.models import Community, Delivery
from metagov.errors import ERROR_RESPONSES
from metagov.services import communities, deliveries, events

router = APIRouter(prefix="/api/internal", tags=["events"], responses=ERROR_RESPONSES)


async def optional_community(
    session: SessionDep,
    driver: CurrentDriver,
    slug: Annotated[str | None, Header(alias=COMMUNITY_HEADER, max_length=64)] = None,
) -> Community | None:
    return await communities.get_community(session, driver, slug) if slug else None


class EventOut(BaseModel):
    event_id: int = Field(description="Pass the last one seen as `after` to read on")
    id: str = Field(description="The `webhook-id` this event is delivered with")
    community: str
    source: str
    event_type: str
    timestamp: str = Field(description="Seconds since the epoch, as a string")
    data: dict[str, Any]
    initiator: dict[str, Any] | None
    seq: int = Field(description="Position among the community's events")


@router.get("/events", operation_id="events.list")
async def list_events(
    session: SessionDep,
    driver: CurrentDriver,
    community: Annotated[Community | None, Depends(optional_community)],
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Only events with a greater event_id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventOut]:
    """The Driver's events, oldest first; with the community header, that community's only."""
    found = await events.list_events(session, driver, community=community, after=after, limit=limit)
    return [EventOut.model_validate(e) for e in found]


class Subscriptions(BaseModel):
    event_types: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        description="Glob patterns such as `process.*`; null delivers every event type",
        max_length=100,
    )


@router.get("/subscriptions", operation_id="subscriptions.get")
async def get_subscriptions(community: CurrentCommunity) -> Subscriptions:
    return Subscriptions(event_types=community.subscribed_event_types)


@router.put("/subscriptions", operation_id="subscriptions.set")
async def set_subscriptions(
    body: Subscriptions, session: SessionDep, community: CurrentCommunity
) -> Subscriptions:
    """Choose which event types of this community are delivered to the Driver's event URL.
    (Process callbacks are always delivered; every event stays readable at /events.)"""
    await events.set_subscriptions(session, community, body.event_types)
    return body


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    target: str = Field(description="`driver` (the event URL) or `callback` (a process's)")
    url: str
    status: str = Field(description="pending, succeeded or dead")
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def build(cls, d: Delivery) -> DeliveryOut:
        return cls.model_validate(d, from_attributes=True)


@router.get("/deliveries", operation_id="deliveries.list")
async def list_deliveries(
    session: SessionDep,
    driver: CurrentDriver,
    status: Annotated[str | None, Query(pattern="^(pending|succeeded|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """The Driver's deliveries, newest first; `status=dead` lists those given up."""
    found = await deliveries.list_deliveries(session, driver=driver, status=status, limit=limit)
    return [DeliveryOut.build(d) for d in found]


@router.post("/deliveries/{delivery_id}/replay", operation_id="deliveries.replay")
async def replay_delivery(
    delivery_id: RowId, session: SessionDep, driver: CurrentDriver
) -> DeliveryOut:
    """Deliver again, with the original `webhook-id`."""
    [delivery] = await deliveries.replay(session, driver=driver, delivery_id=delivery_id)
    return DeliveryOut.build(delivery)


class ReplayRequest(BaseModel):
    since: AwareDatetime | None = Field(
        None, description="Dead deliveries created at or after this (with a time zone)"
    )


class ReplayResult(BaseModel):
    replayed: int


@router.post("/deliveries/replay", operation_id="deliveries.replay_dead")
async def replay_dead(
    body: ReplayRequest, session: SessionDep, driver: CurrentDriver
) -> ReplayResult:
    """Deliver every dead delivery again (or those since a time)."""
    found = await deliveries.replay(session, driver=driver, since=body.since)
    return ReplayResult(replayed=len(found))
