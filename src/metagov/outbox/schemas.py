"""What Drivers read of their events and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field

from metagov.db.models import Delivery


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


class Subscriptions(BaseModel):
    event_types: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        description="Glob patterns such as `process.*`; null delivers every event type",
        max_length=100,
    )


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
    def build(cls, delivery: Delivery) -> DeliveryOut:
        return cls.model_validate(delivery, from_attributes=True)


class ReplayRequest(BaseModel):
    since: AwareDatetime | None = Field(
        None, description="Dead deliveries created at or after this (with a time zone)"
    )


class ReplayResult(BaseModel):
    replayed: int
