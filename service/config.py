"""Every service setting, read from VAE_* environment variables by pydantic-settings.

docs/CONFIGURATION.md's table is this model's fields (`python -m service.config` prints it; a test
compares the two).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelrepo.repository import name_problem


def _f(default: object, doc: str, **limits: object) -> object:
    return Field(default, description=doc, **limits)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAE_", protected_namespaces=(),
                                      extra="ignore")

    model_repository: str = _f("models", "repository folder (relative: from the working "
                               "directory, else from beside the service's code, as in a "
                               "bento's `src/`)")
    model_name: str = _f("digits", "model name inside it, when `VAE_MODELS` is unset")
    models: str = _f("", "models to serve: comma-separated names, or `*` for every model "
                     "folder of the repository, including folders that appear or disappear "
                     "while the service runs (empty: `VAE_MODEL_NAME` alone)")
    default_model: str = _f("", "the model answering requests that name none (empty: the "
                            "first name of `VAE_MODELS`, or with `*` the alphabetically first "
                            "model served)")

    model_versions: str = _f("latest", "`latest`, `all`, or a list such as `1,3`")
    provider: Literal["auto", "cpu", "cuda"] = _f(
        "auto", "`auto` (CUDA when onnxruntime-gpu sees a GPU, else CPU), `cpu`, `cuda`")
    variant: Literal["fp32", "fp16", "int8"] = _f(
        "fp32", "graph pair to serve: `fp32`, `fp16`, `int8` (as listed in the manifest)")
    intra_op_threads: int = _f(1, "onnxruntime intra-op threads per session (`0`: "
                               "onnxruntime picks; keep threads × workers ≤ cores)", ge=0)
    inter_op_threads: int = _f(1, "onnxruntime inter-op threads per session", ge=0)
    # idle pool threads spinning after each run take the core the event loop needs
    intra_op_spinning: bool = _f(False, "let onnxruntime's idle intra-op threads spin between "
                                 "runs (docs/BENCHMARKS.md: it cost throughput and p99 here)")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = _f(
        "all", "onnxruntime graph optimization: `disable`, `basic`, `extended`, `all`")
    cpu_mem_arena: bool = _f(True, "onnxruntime CPU memory arena")
    workers: int = _f(1, "BentoML worker processes", ge=1)
    drain_s: float = _f(5.0, "seconds a worker keeps serving after SIGTERM while it answers "
                        "not-ready (/readyz 503, gRPC health NOT_SERVING), before it stops",
                        ge=0)
    threads: int = _f(4, "BentoML threads per worker (the JSON API itself runs in the event "
                      "loop)", ge=1)
    timeout_s: int = _f(60, "API request timeout: 504 `{\"error\", \"request_id\"}`; gRPC calls "
                        "end at the client's deadline", ge=1)
    max_items: int = _f(1024, "items (rows) per request", ge=1)
    max_samples: int = _f(64, "`/encode` samples per item", ge=1)
    max_n: int = _f(1024, "`/sample` n", ge=1)
    max_steps: int = _f(256, "`/interpolate` steps", ge=2)
    max_k: int = _f(1000, "`/score` importance samples", ge=1)
    max_score_rows: int = _f(16384, "`/score` k × N decoded rows in one request", ge=1)
    max_body_bytes: int = _f(32 * 1024 * 1024, "request body size (HTTP, and V2 REST after "
                             "decompression)", ge=1024)
    cors_origins: str = _f("", "comma-separated origins allowed by CORS (empty: CORS off)")
    tracing_sample_rate: float = _f(0.0, "OpenTelemetry sampling, 0–1 (`0` off, `1` every "
                                    "request)", ge=0.0, le=1.0)
    tracing_exporter: Literal["otlp", "in_memory"] = _f(
        "otlp", "span exporter: `otlp` (OTLP/HTTP to `VAE_OTLP_ENDPOINT`) or `in_memory`")
    otlp_endpoint: str = _f("http://127.0.0.1:4318/v1/traces", "OTLP/HTTP span endpoint")
    access_log: Literal["bentoml", "json", "off"] = _f(
        "json", "`json` (one JSON line per request or RPC on stderr: time, `request_id`, method, "
        "path, status, ms; buffered, written at least every 0.2 s), `bentoml` (BentoML's "
        "format), `off`")
    bentoml_metrics: bool = _f(False, "`true` adds BentoML's own `bentoml_service_request_*` "
                               "series (and its middleware's cost) to `/metrics`")
    max_concurrency: int = _f(256, "in-flight API requests per worker, HTTP and gRPC together, "
                              "before 429 (`0`: no limit)", ge=0)
    batching: bool = _f(True, "merge concurrent requests' rows per graph")
    batch_max_rows: int = _f(256, "rows at which a batch closes", ge=1)
    # 0 (eager): a lone request runs at once; what arrives during a run forms the next batch
    batch_max_wait_ms: float = _f(0.0, "how long the first request of a batch waits for company "
                                  "(`0`: eager, a run starts when the graph is idle)", ge=0)
    max_queue_rows: int = _f(16384, "rows waiting per graph before 503", ge=1)
    inline_run_ms: float = _f(1.0, "a run expected to take less runs in the event loop instead "
                              "of the batcher's thread; with one usable core runs under 50 ms "
                              "do (`0`: always the thread)", ge=0)
    auth_token: str = _f("", "bearer token (≥ 16 characters) required on every door: "
                         "`Authorization: Bearer <token>` over HTTP, metadata `authorization` "
                         "over gRPC; empty: off")
    auth_token_file: str = _f("", "a file holding the token (e.g. a mounted secret), instead "
                              "of `VAE_AUTH_TOKEN`")
    auth_public_paths: str = _f("/livez,/readyz,/metrics,/v2/health/live,/v2/health/ready,"
                                "/ui,/ui/*", "paths (and the matching gRPC health RPCs) that "
                                "need no token; `/x/*` is a prefix")
    # Python's defaults made full collections walk ~10^6 start-up objects every few seconds
    # under load, the p99 of small requests several times their median (docs/BENCHMARKS.md)
    gc_gen0_threshold: int = _f(20000, "after start-up, freeze start-up objects out of the "
                                "garbage collector and collect the youngest generation every "
                                "this many allocations (`0`: Python's defaults)", ge=0)
    repository_poll_s: float = _f(10.0, "seconds between looks for new versions (`0`: only on "
                                  "a V2 load call)", ge=0)
    grpc: bool = _f(True, "serve KServe V2 gRPC")
    grpc_host: str = _f("0.0.0.0", "gRPC address (every worker binds it, SO_REUSEPORT)")
    grpc_port: int = _f(8001, "gRPC port", ge=1, le=65535)
    grpc_threads: int = _f(16, "gRPC calls served at once per worker (grpc's thread pool); "
                           "also caps the requests one gRPC batch merges", ge=1)
    grpc_max_message_bytes: int = _f(64 * 1024 * 1024, "gRPC message size, both directions",
                                     ge=1024)
    grpc_tls_cert: str = _f("", "PEM certificate: TLS on when cert and key are set")
    grpc_tls_key: str = _f("", "PEM private key")
    grpc_tls_client_ca: str = _f("", "PEM CA: clients must present a certificate it signed")

    @property
    def model_names(self) -> list[str] | None:
        """The names to serve, in order; None for `*` (every folder of the repository)."""
        spec = self.models.strip()
        if spec == "*":
            return None
        if not spec:
            return [self.model_name]
        return list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))

    @model_validator(mode="after")
    def _names_follow_the_rule(self) -> Settings:
        names = self.model_names
        for name in [*(names or []), *([self.default_model] if self.default_model else [])]:
            problem = name_problem(name)
            if problem is not None:
                raise ValueError(f"VAE_MODELS / VAE_MODEL_NAME / VAE_DEFAULT_MODEL: {problem}")
        if names is not None and not names:
            raise ValueError("VAE_MODELS: no model name given (names, or `*`)")
        if names is not None and self.default_model and self.default_model not in names:
            raise ValueError(f"VAE_DEFAULT_MODEL: {self.default_model!r} is not one of "
                             f"VAE_MODELS ({', '.join(names)})")
        return self

    @model_validator(mode="after")
    def _beside_the_code(self) -> Settings:
        # Made absolute once: BentoML changes the working directory while it starts a bento
        # (src/, then the bento's root, whose models/ is BentoML's own model store). A relative
        # repository without the model here is taken from beside service/ (a bento's src/).
        repo = Path(self.model_repository)
        if not repo.is_absolute():
            beside = Path(__file__).resolve().parents[1] / repo
            first = (self.model_names or [""])[0]  # with `*`: the repository folder itself
            use_beside = (not (repo / first).is_dir()
                          and (beside / first).is_dir())
            self.model_repository = str(beside if use_beside else repo.resolve())
        return self


def load_settings() -> Settings:
    """The settings of this process; a bad value stops the start with the variable's name."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"invalid VAE_* setting: {exc}") from None


def markdown_table() -> str:
    """docs/CONFIGURATION.md's table, one row per setting."""
    def show(v: object) -> str:
        if isinstance(v, bool):
            return f"`{str(v).lower()}`"
        return "empty" if v == "" else f"`{v:g}`" if isinstance(v, float) else f"`{v}`"
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        rows.append(f"| `VAE_{name.upper()}` | {show(f.default)} | {f.description} |")
    return "\n".join(rows)


def bentoml_config(st: Settings) -> dict:
    """The BentoML service configuration these settings imply. Tracing, traffic metrics, the
    access log and CORS are the front door's (service/doors/front_door.py), in front of
    BentoML's stack, so BentoML's own copies of those layers are off."""
    return {
        "name": "vae",
        "workers": st.workers,
        "threads": st.threads,
        # API calls time out in the front door at timeout_s (504 with the request ID);
        # BentoML's own timeout, a second later, bounds the routes it answers
        "traffic": {"timeout": st.timeout_s + 1},
        "metrics": {"enabled": False},
        "logging": {"access": {"enabled": False}},
        "tracing": {"sample_rate": 0.0, "excluded_urls": [".*"]},
    }


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
