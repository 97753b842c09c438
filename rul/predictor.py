"""What every model runner (a torch checkpoint, the ONNX Forecaster) offers the rest of rul."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rul.windowing import Windows


@dataclass(frozen=True)
class Prediction:
    """Model outputs for a batch of windows (DESIGN.md artifact outputs)."""

    rul: np.ndarray
    """[batch] predicted remaining useful life, cycles."""
    rul_quantiles: np.ndarray
    """[batch, Q] RUL at the model's quantile levels."""
    failure_probability: np.ndarray
    """[batch] calibrated P(RUL <= horizon)."""

    def __len__(self) -> int:
        return len(self.rul)

    @staticmethod
    def concatenate(parts: list[Prediction]) -> Prediction:
        return Prediction(
            np.concatenate([p.rul for p in parts]),
            np.concatenate([p.rul_quantiles for p in parts]),
            np.concatenate([p.failure_probability for p in parts]),
        )


class Predictor(Protocol):
    """A model that maps raw-reading windows to predictions."""

    features: list[str]
    """Input columns, in order."""
    window: int
    rul_cap: float
    horizon: float
    quantiles: tuple[float, ...]

    def predict_windows(self, readings: np.ndarray) -> Prediction:
        """Raw readings [batch, window, n_features] (card order) -> predictions."""
        ...


def predict_all(predictor: Predictor, windows: Windows, batch_size: int = 4096) -> Prediction:
    """Predictions for every window, cut into batches so memory stays bounded."""
    parts = [predictor.predict_windows(windows.batch(slice(i, i + batch_size)))
             for i in range(0, len(windows), batch_size)]
    return Prediction.concatenate(parts)
