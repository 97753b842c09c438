"""The fleet report: every tracked asset's newest forecast, ranked by `rul.schedule.schedule`.

The same rule as `rul forecast` (recommended_cycle = last_cycle + max(0, floor(lowest quantile)
- lead_time), most urgent first), so the service and batch schedules agree. JSON for machines,
CSV for spreadsheets, HTML (the batch schedule's page, `rul.schedule_report`) for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from rul.batch import quantile_columns, quantile_level
from rul.forecaster import quantile_column
from rul.schedule import schedule, schedule_csv
from rul.schema import ASSET_ID
from service import storage
from service.alerts import effective_threshold
from service.requests import check_unknown_query, query_choice, query_int
from service.settings import Settings
from service.storage import Store

FORMATS = ("json", "csv", "html")
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
                 "html": "text/html; charset=utf-8"}
DEFAULT_LEAD_TIME = 10


def fleet_table(store: Store, settings: Settings) -> pd.DataFrame:
    """One row per asset with a forecast: the columns of a batch forecast table, plus model and
    the asset's alert_threshold (its own, else RUL_ALERT_THRESHOLD: the one its alerts use)."""
    rows = []
    for forecast in storage.latest_forecasts(store.connection()):
        row = {ASSET_ID: forecast["asset_id"], "last_cycle": forecast["cycle"],
               "rul": forecast["rul"]}
        for level, value in forecast["rul_quantiles"].items():
            row[quantile_column(float(level))] = value
        row.update(failure_probability=forecast["failure_probability"],
                   cycles_padded=forecast["cycles_padded"], model=forecast["model"],
                   model_version=forecast["model_version"],
                   alert_threshold=effective_threshold(forecast, settings))
        rows.append(row)
    columns = [ASSET_ID, "last_cycle", "rul", "failure_probability", "cycles_padded", "model",
               "model_version", "alert_threshold"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def fleet_report(store: Store, settings: Settings, params: Mapping[str, Any]
                 ) -> tuple[str, bytes | dict[str, Any]]:
    """`GET /v1/report?format=json|csv|html&lead_time=L`: (content type, body)."""
    check_unknown_query(params, ["format", "lead_time", "top_n"])
    fmt = query_choice(params, "format", FORMATS, "json")
    lead_time = query_int(params, "lead_time", DEFAULT_LEAD_TIME, minimum=0, maximum=10_000)
    top_n = query_int(params, "top_n", 30, minimum=1, maximum=10_000)
    table = fleet_table(store, settings)
    if len(table):
        table = schedule(table, lead_time=lead_time, threshold=settings.alert_threshold)
        # At risk by each asset's own threshold, as its alerts are (schedule's is one for all).
        table["at_risk"] = table["failure_probability"] >= table["alert_threshold"]
    else:
        table = table.assign(recommended_cycle=[], at_risk=[], risk_rank=[])
    if fmt == "csv":
        return CONTENT_TYPES[fmt], schedule_csv(table)
    if fmt == "html":
        from rul.schedule_report import render_schedule_report  # matplotlib: only when asked

        page = render_schedule_report(table, top_n=top_n, lead_time=lead_time,
                                      threshold=settings.alert_threshold)
        return CONTENT_TYPES[fmt], page.encode()
    levels = {column: f"{quantile_level(column):g}" for column in quantile_columns(table)}
    assets = []
    for record in table.to_dict("records"):
        quantiles = {}
        for column, level in levels.items():
            value = record.pop(column)
            if value == value:  # NaN where another model has other quantile levels
                quantiles[level] = value
        assets.append({**record, "rul_quantiles": quantiles})
    return CONTENT_TYPES[fmt], {
        "generated_at": storage.now(), "lead_time": lead_time,
        "threshold": settings.alert_threshold, "n_assets": len(assets),
        "n_at_risk": int(table["at_risk"].sum()) if len(table) else 0, "assets": assets,
    }
