"""What tracing costs when it is off: ``python -m bench.tracing [-n 1000000]``.

Times the calls the gateway makes on its hot paths whatever the configuration (a span around a
webhook, an attempt, an action; reading the context to store with a row), with tracing off, next
to the cheapest possible stand-ins (entering a bare ``nullcontext``; calling a function that
returns None), and prints nanoseconds per call. Then, for scale, the same calls with tracing on
(an SDK provider with no exporter). Off, each call is one global lookup and one comparison: a few
tens of nanoseconds, against the ~1 ms of CPU a stored webhook costs (``bench.statements``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable

from metagov import tracing


def _per_call_ns(work: Callable[[], object], count: int) -> float:
    for _ in range(min(count, 10_000)):
        work()
    started = time.perf_counter_ns()
    for _ in range(count):
        work()
    return (time.perf_counter_ns() - started) / count


def _span() -> None:
    with tracing.span("webhook.receive", attributes={"metagov.plugin": "webhook"}):
        pass


def _context() -> None:
    tracing.current_traceparent()


def _bare_context() -> None:
    with contextlib.nullcontext():
        pass


def _nothing() -> None:
    return None


def measure(count: int) -> dict[str, float]:
    results = {
        "nullcontext (floor)": _per_call_ns(_bare_context, count),
        "empty function (floor)": _per_call_ns(_nothing, count),
        "span, tracing off": _per_call_ns(_span, count),
        "traceparent, tracing off": _per_call_ns(_context, count),
    }
    from opentelemetry.sdk.trace import TracerProvider

    tracing.use(TracerProvider())
    try:
        on = max(1, count // 20)
        results["span, tracing on (no exporter)"] = _per_call_ns(_span, on)
        with tracing.span("parent"):
            results["traceparent, tracing on"] = _per_call_ns(_context, on)
    finally:
        tracing.use(None)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="calls per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = measure(args.n)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in results.items()}))
        return 0
    print(f"{'call':<34}{'ns/call':>10}")
    for name, value in results.items():
        print(f"{name:<34}{value:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
