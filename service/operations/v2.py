"""The KServe V2 (Open Inference Protocol) models of docs/API.md — encoder, decoder,
sample, interpolate — as calls into the operations of service/operations/api.py, so every
limit and message is the JSON API's; and the protocol's metadata and repository calls.
Transport-neutral: service/doors/v2_rest.py and v2_grpc.py only turn bytes into Tensors and
the outputs back into bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from service.errors import ApiError, BadInput, ModelNotFound, NotReady, VersionNotFound
from service.operations.api import OPERATIONS, Operations, Result
from service.runtime.engine import ModelRuntime
from service.runtime.registry import ModelRegistry

# what a client may send (each model then checks its own); BF16 and BYTES are not numbers here
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64")
MODELS = ("encoder", "decoder", "sample", "interpolate")
EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"]


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # already shaped and typed


_DATATYPE_OF: dict[np.dtype, str] = {}


def datatype_of(arr: np.ndarray) -> str:
    """tritonclient's name for the array's dtype (looked up once per dtype)."""
    name = _DATATYPE_OF.get(arr.dtype)
    if name is None:
        name = _DATATYPE_OF[arr.dtype] = np_to_triton_dtype(arr.dtype)
    return name


def to_array(name: str, datatype: str, shape: list[int], flat: Any) -> np.ndarray:
    """A tensor's elements (a list, or raw little-endian bytes) -> array of `shape`."""
    if datatype not in DATATYPES:
        raise BadInput(f"{name}: datatype {datatype!r} is not supported "
                       f"({', '.join(DATATYPES)})")
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise BadInput(f"{name}: shape {shape} must be non-negative integers")
    count, dtype = math.prod(shape), np.dtype(triton_to_np_dtype(datatype))
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
    return _signature(model, tuple(rt.shape), rt.latent_dim)


@lru_cache(maxsize=64)
def _signature(model: str, s: tuple[int, ...], z: int) -> tuple[list[dict], list[dict]]:
    if model == "encoder":
        return ([_spec("x", "FP32", [-1, *s])],
                [_spec("mu", "FP32", [-1, z]), _spec("logvar", "FP32", [-1, z])])
    if model == "decoder":
        return [_spec("z", "FP32", [-1, z])], [_spec("x", "FP32", [-1, *s])]
    if model == "sample":  # labels, like and the `prior` parameter: sampling from the data
        return ([_spec("n", "INT32", [1]), _spec("temperature", "FP32", [1], True),
                 _spec("seed", "INT64", [1], True), _spec("labels", "INT64", [-1], True),
                 _spec("like", "FP32", [-1, *s], True)],
                [_spec("z", "FP32", [-1, z]), _spec("x", "FP32", [-1, *s]),
                 _spec("components", "INT64", [-1], True)])
    return ([_spec("start_z", "FP32", [-1, z]), _spec("end_z", "FP32", [-1, z]),
             _spec("steps", "INT32", [1])],
            [_spec("z", "FP32", [-1, -1, z]), _spec("x", "FP32", [-1, -1, *s])])


def split_name(name: str) -> tuple[str | None, str]:
    """A V2 model name -> (served model or None for the default, operation): `encoder` is the
    default model's, `digits.encoder` model digits' (model names have no dot)."""
    model, dot, op = name.rpartition(".")
    if op not in MODELS or (dot and not model):
        raise ModelNotFound(f"model: {name[:80]!r} is unknown (V2 models: "
                            f"{', '.join(MODELS)}, and m.{'{'}{'|'.join(MODELS)}{'}'} for each "
                            "served model m)")
    return (model or None), op


def check_model(name: str) -> str:
    """-> the operation of a V2 model name; ModelNotFound for a name that is none."""
    return split_name(name)[1]


