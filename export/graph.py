"""The exported computation as a torch module: raw readings -> preprocessing -> network -> heads.

The preprocessing here is the torch spelling of `rul.preprocessing.Preprocessing.transform`
(standardise settings, nearest centroid, per-condition z-score), built from the same plain
numbers; the export's parity check holds the two spellings together on real windows.
"""

from __future__ import annotations

import torch
from torch import nn

from rul.preprocessing import Preprocessing
from training.network import RulNetwork


class PreprocessingLayer(nn.Module):
    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.n_settings = len(pre.settings)
        self.multi_condition = pre.n_conditions > 1

        def tensor(values: object) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        self.register_buffer("mean", tensor(pre.mean))  # [K, S]
        self.register_buffer("std", tensor(pre.std))
        if self.multi_condition:
            self.register_buffer("settings_mean", tensor(pre.settings_mean))
            self.register_buffer("settings_std", tensor(pre.settings_std))
            self.register_buffer("centroids", tensor(pre.centroids))  # [K, n_settings]

    def forward(self, readings: torch.Tensor) -> torch.Tensor:
        """[B, W, n_features] raw -> [B, W, n_inputs] normalised."""
        if not self.multi_condition:
            return (readings - self.mean[0]) / self.std[0]
        z = (readings[..., :self.n_settings] - self.settings_mean) / self.settings_std
        # Nearest centroid as in Preprocessing.condition_of: |c|^2 - 2 z.c, one MatMul.
        centroids = self.centroids
        score = (centroids * centroids).sum(-1) - 2.0 * (z @ centroids.T)  # [B, W, K]
        condition = score.argmin(-1)  # [B, W]
        sensors = readings[..., self.n_settings:]
        return (sensors - self.mean[condition]) / self.std[condition]


class ExportModel(nn.Module):
    """What the .onnx file computes: `readings` -> (`rul`, `rul_quantiles`,
    `failure_probability`)."""

    def __init__(self, pre: Preprocessing, network: RulNetwork) -> None:
        super().__init__()
        self.preprocessing = PreprocessingLayer(pre)
        self.network = network

    def forward(self, readings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rul, quantiles, logit = self.network(self.preprocessing(readings))
        return rul, quantiles, self.network.failure_probability(logit)
