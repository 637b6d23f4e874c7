"""Every operation of the public contract (docs/API.md), written once for every door.
Each operation declares its request (service/operations/requests.py: fields, defaults,
limits, descriptions), an example, and an async function here that returns arrays. The doors
(HTTP JSON, V2 REST, gRPC) only parse their wire format into that request, call the operation
and write its result in their wire format; the V2 models (service/operations/v2.py) are calls
into these same functions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from modelrepo import scoring
from service.config import Settings
from service.errors import BadInput, LimitExceeded, NotReady, VersionNotFound
from service.operations import sampling, scores
from service.operations.requests import (
    Compare,
    Decode,
    Encode,
    Interpolate,
    LatentMap,
    ModelInfo,
    Neighbors,
    Reconstruct,
    Request,
    Sample,
    Score,
    validation_error,
)
from service.operations.tensors import decode_images, decode_latents
from service.runtime import latent, neighbors
from service.runtime.engine import ModelRuntime, ModelSet
from service.runtime.registry import ModelRegistry


class Result(dict):
    """An operation's answer: its fields, plus what the doors report beside them (the model
    and version that answered, the rows processed)."""

    def __init__(self, fields: dict[str, Any], rt: ModelRuntime, item_count: int = 0):
        super().__init__(fields)
        self.model, self.version = rt.manifest.name, rt.manifest.version
        self.item_count = item_count  # (dict has .items())


def _limit(field: str, value: int, limit: int) -> None:
    """The message names the setting that raises the limit (VAE_MAX_<FIELD>)."""
    if value > limit:
        raise LimitExceeded(f"{field}: {value} exceeds the limit of {limit} "
                            f"(VAE_MAX_{field.upper()})")


class Operations:
    """The operations over the served models' loaded versions, with this worker's limits."""

    def __init__(self, registry: ModelRegistry, settings: Settings,
                 pinned: ModelRuntime | None = None):
        self.registry, self.settings, self.pinned = registry, settings, pinned

    def pin(self, rt: ModelRuntime) -> Operations:
        """These operations on the version `rt`, already resolved by the caller: it stays
        theirs even if a newer version (or the model) retires meanwhile (its sessions live as
        long as it is referenced), so a call never resolves its model and version twice."""
        return Operations(self.registry, self.settings, rt)

    def model_set(self, model: str | None) -> ModelSet:
        """The named (or default) model's versions; 404 naming the served models."""
        return self.registry.get(model)

    def runtime(self, version: int | None, model: str | None = None) -> ModelRuntime:
        p = self.pinned
        if p is not None and version in (None, p.manifest.version) and \
                model in (None, p.manifest.name):
            return p
        reg = self.registry  # the registry's lookup, inlined: every call passes here
        ms = reg.models.get(reg.default_name if model is None else model) or reg.get(model)
        if not ms.runtimes:
            raise NotReady(f"model {ms.name!r}: no version is loaded yet")
        return ms.get(version)

    def images(self, rt: ModelRuntime, value: Any, field: str) -> np.ndarray:
        return decode_images(value, field, rt.shape, rt.manifest.input.range,
                             self.settings.max_items)

    def latents(self, rt: ModelRuntime, value: Any, field: str) -> np.ndarray:
        return decode_latents(value, field, rt.latent_dim, self.settings.max_items)

    async def encode(self, r: Encode) -> Result:
        _limit("samples", r.samples, self.settings.max_samples)
        rt = self.runtime(r.version, r.model)
        x = self.images(rt, r.inputs, "inputs")
        mu, logvar, sigma = await rt.aencode(x)
        out = {"mu": mu, "sigma": sigma, "logvar": logvar}
        if r.samples > 0:
            eps = latent.draw_eps(r.seed, (len(x), r.samples, rt.latent_dim))
            out["z"] = latent.sample_posterior(mu, sigma, eps)
        return Result(out, rt, len(x))

    async def decode(self, r: Decode) -> Result:
        rt = self.runtime(r.version, r.model)
        z = self.latents(rt, r.z, "z")
        return Result({"outputs": await rt.adecode(z)}, rt, len(z))

    async def sample(self, r: Sample) -> Result:
        _limit("n", r.n, self.settings.max_n)
        rt = self.runtime(r.version, r.model)
        return Result(await sampling.sample(self, rt, r), rt, r.n)  # prior or data

    async def interpolate(self, r: Interpolate) -> Result:
        _limit("steps", r.steps, self.settings.max_steps)
        rt = self.runtime(r.version, r.model)
        images = (r.start, r.end) != (None, None)
        if images and r.start is not None and r.end is not None and \
                r.start_z is None and r.end_z is None:
            xa, xb = self.images(rt, r.start, "start"), self.images(rt, r.end, "end")
            if len(xa) != len(xb):
                raise BadInput(f"start, end: {len(xa)} and {len(xb)} items; pairs must match")
            mu = (await rt.aencode(np.concatenate([xa, xb])))[0]
            a, b = mu[: len(xa)], mu[len(xa):]
        elif not images and r.start_z is not None and r.end_z is not None:
            a, b = self.latents(rt, r.start_z, "start_z"), self.latents(rt, r.end_z, "end_z")
            if len(a) != len(b):
                raise BadInput(f"start_z, end_z: {len(a)} and {len(b)} rows; pairs must match")
        else:
            raise BadInput("start, end, start_z, end_z: give either start and end (images) "
                           "or start_z and end_z (latents)")
        if r.steps * len(a) > self.settings.max_items:
            raise LimitExceeded(f"steps: {r.steps} steps x {len(a)} pairs = {r.steps * len(a)} "
                                f"decoded items exceed the limit of {self.settings.max_items} "
                                "per request (VAE_MAX_ITEMS)")
        path = latent.interpolate(a, b, r.steps, r.method)
        x = await rt.adecode(path.reshape(-1, rt.latent_dim))
        return Result({"z": path, "outputs": x.reshape(len(a), r.steps, *rt.shape)},
                      rt, len(a) * r.steps)

    async def reconstruct(self, r: Reconstruct) -> Result:
        rt = self.runtime(r.version, r.model)
        x = self.images(rt, r.inputs, "inputs")
        mu, _, sigma = await rt.aencode(x)
        z = latent.sample_posterior(mu, sigma, latent.draw_eps(r.seed, mu.shape)) \
            if r.sample else mu
        return Result({"outputs": await rt.adecode(z)}, rt, len(x))

    async def score(self, r: Score) -> Result:
        _limit("k", r.k, self.settings.max_k)
        rt = self.runtime(r.version, r.model)
        x = self.images(rt, r.inputs, "inputs")
        return Result(await scores.score(rt, x, r, self.settings.max_score_rows), rt, len(x))

    async def compare(self, r: Compare) -> Result:
        rt = self.runtime(r.version, r.model)
        xa, xb = self.images(rt, r.a, "a"), self.images(rt, r.b, "b")
        if len(xa) != len(xb):
            raise BadInput(f"a, b: {len(xa)} and {len(xb)} items; pairs must match")
        mu, logvar, _ = await rt.aencode(np.concatenate([xa, xb]))  # one run for both
        n = len(xa)
        out = scoring.gaussian_divergences(mu[:n], logvar[:n], mu[n:], logvar[n:])
        return Result(out, rt, 2 * n)

    async def neighbors(self, r: Neighbors) -> Result:
        rt = self.runtime(r.version, r.model)
        ref, v = rt.reference, rt.manifest.version
        if ref is None:
            raise VersionNotFound(f"version: {v} has no reference set to search (it was "
                                  "exported without its held-out items)")
        if r.measure != "euclidean" and "logvar" not in ref:
            raise VersionNotFound(f"measure: version {v}'s reference set has no log-variances "
                                  "(exported before they were stored); re-export it, or use "
                                  "measure euclidean")
        x = self.images(rt, r.inputs, "inputs")
        mu, logvar, _ = await rt.aencode(x)
        # a full scan: off the event loop (a 1,000-item request takes a while)
        idx, scores = await asyncio.to_thread(neighbors.search, mu, logvar, ref["mu"],
                                              ref.get("logvar"), r.k, r.measure)
        if "x" in ref:
            images = ref["x"][idx]
        else:  # no stored items: their decoded means stand in
            z = ref["mu"][idx].reshape(-1, rt.latent_dim)
            images = (await rt.adecode(z)).reshape(*idx.shape, *rt.shape)
        labels = ref["labels"][idx] if "labels" in ref else None
        return Result({"indices": idx, "scores": scores, "labels": labels, "outputs": images,
                       "measure": r.measure}, rt, len(x))

    async def latent_map(self, r: LatentMap) -> Result:
        rt = self.runtime(r.version, r.model)
        ref, info, v = rt.reference, rt.manifest.reference, rt.manifest.version
        if ref is None:
            raise VersionNotFound(f"version: {v} was exported without a reference set (its "
                                  "training data was not at hand)")
        if r.projection not in info.projections:
            raise VersionNotFound(f"projection: {r.projection!r} was not computed when version "
                                  f"{v} was exported (it has {', '.join(info.projections)})")
        pca = r.projection == "pca"
        quality = info.quality.get(r.projection)
        return Result({"points": ref["points"] if pca else ref["points_tsne"],
                       "labels": ref.get("labels"), "projection": r.projection,
                       "projection_mean": ref["proj_mean"] if pca else None,
                       "projection_components": ref["proj_components"] if pca else None,
                       "quality": None if quality is None else quality.model_dump(),
                       "mu": ref["mu"] if r.with_mu else None}, rt)

    async def model(self, r: ModelInfo) -> Result:
        rt = self.runtime(r.version, r.model)
        m, models = rt.manifest, self.registry.models  # one snapshot
        here = models.get(m.name)
        return Result({
            "name": m.name, "version": m.version,
            "versions": here.versions if here is not None else [m.version],
            "input": {"shape": m.input.shape, "dtype": m.input.dtype, "range": list(m.input.range)},
            "latent_dim": m.latent_dim, "likelihood": m.likelihood,
            "graphs": {g: {"sha256": e.sha256, "opset": e.opset} for g, e in m.graphs.items()},
            "provider": rt.provider, "variant": rt.variant, "variants": ["fp32", *m.variants],
            "training": {"data": m.training.get("data"), "metrics": m.training.get("metrics")},
            "parity": m.parity.model_dump(), "created": m.created,
            "models": [{"name": n, "versions": ms.versions,
                        "default": n == self.registry.default_name}
                       for n, ms in sorted(models.items())]}, rt)


