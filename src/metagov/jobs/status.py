"""A worker's own HTTP port (``metagov worker --metrics-port``): Prometheus metrics, and the
liveness and readiness probes an orchestrator or a load test needs for a process that serves no
API. It runs in a thread with the standard library's server, so a worker busy with jobs, or
waiting for Redis, still answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metagov import metrics
from metagov.jobs.worker import WorkerState


def serve_status(port: int, state: WorkerState, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 (scraped from outside the container)
    """Start serving ``/metrics``, ``/healthz`` and ``/readyz`` on ``port``, in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                checks = {
                    "redis": "ok" if state.redis_ok else "unavailable",
                    "worker": "stopping" if state.stopping else "ok",
                }
                ready = all(value == "ok" for value in checks.values())
                body = {"status": "ready" if ready else "not ready", "checks": checks}
                self._json(200 if ready else 503, body)
            else:
                self._json(404, {"detail": "not found", "code": "not_found"})

        def _json(self, status: int, body: object) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds are not worth a log line

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker status", daemon=True).start()
    return server
