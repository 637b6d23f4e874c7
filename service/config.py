"""Every service setting, read from VAE_* environment variables (listed in README)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Settings(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), extra="forbid")

    model_repository: str = "models"
    model_name: str = "digits"
    # "latest" (the highest version), "all", or a comma-separated list such as "1,3"
    model_versions: str = "latest"
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    variant: Literal["fp32", "fp16", "int8"] = "fp32"  # graph pair from the manifest
    intra_op_threads: int = Field(1, ge=0)  # 0 lets onnxruntime pick
    inter_op_threads: int = Field(1, ge=0)
    # With intra_op_threads != 1, onnxruntime's idle pool threads spin after each run by
    # default: they take the core the event loop needs between runs (docs/BENCHMARKS.md, P1
    # and "intra-op threads"). Off unless asked for.
    intra_op_spinning: bool = False
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    cpu_mem_arena: bool = True
    workers: int = Field(1, ge=1)
    threads: int = Field(4, ge=1)  # concurrent sync requests per worker
    timeout_s: int = Field(60, ge=1)
    max_items: int = Field(1024, ge=1)  # items (rows) in one request
    max_samples: int = Field(64, ge=1)  # /encode samples per item
    max_n: int = Field(1024, ge=1)  # /sample n
    max_steps: int = Field(256, ge=2)  # /interpolate steps
    max_k: int = Field(1000, ge=1)  # /score importance samples
    max_score_rows: int = Field(16384, ge=1)  # /score k x N decoded rows in one request
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    cors_origins: str = ""  # comma-separated origins allowed by CORS; empty = CORS off
    tracing_sample_rate: float = Field(0.0, ge=0.0, le=1.0)  # OpenTelemetry: 0 off, 1 every request
    tracing_exporter: Literal["otlp", "zipkin", "jaeger", "in_memory"] = "otlp"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # json (default): one JSON line per request with its request ID, about 40 % cheaper per small
    # request than BentoML's access log middleware (benchmark P2); bentoml: BentoML's format
    access_log: Literal["bentoml", "json", "off"] = "json"
    # BentoML's own traffic series (bentoml_service_request_*) duplicate vae_requests /
    # vae_request_duration_seconds and its middleware cost ~18 % of a one-item /encode
    # (benchmark P2): off by default, /metrics is then served by the API middleware
    bentoml_metrics: bool = False
    max_concurrency: int = Field(256, ge=0)  # in-flight API requests per worker; 0 = no limit
    batching: bool = True  # merge concurrent requests' rows per graph
    batch_max_rows: int = Field(256, ge=1)
    # 0: eager. A batch starts as soon as the graph is idle, and whatever arrives during a run
    # forms the next one: no added latency for a lone request, merging under load (where
    # the batcher also takes the rows its loop's next turns bring: batching._gather). > 0
    # also holds the first request up to this long for company.
    batch_max_wait_ms: float = Field(0.0, ge=0)
    max_queue_rows: int = Field(16384, ge=1)
    # onnxruntime runs expected to take less than this many ms run in the event loop instead
    # of the batcher's thread (the hop costs more than such a run; benchmarks P2, P6). 0: always
    # the thread. With one usable core (affinity or CPU quota) runs up to 50 ms are inline.
    inline_run_ms: float = Field(1.0, ge=0)
    # Bearer-token authentication on every door (service/auth.py); empty = off
    auth_token: str = ""
    auth_token_file: str = ""  # e.g. a mounted Kubernetes secret
    auth_public_paths: str = ("/livez,/readyz,/metrics,/v2/health/live,/v2/health/ready,"
                              "/ui,/ui/*")
    # Garbage collection tuned for serving (benchmarks P2/P4/P6): after start-up every object
    # alive (modules, BentoML, the model) is frozen out of the collector's reach, and the
    # youngest generation is collected every this many allocations instead of 700. Python's
    # defaults made full collections walk ~10^6 start-up objects every few seconds under load:
    # the p99 of a 15 ms median request was 110-150 ms; with this, ~20 ms. 0 = Python's defaults.
    gc_gen0_threshold: int = Field(20000, ge=0)
    # New versions in the repository are verified, warmed and served without a restart: each
    # worker looks every this many seconds (0 = only on POST /v2/repository/models/{m}/load).
    repository_poll_s: float = Field(10.0, ge=0)
    # gRPC (KServe V2 GRPCInferenceService). Every worker binds the port with SO_REUSEPORT
    # (README, "gRPC and workers"); a port in use by anything else stops the start.
    grpc: bool = True
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(8001, ge=1, le=65535)
    # RPCs served at once per worker (grpc's thread pool); more wait in its queue. Each
    # thread hands its rows to the event loop's batchers, so this also caps a gRPC batch.
    grpc_threads: int = Field(16, ge=1)
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    grpc_tls_cert: str = ""  # PEM files; both set = TLS on
    grpc_tls_key: str = ""
    grpc_tls_client_ca: str = ""  # set = clients must present a certificate signed by it


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values = {name: env[f"VAE_{name.upper()}"] for name in Settings.model_fields
              if f"VAE_{name.upper()}" in env}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SystemExit(f"invalid VAE_* setting: {exc}") from None


def bentoml_config(st: Settings) -> dict:
    """The BentoML service configuration these settings imply."""
    config: dict = {
        "name": "vae",
        "workers": st.workers,
        "threads": st.threads,
        # API calls time out in the API middleware at timeout_s (504 with the request ID);
        # BentoML's own timeout, a second later, bounds the other routes
        "traffic": {"timeout": st.timeout_s + 1},
        "metrics": {"enabled": st.bentoml_metrics},
        "logging": {"access": {"enabled": st.access_log == "bentoml"}},
        "tracing": {"sample_rate": st.tracing_sample_rate,
                    # tracing off: no path gets OpenTelemetry's per-request span work at all
                    # (it costs ~15 % of a small request even unsampled; benchmark P2)
                    "excluded_urls": ["/livez", "/readyz", "/metrics"]
                    if st.tracing_sample_rate > 0 else [".*"]},
    }
    if st.tracing_sample_rate > 0:  # no exporter at all while tracing is off
        config["tracing"]["exporter_type"] = st.tracing_exporter
        if st.tracing_exporter == "otlp":
            config["tracing"]["otlp"] = {"protocol": "http", "endpoint": st.otlp_endpoint}
    origins = [o.strip() for o in st.cors_origins.split(",") if o.strip()]
    if origins:
        config["http"] = {"cors": {
            "enabled": True, "access_control_allow_origins": origins,
            "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
            "access_control_allow_headers": ["Content-Type", "X-Request-ID", "Authorization"],
            "access_control_expose_headers": ["X-Request-ID", "Retry-After"]}}
    return config
