"""Batch forecasts beyond one machine: the same per-partition forecast, run by Dask.

`forecast_distributed` reads a partitioned Parquet or CSV fleet (one file, a directory of part
files or a glob) with dask.dataframe, shuffles it so that each model batch of assets (in asset
order) is whole in one partition, each asset's rows in file order, and maps
`forecast_partition` over the partitions: the data layer's check (`fleet_from_dataframe`) and
`Forecaster.forecast_fleet`, with one onnxruntime session per worker process. Concatenated and
sorted by asset_id, the table is exactly the one `rul.batch.forecast_file` gives for the same
rows in one file: same rows, same batches, so the same numbers.

Dask is an optional extra (`pip install 'rul[distributed]'`), imported only when called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.errors import ConfigError, DataError, RulError
from rul.fleet import Locator, validate_fleet
from rul.forecaster import Forecaster, quantile_column
from rul.loaders import FleetColumns, _canonical_names, forecast_columns, require_features
from rul.schema import ASSET_ID

__all__ = ["LOCAL", "forecast_distributed", "forecast_distributed_rows", "forecast_partition"]

LOCAL = "local"
"""`scheduler` value that starts a local cluster (2 worker processes) for the call."""
# A row's model batch, and where it was read (to restore file order after the shuffle).
_BATCH, _PART, _ROW = "_rul_batch", "_rul_partition", "_rul_row"
DEFAULT_BATCH_SIZE = 4096
"""Assets per model batch and per partition: `Forecaster.load`'s default, as `forecast_file`."""
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".gz": "csv"}
_models: dict[tuple[str, int | None, int], Forecaster] = {}
_models_lock = threading.Lock()


def forecast_partition(frame: pd.DataFrame, model_path: Path | str,
                       columns: FleetColumns | None = None, *, threads: int | None = 1,
                       batch_size: int = DEFAULT_BATCH_SIZE,
                       source: str = "<partition>") -> pd.DataFrame:
    """Forecast every asset of one long-format frame that holds all of its assets' rows.

    The data layer's check of the columns a forecast reads, as `rul.batch.forecast_file` does
    (asset_id, cycle and the model's features: DataError naming row, asset and column, rows
    counted from 1 within `frame`), then `Forecaster.forecast_fleet` with this process's cached
    model (one onnxruntime session per process, model path, `threads` and `batch_size`).
    """
    model = cached_forecaster(model_path, threads, batch_size)
    locator = Locator(source, "row", 1)
    raw = _canonical_names(frame, columns or FleetColumns(), locator)
    require_features(raw.columns, model.features, source)
    # The model's inputs whatever their kind: forecast_fleet reads them by name.
    return model.forecast_fleet(validate_fleet(raw, (), model.features, locator))


