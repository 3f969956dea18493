"""Spans leave the process over OTLP/HTTP when the standard variables say where to; without
an exporter they are not recorded, but the trace context still flows."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from chassis.telemetry import current_traceparent, sampler, span_exporter


def test_no_endpoint_no_exporter() -> None:
    assert span_exporter({}) is None


def test_endpoint_variables_choose_the_url() -> None:
    base = span_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert isinstance(base, OTLPSpanExporter)
    assert base._endpoint == "http://collector:4318/v1/traces"
    explicit = span_exporter(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4318/traces",
        }
    )
    assert isinstance(explicit, OTLPSpanExporter)
    assert explicit._endpoint == "http://other:4318/traces"


async def test_spans_reach_a_collector() -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        exporter = span_exporter(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        )
        assert exporter is not None
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("create-contact"):
            pass
        provider.shutdown()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert received
        assert received[0][0] == "/v1/traces"
        assert b"create-contact" in received[0][1]
    finally:
        server.shutdown()


def test_without_an_exporter_root_spans_are_not_recorded_but_keep_a_trace_context() -> None:
    chosen = sampler({}, exporting=False)
    assert chosen is not None
    tracer = TracerProvider(sampler=chosen).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        ctx = root.get_span_context()
        assert not root.is_recording()
        assert ctx.is_valid  # trace ids still reach logs, traceparent and event headers
        traceparent = current_traceparent()
        assert traceparent is not None
        _, trace_id, span_id, flags = traceparent.split("-")
        assert (trace_id, span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        assert not int(flags, 16) & 1  # not sampled: downstream services need not record
    sampled_parent = propagate.extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    with tracer.start_as_current_span("child", context=sampled_parent) as child:
        assert child.is_recording()  # a caller's sampling decision is honoured


def test_an_exporter_or_an_explicit_sampler_leaves_the_choice_to_the_sdk() -> None:
    assert sampler({}, exporting=True) is None
    assert sampler({"OTEL_TRACES_SAMPLER": "always_on"}, exporting=False) is None
