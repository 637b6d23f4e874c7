"""The KServe V2 REST door under /v2 on the HTTP port, with Triton's binary tensor data
extension: a body may be a JSON header of `Inference-Header-Content-Length` bytes followed by
the raw little-endian tensors whose inputs declare `parameters.binary_data_size`; outputs asked
for with `binary_data` (or the request's `binary_data_output`) come back the same way.

The JSON header is validated as a whole (pydantic models of the wire format) before anything
reads it; the models themselves are service/operations/v2.py.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from service.doors.http_json import Answer
from service.errors import ApiError, BadInput, NotReady
from service.lifecycle.calls import Call
from service.operations import v2
from service.operations.requests import validation_error

HEADER = "Inference-Header-Content-Length"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")  # the protocol lets clients add parameters


class TensorParameters(_Wire):
    binary_data_size: StrictInt | None = None
    binary_data: StrictBool | None = None


class InputTensor(_Wire):
    name: StrictStr
    datatype: StrictStr
    shape: list[StrictInt]
    parameters: TensorParameters | None = None
    data: Any = None


class RequestedOutput(_Wire):
    name: StrictStr
    parameters: TensorParameters | None = None


class RequestParameters(_Wire):
    binary_data_output: StrictBool = False
    method: StrictStr | None = None  # the interpolate model's path (lerp, slerp)
    prior: StrictStr | None = None  # the sample model: standard or aggregate


class InferRequest(_Wire):
    id: StrictStr | None = None
    parameters: RequestParameters | None = None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Content-Encoding gzip/deflate (tritonclient's request compression), bounded by `limit`
    so a small compressed body cannot expand past the body limit."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadInput(f"Content-Encoding: {encoding!r} is not supported (gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadInput(f"Content-Encoding: body is not valid {encoding} ({exc})") from None
    if len(out) > limit:
        raise ApiError(f"body: decompresses past the limit of {limit} bytes", "too_large")
    return out


def parse_request(body: bytes, header_len: str | None) -> tuple[InferRequest, list[v2.Tensor]]:
    """-> (the JSON header, the input tensors decoded from JSON data or binary)."""
    n = len(body)
    if header_len is not None:
        if not header_len.isdigit() or int(header_len) > len(body):
            raise BadInput(f"{HEADER}: {header_len!r} is not a length within the "
                           f"{len(body)}-byte body")
        n = int(header_len)
    try:
        req = InferRequest.model_validate_json(body[:n])
    except ValidationError as exc:
        raise validation_error(exc) from None
    binary, off = memoryview(body)[n:], 0
    tensors = []
    for t in req.inputs:
        size = t.parameters.binary_data_size if t.parameters else None
        if size is not None:
            if size < 0 or off + size > len(binary):
                raise BadInput(f"{t.name}: binary_data_size {size!r} exceeds the "
                               f"{len(binary) - off} bytes of binary data left")
            data: Any = binary[off: off + size]
            off += size
        elif t.data is not None:
            data = t.data
        else:
            raise BadInput(f"{t.name}: neither data nor parameters.binary_data_size given")
        tensors.append(v2.Tensor(t.name, t.datatype, t.shape,
                                 v2.to_array(t.name, t.datatype, t.shape, data)))
    if off != len(binary):
        raise BadInput(f"body: {len(binary) - off} bytes of binary data after the header are "
                       "claimed by no input's binary_data_size")
    return req, tensors


def encode_response(req: InferRequest, model: str, version: int,
                    outs: dict[str, np.ndarray]) -> Answer:
    binary_default = req.parameters is not None and req.parameters.binary_data_output
    asked = {o.name: o.parameters for o in req.outputs or ()}
    entries, blobs = [], []
    for name in v2.selected_outputs(list(asked), model, outs):
        arr = outs[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2.datatype_of(arr),
                                 "shape": list(arr.shape)}
        params = asked.get(name)
        binary = None if params is None else params.binary_data
        if binary_default if binary is None else binary:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()  # Python floats: the JSON API's digits
        entries.append(entry)
    head = {"model_name": model, "model_version": str(version), "outputs": entries}
    if req.id is not None:
        head["id"] = req.id
    text = orjson.dumps(head)
    version_header = (b"x-model-version", str(version).encode())
    if not blobs:
        return Answer(200, text, [(b"content-type", b"application/json"), version_header])
    return Answer(200, text + b"".join(blobs), [
        (b"content-type", b"application/octet-stream"), version_header,
        (HEADER.lower().encode(), str(len(text)).encode())])


def _json(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data).encode())


def _empty() -> Answer:
    return Answer(200, b"", [])


# Each route's handler gets the worker's service (its ops, registry, settings), the request
# (body, headers), its Call (service/lifecycle/calls.py) and the path's parameters.
Handler = Callable[..., Awaitable[Answer]]


async def infer(svc: Any, body: bytes, headers: dict[bytes, bytes], call: Call, model: str,
                version: str | None = None) -> Answer:
    """One V2 REST inference."""
    try:
        rt = v2.resolve(svc.ops, model, version)  # unknown model or version: 404 first
    except ApiError:
        call.relabel(v2.served_model(svc.registry, model))
        raise
    call.relabel(rt.name)
    encoding = headers.get(b"content-encoding")
    body = _decompress(body, encoding and encoding.decode("latin-1"),
                       svc.settings.max_body_bytes)
    header_len = headers.get(HEADER.lower().encode())
    req, tensors = parse_request(body, header_len and header_len.decode("latin-1"))
    params = {} if req.parameters is None else req.parameters.model_dump(exclude_none=True)
    outs, res = await v2.infer(svc.ops, rt, model, tensors, params)
    answer = encode_response(req, model, res.version, outs)
    answer.headers.append((b"x-model-name", res.model.encode()))
    answer.items = res.item_count
    return answer


async def server_metadata(svc: Any, body: bytes, headers: dict, call: Call) -> Answer:
    return _json(v2.server_metadata())


async def live(svc: Any, body: bytes, headers: dict, call: Call) -> Answer:
    return _empty()


async def ready(svc: Any, body: bytes, headers: dict, call: Call) -> Answer:
    reason = svc.not_ready_because()
    if reason is not None:
        raise NotReady(reason)
    return _empty()


async def model_metadata(svc: Any, body: bytes, headers: dict, call: Call, model: str,
                         version: str | None = None) -> Answer:
    call.relabel(v2.served_model(svc.registry, model))
    return _json(v2.model_metadata(svc.ops, model, version))


async def model_ready(svc: Any, body: bytes, headers: dict, call: Call, model: str,
                      version: str | None = None) -> Answer:
    call.relabel(v2.served_model(svc.registry, model))
    if v2.model_ready(svc.registry, model, version):
        return _empty()
    raise BadInput(f"model {model!r} version {version or 'latest'} is not ready")


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: StrictBool = False


async def index(svc: Any, body: bytes, headers: dict, call: Call) -> Answer:
    try:
        ready_only = IndexRequest.model_validate_json(body or b"{}").ready
    except ValidationError as exc:
        raise validation_error(exc) from None
    return _json(await v2.repository_index(svc.registry, ready_only))


async def load(svc: Any, body: bytes, headers: dict, call: Call, model: str) -> Answer:
    await v2.repository_load(svc.registry, model)
    return _json({})


# The V2 REST routes, described here only: the front door routes by them and the OpenAPI
# document (service/doors/openapi.py) lists them. (method, path template, handler, summary)
_M, _MV = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", "/v2", server_metadata, "server metadata: name, version, extensions"),
    ("GET", "/v2/health/live", live, "200 while the server runs"),
    ("GET", "/v2/health/ready", ready, "200 once every model to serve has a version loaded"),
    ("POST", "/v2/repository/index", index, "every V2 model (encoder ..., m.encoder ... for "
     "each served model m) and version: READY, LOADING or UNAVAILABLE"),
    ("POST", "/v2/repository/models/{model}/load", load, "look for new versions (with "
     "VAE_MODELS=*, the model itself) now"),
    *[row for base in (_M, _MV) for row in (
        ("GET", base, model_metadata, "a model's inputs and outputs"),
        ("GET", base + "/ready", model_ready, "200 when that model version is ready"),
        ("POST", base + "/infer", infer, "one inference (JSON or binary tensors)"))],
]
_PATTERNS = sorted([(m, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t)), h)
                    for m, t, h, _ in ROUTES], key=lambda p: p[2] is not infer)  # hot first


def route(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    """The handler and path parameters for a V2 path; ApiError(method) when only the method is
    wrong; None for a path that is no V2 route."""
    allowed = []
    path = path.rstrip("/") or "/"
    for m, pattern, handler in _PATTERNS:
        if match := pattern.fullmatch(path):
            if m == method or (m == "GET" and method == "HEAD"):
                return handler, match.groupdict()
            allowed.append(m)
    if allowed:
        raise ApiError(f"method: {method} {path} is not served (use {', '.join(allowed)})",
                       "method")
    return None
