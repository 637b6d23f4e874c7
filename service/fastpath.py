"""The JSON API's request path without BentoML's inner router (benchmark P2's profile).

BentoML's per-request work inside its router (a context object, Starlette's routing and
exception layers, an `inspect.signature` per call, the serde lookup, pydantic deprecation
warnings) was a quarter of a small request's time. The API middleware (service/middleware.py)
therefore calls the endpoint itself: the request body is validated with the very pydantic
model BentoML built for that endpoint (`APIMethod.input_spec`), so fields, defaults, limits
and error messages stay the same, and the method runs as BentoML would run it (async in the
loop, sync in a thread). Everything outside the router still applies: BentoML's traffic
metrics, tracing, access log and timeout, and this project's middleware.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from service.errors import REQUEST_STATE, ApiError
from service.v2_rest import HEADER, run_infer

log = logging.getLogger("vae.fastpath")
RawHeaders = list[tuple[bytes, bytes]]
JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]
V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class JsonAnswer(Response):
    """A finished JSON body as a Starlette Response, without Response.__init__'s generic
    header and charset work (the fast path only needs the bytes)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code, self.body, self.background = 200, body, None
        self.raw_headers = [(b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json")]


class FastPath:
    def __init__(self, service: Any, respond: Callable[[dict], Response],
                 instance: Callable[[], Any]):
        """`service`: the BentoML service; `respond` turns a dict into a JSON Response;
        `instance()` -> this worker's service instance (None before it exists)."""
        self.respond = respond
        self.instance = instance
        self.routes = {}
        for name, method in service.apis.items():
            # the same model with unknown fields refused ("Extra inputs are not permitted",
            # naming the field): a typo such as "sampels" must not pass silently
            strict = type(f"{method.input_spec.__name__}Strict", (method.input_spec,),
                          {"model_config": {**method.input_spec.model_config,
                                            "extra": "forbid"}})
            self.routes[method.route] = (name, method, strict,
                                         inspect.iscoroutinefunction(method.func))

    def handles(self, path: str) -> bool:
        return path in self.routes or V2_INFER.fullmatch(path) is not None

    async def __call__(self, path: str, body: bytes,
                       headers: dict[bytes, bytes]) -> tuple[int, bytes, RawHeaders]:
        """-> (status, body, headers but content-length); errors as {"error": ...}."""
        svc = self.instance()
        if svc is None:  # not started yet: the same answer as not ready
            return _error(503, "the service is starting")
        if m := V2_INFER.fullmatch(path):
            return await self._v2(svc, m[1], m[2], body, headers)
        name, method, strict, is_async = self.routes[path]
        try:
            data = strict.model_validate_json(body or b"{}")
        except ValidationError as exc:
            return 400, json.dumps(_validation_body(exc)).encode(), JSON_HEADERS
        kwargs = {k: getattr(data, k) for k in type(data).model_fields}
        func = method.func
        try:
            if is_async:
                out = await func(svc, **kwargs)
            else:
                out = await asyncio.to_thread(func, svc, **kwargs)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except Exception:  # a bug: logged with its traceback, answered as the contract's 500
            log.exception("%s failed", path)
            return _error(500, f"{path}: internal error; the server log has the details")
        if not isinstance(out, Response):
            out = self.respond(out)
        return _answer(out)

    async def _v2(self, svc: Any, model: str, version: str | None, body: bytes,
                  headers: dict[bytes, bytes]) -> tuple[int, bytes, RawHeaders]:
        def get(name: str) -> str | None:
            value = headers.get(name.lower().encode())
            return None if value is None else value.decode("latin-1")
        try:
            out = await run_infer(svc, model, version, body, get(HEADER),
                                  get("content-encoding"))
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except Exception:
            log.exception("%s failed", model)
            return _error(500, f"{model}: internal error; the server log has the details")
        return _answer(out)


def _answer(out: Response) -> tuple[int, bytes, RawHeaders]:
    """A Response's parts as the middleware sends them (it adds content-length itself)."""
    if type(out) is JsonAnswer:  # nothing to pick
        return 200, out.body, JSON_HEADERS
    return out.status_code, bytes(out.body), [h for h in out.raw_headers
                                              if h[0] != b"content-length"]


def _error(status: int, message: str) -> tuple[int, bytes, RawHeaders]:
    state = REQUEST_STATE.get()
    if state is not None:
        state["error"], state["status"] = message, status
    return status, json.dumps({"error": message}).encode(), JSON_HEADERS


def _validation_body(exc: ValidationError) -> dict:
    """Each invalid field by name and what is wrong with it, as BentoML's 400 would say."""
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for d in details:
        loc = ".".join(str(p) for p in d.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {d.get('msg', 'invalid')}")
    return {"error": "; ".join(parts),
            "detail": [{k: d[k] for k in ("loc", "msg", "type") if k in d} for d in details]}
