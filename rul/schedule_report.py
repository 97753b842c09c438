"""The schedule report: one self-contained HTML page a maintenance planner reads.

Built from the evaluation report's blocks and plot helpers (`rul.report`): inline CSS, PNGs as
data URIs, nothing fetched from elsewhere; matplotlib is imported only to draw, on an Agg
canvas through the Figure API (the caller's pyplot state is never touched).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.batch import quantile_columns, quantile_level, require_columns
from rul.errors import ConfigError
from rul.io import atomic_write, make_folder
from rul.report import (
    Heading,
    Image,
    Paragraph,
    Table,
    _error_bars,
    _figure,
    _fmt,
    _interval_label,
    _png,
    _spans_decades,
    asset_ticks,
    render_html,
)
from rul.schema import ASSET_ID

__all__ = ["render_schedule_report", "write_schedule_report"]


_COST_LABELS = {
    "lead_time": "lead time, cycles",
    "n_assets": "assets",
    "maintained": "maintained in time",
    "unexpected_failures": "unexpected failures",
    "unexpected_failure_rate": "unexpected failure rate",
    "unexploited_lifetime": "unexploited lifetime, cycles",
    "mean_unexploited_lifetime": "unexploited lifetime per maintained asset, cycles",
}


def write_schedule_report(table: pd.DataFrame, out_html: Path | str, *, top_n: int = 30,
                          cost: pd.DataFrame | Mapping[str, Any] | None = None,
                          model_name: str | None = None, lead_time: int | None = None,
                          threshold: float | None = None) -> Path:
    """`render_schedule_report` written to `out_html`, atomically."""
    page = render_schedule_report(table, top_n=top_n, cost=cost, model_name=model_name,
                                  lead_time=lead_time, threshold=threshold).encode()
    out = Path(out_html)
    make_folder(out.parent)
    return atomic_write(out, lambda f: f.write(page))


def render_schedule_report(table: pd.DataFrame, *, top_n: int = 30,
                           cost: pd.DataFrame | Mapping[str, Any] | None = None,
                           model_name: str | None = None, lead_time: int | None = None,
                           threshold: float | None = None) -> str:
    """One self-contained HTML page (inline CSS, PNGs as data URIs, nothing fetched): the
    `top_n` most urgent assets as a table and as a chart of their RUL with its quantile
    interval, a histogram of the fleet's failure probabilities, and `cost` (one
    `schedule_cost` dict or a `lead_time_table`) when given. Needs matplotlib."""

    require_columns(table, "schedule", [ASSET_ID, "last_cycle", "rul", "failure_probability",
                                 "recommended_cycle", "at_risk", "risk_rank"])
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")
    top = table.sort_values("risk_rank").head(top_n)
    interval = quantile_columns(table)
    plots = {"urgent_rul": _plot_urgent(top, interval), "failure_probability":
             _plot_probabilities(table, threshold)} if len(table) else {}
    title = "Maintenance schedule" + (f": model {model_name}" if model_name else "")
    blocks: list[Any] = [Heading(1, title), Paragraph(_report_summary(table, lead_time,
                                                                      threshold))]
    of = f" of {len(table):,} (the schedule file lists every one)" if len(table) > len(top) else ""
    blocks += [Heading(2, f"The {len(top)} most urgent assets{of}"), _urgent_table(top, interval)]
    if plots:
        blocks += [Heading(2, "RUL of the most urgent assets"),
                   Image("urgent_rul", "RUL of the most urgent assets"),
                   Paragraph(_URGENT_NOTE.format(interval=_interval_text(interval))),
                   Heading(2, "Failure probability across the fleet"),
                   Image("failure_probability", "Histogram of failure probabilities"),
                   Paragraph(_PROBABILITY_NOTE)]
    if cost is not None:
        blocks += [Heading(2, "Cost of the schedule on known truth"), Paragraph(_COST_NOTE),
                   _cost_table(cost)]
    return render_html(blocks, plots)


_URGENT_NOTE = (
    "Most urgent first, as ranked in the schedule. Dots are the predicted RUL at each asset's "
    "last cycle, bars the {interval}; red triangles are the cycles left until the recommended "
    "maintenance (lead_time cycles before the interval's lower end, never below 0)."
)
_PROBABILITY_NOTE = (
    "How many assets have each predicted probability of failing within the model's horizon; "
    "the dashed line is the threshold above which an asset is marked at risk."
)
_COST_NOTE = (
    "Against the true RUL of each asset: its failure cycle is last_cycle + true RUL. An asset "
    "fails unexpectedly when that comes before its recommended cycle; otherwise it is "
    "maintained in time, and the cycles between the recommended cycle and its failure cycle "
    "are unexploited lifetime. A longer lead time trades unexploited lifetime for fewer "
    "unexpected failures."
)


def _interval_text(interval: Sequence[str]) -> str:
    levels = [quantile_level(c) for c in interval]
    return _interval_label({"quantiles": [levels[0], levels[-1]] if levels else None})


def _report_summary(table: pd.DataFrame, lead_time: int | None, threshold: float | None) -> str:
    # The service's report marks each asset by its own alert_threshold where it has one.
    own = "alert_threshold" in table and bool((table["alert_threshold"] != threshold).any())
    parts = [f"{len(table):,} assets", f"{int(table['at_risk'].sum()):,} at risk"
             + (f" (failure probability ≥ {_fmt(float(threshold))}"
                + (", or the asset's own threshold" if own else "") + ")"
                if threshold is not None else "")]
    if lead_time is not None:
        parts.append(f"lead time {lead_time} cycles")
    lower = quantile_columns(table)[:1]
    rule = (f"Recommended cycle = last_cycle + max(0, ⌊{lower[0]}⌋ − lead time): maintenance "
            "lead time cycles before the pessimistic RUL." if lower else "")
    return " · ".join(parts) + ". " + rule


def _urgent_table(top: pd.DataFrame, interval: Sequence[str]) -> Any:
    header = ["rank", "asset_id", "last cycle", "RUL"]
    header += [_interval_text(interval)] if interval else []
    header += ["failure probability", "at risk", "recommended cycle", "cycles to maintenance",
               "cycles padded"]
    rows = []
    for row in top.to_dict(orient="records"):
        cells = [_fmt(row["risk_rank"]), _fmt(row[ASSET_ID]), _fmt(row["last_cycle"]),
                 _fmt(row["rul"])]
        if interval:
            cells.append(f"{_fmt(row[interval[0]])} to {_fmt(row[interval[-1]])}")
        cells += [_fmt(row["failure_probability"]), "yes" if row["at_risk"] else "no",
                  _fmt(row["recommended_cycle"]),
                  _fmt(row["recommended_cycle"] - row["last_cycle"]),
                  _fmt(row.get("cycles_padded"))]
        rows.append(tuple(cells))
    return Table(tuple(header), tuple(rows))


def _cost_table(cost: pd.DataFrame | Mapping[str, Any]) -> Any:
    if isinstance(cost, pd.DataFrame):
        header = tuple(_COST_LABELS.get(str(c), str(c)) for c in cost.columns)
        rows = tuple(tuple(_fmt(v) for v in row) for row in cost.itertuples(index=False))
        return Table(header, rows)
    return Table(("measure", "value"),
                 tuple((_COST_LABELS.get(k, k), _fmt(v)) for k, v in cost.items()))


def _plot_urgent(top: pd.DataFrame, interval: Sequence[str]) -> bytes:
    x = np.arange(len(top))
    rul = top["rul"].to_numpy(dtype=np.float64)
    bars = None
    if interval:
        bars = _error_bars({"rul": rul, "rul_lower": top[interval[0]].to_numpy(np.float64),
                            "rul_upper": top[interval[-1]].to_numpy(np.float64)})
    figure = _figure((9, 4.5))
    ax = figure.add_subplot()
    ax.errorbar(x, rul, yerr=bars, fmt="o", markersize=4, capsize=2, elinewidth=1,
                color="tab:blue", label="predicted RUL" + (f", {_interval_text(interval)}"
                                                           if interval else ""))
    wait = (top["recommended_cycle"] - top["last_cycle"]).to_numpy()
    ax.plot(x, wait, "v", color="tab:red", label="cycles to recommended maintenance")
    if len(top) <= 40:
        asset_ticks(ax, x, top[ASSET_ID])
    ax.set_xlabel("asset_id, most urgent first")
    ax.set_ylabel("cycles after the last cycle")
    ax.set_title("RUL of the most urgent assets")
    ax.legend(loc="upper left", fontsize=8)
    return _png(figure)


def _plot_probabilities(table: pd.DataFrame, threshold: float | None) -> bytes:
    figure = _figure((7, 4))
    ax = figure.add_subplot()
    counts, _, _ = ax.hist(table["failure_probability"].to_numpy(dtype=np.float64),
                           bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.8)
    if _spans_decades(counts[counts > 0]):
        ax.set_yscale("log")  # a healthy fleet piles up near 0; the few risky ones matter
    if threshold is not None:
        ax.axvline(float(threshold), color="tab:red", linestyle="--", linewidth=1,
                   label=f"threshold {threshold:g}")
        ax.legend(loc="upper center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("failure probability")
    ax.set_ylabel("assets")
    ax.set_title(f"Failure probability across the fleet ({len(table):,} assets)")
    return _png(figure)
