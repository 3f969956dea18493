"""OpenTelemetry traces (HTTP, SQLAlchemy, httpx, NATS via traceparent), Prometheus metrics
and JSON logs carrying trace ids."""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
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


def setup(service: str, *, log_level: str = "INFO", json_logs: bool = True) -> None:
    """Configure the tracer provider and logging once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    trace.set_tracer_provider(
        TracerProvider(resource=Resource.create({"service.name": f"crm-{service}"}))
    )
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
