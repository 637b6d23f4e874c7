"""The KServe V2 Open Inference Protocol, transport-neutral: the four models of ../shared/API.md
(encoder, decoder, sample, interpolate) over the same engine, batchers and limits as the HTTP
API. service/v2_rest.py and service/v2_grpc.py only translate bytes to Tensors and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from service import latent
from service.config import Settings
from service.engine import ModelRuntime, ModelSet
from service.errors import BadInput, LimitExceeded, ModelNotFound, NotReady, VersionNotFound
from service.metrics import series
from service.tensors import check_values

# V2 datatype <-> numpy, for decoding whatever a client sends (each model then checks its own).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64)}
DATATYPE_OF = {dt: name for name, dt in DTYPES.items()}
MODELS = ("encoder", "decoder", "sample", "interpolate")
EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"]
METHODS = ("lerp", "slerp")


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # already shaped and typed


def to_array(name: str, datatype: str, shape: list[int], flat: Any) -> np.ndarray:
    """A tensor's elements (a list, or raw little-endian bytes) -> array of `shape`."""
    if datatype not in DTYPES:
        raise BadInput(f"{name}: datatype {datatype!r} is not supported "
                       f"({', '.join(DTYPES)})")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise BadInput(f"{name}: shape {shape} must be non-negative integers")
    count, dtype = math.prod(shape), DTYPES[datatype]
    if isinstance(flat, bytes | bytearray | memoryview):
        if len(flat) != count * dtype.itemsize:
            raise BadInput(f"{name}: {len(flat)} bytes of data for shape {shape} {datatype}, "
                           f"expected {count * dtype.itemsize}")
        return np.frombuffer(flat, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    try:
        with np.errstate(over="ignore"):  # overflow -> inf, refused later as not finite
            arr = np.asarray(flat, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadInput(f"{name}: data are not {datatype} numbers") from None
    if arr.size != count:
        raise BadInput(f"{name}: {arr.size} elements of data for shape {shape}, "
                       f"expected {count}")
    return arr.reshape(shape)


def _spec(name: str, datatype: str, shape: list[int], optional: bool = False) -> dict:
    out = {"name": name, "datatype": datatype, "shape": shape}
    return {**out, "parameters": {"optional": True}} if optional else out


def signature(model: str, rt: ModelRuntime) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a V2 model for one version (shapes follow its manifest)."""
    s, z = rt.shape, rt.latent_dim
    if model == "encoder":
        return ([_spec("x", "FP32", [-1, *s])],
                [_spec("mu", "FP32", [-1, z]), _spec("logvar", "FP32", [-1, z])])
    if model == "decoder":
        return [_spec("z", "FP32", [-1, z])], [_spec("x", "FP32", [-1, *s])]
    if model == "sample":
        return ([_spec("n", "INT32", [1]), _spec("temperature", "FP32", [1], True),
                 _spec("seed", "INT64", [1], True)],
                [_spec("z", "FP32", [-1, z]), _spec("x", "FP32", [-1, *s])])
    return ([_spec("start_z", "FP32", [-1, z]), _spec("end_z", "FP32", [-1, z]),
             _spec("steps", "INT32", [1])],
            [_spec("z", "FP32", [-1, -1, z]), _spec("x", "FP32", [-1, -1, *s])])


def server_metadata() -> dict:
    try:
        version = metadata.version("vae-serving")
    except metadata.PackageNotFoundError:
        version = "0"
    return {"name": "vae", "version": version, "extensions": EXTENSIONS}


def resolve(models: ModelSet, model: str, version: str | None) -> ModelRuntime:
    if model not in MODELS:
        raise ModelNotFound(f"model: {model!r} is unknown (models: {', '.join(MODELS)})")
    if not models.runtimes:
        raise NotReady("no model version is loaded yet")
    if version in (None, ""):
        return models.get(None)
    if not str(version).isdigit():
        raise VersionNotFound(f"version: {version!r} is not an integer version")
    return models.get(int(version))


def model_metadata(models: ModelSet, model: str, version: str | None) -> dict:
    rt = resolve(models, model, version)
    inputs, outputs = signature(model, rt)
    platform = "onnxruntime_onnx" if model in ("encoder", "decoder") else "vae"
    return {"name": model, "versions": [str(v) for v in models.versions],
            "platform": platform, "inputs": inputs, "outputs": outputs}


def model_ready(models: ModelSet, model: str, version: str | None) -> bool:
    if model not in MODELS:
        raise ModelNotFound(f"model: {model!r} is unknown (models: {', '.join(MODELS)})")
    if version in (None, ""):
        return bool(models.runtimes)
    return str(version).isdigit() and int(version) in models.runtimes


async def repository_index(models: ModelSet, watcher: Any, ready_only: bool) -> list[dict]:
    """Every version on disk or known: READY / LOADING / UNAVAILABLE (with the reason)."""
    rows = []
    for v in sorted(set(await watcher.available()) | set(models.runtimes) | set(models.failed)):
        state, reason = models.state(v)
        if state == "READY" or not ready_only:
            rows += [{"name": m, "version": str(v), "state": state, "reason": reason}
                     for m in MODELS]
    return rows


async def repository_load(models: ModelSet, watcher: Any, model: str) -> None:
    """Look for new versions now; BadInput with the reason if the newest one is refused."""
    if model not in (*MODELS, models.name):
        raise ModelNotFound(f"model: {model!r} is unknown")
    await watcher.refresh()
    newest = max(await watcher.available(), default=0)
    if newest in models.failed and newest > max(models.runtimes, default=0):
        raise BadInput(f"version {newest}: {models.failed[newest]}")


class Inputs:
    """A request's tensors by name, checked against what the model takes."""

    def __init__(self, model: str, tensors: list[Tensor], rt: ModelRuntime):
        specs = {s["name"]: s for s in signature(model, rt)[0]}
        self.by_name: dict[str, np.ndarray] = {}
        for t in tensors:
            if t.name not in specs:
                raise BadInput(f"{t.name}: model {model!r} has no input of that name "
                               f"(inputs: {', '.join(specs)})")
            if t.name in self.by_name:
                raise BadInput(f"{t.name}: given twice")
            spec = specs[t.name]
            if t.datatype != spec["datatype"]:
                raise BadInput(f"{t.name}: datatype {t.datatype}, expected {spec['datatype']}")
            want = spec["shape"]
            if len(t.shape) != len(want) or any(w not in (-1, d)
                                                 for w, d in zip(want, t.shape, strict=True)):
                raise BadInput(f"{t.name}: shape {t.shape}, expected {want} (-1: any size)")
            self.by_name[t.name] = t.data
        for name, spec in specs.items():
            if name not in self.by_name and not spec.get("parameters", {}).get("optional"):
                raise BadInput(f"{name}: required input missing")

    def rows(self, name: str, settings: Settings,
             value_range: tuple[float, float] | None = None) -> np.ndarray:
        arr = self.by_name[name]
        if len(arr) < 1:
            raise BadInput(f"{name}: at least 1 item is required")
        if len(arr) > settings.max_items:
            raise LimitExceeded(f"{name}: {len(arr)} items exceed the limit of "
                                f"{settings.max_items} per request")
        check_values(arr, name, value_range)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def scalar(self, name: str, default: Any = None) -> Any:
        return self.by_name[name].reshape(-1)[0].item() if name in self.by_name else default


@dataclass
class Plan:
    """One V2 inference, validated: a single run of `graph` on `rows`, then `finish` turns the
    graph's outputs into the model's (every V2 model is one graph run)."""

    graph: str  # "encoder" or "decoder"
    rows: np.ndarray
    items: int  # counted in vae_items
    finish: Callable[[list[np.ndarray]], dict[str, np.ndarray]]


def plan(rt: ModelRuntime, model: str, tensors: list[Tensor], params: dict[str, Any],
         settings: Settings) -> Plan:
    """Check a V2 request against its model and the limits; BadInput/LimitExceeded say why."""
    inp = Inputs(model, tensors, rt)
    if model == "encoder":
        x = inp.rows("x", settings, rt.manifest.input.range)
        return Plan("encoder", x, len(x), lambda outs: {"mu": outs[0], "logvar": outs[1]})
    x_of = rt.decoder_outputs.index("x")
    if model == "decoder":
        z = inp.rows("z", settings)
        return Plan("decoder", z, len(z), lambda outs: {"x": outs[x_of]})
    if model == "sample":
        n, temp, seed = inp.scalar("n"), inp.scalar("temperature", 1.0), inp.scalar("seed")
        if n < 1:
            raise BadInput(f"n: {n} must be at least 1")
        if n > settings.max_n:
            raise LimitExceeded(f"n: {n} exceeds the limit of {settings.max_n}")
        if not (0 < temp <= 100.0):
            raise BadInput(f"temperature: {temp} must lie in (0, 100]")
        if seed is not None and seed < 0:
            raise BadInput(f"seed: {seed} must be >= 0")
        z = np.float32(temp) * latent.draw_eps(seed, (n, rt.latent_dim))
        return Plan("decoder", z, n, lambda outs: {"z": z, "x": outs[x_of]})
    a, b = inp.rows("start_z", settings), inp.rows("end_z", settings)
    steps, method = inp.scalar("steps"), params.get("method", "lerp")
    if len(a) != len(b):
        raise BadInput(f"start_z, end_z: {len(a)} and {len(b)} rows; pairs must match")
    if method not in METHODS:
        raise BadInput(f"method: {method!r} is not one of {', '.join(METHODS)}")
    if steps < 2:
        raise BadInput(f"steps: {steps} must be at least 2")
    if steps > settings.max_steps or steps * len(a) > settings.max_items:
        raise LimitExceeded(f"steps: {steps} steps x {len(a)} pairs exceed the limits of "
                            f"{settings.max_steps} steps and {settings.max_items} decoded items")
    path = latent.interpolate(a, b, steps, method)
    return Plan("decoder", np.ascontiguousarray(path.reshape(-1, rt.latent_dim), np.float32),
                len(a) * steps, lambda outs: {
                    "z": path, "x": outs[x_of].reshape(len(a), steps, *rt.shape)})


async def infer(rt: ModelRuntime, model: str, tensors: list[Tensor], params: dict[str, Any],
                settings: Settings, protocol: str) -> dict[str, np.ndarray]:
    """Run one V2 inference in the event loop; -> outputs by name, in the model's order."""
    p = plan(rt, model, tensors, params, settings)
    outs = await rt.batcher(p.graph).submit(p.rows)
    series(f"/v2/models/{model}/infer", protocol).items.inc(p.items)
    return p.finish(outs)
