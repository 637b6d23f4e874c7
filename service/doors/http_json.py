"""The HTTP JSON door: a JSON body becomes an operation's request (service/operations/api.py),
its result becomes a JSON answer, image fields in the request's output_format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import ApiError, BadInput
from service.lifecycle.calls import Call
from service.operations.api import Operation, Operations
from service.operations.tensors import encode_images

Headers = list[tuple[bytes, bytes]]
JSON: Headers = [(b"content-type", b"application/json")]


@dataclass
class Answer:
    """A whole HTTP answer; the front door adds content-length and the request ID."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=lambda: JSON)
    items: int = 0  # rows processed, for vae_items_total


def _as_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        # float64 so that numbers print exactly as float(x) would (what .tolist() gives)
        return value.astype(np.float64) if value.dtype == np.float32 else \
            np.ascontiguousarray(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_bytes(out: dict[str, Any]) -> bytes:
    """orjson writes numpy arrays without a .tolist() round trip; float32 as float64 so that
    every door prints the same numbers."""
    for k, v in out.items():
        if type(v) is np.ndarray and v.dtype == np.float32:
            out[k] = v.astype(np.float64)
    return orjson.dumps(out, default=_as_json, option=orjson.OPT_SERIALIZE_NUMPY)


def _named_model(ops: Operations, body: bytes, header_model: bytes | None) -> str:
    """The served model an invalid request was for (its `model`, header, or the default), or
    "" when it names none that is served: the error's metrics label."""
    try:
        named = orjson.loads(body or b"{}").get("model") if header_model is None else \
            header_model.decode("latin-1")
    except (orjson.JSONDecodeError, AttributeError):
        named = None
    try:
        return ops.model_set(named if isinstance(named, str) else None).name
    except ApiError:
        return ""


async def call(op: Operation, ops: Operations, body: bytes, call: Call,
               header_model: bytes | None = None) -> Answer:
    """One operation; ApiError for anything the client must fix. The model is the body's
    `model`, else the request's X-Model-Name header, else the default model."""
    try:
        req = op.parse(body)
    except BadInput:
        call.relabel(_named_model(ops, body, header_model))  # its errors count for its model
        raise
    if header_model is not None:
        named = header_model.decode("latin-1")
        if req.model is None:
            req.model = named
        elif req.model != named:
            raise BadInput(f"model: {req.model[:80]!r} in the body and X-Model-Name "
                           f"{named[:80]!r} disagree")
    if req.model is not None or not call.model:  # (else: the default, as labelled)
        try:
            ms = ops.model_set(req.model)  # 404 naming the served models, before any work
        except ApiError:
            call.relabel("")  # the label stays bounded: no unknown names
            raise
        call.relabel(ms.name)
    res = await op.run(ops, req)
    fields = dict(res)
    for name in op.image_outputs:
        fields[name] = encode_images(fields[name], req.output_format)
    headers = [*JSON, (b"x-model-name", res.model.encode()),
               (b"x-model-version", str(res.version).encode())]
    return Answer(200, json_bytes(fields), headers, res.item_count)
