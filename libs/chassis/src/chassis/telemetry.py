"""OpenTelemetry traces (HTTP, SQLAlchemy, httpx, NATS via traceparent), Prometheus metrics
and JSON logs carrying trace ids."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

_configured = False

HTTP_REQUESTS = Histogram(
    "crm_http_request_seconds", "HTTP request duration", ["service", "method", "route", "status"]
)
EVENTS_PUBLISHED = Counter(
    "crm_events_published_total", "Events published by the relay", ["service"]
)
OUTBOX_BACKLOG = Gauge("crm_outbox_backlog", "Unsent outbox rows seen by the relay", ["service"])
EVENTS_CONSUMED = Counter(
    "crm_events_consumed_total", "Events handled by consumers", ["service", "consumer", "outcome"]
)


class _TraceContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def span_exporter(environ: Mapping[str, str] = os.environ) -> SpanExporter | None:
    """The OTLP/HTTP exporter when the standard variables ask for one
    (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, e.g. the
    collector's `http://otel-collector:4318`), None otherwise (spans stay in process). The
    exporter reads the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout) itself."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and not base:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if not endpoint:
        endpoint = base.rstrip("/") + "/v1/traces"  # type: ignore[union-attr]
    return OTLPSpanExporter(endpoint=endpoint)


def sampler(environ: Mapping[str, str], *, exporting: bool) -> Sampler | None:
    """Which spans to record: None leaves it to the SDK (`OTEL_TRACES_SAMPLER`, by default
    parent-based always-on), which is what happens whenever spans can leave the process or
    a sampler is asked for. Without an exporter a recorded span is work thrown away at the
    end of every request and event (attributes, events, the processor chain: a few percent
    of each service's CPU), so root spans are not recorded. They still carry a valid trace
    context: the trace ids in the logs, the proxied requests' `traceparent` and the events'
    headers are the same; a caller's sampled parent is still honoured."""
    if exporting or environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ParentBased(root=ALWAYS_OFF)


def setup(service: str, *, log_level: str = "INFO", json_logs: bool = True) -> None:
    """Configure the tracer provider (sampling from OTEL_TRACES_SAMPLER /
    OTEL_TRACES_SAMPLER_ARG, export from `span_exporter`) and logging once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    exporter = span_exporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"crm-{service}"}),
        sampler=sampler(os.environ, exporting=exporter is not None),
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    handler = logging.StreamHandler(sys.stdout)
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    handler.addFilter(_TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request


def tracer(name: str = "crm") -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_from_headers(headers: dict[str, str]) -> otel_context.Context:
    return propagate.extract(headers)


def instrument_engine(engine: Any) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