def resolve(ops: Operations, name: str, version: str | None) -> ModelRuntime:
    """The version that answers V2 model `name`; 404 for an unknown model or version."""
    model, _ = split_name(name)
    ms = ops.model_set(model)
    if not ms.runtimes:
        raise NotReady(f"model {ms.name!r}: no version is loaded yet")
    if version in (None, ""):
        return ms.get(None)
    if not str(version).isdigit():
        raise VersionNotFound(f"version: {version!r} is not an integer version")
    return ms.get(int(version))


def inputs_by_name(model: str, tensors: list[Tensor], rt: ModelRuntime) -> dict[str, Any]:
    """A request's tensors checked against what the model takes: tensors [N, ...] stay arrays
    (non-empty, finite), scalars [1] become Python numbers."""
    specs = _input_specs(model, tuple(rt.shape), rt.latent_dim)
    out: dict[str, Any] = {}
    for t in tensors:
        if t.name not in specs:
            raise BadInput(f"{t.name}: model {model!r} has no input of that name "
                           f"(inputs: {', '.join(specs)})")
        if t.name in out:
            raise BadInput(f"{t.name}: given twice")
        spec, want = specs[t.name], specs[t.name]["shape"]
        if t.datatype != spec["datatype"]:
            raise BadInput(f"{t.name}: datatype {t.datatype}, expected {spec['datatype']}")
        if len(t.shape) != len(want) or any(w not in (-1, d)
                                             for w, d in zip(want, t.shape, strict=True)):
            raise BadInput(f"{t.name}: shape {t.shape}, expected {want} (-1: any size)")
        if want == [1]:
            out[t.name] = t.data.reshape(-1)[0].item()
        elif t.datatype == "INT64":  # sample's labels: a list of ints
            out[t.name] = [int(v) for v in t.data.reshape(-1)]
        else:  # values and item limits are the operation's to check
            out[t.name] = np.ascontiguousarray(t.data, dtype=np.float32)
    for name, spec in specs.items():
        if name not in out and not spec.get("parameters", {}).get("optional"):
            raise BadInput(f"{name}: required input missing")
    return out


@lru_cache(maxsize=64)
def _input_specs(model: str, s: tuple[int, ...], z: int) -> dict[str, dict]:
    return {spec["name"]: spec for spec in _signature(model, s, z)[0]}


async def infer(ops: Operations, rt: ModelRuntime, name: str, tensors: list[Tensor],
                params: dict[str, Any]) -> tuple[dict[str, np.ndarray], Result]:
    """One V2 inference on the version `rt` (resolve() first) through the operation behind the
    V2 model `name`; -> (outputs by name in the model's order, the operation's result)."""
    model = check_model(name)
    given = inputs_by_name(model, tensors, rt)
    v, ops = rt.manifest.version, ops.pin(rt)  # the version resolved is the one that runs
    if model == "encoder":
        res = await _call(ops, "encode", {"inputs": given["x"], "version": v}, "x")
        return {"mu": res["mu"], "logvar": res["logvar"]}, res
    if model == "decoder":
        res = await _call(ops, "decode", {"z": given["z"], "version": v})
        return {"x": res["outputs"]}, res
    if model == "sample":
        prior = params.get("prior", "aggregate" if {"labels", "like"} & set(given) else
                           "standard")
        res = await _call(ops, "sample", {**given, "prior": prior, "version": v})
        outs = {"z": res["z"], "x": res["outputs"]}
        if "components" in res:
            outs["components"] = np.asarray(res["components"], dtype=np.int64)
        return outs, res
    res = await _call(ops, "interpolate", {**given, "method": params.get("method", "lerp"),
                                           "version": v})
    return {"z": res["z"], "x": res["outputs"]}, res


def selected_outputs(asked: list[str], model: str, outs: dict[str, np.ndarray]) -> list[str]:
    """The outputs a client named (all, in the model's order, when it named none)."""
    for name in asked:
        if name not in outs:
            raise BadInput(f"outputs: {name!r} is not an output of {model!r} "
                           f"(outputs: {', '.join(outs)})")
    return asked or list(outs)


