"""Typed errors that say what is wrong and where (file, line or row, asset, column).

The CLI and the HTTP API turn each into one clear message; nothing downstream of the
boundary re-validates.
"""

from __future__ import annotations

from typing import Any


class RulError(Exception):
    """Base of every error rul raises on purpose; the CLI prints it without a traceback."""


class DataError(RulError, ValueError):
    """Bad input data, located as precisely as the source allows."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        asset: Any = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.row = row
        self.asset = asset
        self.column = column
        super().__init__(str(self))

    def location(self) -> dict[str, Any]:
        """The non-empty location fields, for JSON error bodies."""
        fields = {
            "file": self.file,
            "line": self.line,
            "row": self.row,
            "asset_id": self.asset,
            "column": self.column,
        }
        return {k: plain(v) for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.asset is not None:
            where.append(f"asset {plain(self.asset)}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ConfigError(RulError, ValueError):
    """An invalid configuration value; names the field and the value."""


class OutputError(RulError):
    """An output that cannot be written where it was asked for (a folder, no such folder, no
    permission, a full disk); names the path."""


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: the path(s) it names, then the reason."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value (numpy scalars are not JSON-serialisable and print
    as np.int64(4) in messages); anything else as it is."""
    return value.item() if hasattr(value, "item") else value
