"""Atomic file writes and JSON that is valid everywhere (NaN becomes null)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from rul.errors import OutputError


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: never half a file.
    OutputError (naming `path`, not the temporary file) when the file cannot be written."""
    path = _not_a_folder(Path(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_folder_problem(path.parent, exc)}") from None
    try:
        write_synced(tmp, write, fd)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_synced(path: Path | str, write: Callable[[IO[bytes]], Any], fd: int | None = None
                  ) -> None:
    """Write a new file (through `fd` when it is already open), on disk before it is closed,
    readable by all."""
    with open(path if fd is None else fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others


def write_files(folder: Path | str, files: Mapping[str, bytes], stale: tuple[str, ...] = ()
                ) -> dict[str, Path]:
    """Write several files into `folder` as one set (a report and its plots): all are written
    and synced in a staging folder inside it first, then renamed into place, then the `stale`
    names removed. A failure while writing (disk full, no permission) leaves the folder's
    earlier set as it was, never half old and half new. Returns the paths by file name."""
    folder = make_folder(folder)
    targets = {name: _not_a_folder(folder / name) for name in files}
    try:
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {_folder_problem(folder, exc)}") from None
    try:
        for name, data in files.items():
            try:
                write_synced(staging / name, lambda f, data=data: f.write(data))
            except OSError as exc:
                raise OutputError(f"cannot write {targets[name]}: {exc.strerror or exc}; the "
                                  f"files already in {folder} were left as they were") from None
        try:
            for name, target in targets.items():
                os.replace(staging / name, target)
            for name in stale:
                (folder / name).unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot move the new files into {folder}: "
                              f"{exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


def make_folder(folder: Path | str) -> Path:
    """mkdir -p for an output folder; OutputError naming the folder when it cannot be made (a
    file in the way, no permission)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            reason = f"{blocking} is a file, not a folder"
        else:
            reason = exc.strerror or str(exc)
        raise OutputError(f"cannot create folder {folder}: {reason}") from None
    return folder


def check_output_path(path: Path | str) -> Path:
    """Before any work: OutputError if `path` is a folder or its folder cannot be made."""
    path = _not_a_folder(Path(path))
    make_folder(path.parent)
    return path


def _not_a_folder(path: Path) -> Path:
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    return path


def _folder_problem(folder: Path, exc: OSError) -> str:
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    return f"folder {folder}: {exc.strerror or exc}"


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
