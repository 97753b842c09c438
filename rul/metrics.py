"""Evaluation metrics: pure numpy functions of arrays, no framework imports.

Regression (RUL in cycles): RMSE, MAE, the PHM08 score.
Failure probability (P(RUL <= horizon)): accuracy/precision/recall/F1 at a threshold, AUROC,
Brier score, calibration curve and expected calibration error.
Quantiles: interval coverage.
Prognostics over one asset's life: alpha-lambda accuracy and prognostic horizon
(Saxena, Celaya, Saha, Saha & Goebel, "Metrics for offline evaluation of prognostic
performance", International Journal of Prognostics and Health Management 1(1), 2010).

Every function accepts array-likes and raises `MetricInputError` (a `ValueError`) on empty
input, mismatched lengths, non-finite values or values outside their domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MetricInputError",
    "alpha_lambda_accuracy",
    "auroc",
    "brier_score",
    "calibration_curve",
    "classification_metrics",
    "expected_calibration_error",
    "interval_coverage",
    "mae",
    "phm08_score",
    "prognostic_horizon",
    "prognostic_metrics",
    "regression_metrics",
    "rmse",
]

DEFAULT_LAMBDAS: tuple[float, ...] = (0.25, 0.5, 0.75)


class MetricInputError(ValueError):
    """An input to a metric is empty, mismatched in length, non-finite or out of its domain."""


# --------------------------------------------------------------------------- validation


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    """One finite, non-empty 1-D float array."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise MetricInputError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise MetricInputError(f"{name} is empty")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise MetricInputError(
            f"{name} has {bad.size} non-finite value(s) (NaN or inf), first at index {bad[0]}"
        )
    return array


def _vectors(**named: ArrayLike) -> list[np.ndarray]:
    """Several `_vector`s that must share one length (keyword order is kept)."""
    arrays = [_vector(values, name) for name, values in named.items()]
    lengths = {name: array.size for name, array in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise MetricInputError(f"mismatched lengths: {listed}")
    return arrays


def _labels(y_true: np.ndarray) -> np.ndarray:
    """Boolean labels from bools or 0/1 numbers; anything else is an error, not a cast."""
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise MetricInputError("y_true must hold only booleans or 0/1")
    return y_true.astype(bool)


def _probabilities(probability: np.ndarray) -> np.ndarray:
    outside = np.flatnonzero((probability < 0.0) | (probability > 1.0))
    if outside.size:
        raise MetricInputError(
            f"probability must lie in [0, 1]; index {outside[0]} is {probability[outside[0]]}"
        )
    return probability


def _binary(y_true: ArrayLike, probability: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _vectors(y_true=y_true, probability=probability)
    return _labels(labels), _probabilities(probs)


def _ratio(numerator: float, denominator: float) -> float:
    # Precision, recall and F1 are 0.0, not NaN, when nothing was predicted or present, so a
    # report always has a number to print.
    return float(numerator / denominator) if denominator else 0.0


# --------------------------------------------------------------------------- regression


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error."""
    truth, pred = _vectors(y_true=y_true, y_pred=y_pred)
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error."""
    truth, pred = _vectors(y_true=y_true, y_pred=y_pred)
    return float(np.mean(np.abs(pred - truth)))


def phm08_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """PHM08 challenge score (Saxena, Goebel, Simon & Eklund, PHM 2008): a sum, lower is better.

    With d = pred - true, each asset adds exp(-d/13) - 1 when d < 0 (early) and exp(d/10) - 1
    when d >= 0 (late): a late prediction costs more than an equally early one, because a
    failure before maintenance is worse than maintenance a little too soon.
    """
    truth, pred = _vectors(y_true=y_true, y_pred=y_pred)
    d = pred - truth
    return float(np.sum(np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))))


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float | int]:
    """RMSE, MAE and PHM08 score (`score`) of RUL predictions, and the number of assets `n`."""
    truth, pred = _vectors(y_true=y_true, y_pred=y_pred)
    return {
        "rmse": rmse(truth, pred),
        "mae": mae(truth, pred),
        "score": phm08_score(truth, pred),
        "n": int(truth.size),
    }


# --------------------------------------------------------------------------- classification


