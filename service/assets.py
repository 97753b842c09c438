"""Streamed readings, per-asset settings, history and forecasts, as plain functions.

`ingest_readings` is the whole of `POST /v1/assets/{asset_id}/readings` in one transaction:
store the new readings (idempotent on (asset_id, cycle): a repeat is skipped, a different
value for a stored cycle is a 409 and nothing of the call is kept), forecast at every newly
appended cycle in one model run, and raise an alert when the newest forecast crosses the
asset's threshold (`service.alerts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from rul.schema import CYCLE
from rul.windowing import make_windows
from service import alerts, storage
from service.errors import ApiError, bad_request
from service.models import ModelRegistry
from service.predict import InferenceObserver, model_answers, no_observer
from service.requests import (
    MAX_CYCLE,
    check_unknown_query,
    parse_json,
    path_asset_id,
    query_int,
    query_text,
    readings_matrix,
    require_object,
    threshold_value,
)
from service.settings import Settings
from service.storage import Store


def ingest_readings(store: Store, registry: ModelRegistry, settings: Settings, asset_id: str,
                    data: bytes, params: Mapping[str, Any],
                    observe: InferenceObserver = no_observer) -> dict[str, Any]:
    """Store readings `{"readings": [{"cycle": c, feature: value, ...}, ...]}` (one or many
    cycles, oldest first; `"model"` optional for a new asset) and answer the asset's forecast."""
    asset_id = path_asset_id(asset_id)
    check_unknown_query(params, [])
    body = parse_json(data)
    if isinstance(body, list):  # a bare list of readings is accepted too
        body = {"readings": body}
    body = require_object(body, "body", ["readings"], ["model"])
    now = storage.now()
    with store.transaction() as conn:
        asset = storage.get_asset(conn, asset_id)
        name = _asset_model(registry, asset, body.get("model"))
        forecaster = registry.get(name)
        checked = readings_matrix(body.get("readings"), forecaster.features, "readings",
                                  max_rows=settings.max_rows, cycle_required=True)
        cycles = checked.cycles.tolist()
        rows = body["readings"]
        sent = [orjson.dumps({f: row[f] for f in forecaster.features if f != CYCLE})
                for row in rows]  # the cycle is stored once, as the key
        if asset is None:
            storage.put_asset(conn, asset_id, name, None, now)
            asset = {"asset_id": asset_id, "alert_threshold": None, "alerting": False,
                     "last_cycle": None}
        stored = storage.existing_readings(conn, asset_id, cycles[0], cycles[-1])
        new = []
        for i, (cycle, reading) in enumerate(zip(cycles, sent, strict=True)):
            if cycle in stored:
                _same_or_conflict(stored[cycle], checked.values[i], forecaster.features,
                                  asset_id, cycle, i)
            else:
                new.append((cycle, reading))
        previous_last = asset["last_cycle"]
        if new:
            storage.insert_readings(conn, asset_id, new, now)
        appended = [c for c, _ in new if previous_last is None or c > previous_last]
        newest = max(cycles[-1], previous_last if previous_last is not None else -1)
        forecast = storage.latest_forecast(conn, asset_id, name)
        # Appended cycles each get a forecast; a backfilled gap changes the newest window.
        targets = appended or ([newest] if new or forecast is None else [])
        if targets:
            computed = _forecast_cycles(conn, registry, name, asset_id, targets, now, observe)
            storage.insert_forecasts(conn, computed)
            forecast = computed[-1]
        alert = alerts.evaluate(conn, settings, {**asset, "last_cycle": newest}, forecast, now)
    if alert is not None:
        alerts.wake_dispatcher()
    return {"asset_id": asset_id, "stored": len(new), "duplicates": len(cycles) - len(new),
            "forecast": public_forecast(forecast), "alert": alert}


