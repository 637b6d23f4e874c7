"""What can go wrong with a request, said once: each kind of error with its HTTP status, its gRPC
code and its `reason` label in vae_errors_total. Operations raise these with a message naming the
field and the limit; every door (HTTP JSON, V2 REST, gRPC) answers from the same table."""

from __future__ import annotations

from http import HTTPStatus
from typing import NamedTuple


class Kind(NamedTuple):
    http: int
    grpc: str  # grpc.StatusCode name (this module does not import grpc)
    reason: str


KINDS: dict[str, Kind] = {
    "bad_input": Kind(400, "INVALID_ARGUMENT", "bad_input"),
    "limit": Kind(400, "RESOURCE_EXHAUSTED", "too_large"),  # over an item or size limit
    "unauthorized": Kind(401, "UNAUTHENTICATED", "unauthorized"),
    "not_found": Kind(404, "NOT_FOUND", "not_found"),
    "method": Kind(405, "UNIMPLEMENTED", "method"),
    "too_large": Kind(413, "RESOURCE_EXHAUSTED", "too_large"),  # the body itself
    "media_type": Kind(415, "INVALID_ARGUMENT", "media_type"),
    "concurrency": Kind(429, "UNAVAILABLE", "concurrency"),  # load, never bad input
    "client_closed": Kind(499, "CANCELLED", "client_closed"),
    "internal": Kind(500, "INTERNAL", "internal"),
    "overload": Kind(503, "UNAVAILABLE", "overload"),  # a batch queue is full
    "not_ready": Kind(503, "UNAVAILABLE", "not_ready"),
    "timeout": Kind(504, "DEADLINE_EXCEEDED", "timeout"),
}
# Statuses that reach a door without an ApiError (answers of BentoML's own routes), by kind
KIND_OF_STATUS = {k.http: name for name, k in reversed(KINDS.items())} | {422: "bad_input"}
KIND_OF_GRPC = {k.grpc: name for name, k in reversed(KINDS.items())} | {
    "UNKNOWN": "internal", "OK": ""}
RETRY_AFTER_STATUSES = {429, 503}  # load answers carry Retry-After


def kind_of_status(status: int) -> str:
    return KIND_OF_STATUS.get(status, "internal" if status >= 500 else "bad_input")


class ApiError(Exception):
    """An answer other than success, with a message naming the field and the limit."""

    kind = "bad_input"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind

    @property
    def status(self) -> int:
        return KINDS[self.kind].http

    @property
    def grpc_code(self) -> str:
        return KINDS[self.kind].grpc

    @property
    def reason(self) -> str:
        return KINDS[self.kind].reason

    @classmethod
    def for_status(cls, status: int, message: str | None = None) -> ApiError:
        return cls(message or HTTPStatus(status).phrase, kind_of_status(status))


class BadInput(ApiError):
    kind = "bad_input"


class LimitExceeded(BadInput):
    """Over an item or size limit: 400 over HTTP, RESOURCE_EXHAUSTED over gRPC."""

    kind = "limit"


class VersionNotFound(ApiError):
    kind = "not_found"


class ModelNotFound(ApiError):
    kind = "not_found"


class Overloaded(ApiError):
    """Queue full: a load answer (503 with Retry-After), never an answer to bad input."""

    kind = "overload"


class NotReady(ApiError):
    """No version is loaded and ready (yet)."""

    kind = "not_ready"
