"""The standard C-MAPSS evaluation protocol, for any `Predictor` (checkpoint or ONNX file).

The last window of each test asset against its label (true RUL capped at rul_cap, as the
literature mostly reports, and uncapped); the failure probability against RUL <= horizon; the
quantile interval's coverage; prognostic metrics along every test trajectory (true RUL at each
test cycle = label + cycles to the end of the test record).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rul import metrics
from rul.fleet import Fleet
from rul.predictor import Prediction, Predictor, predict_all
from rul.schema import CYCLE
from rul.targets import rul_per_row
from rul.windowing import make_windows


def evaluate(predictor: Predictor, test: Fleet, test_rul: np.ndarray, *,
             threshold: float = 0.5, trajectories: bool = True) -> dict[str, Any]:
    """Every evaluation number for a test fleet with labels, as one JSON-ready dict."""
    raw = test.frame[predictor.features].to_numpy(dtype=np.float32)
    lengths = test.lengths()
    last = last_window_predictions(predictor, test, raw)
    true = np.asarray(test_rul, dtype=np.float64)
    result: dict[str, Any] = {
        "n_assets": int(len(true)),
        "rul_cap": predictor.rul_cap,
        "horizon": predictor.horizon,
        "quantiles": list(predictor.quantiles),
        **score_last_windows(last, true, predictor.rul_cap, predictor.horizon, threshold,
                             predictor.quantiles),
        "per_asset": {
            "asset_id": test.asset_ids.tolist(),
            "true_rul": true.tolist(),
            "rul": last.rul.tolist(),
            "rul_lower": last.rul_quantiles[:, 0].tolist(),
            "rul_upper": last.rul_quantiles[:, -1].tolist(),
            "failure_probability": last.failure_probability.tolist(),
        },
    }
    if trajectories:
        result.update(score_trajectories(predictor, test, test_rul, raw, lengths))
    return result


def last_window_predictions(predictor: Predictor, fleet: Fleet,
                            raw: np.ndarray | None = None) -> Prediction:
    """One prediction per asset, from the window that ends at its last cycle (the protocol).
    raw: the fleet's feature columns as float32, when the caller has them already."""
    if raw is None:
        raw = fleet.frame[predictor.features].to_numpy(dtype=np.float32)
    return predict_all(predictor, make_windows(raw, fleet.lengths(), predictor.window,
                                               ends="last"))


def score_last_windows(pred: Prediction, true: np.ndarray, rul_cap: float, horizon: float,
                       threshold: float, quantiles: tuple[float, ...]) -> dict[str, Any]:
    """Regression, classification and interval metrics of one prediction per asset."""
    true_capped = np.minimum(true, rul_cap)
    capped = metrics.regression_metrics(true_capped, pred.rul)
    uncapped = metrics.regression_metrics(true, pred.rul)
    labels = true <= horizon
    probability = np.clip(pred.failure_probability, 0.0, 1.0)
    classification = metrics.classification_metrics(labels, probability, threshold)
    return {
        "rmse": capped["rmse"], "mae": capped["mae"], "score": capped["score"],
        "rmse_uncapped": uncapped["rmse"], "mae_uncapped": uncapped["mae"],
        "score_uncapped": uncapped["score"],
        **{k: classification[k] for k in ("accuracy", "precision", "recall", "f1", "threshold",
                                          "tp", "fp", "tn", "fn")},
        "auroc": metrics.auroc(labels, probability),
        "brier": metrics.brier_score(labels, probability),
        "ece": metrics.expected_calibration_error(labels, probability),
        "calibration": metrics.calibration_curve(labels, probability),
        "coverage": metrics.interval_coverage(true_capped, pred.rul_quantiles[:, 0],
                                              pred.rul_quantiles[:, -1]),
        "coverage_nominal": round(quantiles[-1] - quantiles[0], 6),
    }


def score_trajectories(predictor: Predictor, test: Fleet, test_rul: np.ndarray, raw: np.ndarray,
                       lengths: np.ndarray) -> dict[str, Any]:
    """Prognostic horizon and alpha-lambda accuracy along every test asset's record, plus the
    longest record's trajectory for the report."""
    windows = make_windows(raw, lengths, predictor.window, ends="every")
    pred = predict_all(predictor, windows)
    true = rul_per_row(test, test_rul)
    cycles = test.frame[CYCLE].to_numpy()
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    per_asset = [(cycles[a:b], true[a:b], pred.rul[a:b])
                 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    prognostic = metrics.prognostic_metrics(per_asset)
    longest = int(np.argmax(lengths))
    a, b = bounds[longest], bounds[longest + 1]
    return {
        "prognostic_horizon": prognostic["prognostic_horizon"],
        "alpha_lambda": {str(k): v for k, v in prognostic["alpha_lambda"].items()},
        "trajectory": {
            "asset_id": test.asset_ids[longest].item(),
            "cycle": cycles[a:b].tolist(),
            "true_rul": true[a:b].tolist(),
            "rul": pred.rul[a:b].tolist(),
            "rul_lower": pred.rul_quantiles[a:b, 0].tolist(),
            "rul_upper": pred.rul_quantiles[a:b, -1].tolist(),
        },
    }
