"""The HTTP front door: the one route every HTTP request takes, in every configuration.

BentoML's outer layers (Starlette's error layer, OpenTelemetry, its timeout; its metrics and
access log when enabled) and its router cost a large share of a small request, measured
(docs/BENCHMARKS.md, "The request core"): so this door stands in front of BentoML's whole
ASGI stack. It answers the JSON API, V2 REST, /metrics and the API documents itself, and hands
everything else (health, /ui, Swagger's assets, unknown paths) to BentoML's stack, with the
request ID added and error bodies in the contract's shape. What wraps it is the same for both:
CORS is Starlette's CORSMiddleware, tracing OpenTelemetry's ASGI instrumentation
(service/lifecycle/tracing.py), and, when enabled, BentoML's own traffic-metrics and access-log
middlewares; BentoML's copies of those layers are configured off (service/config.py).

The hook: `install` adds `_Hook` with BentoML's documented `add_asgi_middleware`; at lifespan
startup it wraps the Starlette application's built `middleware_stack` (Starlette builds it
once and calls it for every request). tests/test_front_door.py fails if BentoML's app stops
offering that hook or the borrowed middlewares move; start-up fails loudly too.

Per request: request ID, authentication, admission (429), deadline (504), body limits (413)
and content type (415), then the door (http_json, v2_rest, openapi), then metrics and the
access log (service/lifecycle/calls.py), with errors from the one table in service/errors.py.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.middleware.cors import CORSMiddleware

from service.config import Settings
from service.doors import http_json, landing, openapi, v2_rest
from service.doors.http_json import JSON, Answer
from service.errors import RETRY_AFTER_STATUSES, ApiError, NotReady
from service.lifecycle import tracing
from service.lifecycle.admission import ADMISSION
from service.lifecycle.auth import CHALLENGE, BearerAuth
from service.lifecycle.calls import Call, request_id, v2_endpoint
from service.lifecycle.deadlines import Deadlines
from service.metrics import flush_metrics, render_metrics
from service.operations.api import OPERATIONS

log = logging.getLogger("vae.http")
Scope = dict[str, Any]
LABELLED = {"/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/"}  # others: "other"
UNCOUNTED = ["/metrics", "/healthz", "/livez", "/readyz"]  # BentoML's own skip list


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def install(service: Any, settings: Settings) -> None:
    """Put the front door in front of the BentoML service's ASGI stack (at lifespan start)."""
    service.add_asgi_middleware(_Hook, settings=settings)


def entry(stack: Any, settings: Settings) -> Any:
    """The front door and what wraps it, in front of BentoML's stack `stack`."""
    app: Any = FrontDoor(stack, settings)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "X-Request-ID", "Authorization", "X-Model-Name"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Model-Version", "X-Model-Name"])
    if settings.access_log == "bentoml":
        from bentoml._internal.server.http.access import AccessLogMiddleware

        app = AccessLogMiddleware(app, has_request_content_length=True,
                                  has_request_content_type=True,
                                  has_response_content_length=True,
                                  has_response_content_type=True, skip_paths=UNCOUNTED)
    if settings.bentoml_metrics:
        from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

        app = RunnerTrafficMetricsMiddleware(app, namespace="bentoml_service",
                                             skip_paths=UNCOUNTED)
    if settings.tracing_sample_rate > 0:
        app = tracing.traced(app, settings)
    return app


