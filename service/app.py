"""The VAE service: one BentoML service over onnxruntime, as in docs/API.md.

    BENTOML_DO_NOT_TRACK=true bentoml serve service.app:VAEService --host 127.0.0.1 --port 3000

Rooms, imports pointing one way (doors -> operations -> runtime):
- service/doors/: HTTP JSON, V2 REST, gRPC, the API document and the /ui page, behind the
  HTTP front door (front_door.py);
- service/operations/: every operation of the contract, written once (api.py), the V2 models
  over them (v2.py), the tensor encodings (tensors.py);
- service/runtime/: onnxruntime sessions and versions (engine.py), row batching, repository
  watching, latent-space maths;
- service/lifecycle/: a request's bookkeeping on every door: request ID, auth, admission,
  deadlines, metrics and access log (calls.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import bentoml

from modelrepo.repository import ModelRepositoryError
from service.config import bentoml_config, load_settings
from service.doors import front_door, v2_grpc
from service.doors.page import make_ui_app
from service.errors import KINDS
from service.lifecycle.auth import BearerAuth
from service.lifecycle.drain import Drain
from service.metrics import MODEL_INFO, MODEL_LOAD_SECONDS, flush_metrics, init_series
from service.operations import v2
from service.operations.api import OPERATIONS, Operations
from service.runtime.engine import ModelRuntime
from service.runtime.registry import ModelRegistry

log = logging.getLogger("vae.service")
# uvicorn formats an access line per request whenever its logger has a handler anywhere up the
# tree, even though BentoML's levels then drop the line: the JSON access log (or BentoML's,
# VAE_ACCESS_LOG=bentoml) replaces it.
logging.getLogger("uvicorn.access").propagate = False
# BentoML's logging configuration leaves other loggers at WARNING: the service's own INFO lines
# (a version loaded, going live, retiring; a model added or retired) are what an operator reads
logging.getLogger("vae").setLevel(logging.INFO)
SETTINGS = load_settings()


def _load_or_refuse(on_loaded: Callable[[ModelRuntime], None] = lambda rt: None,
                    on_retired: Callable[[ModelRuntime], None] = lambda rt: None) \
        -> ModelRegistry:
    """Load, verify and warm the configured models and versions; refuse to serve a bad model
    that was named (with VAE_MODELS=* a bad model is refused alone, logged)."""
    try:
        return ModelRegistry.load(SETTINGS, on_loaded, on_retired)
    except ModelRepositoryError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(f"refusing to start: {exc}") from exc


def _model_info(rt: ModelRuntime, value: int) -> None:
    m, g = rt.manifest, rt.manifest.graphs
    MODEL_INFO.labels(m.name, str(m.version), g["encoder"].sha256, g["decoder"].sha256,
                      rt.provider).set(value)
    if value:
        MODEL_LOAD_SECONDS.labels(m.name, str(m.version)).set(rt.load_seconds)
        v2_infer = [f"/v2/models/{op}/infer" for op in v2.MODELS]
        init_series(m.name, {"http": [*OPERATIONS, *v2_infer], "grpc": v2_infer},
                    sorted({k.reason for k in KINDS.values()}))


@bentoml.asgi_app(make_ui_app(), path="/ui")
@bentoml.service(**bentoml_config(SETTINGS))
class VAEService:
    @bentoml.on_deployment
    def verify_repository() -> None:
        """Runs once in the main process before any worker: a bad model or a taken gRPC port
        stops `bentoml serve` with a non-zero exit instead of workers restarting forever."""
        registry = _load_or_refuse()
        v2_grpc.check_settings(SETTINGS)
        BearerAuth.from_settings(SETTINGS)  # a token file that cannot be read stops the start
        grpc_at = f"{SETTINGS.grpc_host}:{SETTINGS.grpc_port}" if SETTINGS.grpc else "off"
        for name, ms in sorted(registry.models.items()):
            rt = ms.get(None)
            default = " (default)" if name == registry.default_name and \
                len(registry.models) > 1 else ""
            print(f"vae: serving model {name}{default} version {rt.manifest.version} "
                  f"(versions {ms.versions}) from {SETTINGS.model_repository}: "
                  f"input [N, {', '.join(map(str, rt.shape))}], latent {rt.latent_dim}; "
                  f"gRPC (KServe V2) {grpc_at}", flush=True)
        if not registry.models:
            print(f"vae: no model served yet from {SETTINGS.model_repository} (VAE_MODELS=*: "
                  f"folders that appear are served); gRPC (KServe V2) {grpc_at}", flush=True)

    def __init__(self) -> None:
        self.settings = SETTINGS
        # each worker verifies and warms its own sessions
        self.registry = _load_or_refuse(on_loaded=lambda rt: _model_info(rt, 1),
                                        on_retired=lambda rt: _model_info(rt, 0))
        self.ops = Operations(self.registry, SETTINGS)
        self.grpc_server = None
        self.orphan_watch: asyncio.Task | None = None
        self.drain = Drain()

    @bentoml.on_startup
    async def start_background(self) -> None:
        """In the worker's event loop: the repository poller and the gRPC server, so both
        share this worker's batchers with the HTTP door."""
        self.registry.start()
        self.drain.install(SETTINGS.drain_s)  # SIGTERM: not ready at once, stop drain_s later
        self.orphan_watch = self.drain.watch_parent()  # the arbiter killed: workers follow
        if SETTINGS.gc_gen0_threshold:  # see config.py: p99 latency, not memory, is at stake
            gc.collect()
            gc.freeze()
            gc.set_threshold(SETTINGS.gc_gen0_threshold, 50, 100)
        if SETTINGS.grpc:
            self.grpc_server = await v2_grpc.start(lambda: self, SETTINGS, self.drain)

    @bentoml.on_shutdown
    async def stop_background(self) -> None:
        await self.registry.stop()
        if self.orphan_watch is not None:
            self.orphan_watch.cancel()
        if self.grpc_server is not None:
            await v2_grpc.stop(self.grpc_server, grace=5)
        flush_metrics()  # what the last 0.1 s observed (service/metrics.py)

    def not_ready_because(self) -> str | None:
        """Why this worker is not ready (None: ready). Loading verifies and warms every
        version in __init__; draining (after SIGTERM) is not ready: balancers stop sending
        while requests are still served. BentoML's /readyz, V2 REST and gRPC ask this."""
        reason = self.registry.not_ready_because()
        if reason is not None:
            return reason
        if self.drain.draining:
            return "draining: this replica is shutting down (it still serves requests)"
        return None

    def __is_ready__(self) -> bool:
        return self.not_ready_because() is None


front_door.install(VAEService, SETTINGS)
