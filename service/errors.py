"""Errors a client can cause, or overload. Each carries its HTTP status and a message naming the
field and the limit."""

from __future__ import annotations

import json
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from bentoml.exceptions import BentoMLException

# Per-request scratch shared with the API middleware (a dict, so that writes made inside the
# endpoint are seen by the middleware whatever context copies lie between them). BentoML hides
# the message of every 5xx; the middleware restores ours from here.
REQUEST_STATE: ContextVar[dict | None] = ContextVar("vae_request_state", default=None)


class ApiError(BentoMLException):
    """Raised by endpoint code; BentoML answers with `error_code`, and the error middleware
    (service/middleware.py) turns the body into the contract's {"error": message}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message, error_code=HTTPStatus(status))
        self.status = status
        self.message = message
        state = REQUEST_STATE.get()
        if state is not None:
            state["error"], state["status"] = message, status


class BadInput(ApiError):
    def __init__(self, message: str):
        super().__init__(message, 400)


class VersionNotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(message, 404)


class Overloaded(ApiError):
    """Queue full: a load answer (503 with Retry-After), never an answer to bad input."""

    def __init__(self, message: str):
        super().__init__(message, 503)


class LimitExceeded(BadInput):
    """Over an item or size limit: 400 over HTTP, RESOURCE_EXHAUSTED over gRPC."""


class ModelNotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(message, 404)


class NotReady(ApiError):
    """No version is loaded and ready (yet): UNAVAILABLE over gRPC."""

    def __init__(self, message: str):
        super().__init__(message, 503)


def error_message(body: bytes, status: int) -> dict[str, Any]:
    """Whatever the error body was, the contract's object with a message naming the field."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML's 4xx: [{"error": ...}]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        detail = data.get("detail")
        if isinstance(detail, list) and detail:  # pydantic: name each field and its problem
            parts = []
            for d in detail:
                loc = ".".join(str(p) for p in d.get("loc", ()) if p not in ("body",))
                parts.append(f"{loc or 'body'}: {d.get('msg', 'invalid')}")
            data = {"error": "; ".join(parts),
                    "detail": [{k: d[k] for k in ("loc", "msg", "type") if k in d}
                               for d in detail]}
        return data
    text = body.decode("utf-8", "replace").strip() if body and data is None else ""
    return {"error": text or HTTPStatus(status).phrase}
