"""Errors a client can cause. Each carries its HTTP status and a message naming the field."""

from __future__ import annotations

from http import HTTPStatus

from bentoml.exceptions import BentoMLException


class ApiError(BentoMLException):
    """Raised by endpoint code; BentoML answers with `error_code`, and the error middleware
    (service/middleware.py) turns the body into the contract's {"error": message}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message, error_code=HTTPStatus(status))
        self.status = status
        self.message = message


class BadInput(ApiError):
    def __init__(self, message: str):
        super().__init__(message, 400)


class VersionNotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(message, 404)
