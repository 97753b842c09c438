"""Atomic file writes and JSON that is valid everywhere (NaN becomes null)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_ready(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, NaN and inf as None."""
    if isinstance(value, Mapping):
        return {str(json_ready(k)): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | pd.Series):
        return [json_ready(v) for v in np.asarray(value).tolist()]
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null is what every reader understands
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


def write_json(path: Path | str, value: Any) -> Path:
    text = dumps(value)
    return atomic_write(path, lambda f: f.write(text.encode() + b"\n"))
