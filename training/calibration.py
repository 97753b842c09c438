"""Temperature scaling of the failure logit (Guo et al., 2017), fitted on validation engines."""

from __future__ import annotations

import numpy as np


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the binary log-loss of sigmoid(logits / T).

    The loss is unimodal in log T, so a golden-section search on [1/20, 20] finds it.
    Returns 1.0 when the labels hold one class only (nothing to calibrate against).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(logits) == 0 or labels.min() == labels.max():
        return 1.0
    lo, hi = np.log(1 / 20), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(60):
        if _log_loss(logits, labels, a) < _log_loss(logits, labels, b):
            hi, b = b, a
            a = hi - ratio * (hi - lo)
        else:
            lo, a = a, b
            b = lo + ratio * (hi - lo)
    return float(np.exp((lo + hi) / 2))


def _log_loss(logits: np.ndarray, labels: np.ndarray, log_t: float) -> float:
    z = logits / np.exp(log_t)
    # log(1 + e^z) - y z, computed stably.
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_interval_offset(lower: np.ndarray, upper: np.ndarray, target: np.ndarray,
                        coverage: float) -> float:
    """Widening (or, if negative, narrowing) of [lower, upper] that makes it cover `coverage`
    of held-out targets: conformalised quantile regression (Romano, Patterson & Candes, 2019).

    The score max(lower - y, y - upper) is how far each target falls outside its interval; its
    (1 - alpha)(1 + 1/n) empirical quantile is the offset with finite-sample coverage.
    """
    lower, upper, target = (np.asarray(a, dtype=np.float64) for a in (lower, upper, target))
    if len(target) == 0:
        return 0.0
    scores = np.maximum(lower - target, target - upper)
    level = min(1.0, coverage * (1 + 1 / len(target)))
    return float(np.quantile(scores, level, method="higher"))
