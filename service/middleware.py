"""One ASGI middleware in front of the API: request IDs, body limits, content types, metrics,
and the contract's error body {"error": message} for every status.

BentoML answers its own 4xx as a JSON array, pydantic errors as {"error", "detail"}, unknown
routes as plain text; rewriting error responses here gives clients one shape whatever raised.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from service.accesslog import ACCESS_LOG
from service.admission import ADMISSION
from service.auth import CHALLENGE
from service.deadlines import Deadlines
from service.errors import REQUEST_STATE, error_message
from service.metrics import ERRORS, flush_metrics, render_metrics, series
from service.oip import MODELS

Scope = dict[str, Any]
REASONS = {400: "bad_input", 401: "unauthorized", 404: "not_found", 405: "method", 413: "too_large",
           415: "media_type", 422: "bad_input", 429: "concurrency", 499: "client_closed",
           503: "overload", 504: "timeout"}


# Generated request IDs: 32 hex digits, a random half per process and a counter (unique
# without a getrandom call per request)
_RID_PREFIX, _RIDS = os.urandom(8).hex(), itertools.count(1)


_V2_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?(?:/(ready|infer))?")
_V2_LOAD = re.compile(r"/v2/repository/models/[^/]+/(load|unload)")


def v2_endpoint(path: str) -> str | None:
    """The metrics label of a V2 route (bounded: model names outside MODELS become
    "unknown", versions are dropped); None if the path is not a V2 route."""
    p = path.rstrip("/")
    if p in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index"):
        return p
    if m := _V2_MODEL.fullmatch(p):
        model = m[1] if m[1] in MODELS else "unknown"
        return f"/v2/models/{model}" + (f"/{m[2]}" if m[2] else "")
    if m := _V2_LOAD.fullmatch(p):
        return f"/v2/repository/models/{{model}}/{m[1]}"
    return None


class ApiMiddleware:
    def __init__(self, app: Any, endpoints: set[str], max_body_bytes: int,
                 max_concurrency: int = 0, json_access_log: bool = False,
                 fast_path: Any = None, auth: Any = None, serve_metrics: bool = False,
                 front_door: bool = False, timeout_s: float = 60.0):
        self.app = app
        self.auth = auth  # service/auth.py BearerAuth, or None
        self.fast_path = fast_path  # service/fastpath.py: the JSON API without BentoML's router
        # front_door: fast-path calls enter here before BentoML's outer layers (see _install)
        self.front_door = front_door and fast_path is not None
        # API calls time out here, with the request ID and metrics (BentoML's TimeoutMiddleware
        # sits outside this middleware and is skipped by the front door; app.py sets it later)
        self.timeout_s = timeout_s
        self.deadlines = Deadlines(timeout_s)
        self.access_log = ACCESS_LOG if json_access_log else None
        self.endpoints = endpoints
        self.serve_metrics = serve_metrics  # GET /metrics here when BentoML's route is off
        self.max_body_bytes = max_body_bytes
        ADMISSION.limit = max_concurrency

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.front_door:
                self._install(scope.get("app"))
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/v2":  # the V2 server-metadata route, without Starlette's 307
            scope = {**scope, "path": "/v2/", "raw_path": b"/v2/"}
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or \
            f"{_RID_PREFIX}{next(_RIDS):016x}"
        if scope["path"] in self.endpoints:  # (the common case: no V2 regex)
            v2, endpoint = None, scope["path"]
        else:
            v2 = v2_endpoint(scope["path"])
            endpoint = v2 or "other"
        t0 = time.perf_counter()
        status_seen = [499]  # nginx's "client closed request": no response was started
        token = REQUEST_STATE.set({"request_id": rid})
        metrics = series(endpoint)
        metrics.in_flight.inc()
        try:
            await self._handle(scope, receive, send, headers, rid, status_seen, v2 is not None)
        except Exception:
            status_seen[0] = 500  # the server answers 500 for what escapes the app
            raise
        finally:
            REQUEST_STATE.reset(token)
            metrics.in_flight.dec()
            status = status_seen[0]
            elapsed = time.perf_counter() - t0
            metrics.requests(status).inc()
            metrics.latency.observe(elapsed)
            if self.access_log is not None:
                self.access_log.write({
                    "ts": time.time(), "request_id": rid, "method": scope["method"],
                    "path": scope["path"], "status": status, "ms": round(1000 * elapsed, 3)})
            if status >= 400:
                ERRORS.labels(endpoint, REASONS.get(status, "internal" if status >= 500
                                                    else "other"), "http").inc()

    def _install(self, app: Any) -> None:
        """Put this middleware in front of BentoML's whole stack for the fast-path calls.

        BentoML places user middleware inside Starlette's error layer, OpenTelemetry (which
        costs even with every URL excluded) and its TimeoutMiddleware (a task, a future and a
        timer per request): together ~10 % of a one-item /encode (benchmark P2). Those calls
        never reach BentoML's router, so the layers only add cost; this middleware answers
        them itself (its own 500, timeout and metrics). Everything else still goes through
        the whole stack, this middleware included. Only installed with tracing and BentoML's
        metrics off (app.py), whose middlewares would otherwise miss these calls."""
        stack = getattr(app, "middleware_stack", None)
        if stack is None or getattr(stack, "api_front_door", False):
            return
        fast, this = self.fast_path, self

        async def front_door(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST" and \
                    fast.handles(scope["path"]):
                await this(scope, receive, send)
            else:
                await stack(scope, receive, send)

        front_door.api_front_door = True  # type: ignore[attr-defined]
        app.middleware_stack = front_door

    async def _handle(self, scope: Scope, receive: Any, send: Any, headers: dict, rid: str,
                      status_seen: list[int], v2: bool) -> None:
        async def respond_error(status: int, message: str) -> None:
            await self._send_json(send, status, {"error": message, "request_id": rid}, rid)
            status_seen[0] = status

        path = scope["path"].rstrip("/") or "/"
        if self.auth is not None and scope["method"] != "OPTIONS" and \
                not self.auth.allows(path, headers.get(b"authorization")):
            await self._send_json(send, 401, {"error": "Authorization: a valid bearer token is "
                                              "required (Authorization: Bearer <token>)",
                                              "request_id": rid}, rid, {"headers": [CHALLENGE]})
            status_seen[0] = 401
            return
        api_call = scope["method"] == "POST" and (scope["path"] in self.endpoints or v2)
        if api_call and not ADMISSION.try_enter():
            await respond_error(429, ADMISSION.refusal())
            return
        if api_call:
            task = self.deadlines.enter()
            try:
                await self._call_api(scope, receive, send, headers, rid, status_seen,
                                     respond_error, v2)
            except asyncio.CancelledError:
                if not self.deadlines.timed_out(task):
                    raise
                if status_seen[0] == 499:  # nothing sent yet: say why, as BentoML's 504 does
                    await respond_error(504, f"Not able to process the request in "
                                             f"{self.timeout_s:g} seconds")
            finally:
                self.deadlines.leave(task)
                ADMISSION.leave()
            return
        if self.serve_metrics and path == "/metrics" and scope["method"] in ("GET", "HEAD"):
            flush_metrics()  # this worker's held-back observations first
            body = await asyncio.to_thread(render_metrics)  # reads every worker's files
            status_seen[0] = 200
            await self._send(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                             body, rid, head=scope["method"] == "HEAD")
            return
        await self._forward(scope, receive, send, rid, status_seen)

    async def _call_api(self, scope: Scope, receive: Any, send: Any, headers: dict, rid: str,
                        status_seen: list[int], respond_error: Any, v2: bool) -> None:
        ctype = headers.get(b"content-type", b"application/json").decode("latin-1")
        # V2 bodies may carry binary tensors after the JSON header (any content type)
        if not v2 and ctype.split(";")[0].strip().lower() != "application/json":
            await respond_error(415, f"Content-Type: {ctype!r} is not accepted; "
                                     "send application/json")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and \
                int(declared) > self.max_body_bytes:
            await respond_error(413, f"body: {int(declared)} bytes exceed the limit of "
                                     f"{self.max_body_bytes} bytes")
            return
        body = await self._read_body(receive)
        if body is None:
            await respond_error(413, f"body: exceeds the limit of {self.max_body_bytes} bytes")
            return
        if self.fast_path is not None and self.fast_path.handles(scope["path"]):
            status, data, out_headers = await self.fast_path(scope["path"], body, headers)
            status_seen[0] = status
            if status >= 400:
                await self._send_json(send, status, {**json.loads(data), "request_id": rid},
                                      rid)
                return
            await self._send(send, status, out_headers, data, rid)
            return
        receive = self._replay(body, receive)
        await self._forward(scope, receive, send, rid, status_seen)

    async def _forward(self, scope: Scope, receive: Any, send: Any, rid: str,
                       status_seen: list[int]) -> None:
        buffered: dict[str, Any] = {}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                if message["status"] >= 400:  # hold the error body back to rewrite it
                    buffered["start"], buffered["body"] = message, b""
                    return
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode("latin-1"))]
                await send(message)
            elif message["type"] == "http.response.body" and "start" in buffered:
                buffered["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    status = buffered["start"]["status"]
                    data = error_message(buffered["body"], status)
                    state = REQUEST_STATE.get() or {}
                    if status >= 500 and state.get("status") == status:
                        data = {"error": state["error"]}  # BentoML hid our 5xx message
                    data.setdefault("request_id", rid)
                    await self._send_json(send, status, data, rid, buffered["start"])
            else:
                await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive: Any) -> Any:
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI expects

        return replay

    @staticmethod
    async def _send_json(send: Any, status: int, data: dict, rid: str,
                         start: dict | None = None) -> None:
        body = json.dumps(data).encode()
        keep = [(k, v) for k, v in (start or {}).get("headers", [])
                if k.lower() not in (b"content-length", b"content-type")]
        if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in keep):
            keep.append((b"retry-after", b"1"))
        await ApiMiddleware._send(send, status, [*keep, (b"content-type", b"application/json")],
                                  body, rid)

    @staticmethod
    async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                    rid: str, head: bool = False) -> None:
        """A whole response: the given headers plus content-length and the request ID."""
        await send({"type": "http.response.start", "status": status, "headers": [
            *headers, (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": b"" if head else body})