def classification_metrics(
    y_true: ArrayLike, probability: ArrayLike, threshold: float = 0.5
) -> dict[str, float | int]:
    """Confusion counts and rates when `probability >= threshold` predicts failure.

    Keys: accuracy, precision, recall, f1, threshold, tp, fp, tn, fn. Precision, recall and F1
    are 0.0 when their denominator is 0.
    """
    if not 0.0 <= threshold <= 1.0:
        raise MetricInputError(f"threshold must lie in [0, 1], got {threshold}")
    labels, probs = _binary(y_true, probability)
    predicted = probs >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    return {
        "accuracy": _ratio(tp + tn, labels.size),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(y_true: ArrayLike, probability: ArrayLike) -> float:
    """Area under the ROC curve from the Mann-Whitney U statistic, ties counted as one half.

    `probability` may be any real score (only its order matters). Returns NaN when `y_true`
    holds one class only, since the curve is then undefined.
    """
    labels, scores = _vectors(y_true=y_true, probability=probability)
    labels = _labels(labels)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(scores)[labels].sum()
    u_statistic = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def brier_score(y_true: ArrayLike, probability: ArrayLike) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    labels, probs = _binary(y_true, probability)
    return float(np.mean((probs - labels) ** 2))


def calibration_curve(
    y_true: ArrayLike, probability: ArrayLike, n_bins: int = 10
) -> dict[str, list[float] | list[int]]:
    """Reliability diagram data over `n_bins` equal-width bins of [0, 1].

    Bin i holds probabilities in [edge_i, edge_i+1); the last bin also holds 1.0. Keys (lists):
    bin_edges (n_bins + 1), mean_predicted, observed_frequency, count (n_bins each); an empty
    bin has count 0 and NaN means.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise MetricInputError(f"n_bins must be a positive integer, got {n_bins}")
    labels, probs = _binary(y_true, probability)
    n_bins = int(n_bins)
    # i / n_bins is correctly rounded, so edge 3 of 10 is exactly 0.3 (linspace gives
    # 0.30000000000000004); binning by these same edges puts p = 0.3 in [0.3, 0.4) as the
    # reported edges say, where floor(p * n_bins) can round the other way.
    edges = np.arange(n_bins + 1) / n_bins
    index = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=probs, minlength=n_bins) / count
        observed = np.bincount(index, weights=labels.astype(float), minlength=n_bins) / count
    return {
        "bin_edges": edges.tolist(),
        "mean_predicted": mean_predicted.tolist(),
        "observed_frequency": observed.tolist(),
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(
    y_true: ArrayLike, probability: ArrayLike, n_bins: int = 10
) -> float:
    """Sum over non-empty bins of (count / N) * |observed_frequency - mean_predicted|."""
    curve = calibration_curve(y_true, probability, n_bins)
    count = np.asarray(curve["count"], dtype=float)
    gap = np.abs(np.asarray(curve["observed_frequency"]) - np.asarray(curve["mean_predicted"]))
    filled = count > 0
    return float(np.sum(count[filled] / count.sum() * gap[filled]))


# --------------------------------------------------------------------------- quantiles


def interval_coverage(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Fraction of values with lower <= y_true <= upper (both ends inclusive).

    An interval with lower > upper (crossed quantiles) is an error: it would be counted as a
    miss silently otherwise and hide a model bug.
    """
    truth, low, high = _vectors(y_true=y_true, lower=lower, upper=upper)
    crossed = np.flatnonzero(low > high)
    if crossed.size:
        i = crossed[0]
        raise MetricInputError(
            f"lower > upper at {crossed.size} index(es), first at {i}: {low[i]} > {high[i]}"
        )
    return float(np.mean((low <= truth) & (truth <= high)))


# --------------------------------------------------------------------------- prognostics


def _trajectory(
    cycles: ArrayLike, true_rul: ArrayLike, pred_rul: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Validated (cycles, true_rul, pred_rul, t_EoL) of one asset, t_EoL = last cycle + RUL."""
    cyc, truth, pred = _vectors(cycles=cycles, true_rul=true_rul, pred_rul=pred_rul)
    if np.any(np.diff(cyc) <= 0):
        raise MetricInputError("cycles must be strictly increasing")
    if np.any(truth < 0):
        raise MetricInputError("true_rul must be non-negative")
    return cyc, truth, pred, float(cyc[-1] + truth[-1])


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must lie in (0, 1), got {alpha}")


def alpha_lambda_accuracy(
    cycles: ArrayLike,
    true_rul: ArrayLike,
    pred_rul: ArrayLike,
    alpha: float = 0.2,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> dict[float, bool | None]:
    """Alpha-lambda accuracy of one asset's RUL predictions (Saxena et al., IJPHM 2010).

    Time runs in cycles. t_P = cycles[0] is the first prediction, t_EoL = cycles[-1] +
    true_rul[-1] the end of life, and t_lambda = t_P + lambda * (t_EoL - t_P). The prediction
    evaluated is the one at the last cycle at or before t_lambda; it is accurate when
    (1 - alpha) * r <= pred <= (1 + alpha) * r, r being the true RUL at that cycle (a cone
    that narrows towards end of life, as in the paper's relative alpha-bounds).

    Returns {lambda: bool}, or None for a lambda whose t_lambda falls after the last
    prediction (a truncated trajectory): no prediction was made then, and judging an older one
    in its place would flatter or punish the model for the wrong time.

    `true_rul` is not capped, so a model trained on RUL capped at C cannot be accurate where
    the true RUL exceeds C / (1 - alpha): early lambdas mostly measure the cap
    (docs/ACCURACY.md, "Prognostic metrics along the test trajectories").
    """
    _check_alpha(alpha)
    cyc, truth, pred, t_eol = _trajectory(cycles, true_rul, pred_rul)
    t_p = cyc[0]
    result: dict[float, bool | None] = {}
    for lam in lambdas:
        if not 0.0 <= lam <= 1.0:
            raise MetricInputError(f"lambda must lie in [0, 1], got {lam}")
        t_lambda = t_p + lam * (t_eol - t_p)
        if t_lambda > cyc[-1]:
            result[lam] = None
            continue
        i = int(np.searchsorted(cyc, t_lambda, side="right")) - 1
        result[lam] = bool((1 - alpha) * truth[i] <= pred[i] <= (1 + alpha) * truth[i])
    return result


def prognostic_horizon(
    cycles: ArrayLike, true_rul: ArrayLike, pred_rul: ArrayLike, alpha: float = 0.2
) -> float:
    """Prognostic horizon PH = t_EoL - t_i of one asset, in cycles (Saxena et al., IJPHM 2010).

    The alpha-bounds are those the paper uses for PH: a band of constant width about the true
    RUL, true_rul +- alpha * t_EoL, with t_EoL = cycles[-1] + true_rul[-1]. t_i is the first
    cycle from which every prediction stays inside the band up to the last one. This is
    stricter than the paper's first entry into the band: a model that enters the band and
    leaves it again has not earned a horizon from its first entry. 0.0 if the last prediction
    is outside the band.
    """
    _check_alpha(alpha)
    cyc, truth, pred, t_eol = _trajectory(cycles, true_rul, pred_rul)
    inside = np.abs(pred - truth) <= alpha * t_eol
    # stays[k] is True when predictions k, k+1, ..., last are all inside the band.
    stays = np.logical_and.accumulate(inside[::-1])[::-1]
    if not stays[-1]:
        return 0.0
    return float(t_eol - cyc[int(np.argmax(stays))])


def prognostic_metrics(
    trajectories: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    alpha: float = 0.2,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> dict[str, object]:
    """Fleet summary of per-asset prognostic metrics.

    `trajectories` holds one (cycles, true_rul, pred_rul) per asset. Keys:
    prognostic_horizon (mean PH over assets, cycles; 0 for an asset that never earns one),
    alpha_lambda ({lambda: fraction of assets accurate}, over the assets where that lambda is
    defined; NaN if none), alpha_lambda_n ({lambda: number of such assets}), n_assets.
    """
    if len(trajectories) == 0:
        raise MetricInputError("trajectories is empty")
    horizons = [prognostic_horizon(*t, alpha=alpha) for t in trajectories]
    verdicts = [alpha_lambda_accuracy(*t, alpha=alpha, lambdas=lambdas) for t in trajectories]
    fraction: dict[float, float] = {}
    defined: dict[float, int] = {}
    for lam in lambdas:
        judged = [v[lam] for v in verdicts if v[lam] is not None]
        defined[lam] = len(judged)
        fraction[lam] = float(np.mean(judged)) if judged else float("nan")
    return {
        "prognostic_horizon": float(np.mean(horizons)),
        "alpha_lambda": fraction,
        "alpha_lambda_n": defined,
        "n_assets": len(trajectories),
    }