def _asset_model(registry: ModelRegistry, asset: dict[str, Any] | None, requested: Any) -> str:
    name, _ = registry.named(requested)  # 400/404 for a bad name
    if asset is None:
        return name
    if requested is not None and requested != asset["model"]:
        raise ApiError(409, f"asset {asset['asset_id']!r} is tracked with model "
                       f"{asset['model']!r}, not {requested!r}; change it with PUT "
                       f"/v1/assets/{asset['asset_id']}", "model")
    if asset["model"] not in registry.models:
        raise ApiError(409, f"asset {asset['asset_id']!r} is tracked with model "
                       f"{asset['model']!r}, which this server does not serve; served: "
                       f"{registry.names()}", "model")
    return asset["model"]


def _same_or_conflict(stored: dict[str, Any], values: np.ndarray, features: list[str],
                      asset_id: str, cycle: int, index: int) -> None:
    for j, feature in enumerate(features):
        old = stored.get(feature)
        if old is None or np.float32(old) != values[j]:
            raise ApiError(409, f"asset {asset_id!r} already has a different reading at cycle "
                           f"{cycle} ({feature}: stored {old!r}, sent {float(values[j])!r}); "
                           "stored readings are never overwritten",
                           f"readings[{index}].{feature}")


def _forecast_cycles(conn: Any, registry: ModelRegistry, name: str, asset_id: str,
                     targets: list[int], now: float, observe: InferenceObserver
                     ) -> list[dict[str, Any]]:
    """Forecasts at each of `targets` (ascending cycles of one asset) in one model run."""
    forecaster = registry.get(name)
    tail = storage.readings_tail(conn, asset_id, targets[-1],
                                 forecaster.window - 1 + len(targets))
    _require_features(tail, forecaster.features, asset_id, name)
    values = np.array([[reading[f] for f in forecaster.features] for _, reading in tail],
                      dtype=np.float32)
    windows = make_windows(values, np.array([len(values)]), forecaster.window, ends="every")
    tail_cycles = [cycle for cycle, _ in tail]
    wanted = [tail_cycles.index(c) for c in targets]
    items = model_answers(forecaster, name, windows.array()[wanted], windows.padded[wanted],
                          observe, "readings", [f"the window ending at cycle {c}" for c in targets])
    return [{"asset_id": asset_id, "cycle": cycle, "model": name,
             "model_version": forecaster.version, "created_at": now, **item}
            for cycle, item in zip(targets, items, strict=True)]


def _require_features(readings: list[tuple[int, dict[str, Any]]], features: list[str],
                      asset_id: str, model: str) -> None:
    """409 when stored (cycle, reading) pairs lack features `model` needs (sent while the asset
    was tracked with another model: readings keep only the features of the model they were
    sent for)."""
    for cycle, reading in readings:
        missing = [f for f in features if f not in reading]
        if missing:
            raise ApiError(409, f"asset {asset_id!r}'s stored reading of cycle {cycle} lacks "
                           f"{missing} that model {model!r} needs", "model")


def public_forecast(forecast: dict[str, Any] | None) -> dict[str, Any] | None:
    if forecast is None:
        return None
    return {k: forecast[k] for k in ("cycle", "rul", "rul_quantiles", "failure_probability",
                                     "horizon", "cycles_padded", "model", "model_version",
                                     "created_at")}


def configure_asset(store: Store, registry: ModelRegistry, settings: Settings, asset_id: str,
                    data: bytes) -> dict[str, Any]:
    """`PUT /v1/assets/{asset_id}`: `{"model": name, "alert_threshold": p | null}`."""
    asset_id = path_asset_id(asset_id)
    body = require_object(parse_json(data), "body", [], ["model", "alert_threshold"])
    threshold = threshold_value(body.get("alert_threshold"), "alert_threshold")
    if "model" in body:
        registry.get(body["model"])
    now = storage.now()
    with store.transaction() as conn:
        asset = storage.get_asset(conn, asset_id)
        model = body.get("model") or (asset["model"] if asset else registry.default)
        if asset is not None and "alert_threshold" not in body:
            threshold = asset["alert_threshold"]
        if asset is not None and model != asset["model"] and asset["n_readings"]:
            # Every reading of the newest window: the next forecasts read them all.
            forecaster = registry.get(model)
            _require_features(storage.readings_tail(conn, asset_id, asset["last_cycle"],
                                                    forecaster.window),
                              forecaster.features, asset_id, model)
        storage.put_asset(conn, asset_id, model, threshold, now)
        # A new threshold is judged against the newest forecast from now on.
        return asset_summary(conn, settings, asset_id)


