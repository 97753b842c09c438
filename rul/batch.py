"""Batch forecasts over a whole fleet file, read in chunks with bounded memory.

`forecast_file` streams a fleet file (CSV, Parquet, C-MAPSS text) in chunks. Each chunk goes
through the data layer's own checks (`rul.fleet.check_rows`, the rules and messages of
`validate_fleet`, with line/row numbers counted over the whole file) of the columns a forecast
reads: asset_id, cycle and the model's features. Other columns are not read from Parquet and
not checked: a broken channel the model does not use does not stop a forecast. Only the last
`window` readings of each asset are kept, in one ring buffer per asset: memory grows with the
number of assets, never with the number of rows. At the end, every asset's last window goes
through the model in large batches, in asset order and in the same batches as
`Forecaster.forecast_fleet`, so the numbers are exactly those of loading the whole file.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.errors import ConfigError, DataError
from rul.fleet import CheckedRows, Locator, check_rows
from rul.forecaster import Forecaster
from rul.loaders import (
    FleetColumns,
    _canonical_names,
    _check_unit_numbers,
    _cmapss_fleet,
    _cmapss_names,
    _columns_to_fleet,
    _parser_error,
    forecast_columns,
    require_features,
)
from rul.predictor import Prediction
from rul.schema import ASSET_ID, CYCLE

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "default_threads",
    "forecast_file",
    "forecast_file_rows",
    "quantile_columns",
    "quantile_level",
]

DEFAULT_CHUNK_ROWS = 200_000
_QUANTILE = re.compile(r"rul_q(\d+(?:\.\d+)?)")


# --------------------------------------------------------------------------- streaming forecast


def default_threads() -> int:
    """onnxruntime threads per run for a streamed forecast: one core fewer than this process
    may use, as the reading runs beside the model (on 2 cores: 1-thread runs, two at a time,
    3.8-4.4 s for 100,000 assets against 4.9 s with 2-thread runs: bench/forecast_speed.py)."""
    return max(1, usable_cores() - 1)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows have no affinity call
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def forecast_file(model: Forecaster, path: Path | str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  columns: FleetColumns | None = None, progress: bool = False) -> pd.DataFrame:
    """Forecast every asset of a fleet file at its last cycle, reading it in chunks.

    The same answer as `model.forecast_fleet(read_fleet(path, columns))` (which also checks
    the columns the model does not read, and refuses a file for them): one row per asset,
    sorted by asset_id, with asset_id, last_cycle, rul, rul_q<level>...,
    failure_probability, cycles_padded. The columns it reads are checked in every chunk as in a
    whole file; in addition, an asset whose cycles do not keep increasing from one chunk to the
    next is a DataError naming the file, line (or row), asset and column. `progress` writes one
    status line per chunk to stderr when stderr is a terminal.
    """
    return forecast_file_rows(model, path, chunk_rows=chunk_rows, columns=columns,
                              progress=progress)[0]


def forecast_file_rows(model: Forecaster, path: Path | str, *,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: FleetColumns | None = None,
                       progress: bool = False) -> tuple[pd.DataFrame, int]:
    """`forecast_file`, and the number of rows it read."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    show = _Progress(progress)
    buffers = _LastWindows(model.window, model.features)
    early = _EarlyBatches(model)
    rows, cmapss = 0, None
    try:
        for chunk in _fleet_chunks(Path(path), chunk_rows, columns or FleetColumns(),
                                   model.features):
            keys = buffers.add(chunk)
            early.after_chunk(buffers, keys, in_order=chunk.rows.order is None)
            rows += len(chunk.raw)
            show.update(rows, buffers.n_assets, chunk.done)
            if chunk.cmapss:  # C-MAPSS numbers its units 1..N: checked once all are known
                cmapss = Locator(chunk.locator.source, "line", 1)
        if cmapss is not None:
            _check_unit_numbers(buffers.id_array(), cmapss)
        show.update(rows, buffers.n_assets, 1.0,
                    end=f", predicting {buffers.n_assets:,} windows")
        result = buffers.forecast(model, early)
    finally:
        early.close()
    show.finish(rows, len(result))
    return result, rows


_PAGE_BITS = 13
_PAGE = 1 << _PAGE_BITS
"""Assets per page of window buffers: pages are added, never copied, as the fleet grows."""


