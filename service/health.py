"""Liveness (the process answers) and readiness (it can do its work)."""

from __future__ import annotations

from typing import Any

import rul
from service.models import ModelRegistry
from service.storage import Store


def health() -> dict[str, str]:
    """The body of ``GET /v1/health``."""
    return {"status": "ok", "version": rul.__version__}


def readiness(registry: ModelRegistry, store: Store) -> dict[str, Any]:
    """The body of ``GET /v1/ready``: models loaded and the database writable, or why not."""
    problem = store.writable()
    return {"status": "ready" if problem is None and registry.models else "not ready",
            "models": registry.names(), "default_model": registry.default,
            "database": "writable" if problem is None else problem,
            "version": rul.__version__}