def asset_summary(conn: Any, settings: Settings, asset_id: str) -> dict[str, Any]:
    asset = storage.get_asset(conn, asset_id)
    if asset is None:
        raise ApiError(404, f"no asset {asset_id!r}; it appears when its first readings are "
                       "posted or it is configured with PUT", "path.asset_id")
    return {**asset, "effective_alert_threshold": alerts.effective_threshold(asset, settings),
            "forecast": public_forecast(storage.latest_forecast(conn, asset_id, asset["model"]))}


def get_asset(store: Store, settings: Settings, asset_id: str) -> dict[str, Any]:
    return asset_summary(store.connection(), settings, path_asset_id(asset_id))


def list_assets(store: Store, settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """`GET /v1/assets?limit=&after=`: assets by id, paginated by the last id seen."""
    check_unknown_query(params, ["limit", "after"])
    limit = query_int(params, "limit", 100, minimum=1, maximum=settings.history_limit)
    after = query_text(params, "after")
    conn = store.connection()
    page = storage.list_assets(conn, after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    items = []
    for asset in page:
        forecast = storage.latest_forecast(conn, asset["asset_id"], asset["model"])
        items.append({**asset, "forecast": public_forecast(forecast)})
    return {"assets": items, "count": storage.count_assets(conn),
            "next_after": page[-1]["asset_id"] if more else None}


def history(store: Store, settings: Settings, asset_id: str, params: Mapping[str, Any]
            ) -> dict[str, Any]:
    """`GET /v1/assets/{id}/history?from_cycle=&to_cycle=&limit=&after_cycle=`: readings and
    forecasts, oldest first, one page of `limit` cycles; `next_after_cycle` continues it."""
    asset_id = path_asset_id(asset_id)
    check_unknown_query(params, ["from_cycle", "to_cycle", "limit", "after_cycle"])
    first = query_int(params, "from_cycle", 0, maximum=MAX_CYCLE)
    last = query_int(params, "to_cycle", MAX_CYCLE, maximum=MAX_CYCLE)
    if last < first:
        raise bad_request(f"to_cycle ({last}) is before from_cycle ({first})", "query.to_cycle")
    limit = query_int(params, "limit", 100, minimum=1, maximum=settings.history_limit)
    after = query_int(params, "after_cycle", None, maximum=MAX_CYCLE)
    if after is not None:
        first = max(first, after + 1)
    conn = store.connection()
    if storage.get_asset(conn, asset_id) is None:
        raise ApiError(404, f"no asset {asset_id!r}", "path.asset_id")
    readings = storage.readings_page(conn, asset_id, first, last, limit + 1)
    more = len(readings) > limit
    readings = readings[:limit]
    span_end = readings[-1]["cycle"] if more else last
    # At most one forecast per cycle and model; the cap only bounds a pathological page.
    forecasts = storage.forecasts_page(conn, asset_id, first, span_end, 10 * limit)
    return {"asset_id": asset_id, "readings": readings,
            "forecasts": [public_forecast(f) for f in forecasts],
            "next_after_cycle": span_end if more else None}


def latest(store: Store, registry: ModelRegistry, asset_id: str, params: Mapping[str, Any]
           ) -> dict[str, Any]:
    """`GET /v1/assets/{id}/forecast`: the newest forecast (the asset's model by default)."""
    asset_id = path_asset_id(asset_id)
    check_unknown_query(params, ["model"])
    conn = store.connection()
    asset = storage.get_asset(conn, asset_id)
    if asset is None:
        raise ApiError(404, f"no asset {asset_id!r}", "path.asset_id")
    asked = query_text(params, "model")
    model = asked or asset["model"]
    registry.get(model, field="query.model")
    forecast = storage.latest_forecast(conn, asset_id, model)
    if forecast is None:
        raise ApiError(404, f"asset {asset_id!r} has no forecast from model {model!r} yet",
                       "query.model" if asked else "path.asset_id")
    return {"asset_id": asset_id, **public_forecast(forecast)}