class _LastWindows:
    """Per asset: its last `window` readings (a ring), how many it has, its last cycle."""

    def __init__(self, window: int, features: Sequence[str]) -> None:
        self.window = window
        self.features = list(features)
        self.slots: dict[Any, int] = {}  # asset_id -> index into the arrays below
        self.ids: list[Any] = []
        self.text_ids: bool | None = None  # asset ids are strings (decided by the first chunk)
        self.pages: list[np.ndarray] = []  # [_PAGE, window, features] rings
        self.seen = np.zeros(0, dtype=np.int64)
        self.last_cycle = np.zeros(0, dtype=np.int64)

    @property
    def n_assets(self) -> int:
        return len(self.ids)

    def id_array(self) -> np.ndarray:
        return np.array(self.ids, dtype=object if self.text_ids else np.int64)

    def add(self, chunk: _Chunk) -> list[Any]:
        """One checked chunk (cycles increase within each of its assets); returns its assets'
        keys in the order the chunk holds them (asset order)."""
        checked, order = chunk.rows, chunk.rows.order
        ids, cycles = checked.asset_ids, checked.cycles
        if order is not None:  # rows grouped by asset, in asset order
            ids, cycles = ids[order], cycles[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        lengths = np.diff(np.r_[starts, len(ids)])
        keys = self._keys(ids[starts])
        slots, new = self._slots(keys)
        # Across chunks, each asset's cycles must keep increasing, as within one.
        bad = ~new & (cycles[starts] <= self.last_cycle[slots])
        if bad.any():
            k = int(np.argmax(bad))
            raise _cross_chunk_error(chunk, keys[k], int(cycles[starts[k]]),
                                     int(self.last_cycle[slots[k]]))
        # Only each asset's last `window` rows of the chunk can still be part of its window,
        # about a quarter of a typical chunk: the arithmetic below runs on those rows alone.
        n_keep = np.minimum(lengths, self.window)
        group = np.repeat(np.arange(len(starts)), n_keep)
        first_kept = np.cumsum(n_keep) - n_keep
        within = (lengths - n_keep)[group] + np.arange(len(group)) - first_kept[group]
        slot_of = slots[group]
        position = (self.seen[slot_of] + within) % self.window
        rows = starts[group] + within
        source = rows if order is None else order[rows]
        by_feature = np.empty((len(self.features), len(rows)), dtype=np.float32)
        for j, name in enumerate(self.features):  # contiguous writes: 4x faster than [:, j]
            by_feature[j] = checked.values[name][source]
        values = by_feature.T
        for page, at in _by_page(slot_of):
            self.pages[page][slot_of[at] & (_PAGE - 1), position[at]] = values[at]
        self.seen[slots] += lengths
        self.last_cycle[slots] = cycles[starts + lengths - 1]
        return keys

    def _keys(self, ids: np.ndarray) -> list[Any]:
        # A CSV chunk of numeric ids reads as integers, one with any text as strings; as for a
        # whole file, once any id is text every id is (7 and "7" are one asset).
        text = ids.dtype == object
        if self.text_ids is None:
            self.text_ids = text
        elif text and not self.text_ids:
            self.ids = [str(a) for a in self.ids]
            self.slots = {str(a): slot for a, slot in self.slots.items()}
            self.text_ids = True
        if self.text_ids and not text:
            return [str(a) for a in ids.tolist()]
        return ids.tolist()

    def _slots(self, keys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        slots = np.fromiter((self.slots.get(k, -1) for k in keys), np.int64, len(keys))
        new = slots < 0
        if new.any():
            first = len(self.ids)
            added = [k for k, is_new in zip(keys, new, strict=True) if is_new]
            slots[new] = np.arange(first, first + len(added))
            self.slots.update(zip(added, range(first, first + len(added)), strict=True))
            self.ids.extend(added)
            self._reserve(len(self.ids))
        return slots, new

    def _reserve(self, n: int) -> None:
        while len(self.pages) * _PAGE < n:
            self.pages.append(np.empty((_PAGE, self.window, len(self.features)), np.float32))
        if n > len(self.seen):  # new assets start with no readings seen
            grow = np.zeros(max(n, 2 * len(self.seen)) - len(self.seen), dtype=np.int64)
            self.seen = np.concatenate([self.seen, grow])
            self.last_cycle = np.concatenate([self.last_cycle, grow])

    def windows(self, slots: np.ndarray) -> np.ndarray:
        """[len(slots), window, features], oldest first; a short history repeats its first
        reading in front, as `rul.windowing.make_windows` pads."""
        history = self.seen[slots, None] - self.window + np.arange(self.window)
        position = np.maximum(history, 0) % self.window
        out = np.empty((len(slots), self.window, len(self.features)), dtype=np.float32)
        for page, at in _by_page(slots):
            out[at] = self.pages[page][(slots[at] & (_PAGE - 1))[:, None], position[at]]
        return out

    def forecast(self, model: Forecaster, early: _EarlyBatches) -> pd.DataFrame:
        """Predict every asset's last window, in asset order and in the model's batches."""
        ids = self.id_array()
        order = np.argsort(ids, kind="stable")
        # The same batches as forecast_fleet's, so the same numbers.
        size = model.batch_size
        batches = [order[first:first + size] for first in range(0, len(order), size)]
        pred = Prediction.concatenate(early.finish(self, batches))
        return model.forecast_table(ids[order], self.last_cycle[order], pred,
                                    np.maximum(self.window - self.seen[order], 0))


def _by_page(slots: np.ndarray) -> Iterator[tuple[int, slice | np.ndarray]]:
    """(page, the positions of `slots` on it) for every page the slots touch."""
    if len(slots) == 0:
        return
    pages = slots >> _PAGE_BITS
    low, high = int(pages.min()), int(pages.max())
    if low == high:
        yield low, slice(None)
        return
    for page in range(low, high + 1):
        at = np.flatnonzero(pages == page)
        if len(at):
            yield page, at


class _EarlyBatches:
    """Model batches predicted while the rest of the file is still being read.

    In a file in asset order (the usual layout) every asset but a chunk's last is complete, so
    the first batches of the final asset order are known early. They are predicted in
    background threads (onnxruntime and pyarrow release the GIL) while the next chunks are
    read, as many at once as the cores take (cores // the session's threads: one session's
    runs are thread-safe, and each computes exactly as it would alone), which hides most of
    the reading behind the model or the model behind the reading. At the end a batch is used
    only if the final batch holds exactly its assets, each with exactly as many readings seen
    (so the same windows); anything else (a file out of asset order, an asset that comes back
    later) is predicted then, so the answer never depends on the file's layout.
    """

    def __init__(self, model: Forecaster) -> None:
        self.model = model
        self.enabled = True
        self.batches: list[tuple[np.ndarray, np.ndarray, Future[Prediction]]] = []
        self.last_key: Any = None
        self.text_ids: bool | None = None
        at_once = max(1, usable_cores() // model.threads) if model.threads else 1
        self.ahead = 2 * at_once  # batches of windows in flight at most: bounded memory
        self.in_flight: deque[Future[Prediction]] = deque()
        self.pool = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="rul-forecast")

    def _submit(self, windows: Callable[[], np.ndarray]) -> Future[Prediction]:
        """Predict `windows()` on the pool, once fewer than `ahead` runs are in flight (the
        windows are cut only then, so at most `ahead` batches of them exist)."""
        while len(self.in_flight) >= self.ahead:
            self.in_flight.popleft().result()
        future = self.pool.submit(self.model.predict_windows, windows())
        self.in_flight.append(future)
        return future

    def after_chunk(self, buffers: _LastWindows, keys: list[Any], in_order: bool) -> None:
        """Predict the batches that the assets read so far complete, while in asset order."""
        if not self.enabled:
            return
        if self.text_ids is None:
            self.text_ids = buffers.text_ids
        # Slots are numbered in first-seen order, which is asset order only while every chunk
        # is in asset order and starts at or after the asset the previous one ended with.
        if (not in_order or buffers.text_ids != self.text_ids
                or (self.last_key is not None and keys[0] < self.last_key)):
            self.enabled = False
            return
        self.last_key = keys[-1]
        size = self.model.batch_size
        complete = buffers.n_assets - 1  # the last asset may go on in the next chunk
        while (len(self.batches) + 1) * size <= complete:
            slots = np.arange(len(self.batches) * size, (len(self.batches) + 1) * size)
            future = self._submit(lambda s=slots: buffers.windows(s))
            self.batches.append((slots, buffers.seen[slots].copy(), future))

    def get(self, k: int, slots: np.ndarray, seen: np.ndarray) -> Prediction | None:
        """Batch `k`'s early prediction if it was made from these very windows, else None."""
        if k >= len(self.batches):
            return None
        early_slots, early_seen, prediction = self.batches[k]
        if np.array_equal(early_slots, slots) and np.array_equal(early_seen, seen):
            return prediction.result()
        return None

    def finish(self, buffers: _LastWindows, batches: list[np.ndarray]) -> list[Prediction]:
        """Every final batch's prediction: the early one where it holds, else made now (on the
        same threads)."""
        parts: list[Future[Prediction] | Prediction] = []
        for k, slots in enumerate(batches):
            part = self.get(k, slots, buffers.seen[slots])
            parts.append(self._submit(lambda s=slots: buffers.windows(s)) if part is None
                         else part)
        return [p.result() if isinstance(p, Future) else p for p in parts]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _cross_chunk_error(chunk: _Chunk, asset: Any, cycle: int, previous: int) -> DataError:
    kind = "duplicate cycle" if cycle == previous else "decreasing cycle"
    return chunk.locator.error(
        f"{kind} {cycle} after cycle {previous} on an earlier {chunk.locator.kind}",
        chunk.position(asset, cycle), asset=asset, column=CYCLE)


# --------------------------------------------------------------------------- reading in chunks


@dataclass(frozen=True)
class _Chunk:
    """One checked chunk of a fleet file, and where it sits in the file."""

    rows: CheckedRows
    raw: pd.DataFrame
    """The rows as read (asset_id and cycle by those names), to find a row's place."""
    locator: Locator
    """Locates a 0-based position of this chunk in the whole file."""
    done: float
    """Share of the file read so far (bytes or rows), for progress."""
    cmapss: bool

    def position(self, asset: Any, cycle: int) -> int:
        """0-based position in the chunk of `asset`'s row at `cycle` (the fleet is reordered)."""
        ids = self.raw[ASSET_ID]
        same = ids.astype(str).to_numpy() == str(asset)
        if not same.any():  # numeric ids spelt another way (7.0 for 7)
            number = pd.to_numeric(str(asset), errors="coerce")
            same = pd.to_numeric(ids, errors="coerce").to_numpy() == number
        cycles = pd.to_numeric(self.raw[CYCLE], errors="coerce").to_numpy()
        return int(np.argmax(same & (cycles == cycle)))


def _fleet_chunks(path: Path, chunk_rows: int, columns: FleetColumns,
                  features: Sequence[str]) -> Iterator[_Chunk]:
    """Chunks of a fleet file with asset_id, cycle and `features` checked, by the same rules
    and messages as `read_fleet`."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    name = path.name.lower()
    cmapss = name.endswith((".txt", ".txt.gz"))
    if cmapss or name.endswith((".csv", ".csv.gz")):
        kind, first = "line", 1 if cmapss else 2  # a CSV's line 1 is its header
        frames = _text_frames(path, chunk_rows, Locator(str(path), kind, first), cmapss)
    elif name.endswith((".parquet", ".pq")):
        kind, first = "row", 1
        frames = _parquet_frames(path, chunk_rows, Locator(str(path), kind, first),
                                 forecast_columns(columns, features))
    else:
        raise DataError("unknown file type; expected .csv, .csv.gz, .parquet, .pq, .txt or "
                        ".txt.gz", file=str(path))
    def checked(raw: pd.DataFrame, locator: Locator, done: float) -> _Chunk:
        raw = _cmapss_names(raw, locator) if cmapss else _canonical_names(raw, columns, locator)
        require_features(raw.columns, features, str(path))
        return _Chunk(check_rows(raw, features, locator), raw, locator, done, cmapss)

    start, empty = 0, pd.DataFrame()
    for raw, done in frames:
        if len(raw) == 0:
            empty = raw
            continue
        yield checked(raw, Locator(str(path), kind, first + start), done)
        start += len(raw)
    if start == 0:  # no rows at all: the data layer's own message (missing columns, no rows)
        locator = Locator(str(path), kind, first)
        _cmapss_fleet(empty, locator) if cmapss else _columns_to_fleet(empty, columns, locator)
        raise locator.error("no rows")


@contextmanager
def reading_errors(locator: Locator) -> Iterator[None]:
    """What pandas' CSV parser raises, as the data layer's DataError (as `read_fleet` says)."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise locator.error("file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise _parser_error(exc, locator) from None


def _text_frames(path: Path, chunk_rows: int, locator: Locator,
                 cmapss: bool) -> Iterator[tuple[pd.DataFrame, float]]:
    """CSV (header) or C-MAPSS text (whitespace, no header) in chunks, gzip when .gz."""
    options: dict[str, Any] = {"sep": r"\s+", "header": None} if cmapss else {}
    size = max(path.stat().st_size, 1)
    with open(path, "rb") as handle:
        # Decompressed here, so the progress is the share of the file's own bytes read.
        stream = gzip.GzipFile(fileobj=handle) if path.name.lower().endswith(".gz") else handle
        with reading_errors(locator):
            reader = pd.read_csv(stream, chunksize=chunk_rows, compression=None, **options)
        with reader:
            while True:
                with reading_errors(locator):
                    raw = next(reader, None)
                if raw is None:
                    return
                yield raw, min(handle.tell() / size, 1.0)


def _parquet_frames(path: Path, chunk_rows: int, locator: Locator,
                    wanted: Sequence[str]) -> Iterator[tuple[pd.DataFrame, float]]:
    """A Parquet file in record batches: the columns `wanted`, or every column when one of
    them is missing (the data layer's message then lists what the file has).

    pyarrow decodes a row group at a time, so memory here is bounded by the file's row-group
    size as well as by `chunk_rows` (pyarrow writes up to 1Mi rows per group by default).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'rul[parquet]'",
                        file=str(path)) from None
    with _parquet_errors(locator):
        # Streamed reads: without them pyarrow buffers a whole row group's compressed bytes
        # besides its decoded columns (about three times the memory).
        file = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    try:
        total, read = max(file.metadata.num_rows, 1), 0
        selected = list(wanted) if set(wanted) <= set(file.schema_arrow.names) else None
        batches = file.iter_batches(batch_size=chunk_rows, columns=selected)
        while True:
            with _parquet_errors(locator):
                batch = next(batches, None)
                # One array per column (no consolidated copy): columns are checked one by one.
                raw = None if batch is None else batch.to_pandas(split_blocks=True)
            if raw is None:
                break
            read += len(raw)
            yield raw, read / total
        if read == 0:
            yield file.schema_arrow.empty_table().to_pandas(), 1.0
    finally:
        file.close()


@contextmanager
def _parquet_errors(locator: Locator) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # pyarrow raises its own types for a damaged file
        raise locator.error(f"not a readable Parquet file ({exc})") from None


class _Progress:
    """One status line on stderr, rewritten per chunk; silent unless stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()

    def update(self, rows: int, assets: int, done: float, end: str = "") -> None:
        if not self.enabled:
            return
        bar = "#" * round(20 * done)
        seconds = time.perf_counter() - self.started
        sys.stderr.write(f"\rforecast [{bar:.<20}] {done:4.0%}  {rows:,} rows, {assets:,} "
                         f"assets, {seconds:.0f} s{end}")
        sys.stderr.flush()

    def finish(self, rows: int, assets: int) -> None:
        self.update(rows, assets, 1.0, end=", done" + " " * 24 + "\n")


# --------------------------------------------------------------------------- forecast tables


def quantile_level(column: str) -> float | None:
    """The level of a quantile column (rul_q10 -> 0.1; the inverse of `quantile_column`), or
    None for any other column."""
    match = _QUANTILE.fullmatch(str(column))
    return float(match[1]) / 100 if match else None


def quantile_columns(table: pd.DataFrame) -> list[str]:
    """The rul_q<level> columns of a forecast table, lowest level first."""
    found = [(level, c) for c in table.columns if (level := quantile_level(c)) is not None]
    return [c for _, c in sorted(found)]


def require_quantiles(table: pd.DataFrame, what: str) -> list[str]:
    columns = quantile_columns(table)
    if not columns:
        raise DataError(f"{what} has no rul_q<level> quantile column; it has {list(table.columns)}")
    return columns


def require_columns(table: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{what} lacks columns {missing}; it has {list(table.columns)}")
