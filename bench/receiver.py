"""The Driver's event endpoint, as a subprocess: ``python -m bench.receiver --port P``, with the
Driver's signing secret in ``BENCH_RECEIVER_SECRET``.

``POST /events`` checks the Standard Webhooks signature with the Driver's secret, then answers
200, or the status set by ``POST /mode {"status": 503}`` (a Driver outage). For every event it
acknowledges it records the webhook-id (duplicates), the community and ``seq`` (order), and, when
the event's data carries ``sent_at`` (the load generator's ``time.time()`` when it sent the
webhook), the end-to-end latency; for every ``process.completed`` event, how long after the
process's ``closing_at`` it arrived. ``GET /stats`` and ``GET /dump`` report; ``POST /reset``
forgets.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from bench import httpserver
from metagov import signing


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.fail_status: int | None = None
        self.reset()

    def reset(self) -> None:
        self.attempts = 0
        self.failed_answers = 0
        self.bad_signatures = 0
        self.acked = 0
        self.seen: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.per_community: dict[str, int] = {}
        self.order_violations = 0
        self.gaps = 0
        self.latencies: list[float] = []
        self.deadline_latencies: list[float] = []
        self.first_ack_at: float | None = None
        self.last_ack_at: float | None = None

    async def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        path = target.split("?", 1)[0]
        if path == "/events" and method == "POST":
            return self._event(headers, body)
        if path == "/stats":
            return 200, self.stats()
        if path == "/dump":
            return 200, {
                **self.stats(),
                "latencies": self.latencies,
                "deadline_latencies": self.deadline_latencies,
            }
        if path == "/mode" and method == "POST":
            status = json.loads(body or b"{}").get("status")
            self.fail_status = int(status) if status and int(status) >= 300 else None
            return 200, {"fail_status": self.fail_status}
        if path == "/reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}
        return 404, {"detail": "not found"}

    def _event(self, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        now = time.time()
        self.attempts += 1
        try:
            msg_id = signing.verify_standard(self.secret, headers, body, now=now)
        except signing.SignatureError as exc:
            self.bad_signatures += 1
            return 401, {"detail": exc.reason}
        if self.fail_status is not None:
            self.failed_answers += 1
            return self.fail_status, None
        envelope = json.loads(body)
        self.acked += 1
        self.first_ack_at = self.first_ack_at or now
        self.last_ack_at = now
        if msg_id in self.seen:  # at-least-once: a redelivery, already counted
            self.seen[msg_id] += 1
            return 200, None
        self.seen[msg_id] = 1
        community, seq = envelope["community"], int(envelope["seq"])
        self.per_community[community] = self.per_community.get(community, 0) + 1
        last = self.last_seq.get(community)
        if last is not None:
            if seq <= last:
                self.order_violations += 1
            elif seq != last + 1:
                self.gaps += 1
        self.last_seq[community] = max(seq, last or 0)
        data = envelope.get("data") or {}
        sent_at = data.get("sent_at")
        if isinstance(sent_at, int | float):
            self.latencies.append(now - sent_at)
        if envelope.get("event_type") == "process.completed" and data.get("closing_at"):
            closing = datetime.fromisoformat(str(data["closing_at"]).replace("Z", "+00:00"))
            self.deadline_latencies.append(now - closing.timestamp())
        return 200, None

    def stats(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "failed_answers": self.failed_answers,
            "bad_signatures": self.bad_signatures,
            "acked": self.acked,
            "unique": len(self.seen),
            "duplicates": sum(n - 1 for n in self.seen.values()),
            "order_violations": self.order_violations,
            "gaps": self.gaps,
            "per_community": self.per_community,
            "deadlines_met": len(self.deadline_latencies),
            "first_ack_at": self.first_ack_at,
            "last_ack_at": self.last_ack_at,
            "fail_status": self.fail_status,
        }


def main() -> None:
    httpserver.run_main(lambda secret: Receiver(secret).handle, "BENCH_RECEIVER_SECRET")


if __name__ == "__main__":
    main()
