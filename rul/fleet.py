"""The one data shape: a validated long-format fleet, one row per asset and cycle.

`validate_fleet` is the single boundary check every loader goes through (DESIGN.md, "The data
contract"); what it returns is trusted downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rul.errors import DataError
from rul.schema import ASSET_ID, CYCLE, TIMESTAMP


@dataclass(frozen=True)
class Fleet:
    """A validated fleet in long format."""

    frame: pd.DataFrame
    """asset_id, cycle, [timestamp], settings..., sensors...; sorted by asset, then cycle."""
    settings: tuple[str, ...]
    """Operating-setting columns (they define operating conditions, not health)."""
    sensors: tuple[str, ...]
    """Sensor columns."""
    source: str = "<dataframe>"
    """Where the data came from, for messages."""

    @property
    def features(self) -> list[str]:
        """Settings then sensors: every numeric input column."""
        return [*self.settings, *self.sensors]

    @property
    def asset_ids(self) -> np.ndarray:
        """Asset ids in the frame's order (sorted)."""
        return self.frame[ASSET_ID].unique()

    @property
    def n_assets(self) -> int:
        return int(self.frame[ASSET_ID].nunique())

    def lengths(self) -> np.ndarray:
        """Number of cycles per asset, in asset order."""
        return self.frame.groupby(ASSET_ID, sort=False).size().to_numpy()


@dataclass(frozen=True)
class Locator:
    """Turns a 0-based position in the raw frame into the place a user can find it."""

    source: str
    kind: str = "row"
    """'line' for text files (counting the header, if any), 'row' otherwise."""
    offset: int = 1
    """Added to the 0-based position: 1 for headerless text or 1-based rows, 2 for CSV lines."""

    def error(self, message: str, position: int | None = None, **where) -> DataError:
        if position is not None:
            where[self.kind] = int(position) + self.offset
        return DataError(message, file=self.source, **where)


def validate_fleet(
    raw: pd.DataFrame,
    settings: Sequence[str],
    sensors: Sequence[str],
    locator: Locator,
) -> Fleet:
    """Check a long-format frame with canonical column names and return it as a `Fleet`.

    Raises `DataError` naming file, line/row, asset and column for: no rows, missing
    columns, bad asset ids, non-numeric cells, NaN/inf, non-integer or non-positive cycles,
    and duplicate or decreasing cycles within an asset.
    """
    if len(raw) == 0:
        raise locator.error("no rows")
    settings, sensors = list(settings), list(sensors)
    if not sensors:
        raise locator.error("no sensor columns")
    required = [ASSET_ID, CYCLE, *settings, *sensors]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise locator.error(f"missing columns {missing}; found {list(raw.columns)}")

    rows = check_rows(raw, [*settings, *sensors], locator)
    values = {name: column for name, column in rows.values.items() if name != CYCLE}
    frame = pd.DataFrame({ASSET_ID: rows.asset_ids, CYCLE: rows.cycles, **values})
    if TIMESTAMP in raw.columns:
        frame.insert(2, TIMESTAMP, raw[TIMESTAMP].to_numpy())
    if rows.order is not None:  # stable by asset: cycles already increase within an asset
        frame = frame.iloc[rows.order].reset_index(drop=True)
    return Fleet(frame, tuple(settings), tuple(sensors), locator.source)


@dataclass(frozen=True)
class CheckedRows:
    """The checked columns of a long-format frame, rows in the frame's own order."""

    asset_ids: np.ndarray
    """int64, or object (str) when any id is text."""
    cycles: np.ndarray
    """int64, positive, increasing within each asset."""
    values: dict[str, np.ndarray]
    """float64 and finite, by column name."""
    order: np.ndarray | None
    """The stable sort of the rows by asset, or None when they are already in asset order."""


def check_rows(raw: pd.DataFrame, names: Sequence[str], locator: Locator) -> CheckedRows:
    """`validate_fleet`'s checks of asset_id, cycle and the columns `names`, by the same rules
    and messages, without building a frame (rul.batch keeps only each asset's last rows)."""
    raw = raw.reset_index(drop=True)
    asset_ids = _asset_ids(raw[ASSET_ID], locator)
    cycles = _cycle_numbers(raw[CYCLE], asset_ids, locator)
    values = {name: _numeric(raw[name], name, asset_ids, locator)
              for name in names if name != CYCLE}
    order = _stable_asset_sort(asset_ids)
    _check_cycles(cycles, asset_ids, order, locator)
    cycles = cycles.astype(np.int64, copy=False)
    if CYCLE in names:  # a model input (the asset's age): the checked cycles, as numbers
        values[CYCLE] = cycles.astype(np.float64)
    return CheckedRows(asset_ids, cycles, values, order)


