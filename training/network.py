"""The network: backbone + three heads (rul, rul_quantiles, failure logit), a plain nn.Module.

RUL is learnt in units of rul_cap, so one learning rate suits every cap; quantiles are made
monotone by construction (a base plus non-negative increments), so intervals never cross.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.backbones import build_backbone
from training.config import ModelConfig


class RulNetwork(nn.Module):
    def __init__(self, n_inputs: int, window: int, rul_cap: float, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(n_inputs, window, config)
        width = self.backbone.out_features
        self.dropout = nn.Dropout(config.dropout)
        self.rul_head = nn.Linear(width, 1)
        self.quantile_head = nn.Linear(width, len(config.quantiles))
        self.failure_head = nn.Linear(width, 1)
        self.rul_cap = float(rul_cap)
        # Set after training by temperature scaling on validation engines.
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised windows [B, W, F] -> (rul [B], rul_quantiles [B, Q], failure logit [B]),
        RUL in cycles."""
        h = self.dropout(self.backbone(x))
        rul = self.rul_head(h).squeeze(-1) * self.rul_cap
        raw = self.quantile_head(h)
        steps = torch.cat([raw[:, :1], F.softplus(raw[:, 1:])], dim=1)
        quantiles = torch.cumsum(steps, dim=1) * self.rul_cap
        return rul, quantiles, self.failure_head(h).squeeze(-1)

    def failure_probability(self, logit: torch.Tensor) -> torch.Tensor:
        """Calibrated P(RUL <= horizon)."""
        return torch.sigmoid(logit / self.temperature)
