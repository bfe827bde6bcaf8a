"""Prometheus metrics. Counters count in the process that did the work (API or worker); gauges
about the backlog are read from the database when ``/metrics`` is scraped, so any replica tells
the same truth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOKS_RECEIVED = Counter(
    "metagov_webhooks_received_total",
    "Verified webhooks stored in the inbox (duplicates included)",
    ["plugin"],
    registry=REGISTRY,
)
WEBHOOKS_REJECTED = Counter(
    "metagov_webhooks_rejected_total",
    "Webhooks refused before storage",
    ["plugin", "reason"],
    registry=REGISTRY,
)
DELIVERIES_ATTEMPTED = Counter(
    "metagov_deliveries_attempted_total", "Delivery attempts to Drivers", registry=REGISTRY
)
DELIVERIES_SUCCEEDED = Counter(
    "metagov_deliveries_succeeded_total", "Deliveries a Driver acknowledged", registry=REGISTRY
)
DELIVERIES_FAILED = Counter(
    "metagov_deliveries_failed_total", "Delivery attempts that failed", registry=REGISTRY
)
DELIVERIES_DEAD = Counter(
    "metagov_deliveries_dead_total", "Deliveries given up after the last retry", registry=REGISTRY
)
OUTBOX_PENDING = Gauge("metagov_outbox_pending", "Deliveries not yet delivered", registry=REGISTRY)
OUTBOX_LAG = Gauge(
    "metagov_outbox_lag_seconds",
    "Age of the oldest delivery not yet delivered",
    registry=REGISTRY,
)
OPEN_PROCESSES = Gauge(
    "metagov_open_processes", "Processes still pending", ["plugin"], registry=REGISTRY
)
INBOX_PENDING = Gauge(
    "metagov_inbox_pending", "Inbound webhooks not yet handled", registry=REGISTRY
)
WORKERS_ALIVE = Gauge(
    "metagov_workers_alive",
    "Workers whose heartbeat is recent (worker mode; read from the database)",
    registry=REGISTRY,
)
WORKERS_UNSEEN = Gauge(
    "metagov_workers_unseen_seconds",
    "Seconds since any worker's last heartbeat; -1 if none was ever seen",
    registry=REGISTRY,
)
REDIS_AVAILABLE = Gauge(
    "metagov_redis_available",
    "1 while this process reaches Redis, 0 during an outage (worker mode)",
    registry=REGISTRY,
)
REDIS_RETRIES = Counter(
    "metagov_redis_reconnect_attempts_total",
    "Attempts of this worker to reach Redis again during outages",
    registry=REGISTRY,
)


def set_backlog(
    *,
    outbox: tuple[int, datetime | None],
    inbox: int,
    open_processes: Sequence[tuple[str, int]],
) -> None:
    """Set the backlog gauges from what the database says now."""
    pending, oldest = outbox
    OUTBOX_PENDING.set(pending)
    OUTBOX_LAG.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)
    INBOX_PENDING.set(inbox)
    OPEN_PROCESSES.clear()
    for plugin, count in open_processes:
        OPEN_PROCESSES.labels(plugin).set(count)
