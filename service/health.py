"""Liveness: the service is up, and which rul it runs."""

from __future__ import annotations

import rul


def health() -> dict[str, str]:
    """The body of ``GET /v1/health``."""
    return {"status": "ok", "version": rul.__version__}
