"""Each feature around the front door really works, with the API behaving the same: tracing
(spans received by a real OTLP/HTTP collector in this test: one server span per request),
CORS (preflight and answers, errors included) and BentoML's own traffic metrics."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import Server

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver (protobuf bodies on /v1/traces) that keeps every span."""

    def __init__(self) -> None:
        self.spans: list = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.shutdown()


def test_one_server_span_per_request(trained, collector):
    url = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    env = {"VAE_TRACING_SAMPLE_RATE": "1.0", "VAE_TRACING_EXPORTER": "otlp",
           "VAE_OTLP_ENDPOINT": url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with Server(trained["repository"], env) as srv:
        time.sleep(1.0)
        collector.spans.clear()  # start-up's readiness polls (/readyz is not traced anyway)
        calls = [("/encode", {"inputs": [[0.5] * 64]}, 200), ("/sample", {"n": 1}, 200),
                 ("/sample", {"n": 1, "bogus": 1}, 400),
                 ("/v2/models/decoder/infer", {"inputs": [
                     {"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}, 200)]
        for path, body, status in calls:
            assert httpx.post(srv.url + path, json=body).status_code == status
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            server_spans = [s for s in collector.spans if s.kind == SERVER_KIND]
            if len(server_spans) >= len(calls):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more arrives
        server_spans = [s for s in collector.spans if s.kind == SERVER_KIND]
        targets = sorted(attr.value.string_value for s in server_spans for attr in s.attributes
                         if attr.key in ("http.target", "url.path"))
        assert len(server_spans) == len(calls), [s.name for s in server_spans]
        assert targets == sorted(p for p, _, _ in calls)
        assert len({s.trace_id for s in server_spans}) == len(calls)  # a trace each


def test_cors_on_answers_errors_and_preflight(trained):
    origin = {"Origin": "http://app.example"}
    with Server(trained["repository"], {"VAE_CORS_ORIGINS": "http://app.example"}) as srv:
        ok = httpx.post(srv.url + "/encode", json={"inputs": [[0.5] * 64]}, headers=origin)
        bad = httpx.post(srv.url + "/encode", json={"inputs": [[0.5] * 64], "x": 1},
                         headers=origin)
        assert (ok.status_code, bad.status_code) == (200, 400)
        for r in (ok, bad):
            assert r.headers["access-control-allow-origin"] == "http://app.example"
            assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        pre = httpx.options(srv.url + "/encode", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]
        evil = httpx.options(srv.url + "/encode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in evil.headers


def test_bentoml_metrics_count_the_api_when_enabled(trained):
    import re

    with Server(trained["repository"], {"VAE_BENTOML_METRICS": "true"}) as srv:
        for _ in range(3):
            assert httpx.post(srv.url + "/sample", json={"n": 1}).status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        counted = [float(m) for m in re.findall(
            r'^bentoml_service_request_total\{[^}]*endpoint="/sample"[^}]*\} (\S+)$', text, re.M)]
        assert sum(counted) == 3, text[:3000]
        assert 'vae_requests_total{endpoint="/sample",model="digits",protocol="http",' \
            'status="200"} 3.0' in text