def _asset_ids(column: pd.Series, locator: Locator) -> np.ndarray:
    missing = column.isna().to_numpy()
    if missing.any():
        raise locator.error("missing asset_id", int(np.argmax(missing)), column=ASSET_ID)
    if pd.api.types.is_bool_dtype(column):
        raise locator.error("asset_id must be an integer or a string, not a boolean", 0)
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy()
        if pd.api.types.is_float_dtype(column):
            fractional = values != np.floor(values)
            if fractional.any():
                pos = int(np.argmax(fractional))
                raise locator.error(
                    f"asset_id must be an integer or a string, got {values[pos]!r}",
                    pos,
                    column=ASSET_ID,
                )
        return values.astype(np.int64)
    # Mixed or text ids: keep them as strings so "7" and 7 do not become two assets.
    return column.astype(str).to_numpy(dtype=object)


def _numeric(
    column: pd.Series, name: str, asset_ids: np.ndarray, locator: Locator
) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        coerced = pd.to_numeric(column, errors="coerce")
        bad = (coerced.isna() & column.notna()).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            raise locator.error(
                f"non-numeric value {column.iloc[pos]!r}", pos, asset=asset_ids[pos], column=name
            )
        column = coerced
    values = column.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        pos = int(np.argmin(finite))
        what = "missing value" if np.isnan(values[pos]) else f"infinite value {values[pos]}"
        raise locator.error(what, pos, asset=asset_ids[pos], column=name)
    return values


def _cycle_numbers(column: pd.Series, asset_ids: np.ndarray, locator: Locator) -> np.ndarray:
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "iu":
        # numpy integers hold no NA and no fractions: nothing to convert (pandas' nullable
        # Int64 and pyarrow integers may hold NA, so they take the checked path)
        return column.to_numpy(dtype=np.int64)
    return _numeric(column, CYCLE, asset_ids, locator)


def _check_cycles(cycles: np.ndarray, asset_ids: np.ndarray, by_asset: np.ndarray | None,
                  locator: Locator) -> None:
    fractional = cycles != np.floor(cycles) if cycles.dtype.kind == "f" else None
    if fractional is not None and fractional.any():
        pos = int(np.argmax(fractional))
        raise locator.error(
            f"cycle must be an integer, got {cycles[pos]}", pos, asset=asset_ids[pos], column=CYCLE
        )
    non_positive = cycles <= 0
    if non_positive.any():
        pos = int(np.argmax(non_positive))
        raise locator.error(
            f"cycle must be positive, got {int(cycles[pos])}",
            pos,
            asset=asset_ids[pos],
            column=CYCLE,
        )
    # Within each asset, in file order, every cycle must exceed the one before it.
    a, c = (asset_ids, cycles) if by_asset is None else (asset_ids[by_asset], cycles[by_asset])
    same_asset = a[1:] == a[:-1]
    step = c[1:] - c[:-1]
    bad = same_asset & (step <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        pos, prev = (k + 1, k) if by_asset is None else (int(by_asset[k + 1]), int(by_asset[k]))
        kind = "duplicate cycle" if step[k] == 0 else "decreasing cycle"
        raise locator.error(
            f"{kind} {int(c[k + 1])} after cycle {int(c[k])} "
            f"({locator.kind} {prev + locator.offset})",
            pos,
            asset=a[k + 1],
            column=CYCLE,
        )


def _stable_asset_sort(asset_ids: np.ndarray) -> np.ndarray | None:
    """The stable sort by asset, or None when the rows are already in asset order (the usual
    file layout, which then needs no reordering copy)."""
    keys = pd.factorize(asset_ids, sort=True)[0] if asset_ids.dtype == object else asset_ids
    if np.all(keys[1:] >= keys[:-1]):
        return None
    return np.argsort(keys, kind="stable")

