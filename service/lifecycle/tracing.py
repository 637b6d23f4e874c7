"""OpenTelemetry tracing of every HTTP request (VAE_TRACING_*), through OpenTelemetry's own
API: the ASGI instrumentation around the front door (service/doors/front_door.py) with a
tracer provider built here, so door and BentoML routes alike get exactly one server span."""

from __future__ import annotations

from typing import Any

from service.config import Settings

UNTRACED = "/livez,/readyz,/metrics"  # probes and scrapes


def tracer_provider(st: Settings) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(st.tracing_sample_rate)),
                              resource=Resource.create({"service.name": "vae"}))
    if st.tracing_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter(endpoint=st.otlp_endpoint)
    else:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def traced(app: Any, st: Settings) -> Any:
    """`app` inside OpenTelemetry's ASGI middleware: one server span per request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, excluded_urls=UNTRACED, tracer_provider=
                                   tracer_provider(st), exclude_spans=["receive", "send"])
