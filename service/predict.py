"""Prediction endpoints as plain functions: a request body in, an answer dict out.

An answer for one window is `{"rul", "rul_quantiles": {"0.1": ...}, "failure_probability",
"horizon", "cycles_padded"}`; every response names the `model` and its `model_version`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rul.forecaster import Forecaster
from rul.predictor import Prediction
from service.errors import ApiError, bad_request, too_large
from service.models import ModelRegistry
from service.requests import (
    asset_id_value,
    npy_windows,
    parse_json,
    plain_readings_body,
    readings_matrix,
    require_object,
    subfield,
    window_matrix,
)

# Called with (model name, windows, seconds) after each model run: the metrics hook.
InferenceObserver = Callable[[str, int, float], None]


def no_observer(model: str, windows: int, seconds: float) -> None:
    return None


def model_answers(forecaster: Forecaster, name: str, windows: np.ndarray, padded: Sequence[int],
                  observe: InferenceObserver = no_observer, field: str = "readings",
                  labels: list[str] | None = None) -> list[dict[str, Any]]:
    """The model on checked windows: one answer dict per window. 422 when its outputs are not
    finite (readings such as 1e38 are valid float32 but overflow the network), so no answer
    or forecast holds null."""
    start = time.perf_counter()
    prediction = forecaster.predict_windows(windows)
    observe(name, len(windows), time.perf_counter() - start)
    rul = prediction.rul.tolist()
    quantiles = prediction.rul_quantiles.tolist()
    probability = prediction.failure_probability.tolist()
    # Checked on the Python floats the answers are made of: numpy calls on a single window
    # cost more than the arithmetic, the model run having left their caches cold.
    if not math.isfinite(sum(rul) + sum(probability) + sum(map(sum, quantiles))):
        _refuse_non_finite(prediction, name, windows, field, labels)
    levels = [f"{q:g}" for q in forecaster.quantiles]
    horizon = forecaster.horizon
    padded = list(padded)
    return [{"rul": rul[i], "rul_quantiles": dict(zip(levels, quantiles[i], strict=True)),
             "failure_probability": probability[i], "horizon": horizon,
             "cycles_padded": int(padded[i])} for i in range(len(rul))]


def _refuse_non_finite(prediction: Prediction, name: str, windows: np.ndarray, field: str,
                       labels: list[str] | None) -> None:
    """422 naming the first window whose outputs are not finite (none: a sum that overflowed)."""
    finite = (np.isfinite(prediction.rul) & np.isfinite(prediction.failure_probability)
              & np.isfinite(prediction.rul_quantiles).all(axis=1))
    if finite.all():
        return
    bad = int(np.argmin(finite))
    where = field if len(windows) == 1 or labels else f"{field}[{bad}]"
    what = f"{where} ({labels[bad]})" if labels else where
    raise ApiError(422, f"the model's outputs are not finite for {what}: its readings are "
                   f"far outside the range model {name!r} was trained on (largest "
                   f"magnitude {float(np.abs(windows[bad]).max()):.3g})", where)


def last_window(values: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """One asset's readings [cycles, n_features] -> its last window [window, n_features]
    (padded by repeating the first reading, as `rul.windowing.make_windows` does; the test
    suite checks the two agree) and the cycles padded."""
    if len(values) >= window:
        return values[-window:], 0
    padded = window - len(values)
    return np.concatenate([np.repeat(values[:1], padded, axis=0), values]), padded


def _window_of(forecaster: Forecaster, item: dict[str, Any], field: str, max_rows: int
               ) -> tuple[np.ndarray, int]:
    if ("readings" in item) == ("window" in item):
        raise bad_request(f"{field} needs exactly one of 'readings' (objects keyed by feature "
                          "name, oldest first) or 'window' (a matrix in card order)",
                          field if field != "body" else None)
    if "window" in item:
        return window_matrix(item["window"], forecaster.window, forecaster.features,
                             subfield(field, "window")), 0
    readings = readings_matrix(item["readings"], forecaster.features, subfield(field, "readings"),
                               max_rows=max_rows)
    return last_window(readings.values, forecaster.window)


def predict_one(registry: ModelRegistry, data: bytes, *, max_rows: int,
                observe: InferenceObserver = no_observer) -> dict[str, Any]:
    """`POST /v1/predict`: `{"readings": [...]}` or `{"window": [[...]]}`, optional "model"."""
    name, forecaster, window, padded, field = _plain_request(registry, data, max_rows) or \
        _general_request(registry, data, max_rows)
    answer = model_answers(forecaster, name, window[None], [padded], observe, field)[0]
    return {"model": name, "model_version": forecaster.version, **answer}


def _plain_request(registry: ModelRegistry, data: bytes, max_rows: int
                   ) -> tuple[str, Forecaster, np.ndarray, int, str] | None:
    """(model name, model, window, cycles padded, field) for readings of exactly the default
    model's features, read in one pass; None for any other body."""
    default = registry.get(None)
    plain = plain_readings_body(data, default.features, max_rows)
    if plain is None:
        return None
    name, forecaster = registry.named(plain.model)
    if forecaster.features != default.features:  # another model, read in its own order
        return None
    return (name, forecaster, *last_window(plain.readings.values, forecaster.window), "readings")