@dataclass(frozen=True)
class Operation:
    """One operation as the doors see it: its request model, its function, and which of its
    result fields are images (written in the request's output_format)."""

    name: str
    request: type[Request]
    run: Callable[[Operations, Any], Awaitable[Result]]
    image_outputs: tuple[str, ...] = ()
    # an example request for a model of input shape S and latent size Z (the API document's)
    example: Callable[[list[int], int], dict] = lambda s, z: {}

    @property
    def route(self) -> str:
        return "/" + self.name

    @property
    def summary(self) -> str:
        return " ".join((self.request.__doc__ or self.name).split())

    def parse(self, data: bytes | dict) -> Request:
        """The request from a JSON body (bytes) or already-decoded fields; BadInput naming
        each invalid field otherwise."""
        try:
            if isinstance(data, dict):
                return self.request.model_validate(data)
            return self.request.model_validate_json(data or b"{}")
        except ValidationError as exc:
            raise validation_error(exc, self.request.model_fields) from None


def _image(s: list[int]) -> list:
    return np.full((1, *s), 0.5).tolist()


OPERATIONS: dict[str, Operation] = {op.route: op for op in (
    Operation("encode", Encode, Operations.encode,
              example=lambda s, z: {"inputs": _image(s), "samples": 2, "seed": 0}),
    Operation("decode", Decode, Operations.decode, ("outputs",),
              example=lambda s, z: {"z": [[0.0] * z]}),
    Operation("sample", Sample, Operations.sample, ("outputs",),
              example=lambda s, z: {"n": 4, "temperature": 0.8, "seed": 7}),
    Operation("interpolate", Interpolate, Operations.interpolate, ("outputs",),
              example=lambda s, z: {"start_z": [[0.0] * z], "end_z": [[1.0] * z], "steps": 5,
                                    "method": "slerp"}),
    Operation("reconstruct", Reconstruct, Operations.reconstruct, ("outputs",),
              example=lambda s, z: {"inputs": _image(s), "output_format": "png"}),
    Operation("score", Score, Operations.score,
              example=lambda s, z: {"inputs": _image(s), "k": 100, "seed": 0}),
    Operation("compare", Compare, Operations.compare,
              example=lambda s, z: {"a": _image(s), "b": np.full((1, *s), 0.25).tolist()}),
    Operation("neighbors", Neighbors, Operations.neighbors, ("outputs",),
              example=lambda s, z: {"inputs": _image(s), "k": 3, "measure": "overlap"}),
    Operation("latent_map", LatentMap, Operations.latent_map,
              example=lambda s, z: {"projection": "pca"}),
    Operation("model", ModelInfo, Operations.model),
)}
