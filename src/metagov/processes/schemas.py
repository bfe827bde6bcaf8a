"""How Drivers see a process: in API responses and in process events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from metagov.db.models import Process
from metagov.outbound import MAX_URL_LENGTH, check_url

ProcessStatusName = Literal["created", "pending", "completed", "failed", "cancelled"]


def _iso(moment: datetime) -> str:
    """UTC times as the API writes them (``…Z``), so events and responses look alike."""
    return moment.isoformat().replace("+00:00", "Z")


def process_record(process: Process, community_slug: str) -> dict[str, Any]:
    """A process as Drivers see it, in API responses and in process events."""
    return {
        "id": process.id,
        "name": process.full_name,
        "community": community_slug,
        "status": process.status,
        "url": process.url,
        "outcome": process.outcome,
        "errors": process.errors,
        "closing_at": _iso(process.closing_at) if process.closing_at else None,
        "created_at": _iso(process.created_at),
        "updated_at": _iso(process.updated_at),
    }


class ProcessRecord(BaseModel):
    id: int
    name: str = Field(description="`{plugin}.{process}`")
    community: str
    status: ProcessStatusName
    url: str | None = Field(description="Where the process can be seen on the platform")
    outcome: Any = None
    errors: list[dict[str, Any]]
    closing_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def build(cls, process: Process, community_slug: str) -> ProcessRecord:
        return cls.model_validate(process_record(process, community_slug))


class ProcessStart(BaseModel):
    """Fields every process start accepts besides the process's own parameters."""

    callback_url: Annotated[str, AfterValidator(check_url)] | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="Also notified when the process's outcome or status changes: an http(s) "
        "URL, reached only at a public address (or one METAGOV_OUTBOUND_ALLOWLIST names)",
    )
