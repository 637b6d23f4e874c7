"""KServe V2 REST under /v2 on the HTTP port, with Triton's binary tensor data extension:
a body may be a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
little-endian tensors whose inputs declare `parameters.binary_data_size`; outputs asked for
with `binary_data` (or the request's `binary_data_output`) come back the same way.

Mounted into the BentoML service (service/app.py), so the API middleware's body limit,
concurrency limit, request IDs, error shape and metrics apply here too.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import oip
from service.errors import ApiError, BadInput
from service.oip import Tensor

HEADER = "Inference-Header-Content-Length"


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
        raise ApiError(f"body: decompresses past the limit of {limit} bytes", 413)
    return out


def _field(t: dict, key: str, kind: type, where: str) -> Any:
    value = t.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInput(f"{where}.{key}: required, a {kind.__name__}")
    return value


def parse_request(body: bytes, header_len: str | None) -> tuple[dict, list[Tensor]]:
    """-> (the JSON header, the input tensors decoded from JSON data or binary)."""
    n = len(body)
    if header_len is not None:
        if not header_len.isdigit() or int(header_len) > len(body):
            raise BadInput(f"{HEADER}: {header_len!r} is not a length within the "
                           f"{len(body)}-byte body")
        n = int(header_len)
    try:
        req = json.loads(body[:n])
    except ValueError as exc:
        raise BadInput(f"body: the inference header is not valid JSON ({exc})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadInput("inputs: required, a list of tensors")
    binary, off = memoryview(body)[n:], 0
    tensors = []
    for i, t in enumerate(req["inputs"]):
        if not isinstance(t, dict):
            raise BadInput(f"inputs[{i}]: expected an object")
        name = _field(t, "name", str, f"inputs[{i}]")
        datatype = _field(t, "datatype", str, name)
        shape = _field(t, "shape", list, name)
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or off + size > len(binary):
                raise BadInput(f"{name}: binary_data_size {size!r} exceeds the "
                               f"{len(binary) - off} bytes of binary data left")
            data: Any = binary[off: off + size]
            off += size
        elif "data" in t:
            data = t["data"]
        else:
            raise BadInput(f"{name}: neither data nor parameters.binary_data_size given")
        tensors.append(Tensor(name, datatype, shape, oip.to_array(name, datatype, shape, data)))
    if off != len(binary):
        raise BadInput(f"body: {len(binary) - off} bytes of binary data after the header are "
                       "claimed by no input's binary_data_size")
    return req, tensors


def encode_response(req: dict, model: str, version: int,
                    outs: dict[str, np.ndarray]) -> Response:
    params = req.get("parameters") or {}
    default_binary = bool(params.get("binary_data_output", False))
    asked = req.get("outputs")
    if asked is None:
        asked = [{"name": name} for name in outs]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadInput("outputs: expected a list of objects with a name")
    entries, blobs = [], []
    for o in asked:
        name, oparams = o.get("name"), o.get("parameters") or {}
        if name not in outs:
            raise BadInput(f"outputs: {name!r} is not an output of {model!r} "
                           f"(outputs: {', '.join(outs)})")
        if oparams.get("classification"):
            raise BadInput(f"{name}: the classification extension is not supported")
        arr = outs[name]
        entry: dict[str, Any] = {"name": name, "datatype": oip.DATATYPE_OF[arr.dtype],
                                 "shape": list(arr.shape)}
        if oparams.get("binary_data", default_binary):
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    head = {"model_name": model, "model_version": str(version), "outputs": entries}
    if isinstance(req.get("id"), str):
        head["id"] = req["id"]
    text = json.dumps(head).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(text + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER: str(len(text))})


async def run_infer(svc: Any, model: str, version: str | None, body: bytes,
                    header_len: str | None, encoding: str | None) -> Response:
    """One V2 REST inference; also called by the API middleware's fast path."""
    rt = oip.resolve(svc.models, model, version)
    body = _decompress(body, encoding, svc.settings.max_body_bytes)
    req, tensors = parse_request(body, header_len)
    outs = await oip.infer(rt, model, tensors, req.get("parameters") or {}, svc.settings,
                           "http")
    return encode_response(req, model, rt.manifest.version, outs)


def make_app(current: Callable[[], Any]) -> Starlette:
    """`current()` -> the worker's service instance (its .models, .watcher, .settings)."""

    def handler(fn: Callable) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request, current(), **request.path_params)
            except ApiError as exc:
                return JSONResponse({"error": exc.message}, exc.status)
        return endpoint

    async def server_metadata(request: Request, svc: Any) -> Response:
        return JSONResponse(oip.server_metadata())

    async def live(request: Request, svc: Any) -> Response:
        return Response(status_code=200)

    async def ready(request: Request, svc: Any) -> Response:
        return Response(status_code=200 if svc.models.runtimes else 503)

    async def model_metadata(request: Request, svc: Any, model: str,
                             version: str | None = None) -> Response:
        return JSONResponse(oip.model_metadata(svc.models, model, version))

    async def model_ready(request: Request, svc: Any, model: str,
                          version: str | None = None) -> Response:
        ok = oip.model_ready(svc.models, model, version)
        return Response(status_code=200) if ok else JSONResponse(
            {"error": f"model {model!r} version {version or 'latest'} is not ready"}, 400)

    async def infer(request: Request, svc: Any, model: str,
                    version: str | None = None) -> Response:
        return await run_infer(svc, model, version, await request.body(),
                               request.headers.get(HEADER),
                               request.headers.get("content-encoding"))

    async def index(request: Request, svc: Any) -> Response:
        body = await request.body()
        try:
            ready_only = bool(json.loads(body or b"{}").get("ready", False))
        except (ValueError, AttributeError):
            raise BadInput("body: expected a JSON object such as {\"ready\": true}") from None
        return JSONResponse(await oip.repository_index(svc.models, svc.watcher, ready_only))

    async def load(request: Request, svc: Any, model: str) -> Response:
        await oip.repository_load(svc.models, svc.watcher, model)
        return JSONResponse({})

    m, mv = "/models/{model}", "/models/{model}/versions/{version}"
    routes = [Route("/", handler(server_metadata), methods=["GET"]),
              Route("/health/live", handler(live), methods=["GET"]),
              Route("/health/ready", handler(ready), methods=["GET"]),
              Route("/repository/index", handler(index), methods=["POST"]),
              Route("/repository/models/{model}/load", handler(load), methods=["POST"])]
    for path in (m, mv):
        routes += [Route(path, handler(model_metadata), methods=["GET"]),
                   Route(path + "/ready", handler(model_ready), methods=["GET"]),
                   Route(path + "/infer", handler(infer), methods=["POST"])]
    return Starlette(routes=routes)
