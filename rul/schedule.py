"""The maintenance schedule a batch forecast feeds, what it costs, and the `rul forecast` run.

`schedule` ranks a forecast table (`rul.batch.forecast_file`) into a maintenance schedule;
`schedule_cost` and `lead_time_table` price a schedule against known truth;
`write_schedule`/`read_schedule` store it as CSV, Parquet or JSON; `run_forecast` is the whole
`rul forecast` command as one function (the report page is `rul.schedule_report`).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.batch import (
    DEFAULT_CHUNK_ROWS,
    default_threads,
    forecast_file,
    forecast_file_rows,
    quantile_columns,
    reading_errors,
    require_columns,
    require_quantiles,
)
from rul.errors import ConfigError, DataError, plain
from rul.fleet import Locator
from rul.forecaster import Forecaster, default_model_path, quantile_column
from rul.io import atomic_write, check_output_path, dumps, make_folder
from rul.loaders import FleetColumns, read_rul_file
from rul.schedule_report import write_schedule_report
from rul.schema import ASSET_ID

__all__ = [
    "DEFAULT_LEAD_TIMES",
    "forecast_file",
    "lead_time_table",
    "read_labels",
    "read_schedule",
    "run_forecast",
    "schedule",
    "schedule_cost",
    "write_schedule",
    "write_schedule_report",
]

DEFAULT_LEAD_TIMES = (0, 5, 10, 20, 30)
SCHEDULE_SUFFIXES = (".csv", ".parquet", ".json")
SCHEDULE_COLUMNS = ("recommended_cycle", "at_risk", "risk_rank")
# pandas 3 reads floats back exactly by default (and deprecates the option); 2.x needs it.
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


# --------------------------------------------------------------------------- the schedule


def schedule(forecast: pd.DataFrame, *, lead_time: int, quantiles: Sequence[float] | None = None,
             threshold: float = 0.5) -> pd.DataFrame:
    """A maintenance schedule: the forecast plus recommended_cycle, at_risk and risk_rank.

    The rule: maintain `lead_time` cycles before the pessimistic RUL. The pessimistic RUL is the
    lowest quantile, the first of `quantiles` (the model card's; None: the lowest rul_q<level>
    column of the table), so

        recommended_cycle = last_cycle + max(0, floor(rul_q<lowest>) - lead_time)

    and an asset whose pessimistic RUL is within `lead_time` is due now (recommended_cycle =
    last_cycle). at_risk is failure_probability >= `threshold`. Rows are sorted by urgency:
    cycles until the recommended maintenance (recommended_cycle - last_cycle) ascending, then
    failure_probability descending, then asset_id; risk_rank numbers them from 1 (most urgent).
    Columns of an earlier schedule in `forecast` are replaced.
    """
    _check_rule(lead_time, threshold)
    lower = (quantile_column(quantiles[0]) if quantiles
             else require_quantiles(forecast, "forecast")[0])
    require_columns(forecast, "forecast", [ASSET_ID, "last_cycle", "failure_probability", lower])
    pessimistic = forecast[lower].to_numpy(dtype=np.float64)
    _require_finite(forecast, lower, pessimistic)
    wait = np.maximum(0, np.floor(pessimistic).astype(np.int64) - int(lead_time))
    table = forecast.drop(columns=list(SCHEDULE_COLUMNS), errors="ignore").copy()
    table["recommended_cycle"] = table["last_cycle"].to_numpy(dtype=np.int64) + wait
    table["at_risk"] = table["failure_probability"].to_numpy() >= float(threshold)
    table["_wait"] = wait
    table = table.sort_values(["_wait", "failure_probability", ASSET_ID],
                              ascending=[True, False, True]).drop(columns="_wait")
    table["risk_rank"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)


def _check_rule(lead_time: Any, threshold: Any) -> None:
    if isinstance(lead_time, bool) or not isinstance(lead_time, int | np.integer) or lead_time < 0:
        raise ConfigError(f"lead_time must be a non-negative integer of cycles, got {lead_time!r}")
    if (isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number)
            or not 0.0 <= float(threshold) <= 1.0):
        raise ConfigError(f"threshold must be a probability in [0, 1], got {threshold!r}")


def _require_finite(table: pd.DataFrame, column: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{values[i]} is not a number of cycles", row=i + 1,
                        asset=table[ASSET_ID].iloc[i], column=column)


# --------------------------------------------------------------------------- cost


def schedule_cost(table: pd.DataFrame, rul_at_end: pd.Series | Mapping[Any, float]
                  ) -> dict[str, Any]:
    """What a schedule costs on a fleet whose truth is known.

    `rul_at_end` maps asset_id -> true RUL after the asset's last cycle (a C-MAPSS RUL file,
    read in asset order). An asset's true failure cycle is last_cycle + true RUL. Definitions:
    - unexpected_failures: assets whose failure cycle comes before their recommended_cycle
      (failure < recommended): they fail before the planned maintenance;
    - maintained: the others (recommended_cycle <= failure cycle), maintained in time;
    - unexploited_lifetime: over maintained assets, the sum of failure cycle - recommended_cycle,
      the cycles of life given away by maintaining early (0 when maintained at the failure
      cycle); mean_unexploited_lifetime is that sum per maintained asset (NaN when none is);
    - unexpected_failure_rate: unexpected_failures / n_assets.
    Truth for assets not in the table is ignored; an asset of the table without truth is an
    error.
    """
    require_columns(table, "schedule", [ASSET_ID, "last_cycle", "recommended_cycle"])
    true_rul = _aligned_truth(table[ASSET_ID], rul_at_end)
    failure = table["last_cycle"].to_numpy(dtype=np.float64) + true_rul
    recommended = table["recommended_cycle"].to_numpy(dtype=np.float64)
    failed = failure < recommended
    given_away = float(np.where(failed, 0.0, failure - recommended).sum())
    n, maintained = len(table), int((~failed).sum())
    return {
        "n_assets": n,
        "maintained": maintained,
        "unexpected_failures": int(failed.sum()),
        "unexpected_failure_rate": float(failed.sum()) / n if n else math.nan,
        "unexploited_lifetime": given_away,
        "mean_unexploited_lifetime": given_away / maintained if maintained else math.nan,
    }


def lead_time_table(forecast: pd.DataFrame, truth: pd.Series | Mapping[Any, float],
                    lead_times: Sequence[int] = DEFAULT_LEAD_TIMES, *,
                    quantiles: Sequence[float] | None = None,
                    threshold: float = 0.5) -> pd.DataFrame:
    """`schedule_cost` of the schedule at each lead time, one row per lead time: the trade-off
    between life given away and failures before maintenance, for a planner to choose from."""
    rows = [{"lead_time": int(lead),
             **schedule_cost(schedule(forecast, lead_time=int(lead), quantiles=quantiles,
                                      threshold=threshold), truth)}
            for lead in lead_times]
    return pd.DataFrame(rows)


def _aligned_truth(asset_ids: pd.Series, truth: pd.Series | Mapping[Any, float]) -> np.ndarray:
    """True RUL per row of `asset_ids`; ids compare as text when one side is text."""
    truth = truth.copy() if isinstance(truth, pd.Series) else pd.Series(dict(truth), dtype=float)
    if truth.index.has_duplicates:
        twice = truth.index[truth.index.duplicated()][0]
        raise DataError(f"true RUL given twice for asset {twice}")
    ids = pd.Index(asset_ids)
    if not (pd.api.types.is_numeric_dtype(ids) and pd.api.types.is_numeric_dtype(truth.index)):
        ids, truth.index = ids.astype(str), truth.index.astype(str)
    position = truth.index.get_indexer(ids)
    if (position < 0).any():
        missing = [plain(v) for v in asset_ids[position < 0][:5]]
        raise DataError(f"no true RUL for {int((position < 0).sum())} assets, e.g. {missing}")
    values = pd.to_numeric(truth, errors="coerce").to_numpy(dtype=np.float64)[position]
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"true RUL must be a non-negative number, got {values[i]}",
                        asset=asset_ids.iloc[i])
    return values


# --------------------------------------------------------------------------- schedule files


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def schedule_csv(table: pd.DataFrame) -> bytes:
    """A schedule as CSV. A text cell that a spreadsheet would run as a formula (an asset id
    such as `=HYPERLINK(...)`), or that begins with an apostrophe, gets one leading apostrophe,
    as OWASP advises for CSV exports; `read_schedule` takes it off again."""
    safe = table.assign(**{c: table[c].map(_escape_cell) for c in _text_columns(table)})
    return safe.to_csv(index=False, lineterminator="\n").encode()


def _text_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if pd.api.types.is_object_dtype(table[c])
            or pd.api.types.is_string_dtype(table[c])]


def _escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith((*_FORMULA_START, "'")):
        return f"'{value}"
    return value


def _unescape_cell(value: Any) -> Any:
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def write_schedule(table: pd.DataFrame, out: Path | str) -> Path:
    """Write a schedule by suffix: .csv, .parquet or .json (records, one object per asset per
    line, NaN as null). Atomic: a failure leaves any earlier file intact."""
    out = Path(out)
    suffix = _schedule_suffix(out)
    if suffix == ".csv":
        data = schedule_csv(table)
    elif suffix == ".parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    else:
        records = table.to_dict(orient="records")
        data = ("[\n" + ",\n".join(dumps(r, indent=None) for r in records) + "\n]\n").encode()
    make_folder(out.parent)
    return atomic_write(out, lambda f: f.write(data))


def read_schedule(path: Path | str) -> pd.DataFrame:
    """Read a schedule written by `write_schedule` (CSV ids that look like numbers come back as
    numbers; the apostrophe that `schedule_csv` puts before formula-like text is taken off)."""
    path = Path(path)
    suffix = _schedule_suffix(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if suffix == ".csv":
        table = pd.read_csv(path, **_EXACT_FLOATS)
        return table.assign(**{c: table[c].map(_unescape_cell) for c in _text_columns(table)})
    if suffix == ".parquet":
        return pd.read_parquet(path)
    try:
        records = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", file=str(path)) from None
    table = pd.DataFrame.from_records(records)
    floats = ["rul", *quantile_columns(table), "failure_probability"]
    return table.astype({c: np.float64 for c in floats if c in table.columns})


def _schedule_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SCHEDULE_SUFFIXES:
        raise ConfigError(f"{path}: a schedule file ends in {', '.join(SCHEDULE_SUFFIXES)}")
    return suffix


# --------------------------------------------------------------------------- labels


def read_labels(path: Path | str, asset_ids: Sequence[Any] | pd.Series) -> pd.Series:
    """True RUL after each asset's last cycle, indexed by asset_id.

    A CSV (.csv, .csv.gz) has columns asset_id and rul; any other file is a C-MAPSS RUL file
    (one integer per line), whose lines follow `asset_ids` in sorted order (units 1..N).
    """
    path = Path(path)
    if not path.name.lower().endswith((".csv", ".csv.gz")):
        ordered = np.sort(np.asarray(asset_ids))
        return pd.Series(read_rul_file(path, len(ordered)), index=ordered, name="rul")
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    locator = Locator(str(path), "line", 2)
    with reading_errors(locator):
        raw = pd.read_csv(path)
    missing = [c for c in (ASSET_ID, "rul") if c not in raw.columns]
    if missing:
        raise locator.error(f"missing columns {missing}; expected asset_id,rul")
    ids = raw[ASSET_ID]
    values = pd.to_numeric(raw["rul"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    for problem, message in ((ids.isna().to_numpy(), "missing asset_id"),
                             (bad, "RUL must be a non-negative integer"),
                             (ids.duplicated().to_numpy(), "asset given twice")):
        if problem.any():
            i = int(np.argmax(problem))
            shown = [plain(v) for v in raw.iloc[i].tolist()]
            raise locator.error(f"{message}, got {shown}", i,
                                asset=None if ids.isna().iloc[i] else ids.iloc[i])
    index = ids.to_numpy(dtype=np.int64) if pd.api.types.is_integer_dtype(ids) else ids.astype(str)
    return pd.Series(values.astype(np.int64), index=index, name="rul")


# --------------------------------------------------------------------------- the command


def run_forecast(input_path: Path | str, out_path: Path | str, *,
                 model_path: Path | str | None = None, lead_time: int = 10,
                 report_path: Path | str | None = None, labels_path: Path | str | None = None,
                 threshold: float = 0.5, progress: bool = True,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: FleetColumns | None = None,
                 threads: int | None = None, scheduler: str | None = None) -> dict[str, Any]:
    """`rul forecast`: forecast a fleet file, write its ranked schedule (and a report).

    The model defaults to `rul.forecaster.default_model_path()`. With `labels_path` (a C-MAPSS
    RUL file in asset order, or a CSV of asset_id,rul) the summary adds the schedule's `cost`
    and `cost_by_lead_time` (`lead_time_table` over DEFAULT_LEAD_TIMES and `lead_time`), which
    the report shows too. With `scheduler` ('local' or a Dask scheduler address) the forecast runs
    partitioned on a Dask cluster (`rul.distributed`), with the same result. `threads`:
    onnxruntime's threads, by default `rul.batch.default_threads()` (1 per Dask worker).
    Arguments are checked before the file is read. Returns a summary:
    input, out, report, model, assets, rows, windows, assets_at_risk, lead_time, threshold,
    seconds (end to end), assets_per_second, and the costs when labelled.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    _schedule_suffix(out_path)
    _check_rule(lead_time, threshold)
    if report_path is not None and Path(report_path).suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{report_path}: the report is one HTML page; name it *.html")
    if labels_path is not None and not Path(labels_path).is_file():
        raise DataError("file not found", file=str(labels_path))
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    for output in (out_path, report_path):
        if output is None:
            continue
        if Path(output).resolve() == Path(input_path).resolve():
            raise ConfigError(f"{output}: that is the input fleet; write the schedule and the "
                              "report to other files")
        check_output_path(output)  # a bad path fails now, not after the forecast
    if threads is None and scheduler is None:
        threads = default_threads()
    model = Forecaster.load(model_path or default_model_path(), threads=threads)
    if scheduler is None:
        forecast, rows = forecast_file_rows(
            model, input_path, chunk_rows=chunk_rows, columns=columns, progress=progress)
    else:  # the same per-asset forecast, partitioned over a Dask cluster
        from rul.distributed import forecast_distributed_rows

        forecast, rows = forecast_distributed_rows(
            model.path, input_path, scheduler=scheduler, columns=columns,
            threads=threads if threads is not None else 1, batch_size=model.batch_size)
    table = schedule(forecast, lead_time=lead_time, quantiles=model.quantiles,
                     threshold=threshold)
    summary: dict[str, Any] = {
        "input": str(input_path), "out": str(out_path),
        "report": None if report_path is None else str(report_path), "model": model.name,
        "assets": len(table), "rows": rows, "windows": len(table),
        "assets_at_risk": int(table["at_risk"].sum()), "lead_time": int(lead_time),
        "threshold": float(threshold),
    }
    costs = None
    if labels_path is not None:
        truth = read_labels(labels_path, forecast[ASSET_ID])
        try:
            summary["cost"] = schedule_cost(table, truth)
        except DataError as exc:
            raise DataError(exc.message, file=exc.file or str(labels_path), line=exc.line,
                            row=exc.row, asset=exc.asset, column=exc.column) from None
        costs = lead_time_table(forecast, truth, sorted({*DEFAULT_LEAD_TIMES, int(lead_time)}),
                                quantiles=model.quantiles, threshold=threshold)
        summary["cost_by_lead_time"] = costs.to_dict(orient="records")
    write_schedule(table, out_path)
    if report_path is not None:
        write_schedule_report(table, report_path, cost=costs, model_name=model.name,
                              lead_time=lead_time, threshold=threshold)
    seconds = time.perf_counter() - started
    summary.update(seconds=seconds, assets_per_second=len(table) / seconds if seconds else None)
    return summary