async def _call(ops: Operations, name: str, fields: dict[str, Any],
                inputs_as: str = "inputs") -> Result:
    """The operation; its messages name the V2 input (`x`) where the JSON field differs."""
    op = OPERATIONS["/" + name]
    try:
        return await op.run(ops, op.parse(fields))
    except ApiError as exc:
        if inputs_as != "inputs" and exc.message.startswith("inputs"):
            exc.message = inputs_as + exc.message[len("inputs"):]
            exc.args = (exc.message,)
        raise


def server_metadata() -> dict:
    try:
        version = metadata.version("vae-serving")
    except metadata.PackageNotFoundError:
        version = "0"
    return {"name": "vae", "version": version, "extensions": EXTENSIONS}


def model_metadata(ops: Operations, name: str, version: str | None) -> dict:
    rt = resolve(ops, name, version)
    model = check_model(name)
    inputs, outputs = signature(model, rt)
    platform = "onnxruntime_onnx" if model in ("encoder", "decoder") else "vae"
    return {"name": name, "versions": [str(v) for v in ops.model_set(rt.name).versions],
            "platform": platform, "inputs": inputs, "outputs": outputs}


def model_ready(registry: ModelRegistry, name: str, version: str | None) -> bool:
    model, _ = split_name(name)
    ms = registry.models.get(registry.default_name if model is None else model)
    if ms is None:
        return False
    if version in (None, ""):
        return bool(ms.runtimes)
    return str(version).isdigit() and int(version) in ms.runtimes


def served_model(registry: ModelRegistry, name: str) -> str:
    """The served model a V2 model name refers to, or "" (unknown): a metrics label."""
    model, dot, op = name.rpartition(".")
    model = model if dot else registry.default_name or ""
    return model if op in MODELS and model in registry.models else ""


async def repository_index(registry: ModelRegistry, ready_only: bool) -> list[dict]:
    """Every V2 model (the default model's bare names, then m.encoder ... for every model)
    with every version on disk or known: READY / LOADING / UNAVAILABLE (with the reason); a
    model refused as a whole is UNAVAILABLE with its reason."""
    rows = []
    default = registry.default_name
    for name in sorted(set(registry.models) | set(registry.refused),
                       key=lambda n: (n != default, n)):  # the bare names first
        ms, watcher = registry.models.get(name), registry.watchers.get(name)
        if ms is None or watcher is None:  # refused as a whole
            if not ready_only:
                rows += [{"name": f"{name}.{m}", "version": "", "state": "UNAVAILABLE",
                          "reason": registry.refused.get(name, "")} for m in MODELS]
            continue
        for v in sorted(set(await watcher.available()) | set(ms.runtimes) | set(ms.failed)):
            state, reason = ms.state(v)
            if state == "READY" or not ready_only:
                prefixes = ["", f"{name}."] if name == default else [f"{name}."]
                rows += [{"name": p + m, "version": str(v), "state": state, "reason": reason}
                         for p in prefixes for m in MODELS]
    return rows


async def repository_load(registry: ModelRegistry, name: str) -> None:
    """Look for new versions (with VAE_MODELS=*, the model itself) now; BadInput with the
    reason if the newest version or the model is refused."""
    model = name if "." not in name and name not in MODELS else split_name(name)[0]
    model = model or registry.default_name
    if model is None or (model not in registry.models and registry.wanted is not None):
        raise ModelNotFound(f"model: {name[:80]!r} is unknown (served: "
                            f"{', '.join(registry.names) or 'none'})")
    await registry.refresh(only=model)
    if model in registry.refused:
        raise BadInput(f"model {model}: {registry.refused[model]}")
    ms, watcher = registry.models.get(model), registry.watchers.get(model)
    if ms is None or watcher is None:
        raise ModelNotFound(f"model: {model!r} is not in the repository")
    newest = max(await watcher.available(), default=0)
    if newest in ms.failed and newest > max(ms.runtimes, default=0):
        raise BadInput(f"version {newest}: {ms.failed[newest]}")
