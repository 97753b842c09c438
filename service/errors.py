"""The one JSON error shape of the API, built by a plain function.

Every error answer is ``{"error": {"status": ..., "message": ..., "field": ...}}``: the HTTP
status again, one clear sentence, and the request field at fault (``None`` where no single
field is).
"""

from __future__ import annotations

from typing import Any


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"status": status, "message": message, "field": field}}


def not_found_body(method: str, path: str) -> dict[str, Any]:
    """The body for a path that no route serves."""
    return error_body(404, f"no such endpoint: {method} {path} (the API lives under /v1)")
