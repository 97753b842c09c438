"""The one JSON error shape of the API, and the exception that carries it.

Every error answer is ``{"error": {"status": ..., "message": ..., "field": ...}}``: the HTTP
status again, one clear sentence, and the request field at fault as a path into the request
(``readings[3].sensor_2``, ``query.limit``, ``header.X-API-Key``), or ``None`` where no single
field is. Plain functions raise `ApiError`; the app turns it into the answer.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the service refuses: HTTP status, message, offending field."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.field)


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, message, field)


def too_large(message: str, field: str | None = None) -> ApiError:
    return ApiError(413, message, field)


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"status": status, "message": message, "field": field}}


def not_found_body(method: str, path: str) -> dict[str, Any]:
    """The body for a path that no route serves."""
    return error_body(404, f"no such endpoint: {method} {path} (the API lives under /v1)")
