"""The VAE service: BentoML endpoints over onnxruntime, as in ../shared/API.md.

    BENTOML_DO_NOT_TRACK=true bentoml serve service.app:VAEService --host 127.0.0.1 --port 3000

Endpoints are thin: decode and validate the request (service/tensors.py), run the graphs
(service/engine.py), apply the latent-space rules (service/latent.py), encode the response.
"""

from __future__ import annotations

import gc
import logging
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
import orjson
from pydantic import Field
from starlette.responses import Response

from modelrepo import scoring
from modelrepo.repository import ModelRepositoryError
from service import latent, v2_grpc
from service.auth import BearerAuth
from service.config import bentoml_config, load_settings
from service.engine import ModelRuntime, ModelSet
from service.errors import ApiError, BadInput, LimitExceeded
from service.fastpath import FastPath, JsonAnswer
from service.live import RepositoryWatcher
from service.metrics import MODEL_INFO, MODEL_LOAD_SECONDS, flush_metrics, series
from service.middleware import ApiMiddleware
from service.tensors import decode_images, decode_latents, encode_images
from service.ui_app import make_ui_app
from service.v2_rest import make_app

log = logging.getLogger("vae.service")
# uvicorn formats an access line per request (client address, quoted path) whenever its
# logger has a handler anywhere up the tree, even though BentoML's levels then drop the line:
# ~2 % of a small request. Our access log (or BentoML's, VAE_ACCESS_LOG=bentoml) replaces it.
logging.getLogger("uvicorn.access").propagate = False
SETTINGS = load_settings()
ENDPOINTS = {"/encode", "/decode", "/sample", "/interpolate", "/reconstruct", "/score",
             "/model", "/latent_map", "/livez", "/readyz", "/metrics"}

Version = Annotated[int | None, Field(ge=1, strict=True,
                                      description="model version; default the highest")]
Seed = Annotated[int | None, Field(ge=0, strict=True,
                                   description="seed for eps; omit for fresh draws")]
OutputFormat = Literal["json", "npy", "png"]
# z = T * eps must stay finite and meaningful; eps beyond +-6 is rare, so this is ample.
MAX_TEMPERATURE = 100.0


def _load_or_refuse() -> ModelSet:
    """Load, verify and warm the configured versions; refuse to serve a bad model."""
    try:
        return ModelSet.load(SETTINGS)
    except ModelRepositoryError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(f"refusing to start: {exc}") from exc