class _Hook:
    """In BentoML's stack (add_asgi_middleware); at lifespan startup it puts `entry` in front
    of the whole stack, then passes everything on."""

    def __init__(self, app: Any, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            starlette_app = scope.get("app")
            stack = getattr(starlette_app, "middleware_stack", None)
            if stack is None:
                raise RuntimeError("front door: BentoML's ASGI app offers no middleware_stack "
                                   "to stand in front of (service/doors/front_door.py)")
            if not getattr(stack, "is_front_door", False):
                door = entry(stack, self.settings)
                door.is_front_door = True
                starlette_app.middleware_stack = door
        await self.app(scope, receive, send)


class FrontDoor:
    def __init__(self, app: Any, settings: Settings,
                 instance: Callable[[], Any] | None = None):
        import bentoml  # the worker's service instance, once it exists

        self.app = app  # BentoML's router (and what stands behind this door)
        self.settings = settings
        self.instance = instance or bentoml.get_current_service
        self.auth = BearerAuth.from_settings(settings)
        self.deadlines = Deadlines(settings.timeout_s)
        self.access_log = settings.access_log == "json"
        self.svc: Any = None  # the worker's service instance, once it exists
        ADMISSION.limit = settings.max_concurrency

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        rid = request_id(headers.get(b"x-request-id"))
        op = OPERATIONS.get(path)
        endpoint = path if op is not None or path in LABELLED else v2_endpoint(path) or "other"
        svc = self.svc = self.svc or self.instance()  # model calls start labelled with the
        model = svc.registry.default_name or "" if svc is not None and (  # default model
            op is not None or path.startswith("/v2/models/")) else ""
        call = Call(endpoint, "http", rid, method, path, self.access_log, model)
        status, kind = 499, None  # 499: the client left before an answer was started
        try:
            if self.auth is not None and method != "OPTIONS" and not self.auth.allows(
                    path.rstrip("/") or "/", headers.get(b"authorization")):
                raise ApiError("Authorization: a valid bearer token is required "
                               "(Authorization: Bearer <token>)", "unauthorized")
            answer = await self._answer(receive, method, path, op, headers, call)
            if answer is None:  # not ours: BentoML's
                status = await self._forward(scope, receive, send, rid)
                return
            status = answer.status
            call.count_items(answer.items)
            await _send(send, answer.status, answer.headers, answer.body, rid,
                        head=method == "HEAD")
        except ApiError as exc:
            status, kind = exc.status, exc.kind
            await _send_error(send, exc, rid)
        except ClientGone:
            pass  # 499, nothing to send
        except Exception:  # a bug: logged with its traceback, answered as the contract's 500
            log.exception("%s %s failed", method, path)
            exc = ApiError(f"{path}: internal error; the server log has the details",
                           "internal")
            status, kind = exc.status, exc.kind
            await _send_error(send, exc, rid)
        finally:
            call.finish(status, kind)

    async def _answer(self, receive: Any, method: str, path: str, op: Any,
                      headers: dict[bytes, bytes], call: Call) -> Answer | None:
        """This door's answer, or None for a request BentoML answers."""
        if op is not None:
            if method != "POST":
                raise ApiError(f"method: {method} {path} is not served; use POST with a JSON "
                               "body ({} for the defaults)", "method")
            svc = self._service()
            return await self._api_call(receive, headers, call, lambda body: http_json.call(
                op, svc.ops, body, call, headers.get(b"x-model-name")), json_only=True)
        if path.startswith("/v2"):
            found = v2_rest.route(method, path)
            if found is not None:
                handler, params = found
                svc = self._service()
                if method == "POST":  # inference and repository calls: the API's limits
                    return await self._api_call(receive, headers, call, lambda body:
                                                handler(svc, body, headers, call, **params))
                return await handler(svc, b"", headers, call, **params)
        if method in ("GET", "HEAD"):
            if path == "/metrics":
                flush_metrics()  # this worker's held-back observations first
                body = await asyncio.to_thread(render_metrics)  # reads every worker's files
                return Answer(200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])
            if path == "/docs.json":
                return Answer(200, orjson.dumps(openapi.document(self._service())))
            if path == "/":
                return Answer(200, landing.page(self._service()), landing.HEADERS)
            if path == "/docs":
                return Answer(200, openapi.SWAGGER_PAGE, landing.DOCS_HEADERS)
        return None

    def _service(self) -> Any:
        svc = self.svc or self.instance()
        if svc is None:  # the worker is still starting
            raise NotReady("the service is starting")
        self.svc = svc
        return svc

    async def _api_call(self, receive: Any, headers: dict[bytes, bytes], call: Call,
                        run: Callable[[bytes], Any], json_only: bool = False) -> Answer:
        """An inference or repository call: admitted, bounded in time and body size."""
        ctype = headers.get(b"content-type", b"application/json").decode("latin-1")
        # V2 bodies may carry binary tensors after the JSON header (any content type)
        if json_only and ctype.split(";")[0].strip().lower() != "application/json":
            raise ApiError(f"Content-Type: {ctype!r} is not accepted; send application/json",
                           "media_type")
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(f"body: {int(declared)} bytes exceed the limit of {limit} bytes "
                           "(VAE_MAX_BODY_BYTES)",
                           "too_large")
        call.admit()
        task = self.deadlines.enter()
        try:
            return await run(await _read_body(receive, limit))
        except asyncio.CancelledError:
            if not self.deadlines.timed_out(task):
                raise
            raise ApiError(f"Not able to process the request in {self.settings.timeout_s:g} "
                           "seconds", "timeout") from None
        finally:
            self.deadlines.leave(task)

    async def _forward(self, scope: Scope, receive: Any, send: Any, rid: str) -> int:
        """BentoML answers; -> its status. Its error bodies become the contract's."""
        status, held = 499, None
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: dict) -> None:
            nonlocal status, held
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400:  # its body is replaced once it ends
                    held = message
                    return
                message["headers"] = [*message.get("headers", []), rid_header]
                await send(message)
            elif held is not None:
                if not message.get("more_body", False):
                    keep = [(k, v) for k, v in held.get("headers", [])
                            if k.lower() not in (b"content-length", b"content-type")]
                    text = f"{scope['method']} {scope['path']}: {HTTPStatus(status).phrase}"
                    text += _did_you_mean(scope["path"]) if status == 404 else ""
                    await _send_error(send, ApiError.for_status(status, text), rid, keep)
            else:
                await send(message)

        await self.app(scope, receive, send_with_id)
        return status


def _did_you_mean(path: str) -> str:
    """'; did you mean /encode?' for a path one typo away from an operation's route."""
    close = difflib.get_close_matches(path[:200], list(OPERATIONS), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone  # the client left mid-body: nothing to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(f"body: exceeds the limit of {limit} bytes (VAE_MAX_BODY_BYTES)",
                           "too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_error(send: Any, exc: ApiError, rid: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The contract's error body: {"error": message naming the field, "request_id"}."""
    data: dict[str, Any] = {"error": exc.message, "request_id": rid}
    if getattr(exc, "detail", None):
        data["detail"] = exc.detail
    out = [*(headers or []), *JSON]
    if exc.status in RETRY_AFTER_STATUSES and not any(k == b"retry-after" for k, _ in out):
        out.append((b"retry-after", b"1"))
    if exc.kind == "unauthorized":
        out.append(CHALLENGE)
    await _send(send, exc.status, out, orjson.dumps(data), rid)


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                rid: str, head: bool = False) -> None:
    """A whole response: the given headers plus content-length and the request ID."""
    await send({"type": "http.response.start", "status": status, "headers": [
        *headers, (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1"))]})
    await send({"type": "http.response.body", "body": b"" if head else body})
