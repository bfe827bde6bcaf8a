"""Optional OpenTelemetry tracing, configured with the standard ``OTEL_*`` variables.

Off by default, and then it costs nothing: the SDK is not even imported, each helper here returns
at its first line, no middleware or HTTP transport is added and no trace context is stored.
It is on when an exporter is configured: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or ``OTEL_TRACES_EXPORTER`` names ``otlp`` or
``console``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keeps it off. Everything
else (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, headers,
timeouts, batching) is read by the SDK itself. OTLP goes over HTTP/protobuf.

Work that outlives its request keeps its trace: the W3C ``traceparent`` of the request that stored
a webhook is stored with it, the job that handles it continues that trace, and each event it
records stores the context of that job with its deliveries, whose attempts join it however late
and in whichever process. Spans carry ids and names, never URLs' paths or queries (a Driver's or
platform's URL may hold a token) nor bodies.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

_tracer: Tracer | None = None
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()
_SUPPORTED_EXPORTERS = ("otlp", "console")


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something this gateway cannot do."""


def enabled() -> bool:
    return _tracer is not None


def _wanted_exporter(environ: Mapping[str, str]) -> str | None:
    """Which exporter the environment asks for, or None for tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [e for e in named if e]
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return "otlp" if endpoint else None
    if named == ["none"]:
        return None
    if len(named) > 1 or named[0] not in _SUPPORTED_EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: {','.join(named)!r} is not supported; use otlp, console or none"
        )
    return named[0]


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on if the environment asks for it; returns whether it is on.

    Raises :class:`TracingConfigError`, naming the variable, for a configuration it cannot
    honour (an unknown exporter, OTLP over gRPC, the SDK not installed).
    """
    environ = os.environ if environ is None else environ
    exporter_name = _wanted_exporter(environ)
    if exporter_name is None:
        return False
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if exporter_name == "otlp" and protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        if exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingConfigError(
            "OTEL_* variables ask for tracing, but OpenTelemetry is not installed: "
            "pip install 'metagov[otel]'"
        ) from None
    service = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "metagov"}
    provider = TracerProvider(resource=Resource.create(service))
    exporter = OTLPSpanExporter() if exporter_name == "otlp" else ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(provider.shutdown)  # the last spans are flushed when the process ends
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (None: tracing off). Tests give an in-memory exporter's."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("metagov")


def span(
    name: str,
    *,
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: str = "internal",
) -> AbstractContextManager[Any]:
    """A span around a block, child of the current span, or of the stored ``parent``
    (a ``traceparent``) when given; a shared no-op when tracing is off."""
    if _tracer is None:
        return _NOTHING
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = None
    if parent:
        context = TraceContextTextMapPropagator().extract({"traceparent": parent})
    return _tracer.start_as_current_span(
        name,
        context=context,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=dict(attributes or {}),
    )


@contextlib.contextmanager
def resumed(traceparent: str | None) -> Iterator[None]:
    """Make the stored ``traceparent`` current again for a block, without a span of its own: work
    done later on behalf of a span that has ended (a batch saving what each of its webhooks
    emitted) is recorded as that span's."""
    if _tracer is None or not traceparent:
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    token = context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store with work done later; None when
    tracing is off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def set_attribute(key: str, value: str | int | float | bool) -> None:
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute(key, value)


# --- HTTP ------------------------------------------------------------------------------------


class TracingTransport(httpx.AsyncBaseTransport):
    """A client span around each outgoing request (a platform call, a delivery), with the trace
    context sent along (``traceparent``) so that a Driver that traces can continue it. The span
    names the host, not the path: a URL may hold a token."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes = {
            "http.request.method": request.method,
            "server.address": request.url.host,
            "url.scheme": request.url.scheme,
        }
        if request.url.port is not None:
            attributes["server.port"] = str(request.url.port)
        with span(f"HTTP {request.method}", kind="client", attributes=attributes) as current:
            TraceContextTextMapPropagator().inject(request.headers)
            response = await self.inner.handle_async_request(request)
            current.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                current.set_status(trace.Status(trace.StatusCode.ERROR))
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def client_transport(
    inner: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncBaseTransport | None:
    """The transport for one of the gateway's HTTP clients: ``inner`` (None meaning httpx's own)
    as it is when tracing is off, wrapped in a client span per request when it is on."""
    if _tracer is None:
        return inner
    return TracingTransport(inner or httpx.AsyncHTTPTransport())


# --- inbound requests --------------------------------------------------------------------------


@contextlib.contextmanager
def server_span(method: str, headers: Mapping[str, str]) -> Iterator[Any]:
    """The span of one request to the gateway, continuing the caller's trace if it sent one."""
    with span(
        method,
        parent=headers.get("traceparent"),
        kind="server",
        attributes={"http.request.method": method},
    ) as current:
        yield current


# --- logs --------------------------------------------------------------------------------------


class TraceIds(logging.Filter):
    """Puts the current ``trace_id`` and ``span_id`` on each record, so that a log line leads to
    its trace (both log formats show them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True
