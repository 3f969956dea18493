"""Spans leave the process over OTLP/HTTP when the standard variables say where to."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from chassis.telemetry import span_exporter


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