def _as_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        # float64 so that numbers print exactly as float(x) would (what .tolist() gave)
        return value.astype(np.float64) if value.dtype == np.float32 else \
            np.ascontiguousarray(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def respond(out: dict[str, Any]) -> Response:
    """The endpoints' JSON answer. orjson writes numpy arrays without a .tolist() round trip,
    and BentoML passes a Response through as it is, skipping its per-response schema and
    serialization work (benchmark P2 in docs/BENCHMARKS.md measured both)."""
    for k, v in out.items():
        if type(v) is np.ndarray and v.dtype == np.float32:
            out[k] = v.astype(np.float64)
    return JsonAnswer(orjson.dumps(out, default=_as_json, option=orjson.OPT_SERIALIZE_NUMPY))


def _limit(field: str, value: int, limit: int) -> None:
    if value > limit:
        raise LimitExceeded(f"{field}: {value} exceeds the limit of {limit}")


def _model_info(rt: ModelRuntime, value: int) -> None:
    m, g = rt.manifest, rt.manifest.graphs
    MODEL_INFO.labels(m.name, str(m.version), g["encoder"].sha256, g["decoder"].sha256,
                      rt.provider).set(value)
    if value:
        MODEL_LOAD_SECONDS.labels(m.name, str(m.version)).set(rt.load_seconds)


@bentoml.asgi_app(make_app(bentoml.get_current_service), path="/v2")
@bentoml.asgi_app(make_ui_app(), path="/ui")
@bentoml.service(**bentoml_config(SETTINGS))
class VAEService:
    @bentoml.on_deployment
    def verify_repository() -> None:
        """Runs once in the main process before any worker: a bad model or a taken gRPC port
        stops `bentoml serve` with a non-zero exit instead of workers restarting forever."""
        _load_or_refuse()
        v2_grpc.check_settings(SETTINGS)
        BearerAuth.from_settings(SETTINGS)  # a token file that cannot be read stops the start

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.models = _load_or_refuse()  # each worker verifies and warms its own sessions
        self.watcher = RepositoryWatcher(self.models, SETTINGS, on_loaded=lambda rt:
                                         _model_info(rt, 1), on_retired=lambda rt:
                                         _model_info(rt, 0))
        self.grpc_server = None
        for rt in self.models.runtimes.values():
            _model_info(rt, 1)

    @bentoml.on_startup
    async def start_background(self) -> None:
        """In the worker's event loop: the repository poller and the gRPC server, so both
        share this worker's batchers with the HTTP endpoints."""
        self.watcher.start()
        if SETTINGS.gc_gen0_threshold:  # see config.py: p99 latency, not memory, is at stake
            gc.collect()
            gc.freeze()
            gc.set_threshold(SETTINGS.gc_gen0_threshold, 50, 100)
        if SETTINGS.grpc:
            self.grpc_server = await v2_grpc.start(lambda: self, SETTINGS)

    @bentoml.on_shutdown
    async def stop_background(self) -> None:
        await self.watcher.stop()
        if self.grpc_server is not None:
            await v2_grpc.stop(self.grpc_server, grace=5)
        flush_metrics()  # what the last 0.1 s observed (service/metrics.py)

    def __is_ready__(self) -> bool:
        # Loading verifies and warms every version in __init__; serving implies both are done.
        return bool(self.models.runtimes)

    def _images(self, rt: ModelRuntime, value: Any, field: str) -> np.ndarray:
        return decode_images(value, field, rt.shape, rt.manifest.input.range, SETTINGS.max_items)

    @bentoml.api(route="/encode")
    async def encode(self, inputs: Any, samples: Annotated[int, Field(ge=0, strict=True)] = 0,
                     seed: Seed = None, version: Version = None) -> dict[str, Any]:
        _limit("samples", samples, SETTINGS.max_samples)
        rt = self.models.get(version)
        x = self._images(rt, inputs, "inputs")
        mu, logvar, sigma = await rt.aencode(x)
        out = {"mu": mu, "sigma": sigma, "logvar": logvar}
        if samples > 0:
            eps = latent.draw_eps(seed, (len(x), samples, rt.latent_dim))
            out["z"] = latent.sample_posterior(mu, sigma, eps)
        series("/encode").items.inc(len(x))
        return respond(out)

    @bentoml.api(route="/decode")
    async def decode(self, z: Any, output_format: OutputFormat = "json",
               version: Version = None) -> dict[str, Any]:
        rt = self.models.get(version)
        zs = decode_latents(z, "z", rt.latent_dim, SETTINGS.max_items)
        series("/decode").items.inc(len(zs))
        return respond({"outputs": encode_images(await rt.adecode(zs), output_format)})

    @bentoml.api(route="/sample")
    async def sample(self, n: Annotated[int, Field(ge=1, strict=True)] = 1,
               temperature: Annotated[float, Field(
                   gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False, strict=True,
                   # BentoML publishes OpenAPI 3.0, where an exclusive bound is a flag
                   json_schema_extra={"minimum": 0, "exclusiveMinimum": True})] = 1.0,
               seed: Seed = None, output_format: OutputFormat = "json",
               version: Version = None) -> dict[str, Any]:
        _limit("n", n, SETTINGS.max_n)
        rt = self.models.get(version)
        z = np.float32(temperature) * latent.draw_eps(seed, (n, rt.latent_dim))
        series("/sample").items.inc(n)
        return respond({"z": z, "outputs": encode_images(await rt.adecode(z), output_format)})

    @bentoml.api(route="/interpolate")
    async def interpolate(self, start: Any = None, end: Any = None, start_z: Any = None,
                    end_z: Any = None, steps: Annotated[int, Field(ge=2, strict=True)] = 8,
                    method: Literal["lerp", "slerp"] = "lerp", output_format: OutputFormat = "json",
                    version: Version = None) -> dict[str, Any]:
        _limit("steps", steps, SETTINGS.max_steps)
        rt = self.models.get(version)
        if start is not None and end is not None and start_z is None and end_z is None:
            xa, xb = self._images(rt, start, "start"), self._images(rt, end, "end")
            if len(xa) != len(xb):
                raise BadInput(f"start, end: {len(xa)} and {len(xb)} items; pairs must match")
            mu = (await rt.aencode(np.concatenate([xa, xb])))[0]
            a, b = mu[: len(xa)], mu[len(xa):]
        elif start_z is not None and end_z is not None and start is None and end is None:
            a = decode_latents(start_z, "start_z", rt.latent_dim, SETTINGS.max_items)
            b = decode_latents(end_z, "end_z", rt.latent_dim, SETTINGS.max_items)
            if len(a) != len(b):
                raise BadInput(f"start_z, end_z: {len(a)} and {len(b)} rows; pairs must match")
        else:
            raise BadInput("start, end, start_z, end_z: give either start and end (images) "
                           "or start_z and end_z (latents)")
        if steps * len(a) > SETTINGS.max_items:
            raise LimitExceeded(f"steps: {steps} steps x {len(a)} pairs = {steps * len(a)} decoded "
                           f"items exceed the limit of {SETTINGS.max_items} per request")
        path = latent.interpolate(a, b, steps, method)
        x = (await rt.adecode(path.reshape(-1, rt.latent_dim))).reshape(len(a), steps, *rt.shape)
        series("/interpolate").items.inc(len(a) * steps)
        return respond({"z": path, "outputs": encode_images(x, output_format)})

    @bentoml.api(route="/reconstruct")
    async def reconstruct(self, inputs: Any,
                          sample: Annotated[bool, Field(strict=True)] = False,
                          seed: Seed = None, output_format: OutputFormat = "json",
                          version: Version = None) -> dict[str, Any]:
        rt = self.models.get(version)
        x = self._images(rt, inputs, "inputs")
        mu, _, sigma = await rt.aencode(x)
        z = latent.sample_posterior(mu, sigma, latent.draw_eps(seed, mu.shape)) if sample else mu
        series("/reconstruct").items.inc(len(x))
        return respond({"outputs": encode_images(await rt.adecode(z), output_format)})

    @bentoml.api(route="/score")
    async def score(self, inputs: Any, k: Annotated[int, Field(ge=1, strict=True)] = 1,
                    seed: Seed = None, version: Version = None) -> dict[str, Any]:
        _limit("k", k, SETTINGS.max_k)
        rt = self.models.get(version)
        x = self._images(rt, inputs, "inputs")
        if k * len(x) > SETTINGS.max_score_rows:
            raise LimitExceeded(f"k: {k} samples x {len(x)} items = {k * len(x)} decoded rows "
                           f"exceed the limit of {SETTINGS.max_score_rows} per request")
        mu, logvar, _ = await rt.aencode(x)
        z = scoring.posterior_samples(mu, logvar, latent.draw_eps(seed, (k, len(x),
                                                                          rt.latent_dim)))
        out = await rt.adecode_all(z.reshape(-1, rt.latent_dim))
        neg_elbo, nll = scoring.score_decoded(x, mu, logvar, z, rt.manifest.likelihood, out)
        ref = rt.reference
        pct = None if ref is None else scoring.percentile(neg_elbo, ref["neg_elbo_sorted"])
        series("/score").items.inc(len(x))
        return respond({"neg_elbo": neg_elbo, "nll_iwae": nll, "percentile": pct})

    @bentoml.api(route="/latent_map")
    def latent_map(self, version: Version = None) -> dict[str, Any]:
        rt = self.models.get(version)
        ref = rt.reference
        if ref is None:
            raise ApiError(f"version: {rt.manifest.version} was exported without a reference "
                           "set (its training data was not at hand)", 404)
        return {"points": ref["points"].tolist(),
                "labels": ref["labels"].tolist() if "labels" in ref else None,
                "projection": rt.manifest.reference.projection,
                "projection_mean": ref["proj_mean"].tolist(),
                "projection_components": ref["proj_components"].tolist()}

    @bentoml.api(route="/model")
    def model(self, version: Version = None) -> dict[str, Any]:
        rt = self.models.get(version)
        m = rt.manifest
        return {
            "name": m.name, "version": m.version, "versions": self.models.versions,
            "input": {"shape": m.input.shape, "dtype": m.input.dtype, "range": list(m.input.range)},
            "latent_dim": m.latent_dim, "likelihood": m.likelihood,
            "graphs": {g: {"sha256": e.sha256, "opset": e.opset} for g, e in m.graphs.items()},
            "provider": rt.provider, "variant": rt.variant,
            "variants": ["fp32", *m.variants],
            "training": {"data": m.training.get("data"), "metrics": m.training.get("metrics")},
            "parity": m.parity.model_dump(),
            "created": m.created,
        }


VAEService.add_asgi_middleware(ApiMiddleware, endpoints=ENDPOINTS,
                               # CORS is answered by BentoML's middleware inside the router
                               fast_path=None if SETTINGS.cors_origins.strip() else
                               FastPath(VAEService, respond, bentoml.get_current_service),
                               auth=BearerAuth.from_settings(SETTINGS),
                               max_body_bytes=SETTINGS.max_body_bytes,
                               max_concurrency=SETTINGS.max_concurrency,
                               json_access_log=SETTINGS.access_log == "json",
                               serve_metrics=not SETTINGS.bentoml_metrics,
                               # tracing and BentoML's metrics must see every call
                               front_door=SETTINGS.tracing_sample_rate == 0
                               and not SETTINGS.bentoml_metrics,
                               timeout_s=SETTINGS.timeout_s)
