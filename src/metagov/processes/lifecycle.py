"""The status rules of governance processes: the one place a process's status changes.

    created ──► pending ──► completed
       │           ├──────► failed
       └──► failed └──────► cancelled   (its plugin was disabled)

Starting, updating, closing and cancelling all go through :func:`transition`, so a process that
has ended can never be closed twice or re-opened, whoever tries.
"""

from __future__ import annotations

from metagov.db.base import utcnow
from metagov.db.models import OPEN_PROCESS_STATUSES, Process, ProcessStatus
from metagov.errors import Conflict

ALLOWED: dict[ProcessStatus, frozenset[ProcessStatus]] = {
    ProcessStatus.CREATED: frozenset(
        {ProcessStatus.PENDING, ProcessStatus.COMPLETED, ProcessStatus.FAILED}
    ),
    ProcessStatus.PENDING: frozenset(
        {ProcessStatus.COMPLETED, ProcessStatus.FAILED, ProcessStatus.CANCELLED}
    ),
    ProcessStatus.COMPLETED: frozenset(),
    ProcessStatus.FAILED: frozenset(),
    ProcessStatus.CANCELLED: frozenset(),
}


class InvalidTransition(Conflict):
    code = "invalid_transition"


def is_open(process: Process) -> bool:
    return process.status in OPEN_PROCESS_STATUSES


def has_ended(status: str) -> bool:
    return status not in OPEN_PROCESS_STATUSES


def transition(process: Process, to: ProcessStatus) -> None:
    """Move ``process`` to status ``to``, or raise :class:`InvalidTransition` (409)."""
    current = ProcessStatus(process.status)
    if to not in ALLOWED[current]:
        raise InvalidTransition(
            f"process {process.id} is {current.value} and cannot become {to.value}"
        )
    process.status = to.value
    process.updated_at = utcnow()
    if to is not ProcessStatus.PENDING:
        process.next_update_at = None