def cached_forecaster(model_path: Path | str, threads: int | None = 1,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> Forecaster:
    """This process's Forecaster for a model file, thread count and batch size, opened once."""
    key = (str(Path(model_path).resolve()), threads, batch_size)
    with _models_lock:
        if key not in _models:
            _models[key] = Forecaster.load(key[0], threads=threads, batch_size=batch_size)
        return _models[key]


def forecast_distributed(model_path: Path | str, input_path: Path | str, *, scheduler: str,
                         columns: FleetColumns | None = None, threads: int | None = 1,
                         batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
    """`forecast_file(Forecaster.load(model_path, batch_size=...), input_path)`, by Dask.

    `input_path`: a Parquet or CSV file, a directory of part files (*.parquet, *.pq, *.csv,
    *.csv.gz) or a glob. `scheduler`: "local" starts a local cluster of 2 worker processes for
    this call; anything else is the address of a running scheduler (tcp://HOST:8786). Every
    worker must be able to import rul and read `model_path`; each opens one onnxruntime session
    with `threads` intra-op threads.

    A first pass reads the asset ids; then each asset's rows go (in file order) to the
    partition of its model batch: its rank in asset order // `batch_size`. onnxruntime's
    numbers depend on the batch a window is in, so the same batches as `forecast_file` give
    the same numbers exactly; `batch_size` is thus also the unit of parallelism (4096 assets).
    A bad cell is the data layer's DataError (asset, column); a partition is not a file, so
    its place is a row of a Dask input partition (counted within that partition).
    """
    return forecast_distributed_rows(model_path, input_path, scheduler=scheduler,
                                     columns=columns, threads=threads, batch_size=batch_size)[0]


def forecast_distributed_rows(model_path: Path | str, input_path: Path | str, *,
                              scheduler: str, columns: FleetColumns | None = None,
                              threads: int | None = 1, batch_size: int = DEFAULT_BATCH_SIZE
                              ) -> tuple[pd.DataFrame, int]:
    """`forecast_distributed`, and the number of rows it read (as `forecast_file_rows`)."""
    _check_arguments(scheduler, threads, batch_size)
    dd, distributed = _import_dask()
    columns = columns or FleetColumns()
    model = Forecaster.load(model_path)  # fails here, before a cluster starts, if unreadable
    frames = _read(dd, Path(input_path), columns, model.features)
    meta = _forecast_meta(model, frames.dtypes[columns.asset_id])
    with _client(distributed, scheduler) as client:
        ids = client.compute(frames[columns.asset_id].unique(), sync=True)
        if len(ids) == 0:
            raise DataError("no rows", file=str(input_path))
        firsts = np.sort(ids.to_numpy())[::batch_size]  # the first asset of each model batch
        numbered = frames.map_partitions(
            _number_rows, columns.asset_id, firsts,
            meta={**frames.dtypes.to_dict(), _BATCH: "i8", _PART: "i8", _ROW: "i8"})
        batches = numbered.shuffle(on=_BATCH, npartitions=len(firsts))
        forecasts = batches.map_partitions(
            _forecast_shuffled, str(model_path), columns, threads, batch_size,
            str(input_path), meta, meta=meta)
        rows = frames.map_partitions(len, meta=(None, "i8")).sum()
        table, n_rows = client.compute([forecasts, rows], sync=True)
    table = table.sort_values(ASSET_ID, kind="stable").reset_index(drop=True)
    return table, int(n_rows)


def _check_arguments(scheduler: Any, threads: Any, batch_size: Any) -> None:
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ConfigError(f"scheduler must be {LOCAL!r} or a scheduler address, got "
                          f"{scheduler!r}")
    for name, value in (("threads", threads), ("batch_size", batch_size)):
        if value is None and name == "threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _forecast_shuffled(frame: pd.DataFrame, model_path: str, columns: FleetColumns,
                       threads: int | None, batch_size: int, source: str,
                       meta: pd.DataFrame) -> pd.DataFrame:
    """`forecast_partition` of whole model batches, each asset's rows back in file order."""
    if len(frame) == 0:  # hashing batches onto partitions can leave some empty
        return meta
    frame = frame.sort_values([_PART, _ROW], kind="stable").reset_index(drop=True)
    where = frame[[_PART, _ROW]].to_numpy()
    try:
        return forecast_partition(frame.drop(columns=[_BATCH, _PART, _ROW]), model_path,
                                  columns, threads=threads, batch_size=batch_size,
                                  source=source)
    except DataError as exc:
        if exc.row is None:
            raise
        part, row = where[exc.row - 1]
        raise DataError(f"{exc.message} (row {row + 1} of Dask input partition {part}; rows "
                        f"count within a partition)", file=source, asset=exc.asset,
                        column=exc.column) from None


def _number_rows(frame: pd.DataFrame, asset_column: str, firsts: np.ndarray,
                 partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """Each row's model batch, and where it was read (input partition, row within it)."""
    number = partition_info["number"] if partition_info else 0
    ids = frame[asset_column].to_numpy()
    batch = np.searchsorted(firsts, ids, side="right") - 1
    return frame.assign(**{_BATCH: batch.astype(np.int64), _PART: np.int64(number),
                           _ROW: np.arange(len(frame), dtype=np.int64)})


def _forecast_meta(model: Forecaster, id_dtype: Any) -> pd.DataFrame:
    """The empty forecast table, with forecast_fleet's columns and dtypes."""
    floats = ["rul", *(quantile_column(q) for q in model.quantiles), "failure_probability"]
    return pd.DataFrame({
        ASSET_ID: pd.Series(dtype=id_dtype), "last_cycle": pd.Series(dtype=np.int64),
        **{c: pd.Series(dtype=np.float64) for c in floats},
        "cycles_padded": pd.Series(dtype=np.int64)})


def _read(dd: Any, path: Path, columns: FleetColumns, features: list[str]) -> Any:
    """A dask DataFrame of a Parquet/CSV file, directory of part files or glob: the columns a
    forecast reads (asset_id, cycle, `features`), as far as the files have them."""
    pattern, kind = _input_kind(path)
    try:
        if kind == "parquet":
            frames = dd.read_parquet(pattern)
        else:
            names = [pattern] if isinstance(pattern, str) else pattern
            gzipped = any(n.lower().endswith(".gz") for n in names)  # not splittable
            frames = dd.read_csv(pattern, blocksize=None if gzipped else "64MiB")
    except (OSError, ValueError) as exc:  # no files, unreadable footer or header
        raise DataError(f"not readable as {kind} ({str(exc).splitlines()[0]})",
                        file=str(path)) from None
    missing = [c for c in (columns.asset_id, columns.cycle) if c not in frames.columns]
    if missing:
        raise DataError(f"missing columns {missing}; found {list(frames.columns)}",
                        file=str(path))
    # Only these are shuffled; Parquet never decodes the others (dask pushes the selection
    # down into the read).
    return frames[[c for c in forecast_columns(columns, features) if c in frames.columns]]


def _input_kind(path: Path) -> tuple[str | list[str], str]:
    """(what dask reads, "parquet" or "csv") for a file, a directory or a glob."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p.name))
        kinds = {_kind(p.name) for p in files}
        if len(kinds) != 1:
            raise DataError(f"a partitioned fleet is a directory of only *.parquet/*.pq or only "
                            f"*.csv/*.csv.gz files; found {sorted(p.name for p in files)[:5]}",
                            file=str(path))
        return [str(p) for p in files], kinds.pop()
    kind = _kind(path.name)
    if kind is None:
        raise DataError("the distributed path reads Parquet (.parquet, .pq) or CSV (.csv, "
                        ".csv.gz) files; convert C-MAPSS text with read_fleet first",
                        file=str(path))
    if not any(c in str(path) for c in "*?[") and not path.is_file():
        raise DataError("file not found", file=str(path))
    return str(path), kind


def _kind(name: str) -> str | None:
    name = name.lower()
    if name.endswith(".gz") and not name.endswith(".csv.gz"):
        return None
    return _SUFFIXES.get(Path(name).suffix)


@contextmanager
def _client(distributed: Any, scheduler: str) -> Iterator[Any]:
    """A Client for the call: of `scheduler`, or of a local cluster started and closed here."""
    if scheduler.strip().lower() != LOCAL:
        with distributed.Client(scheduler) as client:
            yield client
        return
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None) as cluster,
          distributed.Client(cluster) as client):
        yield client


def _import_dask() -> tuple[Any, Any]:
    try:
        import dask.dataframe as dd
        import distributed
    except ImportError:
        raise RulError("the distributed path needs dask: pip install 'rul[distributed]'"
                       ) from None
    return dd, distributed