def _general_request(registry: ModelRegistry, data: bytes, max_rows: int
                     ) -> tuple[str, Forecaster, np.ndarray, int, str]:
    body = require_object(parse_json(data), "body", ["readings", "window"], ["model"])
    name, forecaster = registry.named(body.get("model"))
    window, padded = _window_of(forecaster, body, "body", max_rows)
    return name, forecaster, window, padded, "window" if "window" in body else "readings"


def predict_batch(registry: ModelRegistry, data: bytes, *, max_assets: int, max_rows: int,
                  observe: InferenceObserver = no_observer) -> dict[str, Any]:
    """`POST /v1/predict/batch` with JSON: `{"assets": [{"asset_id", "readings"|"window"}]}`."""
    body = require_object(parse_json(data), "body", ["assets"], ["model"])
    name, forecaster = registry.named(body.get("model"))
    assets = body.get("assets")
    if not isinstance(assets, list) or not assets:
        raise bad_request("assets must be a non-empty list of {asset_id, readings|window}",
                          "assets")
    if len(assets) > max_assets:
        raise too_large(f"assets has {len(assets)} entries; at most {max_assets} per call "
                        "(RUL_MAX_ASSETS)", "assets")
    windows = np.empty((len(assets), forecaster.window, len(forecaster.features)), np.float32)
    padded = np.zeros(len(assets), np.int64)
    ids: list[str] = []
    seen: set[str] = set()
    rows_left = max_rows
    for i, item in enumerate(assets):
        field = f"assets[{i}]"
        item = require_object(item, field, ["asset_id"], ["readings", "window"])
        if "asset_id" not in item:
            raise bad_request(f"{field} lacks asset_id", f"{field}.asset_id")
        asset_id = asset_id_value(item["asset_id"], f"{field}.asset_id")
        if asset_id in seen:
            raise bad_request(f"{field}.asset_id {asset_id!r} appears twice in one batch",
                              f"{field}.asset_id")
        seen.add(asset_id)
        ids.append(asset_id)
        rows = item.get("readings") or item.get("window")
        rows_left -= len(rows) if isinstance(rows, list) else 0
        if rows_left < 0:
            raise too_large(f"the batch holds more than {max_rows} rows of readings "
                            "(RUL_MAX_ROWS)", field)
        windows[i], padded[i] = _window_of(forecaster, item, field, max_rows)
    items = model_answers(forecaster, name, windows, padded, observe, "assets")
    for asset_id, item in zip(ids, items, strict=True):
        item["asset_id"] = asset_id
    return {"model": name, "model_version": forecaster.version, "predictions": items}


def predict_npy(registry: ModelRegistry, data: bytes, model: str | None, *, max_assets: int,
                observe: InferenceObserver = no_observer) -> dict[str, Any]:
    """`POST /v1/predict/batch` with a .npy body [batch, window, n_features] in card order;
    the model, if not the default, by `?model=`. Answers carry the window's index."""
    name, forecaster = registry.named(model, field="query.model")
    windows = npy_windows(data, forecaster.window, forecaster.features, max_assets)
    items = model_answers(forecaster, name, windows, [0] * len(windows), observe, "body")
    for index, item in enumerate(items):
        item["index"] = index
    return {"model": name, "model_version": forecaster.version, "predictions": items}
